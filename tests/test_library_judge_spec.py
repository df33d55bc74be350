"""The concept YAML's ``judge:`` block: round trips, and every bad spec named by field and line."""

from __future__ import annotations

import pytest

from app.library import ConceptLibrary, ConceptValidationError, concept_to_yaml, parse_concept
from app.types import JudgeSpec

HEAD = """\
name: Pirate
category: persona
"""
PAIRS = """\
pairs:
  - positive: "Arr, me hearty!"
    negative: "Hello, friend!"
  - positive: "Ahoy, matey!"
    negative: "Hi, buddy!"
  - positive: "Avast, ye!"
    negative: "Wait, you!"
  - positive: "Shiver me timbers!"
    negative: "Wow!"
"""


def _doc(judge: str, pairs: str = PAIRS) -> str:
    return HEAD + judge + pairs


def _error(text: str) -> str:
    with pytest.raises(ConceptValidationError) as err:
        parse_concept(text, "pirate")
    return str(err.value)


@pytest.mark.parametrize("block, spec", [
    ("judge: {kind: sentiment, sign: -1}\n", JudgeSpec("sentiment", -1)),
    ("judge: {kind: lexicon, categories: [anger, rage], sign: 1}\n", JudgeSpec("lexicon", 1, categories=("anger", "rage"))),
    ("judge:\n  kind: words\n  words: [arr, matey, ship]\n", JudgeSpec("words", 1, words=("arr", "matey", "ship"))),
    ("judge: {kind: length, sign: -1}\n", JudgeSpec("length", -1)),
    ("judge: {kind: readability, metric: flesch_reading_ease, sign: -1}\n",
     JudgeSpec("readability", -1, metric="flesch_reading_ease")),
    ("judge: {kind: readability}\n", JudgeSpec("readability", 1, metric="flesch_reading_ease")),
    ("judge: {kind: probe}\n", JudgeSpec("probe")),
    ("judge: {kind: probe, layer: 12}\n", JudgeSpec("probe", layer=12)),
])
def test_valid_judges_parse_and_round_trip(block, spec):
    c = parse_concept(_doc(block), "pirate")
    assert c.judge == spec
    again = parse_concept(concept_to_yaml(c), "pirate")
    assert again == c and again.judge == spec


def test_no_judge_block_means_none():
    assert parse_concept(_doc(""), "pirate").judge is None


# Line 3 is the judge line in every document below (HEAD has two lines).
@pytest.mark.parametrize("block, fragment", [
    ("judge: {kind: vibes}\n", "line 3: judge.kind: must be one of sentiment, lexicon, words, length, readability, probe, got 'vibes'"),
    ("judge: {sign: 1}\n", "line 3: judge.kind: must be one of"),
    ("judge: {kind: words, words: []}\n", "line 3: judge.words: must be a non-empty list of words"),
    ("judge: {kind: words}\n", "line 3: judge.words: must be a non-empty list"),
    ("judge: {kind: words, words: [arr, '']}\n", "line 3: judge.words[1]: must not be empty"),
    ("judge: {kind: sentiment, sign: 2}\n", "line 3: judge.sign: must be 1 (higher score = more of the concept) or -1"),
    ("judge: {kind: sentiment, sign: 0}\n", "line 3: judge.sign: must be 1"),
    ("judge: {kind: sentiment, sign: yes}\n", "line 3: judge.sign: must be 1"),
    ("judge: {kind: lexicon, categories: [anger, grumpiness]}\n", "line 3: judge.categories[1]: unknown lexical category 'grumpiness'"),
    ("judge: {kind: lexicon}\n", "line 3: judge.categories: must be a non-empty list"),
    ("judge: {kind: readability, metric: vibes}\n", "line 3: judge.metric: must be one of flesch_reading_ease"),
    ("judge: {kind: probe, layer: -1}\n", "line 3: judge.layer: must be a whole number >= 0"),
    ("judge: {kind: length, words: [a]}\n", "line 3: judge.words: is not used by a length judge"),
    ("judge: {kind: length, colour: red}\n", "line 3: judge.colour: unknown key 'colour'"),
    ("judge: sentiment\n", "line 3: judge: must be a mapping"),
])
def test_bad_judge_specs_name_field_and_line(block, fragment):
    assert fragment in _error(_doc(block))


def test_probe_with_fewer_than_four_pairs_is_refused():
    three = "\n".join(PAIRS.splitlines()[:7]) + "\n"
    msg = _error(_doc("judge: {kind: probe}\n", three))
    assert "line 3: judge.kind: a probe judge" in msg and "at least 4; this concept has 3" in msg


def test_multi_line_block_points_at_the_bad_line():
    msg = _error(_doc("judge:\n  kind: words\n  words: [arr]\n  sign: -2\n"))
    assert "pirate.yaml, line 6: judge.sign" in msg


def test_bad_judge_is_never_written(tmp_path):
    lib = ConceptLibrary(tmp_path / "lib", shipped_concepts=tmp_path / "none")
    good = parse_concept(_doc("judge: {kind: words, words: [arr]}\n"), "pirate")
    lib.save(good)
    before = (tmp_path / "lib").rglob("*.yaml")
    snapshot = {p: p.read_bytes() for p in before}
    bad = parse_concept(_doc(""), "pirate")
    bad.judge = JudgeSpec("words", 3, words=("arr",))
    with pytest.raises(ConceptValidationError, match="judge.sign"):
        lib.save(bad, overwrite=True)
    assert {p: p.read_bytes() for p in (tmp_path / "lib").rglob("*.yaml")} == snapshot
    assert lib.get("pirate").judge == JudgeSpec("words", 1, words=("arr",))
