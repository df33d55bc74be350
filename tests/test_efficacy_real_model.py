"""On the real default model: shipped `sad` and `happy` move the sentiment judge the right way
on the validation prompts (never used to choose their settings), staying clean.

This test can fail for the reason that matters: at the lab's earlier layer-21 settings (git
history before the judge-based calibration) sad moved sentiment the wrong way on several of
these prompts.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.real_model


@pytest.mark.xfail(strict=True, reason="the shipped settings predate the judge-based calibration; "
                   "run `steering-lab calibrate all --ship`, then remove this marker")
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
