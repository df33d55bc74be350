"""The style allowance on the bundled model: measured on each concept's own pairs, it is above
1 for a style whose examples the model finds unusual (pirate) and exactly 1 for an emotion
whose examples read as plainly as their partners (happy); a sweep's verdicts use the stored one."""

from __future__ import annotations

import app.core  # noqa: F401  (fast BLAS before mlx)

import dataclasses

import pytest

from app import paths
from app.core.style import allowance_of, measure_style
from app.library import parse_concept
from app.types import ContrastPair

pytestmark = pytest.mark.real_model


def _concept(slug):
    return parse_concept((paths.SHIPPED_CONCEPTS / f"{slug}.yaml").read_text(encoding="utf-8"), slug)


def test_pirate_gets_an_allowance_and_happy_does_not(default_service):
    lm = default_service.loaded
    pirate, happy = measure_style(lm, _concept("pirate")), measure_style(lm, _concept("happy"))
    assert pirate["positive_perplexity"] > 1.5 * pirate["negative_perplexity"]
    assert 1.5 < pirate["style_allowance"] <= 4.0
    assert happy["style_allowance"] == 1.0


def test_swapped_pairs_get_no_allowance(default_service):
    """Known-bad input: pirate with positives and negatives swapped reads as LESS unusual, so 1.0."""
    c = _concept("pirate")
    swapped = dataclasses.replace(c, pairs=[ContrastPair(p.negative, p.positive) for p in c.pairs])
    assert measure_style(default_service.loaded, swapped)["style_allowance"] == 1.0


def test_vectors_without_a_measurement_use_the_plain_rule():
    class Old:
        extra = {"n_pairs": 3}

    assert allowance_of(Old()) == 1.0 and allowance_of(None) == 1.0
