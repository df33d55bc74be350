"""Readable token pieces: a token that is only part of a UTF-8 character decodes to '�' on its own.

Byte-level BPE (GPT-2, SmolLM, Llama 3) and SentencePiece byte fallback (Gemma: ``<0xE2>``) both
split rare characters into byte tokens. Shown alone they are all '�', which reads like an error;
here such a token becomes its bytes in hex, e.g. ``<0xE2><0x80>``, with any whole characters kept.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Optional

_HEX_TOKEN = re.compile(r"^(<0x[0-9A-Fa-f]{2}>)+$")
REPLACEMENT = "\ufffd"


@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """GPT-2's printable stand-in character for each byte, reversed (the ByteLevel pre-tokenizer's table)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


def hex_bytes(data: bytes) -> str:
    """Whole UTF-8 characters as text, stray bytes as <0xNN>."""
    out, i = [], 0
    while i < len(data):
        for width in (1, 2, 3, 4):
            try:
                out.append(data[i:i + width].decode("utf-8"))
                i += width
                break
            except UnicodeDecodeError:
                continue
        else:
            out.append(f"<0x{data[i]:02X}>")
            i += 1
    return "".join(out)


def readable_piece(decoded: str, raw: Optional[str]) -> str:
    """``decoded`` unless it contains '�' from a partial character; then the raw token's bytes in hex."""
    if REPLACEMENT not in decoded or not raw:
        return decoded
    if _HEX_TOKEN.match(raw):
        return raw.upper().replace("<0X", "<0x")
    table = _byte_decoder()
    if all(c in table for c in raw):
        return hex_bytes(bytes(table[c] for c in raw))
    return decoded
