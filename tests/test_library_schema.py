"""Concept YAML: exact round trips, line-numbered errors, and hostile input."""

from __future__ import annotations

import inspect
import math
import time

import pytest

import app.library.bundle as bundle_mod
import app.library.schema as schema_mod
import app.library.yamlsafe as yamlsafe_mod
from app.library import ConceptValidationError, concept_to_yaml, parse_concept
from app.types import Concept, ContrastPair, Recommendation, SystemPromptPair

EXAMPLE = """\
name: Happy
description: Joyful language versus neutral statements on the same topics.
category: emotion
tags: [emotion, positive-valence]
system_prompts:
  positive: "Act as if you are extremely happy."
  negative: "Act as if you are completely neutral and matter-of-fact."
pairs:
  - positive: "I got the job! I'm thrilled!"
    negative: "I got the job. I start next month."
  - positive: "Sunshine! What a wonderful day!"
    negative: "It is sunny today."
provenance:
  author: Activation Steering Lab
  source: hand-written
  created: "2026-11-23"
recommended:
  smollm2-135m-instruct: {layer: 12, strength: 0.3, strength_mode: relative, source: sweep}
"""


def _error(text: str, slug: str = "happy") -> str:
    with pytest.raises(ConceptValidationError) as err:
        parse_concept(text, slug)
    return str(err.value)


def test_parse_example():
    c = parse_concept(EXAMPLE, "happy")
    assert c.slug == "happy" and c.name == "Happy" and c.category == "emotion"
    assert c.tags == ["emotion", "positive-valence"]
    assert c.system_prompts == SystemPromptPair(
        "Act as if you are extremely happy.", "Act as if you are completely neutral and matter-of-fact."
    )
    assert c.pairs[1] == ContrastPair("Sunshine! What a wonderful day!", "It is sunny today.")
    assert c.provenance == {"author": "Activation Steering Lab", "source": "hand-written", "created": "2026-11-23"}
    assert c.recommended == {"smollm2-135m-instruct": Recommendation(12, 0.3, "relative", "sweep")}
    assert c.recipe is None


def test_example_round_trip_is_exact_and_readable():
    c = parse_concept(EXAMPLE, "happy")
    text = concept_to_yaml(c)
    assert parse_concept(text, "happy") == c
    assert "tags: [emotion, positive-valence]" in text
    assert "  - positive: I got the job! I'm thrilled!" in text
    assert "smollm2-135m-instruct: {layer: 12, strength: 0.3, strength_mode: relative, source: sweep}" in text
    assert text.index("name:") < text.index("pairs:") < text.index("provenance:")
    assert "!!" not in text


TRICKY = [
    "line one\nline two\n",
    " leading space\n  and trailing  \n\n",
    "no newline at end\nsecond",
    "\nstarts with newline",
    "yes",
    "null",
    "~",
    "123",
    "1.5e3",
    "2026-11-23",
    "- looks like a list",
    "key: value",
    "# not a comment",
    "tab\tinside",
    "quote ' and \" both",
    "emoji 😀 and ünïcödé",
    "carriage\rreturn",
    "trailing spaces   ",
    "&anchor *alias !tag",
    "   \n   indented block\n",
]


@pytest.mark.parametrize("s", TRICKY)
def test_round_trip_tricky_strings(s):
    c = Concept(
        slug="tricky", name="Tricky", description=s, pairs=[ContrastPair(s, "plain"), ContrastPair("x", s)],
        system_prompts=SystemPromptPair(s, "neutral"),
    )
    assert parse_concept(concept_to_yaml(c), "tricky") == c


def test_round_trip_full_concept():
    c = Concept(
        slug="mix-1", name="Mix", description="", category="mix", pairs=[],
        tags=["a", "b-c"], provenance={"author": "me", "n": 3, "nested": {"x": [1, 2.5, None, True]}},
        recommended={
            "mlx-community--qwen2.5-0.5b-instruct-4bit": Recommendation(3, -1e-20, "absolute", "manual"),
            "smollm2-135m-instruct": Recommendation(0, 12.0),
        },
        recipe=[("happy", 0.7), ("calm", -0.25)], recipe_options={"normalize": True, "layer": 9},
    )
    text = concept_to_yaml(c)
    assert "pairs" not in text  # a recipe-only concept needs no pairs
    assert parse_concept(text, "mix-1") == c


def test_unquoted_date_in_provenance_becomes_text():
    c = parse_concept(EXAMPLE.replace('created: "2026-11-23"', "created: 2026-11-23"), "happy")
    assert c.provenance["created"] == "2026-11-23"
    assert parse_concept(concept_to_yaml(c), "happy") == c


def _line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def test_bad_field_error_names_file_field_and_line():
    text = EXAMPLE.replace('negative: "It is sunny today."', 'negative: ""')
    msg = _error(text)
    assert "happy.yaml" in msg
    assert "pairs[1].negative" in msg
    line = _line_of(text, 'negative: ""')
    assert f"line {line}: pairs[1].negative" in msg
    assert "must not be empty" in msg


def test_several_problems_reported_with_their_lines():
    text = EXAMPLE.replace("layer: 12", "layer: -1").replace("category: emotion", "category: feelings")
    msg = _error(text)
    assert f"line {_line_of(text, 'category: feelings')}: category: must be one of" in msg
    assert f"line {_line_of(text, 'layer: -1')}: recommended.smollm2-135m-instruct.layer" in msg


def test_unknown_key_rejected_with_allowed_keys_and_line():
    text = EXAMPLE + "colour: red\n"
    msg = _error(text)
    assert "unknown key 'colour'" in msg
    assert "allowed keys: name, description, category" in msg
    assert f"line {_line_of(text, 'colour')}" in msg


