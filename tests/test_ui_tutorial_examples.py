"""The tutorial's "Try it" examples fit any model depth (written for the default model's 30 layers)."""

from __future__ import annotations

import pytest

from app.ui.tabs.tutorial import EXAMPLE_LAYERS, STEPS, fit_example


def _layers(fill):
    for key, value in fill.items():
        if key.endswith(".layer"):
            yield value
        elif key.endswith(".layers"):
            yield from (int(p) for p in value.split(","))


@pytest.mark.parametrize("depth", [4, 18, 30, 40])
def test_every_example_layer_exists_in_a_model_of_that_depth(depth):
    for step in STEPS:
        fitted = fit_example(step.fill, depth)
        assert all(0 <= l < depth for l in _layers(fitted)), (step.title, fitted)
        assert set(fitted) == set(step.fill)


def test_default_depth_is_unchanged_and_gemma_gets_proportional_layers():
    for step in STEPS:
        assert fit_example(step.fill, EXAMPLE_LAYERS) == step.fill
    fitted = fit_example({"playground.layer": 12, "sweeps.layers": "4, 8, 12, 16, 20, 24, 28"}, 18)
    assert fitted == {"playground.layer": 7, "sweeps.layers": "2, 5, 7, 9, 12, 14, 16"}


def test_every_example_strength_is_within_the_labs_limits():
    """A "Try it" must never fill a value the tab then refuses (the sweep strengths once held 1.5)."""
    from app.domain.limits import STRENGTH_LIMITS

    for step in STEPS:
        for key, value in step.fill.items():
            if key.endswith(".strengths"):
                assert all(abs(float(v)) <= STRENGTH_LIMITS["relative"] for v in value.split(",")), step.title
            elif key.endswith(".strength"):
                assert abs(value) <= STRENGTH_LIMITS["relative"], step.title
