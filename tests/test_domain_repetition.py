"""The one repetition rule: long loops are caught, ordinary answers are not, and the reason is in words."""

from __future__ import annotations

import re

import pytest

from app.domain.coherence import coherence_verdict
from app.domain.repetition import blame_steering, find_repetition, repeating_tail, tail_cycle


def toks(text: str) -> list[str]:
    """Word-level 'tokens' with their leading space, like a BPE tokenizer's pieces."""
    return re.findall(r"\s*\S+", text)


PARAGRAPH = ("The sun was shining over the quiet harbour and the fishing boats rocked gently while gulls "
             "circled above the old stone pier, and children ran along the sand laughing at the waves that "
             "rolled in one after another under a sky so blue and so bright that it almost hurt my eyes to look at it for very long. ")
INTRO = ("Here is a short story about a day by the sea that I wrote for you, with a few details about "
         "the place, the people and the weather that morning. ") * 1
PROSE = (
    "My weekend was a nice mix of rest and small adventures. On Saturday morning I went to the farmers market "
    "with a friend, bought fresh bread, some strawberries and a bunch of sunflowers, and then we walked along "
    "the river for an hour. In the afternoon I finally finished the novel I had been reading for weeks; the "
    "ending surprised me, although looking back the clues were there all along. Sunday was quieter: I cleaned "
    "the kitchen, called my parents, cooked a large pot of vegetable soup for the week and watched an old film "
    "in the evening. I went to bed early, feeling ready for Monday, which does not happen very often."
)
LIST = ("Here are some ideas for a relaxing weekend:\n1. Go for a walk in the park.\n2. Go for a swim at the "
        "lake.\n3. Read a good book on the balcony.\n4. Cook a new recipe with friends.\n5. Visit a museum.")
POEM = ("The river bends beneath the hill,\nthe evening light is soft and still,\nthe swallows dip, the "
        "willows sway,\nand slowly night puts out the day.")


def test_a_long_paragraph_six_times_in_512_tokens_is_caught():
    para = toks(PARAGRAPH)
    assert 55 <= len(para) <= 65
    answer = (toks(INTRO) + para * 6 + toks(PROSE))[:512]
    assert len(answer) >= 480
    rep = find_repetition(answer)
    assert rep is not None and rep.count >= 5 and rep.coverage > 0.5
    assert "repeats" in rep.reason() and f"{rep.coverage:.0%}" in rep.reason()


def test_one_sentence_three_times_in_48_tokens_is_caught():
    sentence = toks("I am so happy to help you with your question today, my friend! ")
    answer = toks("Sure thing. ") + sentence * 3 + toks("Have a great day.")
    assert 20 <= len(answer) <= 48
    rep = find_repetition(answer)
    assert rep is not None and rep.count == 3
    text = rep.reason()
    assert "'I am so happy to help" in text and "3 times" in text and "covering" in text


def test_a_near_identical_answer_gets_the_same_verdict():
    sentence = toks("I am so happy to help you with your question today, my friend! ")
    a = sentence * 3
    b = sentence * 2 + toks("I am so happy to help you with your question now, my friend!")
    assert find_repetition(a) is not None and find_repetition(b) is not None


def test_a_paragraph_as_a_refrain_between_other_text_is_caught():
    para = toks(PARAGRAPH)
    filler = [toks(f"Then part {i} of the tale went on with new and different words about boat number {i} "
                   f"and its captain who sailed {i} times around the bay.") for i in range(4)]
    answer = []
    for f in filler:
        answer += f + para
    rep = find_repetition(answer[:400])
    assert rep is not None and rep.rule in ("refrain", "copy") and rep.count >= 3


def test_short_cycles_at_the_end_are_caught():
    loop = ["I", " am", " very", " happy", "!"] + [" I", " is", "!"] * 4
    assert repeating_tail(loop) == 12
    rep = find_repetition(loop)
    assert rep is not None and rep.count >= 4
    bangs = toks("What a day") + ["!"] * 20
    assert find_repetition(bangs).rule == "cycle" and "in a row" in find_repetition(bangs).reason()


