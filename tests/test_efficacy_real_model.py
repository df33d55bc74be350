"""On the real default model: shipped `sad` and `happy` move the sentiment judge the right way
on the validation prompts (never used to choose their settings), and stay clean.

These tests can fail for the reason that matters: at the old layer-21 settings sad moved
sentiment the right way on only 4 of the 10 validation prompts and happy on 8 (2026-12-01; run
once against them and seen to fail). The calibrated settings move both the right way on 10 of 10;
sad still loops or repeats on 2 of 10, so the cleanliness half is a strict xfail until a shipped
setting also keeps every answer clean (then drop the marker).
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


def test_sad_and_happy_move_sentiment_the_right_way_on_every_validation_prompt(default_service):
    prompts, settings, res = _measured(default_service)
    for slug, e in res.items():
        detail = list(zip(prompts, [round(c, 3) for c in e.changes], e.clean))
        assert all(c > 0 for c in e.changes), (slug, settings[slug], detail)


@pytest.mark.xfail(strict=True, reason="sad (bipolar, 18/0.25) loops or repeats on 2 of 10 validation prompts "
                   "(happy 9/0.35: clean on 10 of 10); measured 2026-12-01")
def test_sad_and_happy_stay_clean_on_every_validation_prompt(default_service):
    prompts, settings, res = _measured(default_service)
    for slug, e in res.items():
        detail = list(zip(prompts, [round(c, 3) for c in e.changes], e.clean))
        assert all(e.clean), (slug, "loops or repeats", detail)
