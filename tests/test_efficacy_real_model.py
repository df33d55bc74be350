"""On the real default model: shipped `sad` and `happy` move the sentiment judge the right way
on the validation prompts (never used to choose their settings), and stay clean.

These tests can fail for the reason that matters: at the old layer-21 settings sad moved
sentiment the right way on only 4 of the 10 validation prompts (2026-12-01; run once against them
and seen to fail). The issue's targets, each its own test:
- at least 8 of 10 (the target for every concept): sad 10/10, happy 8/10 at the settings calibrated on
  the 16 calibration prompts (2026-12-01, second run);
- every prompt, for happy and sad: sad 10/10; happy 8/10 - a strict xfail. The first calibration
  (8 prompts) had chosen happy 9/0.35, which moved it on 10 of 10 validation prompts, but on the 16
  calibration prompts that setting is incoherent on 4 of 16 answers, so the second run chose 9/0.25.
  The choice is made on calibration prompts only; the validation result is reported, not chased;
- clean on every prompt: sad loops or repeats on 2 of 10 - a strict xfail.
Drop a marker when a shipped setting meets its target.
"""

from __future__ import annotations

import functools

import pytest

pytestmark = pytest.mark.real_model


@functools.lru_cache(maxsize=1)
def _measured(service):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from benchmarks.efficacy import shipped_setup

    from app.core.calibrate import load_prompts
    from app.core.efficacy import measure

    concepts, vectors, settings, scorers, labels = shipped_setup(service, ["sad", "happy"])
    assert {c.slug for c in concepts} == {"sad", "happy"}
    assert all("sentiment" in labels[s].lower() for s in ("sad", "happy")), labels
    prompts = load_prompts("validation")
    res = measure(service.loaded, concepts, vectors, settings, scorers, prompts, 64, prompted=False)
    return prompts, settings, res


def test_sad_and_happy_move_sentiment_the_right_way_on_at_least_8_of_10_validation_prompts(default_service):
    prompts, settings, res = _measured(default_service)
    for slug, e in res.items():
        detail = list(zip(prompts, [round(c, 3) for c in e.changes], e.clean))
        assert sum(c > 0 for c in e.changes) >= 0.8 * len(prompts), (slug, settings[slug], detail)


def _every_prompt_right_way(service, slug):
    prompts, settings, res = _measured(service)
    e = res[slug]
    detail = list(zip(prompts, [round(c, 3) for c in e.changes], e.clean))
    assert all(c > 0 for c in e.changes), (slug, settings[slug], detail)


def test_sad_moves_sentiment_the_right_way_on_every_validation_prompt(default_service):
    _every_prompt_right_way(default_service, "sad")


@pytest.mark.xfail(strict=True, reason="happy (mean_diff, 9/0.25, chosen on the 16 calibration prompts) moves "
                   "sentiment the right way on 8 of 10 validation prompts; measured 2026-12-01")
def test_happy_moves_sentiment_the_right_way_on_every_validation_prompt(default_service):
    _every_prompt_right_way(default_service, "happy")


@pytest.mark.xfail(strict=True, reason="sad (bipolar, 18/0.25) loops or repeats on 2 of 10 validation prompts "
                   "(happy 9/0.25: clean on 10 of 10); measured 2026-12-01")
def test_sad_and_happy_stay_clean_on_every_validation_prompt(default_service):
    prompts, settings, res = _measured(default_service)
    for slug, e in res.items():
        detail = list(zip(prompts, [round(c, 3) for c in e.changes], e.clean))
        assert all(e.clean), (slug, "loops or repeats", detail)