def test_slug_key_is_not_part_of_schema():
    assert "slug comes from the file name" in _error("slug: evil\n" + EXAMPLE)


@pytest.mark.parametrize(
    "edit, fragment",
    [
        (lambda t: t.replace("name: Happy\n", ""), "missing required field 'name'"),
        (lambda t: t.replace("name: Happy", "name: " + "x" * 101), "maximum is 100"),
        (lambda t: t.replace("name: Happy", "name: yes"), "must be text"),
        (lambda t: t.replace("tags: [emotion, positive-valence]", "tags: emotion"), "must be a list"),
        (lambda t: t.replace("strength: 0.3", "strength: .nan"), "finite"),
        (lambda t: t.replace("strength: 0.3", "strength: '0.3'"), "must be a number"),
        (lambda t: t.replace("strength_mode: relative", "strength_mode: loud"), "relative, absolute"),
        (lambda t: t.replace("layer: 12", "layer: true"), "whole number"),
        (lambda t: t.replace("layer: 12", "layer: 1.5"), "whole number"),
        (lambda t: t.replace("smollm2-135m-instruct:", "SmolLM2/135M:"), "not normalised"),
        (lambda t: t.replace("    negative: \"It is sunny today.\"", "    negativ: x"), "unknown key 'negativ'"),
        (lambda t: t.replace("I got the job! I'm thrilled!", "x" * 4001), "maximum is 4000"),
        (lambda t: t.replace("  negative: \"Act as if you are completely neutral and matter-of-fact.\"\n", ""),
         "missing 'negative'"),
        (lambda t: t[: t.index("pairs:")] + "pairs: []\n", "at least 1 contrast pair"),
        (lambda t: t + "recipe:\n  - concept: ../x\n    weight: 1\n", "path separator"),
        (lambda t: t + "recipe: []\n", "non-empty list"),
        (lambda t: t.replace("author: Activation", "author: !!binary aGk=\n  x: Activation"), "!!binary"),
        (lambda t: t.replace("name: Happy", "name: Happy\nname: Sad"), "duplicate key 'name'"),
        (lambda t: "", "empty"),
        (lambda t: "- just\n- a list\n", "must be a mapping"),
    ],
)
def test_field_validation(edit, fragment):
    assert fragment in _error(edit(EXAMPLE))


def test_too_many_pairs_rejected():
    pairs = "".join(f"  - positive: p{i}\n    negative: n{i}\n" for i in range(513))
    assert "513 pairs; the maximum is 512" in _error(f"name: Big\npairs:\n{pairs}")


def test_malformed_yaml_reports_line_and_column():
    msg = _error("name: Happy\npairs:\n  - positive: [unclosed\n    negative: x\n")
    assert "invalid YAML" in msg and "line 4" in msg and "column" in msg


def test_python_tags_are_rejected_without_running_anything(tmp_path):
    marker = tmp_path / "pwned"
    for tag in ("!!python/object/apply:os.system", "!!python/object/apply:subprocess.call"):
        text = f'name: Evil\npairs:\n  - positive: {tag} ["touch {marker}"]\n    negative: x\n'
        msg = _error(text)
        assert "python" in msg.lower() and "not allowed" in msg and "line 3" in msg
    msg = _error('name: !!python/object/apply:os.system ["echo hi"]\npairs: []\n')
    assert "Python object tag" in msg and "line 1" in msg
    assert not marker.exists()


def test_billion_laughs_rejected_quickly():
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 10):
        refs = ",".join([f"*a{i - 1}"] * 9)
        lines.append(f"a{i}: &a{i} [{refs}]")
    text = "\n".join(lines) + "\nname: Bomb\npairs: *a9\n"
    start = time.perf_counter()
    msg = _error(text)
    assert time.perf_counter() - start < 1.0
    assert "anchors and aliases" in msg and "line 1" in msg


def test_plain_anchor_rejected_too():
    assert "anchors and aliases" in _error(EXAMPLE.replace("name: Happy", "name: &n Happy"))


def test_oversized_and_deeply_nested_documents_rejected():
    assert "limit is" in _error("name: x\ndescription: " + "a" * (2 * 1024 * 1024) + "\n")
    assert "nesting deeper" in _error("name: x\nprovenance: " + "[" * 5000 + "]" * 5000 + "\n")


def test_invalid_utf8_rejected():
    with pytest.raises(ConceptValidationError, match="UTF-8"):
        parse_concept(b"name: \xff\xfe\npairs: []\n", "x")


def test_no_unsafe_yaml_loading_in_library_source():
    for mod in (schema_mod, yamlsafe_mod, bundle_mod):
        src = inspect.getsource(mod)
        for forbidden in ("yaml.load(", "yaml.unsafe_load", "UnsafeLoader", "FullLoader", "yaml.Loader", "pickle"):
            assert forbidden not in src, f"{forbidden} in {mod.__name__}"


def test_recommendation_strength_int_becomes_float():
    c = parse_concept(EXAMPLE.replace("strength: 0.3", "strength: 2"), "happy")
    rec = c.recommended["smollm2-135m-instruct"]
    assert isinstance(rec.strength, float) and rec.strength == 2.0 and math.isfinite(rec.strength)


def test_problems_listed_in_file_order():
    text = EXAMPLE.replace("layer: 12", "layer: -1").replace("tags: [emotion, positive-valence]", "tags: emotion")
    msg = _error(text)
    assert msg.index(f"line {_line_of(text, 'tags: emotion')}: tags") < msg.index("recommended.")