@pytest.mark.parametrize("text", [PROSE, LIST, POEM, PROSE + " " + LIST, "Yes.", "Hello there, how are you?"])
def test_ordinary_answers_are_not_flagged(text):
    assert find_repetition(toks(text)) is None


def test_token_ids_work_and_pieces_quote_the_phrase():
    ids = [5, 6, 7, 8, 9, 10] * 4
    pieces = ["a", "b", "c", "d", "e", "f"] * 4
    rep = find_repetition(ids, pieces)
    assert rep is not None and "abcdef" in rep.reason()


def test_the_engine_stop_is_the_same_kind_of_cycle_over_a_longer_span():
    assert tail_cycle([5] * 30) == 1 and tail_cycle([1, 2, 3] * 10) == 3
    assert tail_cycle(list(range(40))) is None and tail_cycle([1, 2] * 5) is None
    assert find_repetition([1, 2] * 5) is not None  # the verdict sees it even though the engine runs on


def test_the_baseline_repeating_too_is_not_the_steering_fault():
    loop = toks("I like it. ") * 8
    rep = find_repetition(loop)
    assert blame_steering(rep, None) and not blame_steering(rep, rep) and not blame_steering(None, rep)


def test_coherence_verdict_names_the_rule():
    sentence = toks("I am so happy to help you with your question today, my friend! ")
    looped = sentence * 3
    base = toks(PROSE)[:40]
    v = coherence_verdict(len(looped), 2.0, 0.66, "length", 2.2, 0.98, looped, base)
    assert not v.coherent and v.rule == "repetition" and "repeats 3 times" in v.reason
    ok = coherence_verdict(len(base), 2.5, 0.9, "eos", 2.2, 0.98, base, base)
    assert ok.coherent and "coherent" in ok.reason
    ppl = coherence_verdict(40, 9.0, 0.9, "eos", 2.0, 0.98, base, base)
    assert not ppl.coherent and ppl.rule == "perplexity" and "4.50x" in ppl.reason
    d2 = coherence_verdict(40, 2.0, 0.2, "eos", 2.0, 0.98, base, base)
    assert d2.rule == "distinct-2" and "0.20" in d2.reason
    assert coherence_verdict(30, 1.0, 0.1, "loop", 2.0, 0.98).rule == "engine-loop"
    assert coherence_verdict(0, float("nan"), 1.0, "eos", 2.0, 0.98).rule == "empty"


def test_style_allowance_widens_only_the_perplexity_bound():
    """A style concept (its own examples 2.2x less plausible) may be 2.2x more perplexing; nothing else moves."""
    from app.domain.coherence import MAX_STYLE_ALLOWANCE, style_allowance

    base = toks(PROSE)[:40]
    plain = coherence_verdict(40, 9.0, 0.9, "eos", 2.0, 0.98, base, base)
    styled = coherence_verdict(40, 9.0, 0.9, "eos", 2.0, 0.98, base, base, allowance=2.2)
    assert not plain.coherent and styled.coherent and "2.20 for this concept's style" in styled.reason
    gibberish = coherence_verdict(40, 30.0, 0.9, "eos", 2.0, 0.98, base, base, allowance=2.2)
    assert not gibberish.coherent and gibberish.rule == "perplexity" and "5.50x" in gibberish.reason
    # the allowance never excuses repetition or a low distinct-2, and is clipped to its range
    looped = toks("I am so happy to help you with your question today, my friend! ") * 3
    assert coherence_verdict(len(looped), 2.0, 0.66, "length", 2.2, 0.98, looped, base, allowance=4).rule == "repetition"
    assert coherence_verdict(40, 2.0, 0.2, "eos", 2.0, 0.98, base, base, allowance=4).rule == "distinct-2"
    assert not coherence_verdict(40, 2.0 * 2.5 * MAX_STYLE_ALLOWANCE * 1.01, 0.9, "eos", 2.0, 0.98, base, base,
                                 allowance=100).coherent
    assert style_allowance(100.0, 40.0) == 2.5 and style_allowance(30.0, 60.0) == 1.0
    assert style_allowance(1e6, 1.0) == MAX_STYLE_ALLOWANCE and style_allowance(float("nan"), 3.0) == 1.0
