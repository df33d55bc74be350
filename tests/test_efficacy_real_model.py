"""On the real default model: shipped `sad` and `happy` move the sentiment judge the right way
on the validation prompts (never used to choose their settings), staying clean.

This test can fail for the reason that matters: at the shipped layer-21 settings sad moved
sentiment the right way on only 4 of the 10 validation prompts and happy on 8 (2026-12-01), so
it is a strict xfail until a calibrated setting that passes is shipped (then drop the marker).
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.real_model


@pytest.mark.xfail(strict=True, reason="fails at the shipped settings (sad 21/0.35: 4 of 10 prompts the right way, "
                   "happy 21/0.35: 8 of 10, each with 2 loops; measured 2026-12-01); no validated setting ships yet")
def test_sad_and_happy_move_sentiment_the_right_way_on_validation_prompts(default_service):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from benchmarks.efficacy import shipped_setup

    from app.core.calibrate import load_prompts
    from app.core.efficacy import measure

    concepts, vectors, settings, scorers, labels = shipped_setup(default_service, ["sad", "happy"])
    assert {c.slug for c in concepts} == {"sad", "happy"}
    assert all("sentiment" in labels[s].lower() for s in ("sad", "happy")), labels
    prompts = load_prompts("validation")
    res = measure(default_service.loaded, concepts, vectors, settings, scorers, prompts, 64, prompted=False)
    for slug, e in res.items():
        detail = list(zip(prompts, [round(c, 3) for c in e.changes], e.clean))
        assert all(c > 0 for c in e.changes), (slug, settings[slug], detail)
        assert all(e.clean), (slug, "loops or repeats", detail)
