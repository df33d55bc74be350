"""Partial UTF-8 byte tokens get a readable rendering instead of '�'."""

from app.domain.tokens import hex_bytes, readable_piece


def test_byte_level_bpe_pieces_become_hex():
    # '—' (U+2014) is e2 80 94; GPT-2's byte-level alphabet writes e2 80 as 'âĢ'
    assert readable_piece("\ufffd", "âĢ") == "<0xE2><0x80>"
    assert readable_piece("\ufffd", "Ķ") == "<0x94>"


def test_sentencepiece_byte_tokens_are_kept_as_they_are():
    assert readable_piece("\ufffd", "<0xe2>") == "<0xE2>"


def test_whole_characters_are_left_alone():
    assert readable_piece(" Paris", "ĠParis") == " Paris"
    assert readable_piece("—", "âĢĶ") == "—"
    assert hex_bytes("é".encode() + b"\xe2") == "é<0xE2>"
