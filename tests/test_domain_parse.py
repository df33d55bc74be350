"""The lab's one set of parsers and limits (app.domain): the rules every layer shares."""

from __future__ import annotations

import pytest

from app.domain import limits
from app.domain.parse import looks_like_mix, parse_floats, parse_layers, parse_mix, parse_ref
from app.errors import InputError


def test_layer_lists_and_ranges():
    assert parse_layers("4-8, 12") == [4, 5, 6, 7, 8, 12]
    assert parse_layers("3; 5", 30) == [3, 5]
    assert parse_layers("3, 3, 4", repeats="drop") == [3, 4]
    assert parse_layers("", allow_empty=True) == []


@pytest.mark.parametrize("text, words", [
    ("", "no layers"), ("8-4", "8-4"), ("a-b", "whole number"), ("3, 3", "repeat"),
    ("30", "out of range"), ("-1", "does not exist"), ("0-999999999", "too many layers"),
    ("1," * 150, "characters"),
])
def test_layer_errors_name_the_problem(text, words):
    with pytest.raises(InputError, match=words):
        parse_layers(text, 30)


def test_a_huge_range_is_refused_before_it_is_expanded():
    with pytest.raises(InputError, match="too many"):
        parse_layers("0-10000000000000")  # would take minutes and gigabytes if expanded first


def test_float_lists():
    assert parse_floats("0.1, -0.3") == [0.1, -0.3]
    for bad, words in (("", "no strengths"), ("0.1, nan", "finite"), ("0.2,0.2", "repeat"), ("x", "number")):
        with pytest.raises(InputError, match=words):
            parse_floats(bad)
    with pytest.raises(InputError, match="between -1 and 1"):
        parse_floats("0.5, 1.5", limit=limits.strength_limit(True))


def test_one_strength_limit_per_mode():
    assert limits.strength_limit(True) == limits.STRENGTH_LIMITS["relative"] == 1.0
    assert limits.strength_limit(False) == limits.STRENGTH_LIMITS["absolute"]
    for mode, default in limits.DEFAULT_STRENGTH.items():
        assert 0 < default <= limits.STRENGTH_LIMITS[mode]


def test_concept_references():
    known = ["happy", "sad"]
    assert parse_ref("happy", known).kind == "slug"
    assert parse_ref("random:sad", known).slug == "sad"
    mix = parse_ref("happy:0.7, sad:-0.3", known)
    assert mix.kind == "mix" and mix.terms == (("happy", 0.7), ("sad", -0.3))
    assert looks_like_mix("happy, sad") and not looks_like_mix("random:happy") and not looks_like_mix("happy")
    for bad in ("", "nosuch", "random:nosuch", "hapy:1"):
        with pytest.raises(InputError):
            parse_ref(bad, known)
    assert parse_mix("Happy : 2, calm") == [("happy", 2.0), ("calm", 1.0)]  # form only, no library
    with pytest.raises(InputError, match="not a concept name"):
        parse_mix("../x:1")
