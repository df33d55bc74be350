"""Operations beyond addition on the bundled model, judged by means independent of the vectors.

Settings (which layers, a, theta) were chosen on other prompts (see the report in the README's
"Beyond addition" section); the prompts here were not used to choose them.
"""

from __future__ import annotations

import numpy as np
import pytest

from app.core.judges import build_judge, judge_scores
from app.service.generation_ops import SteerRequest
from app.types import GenerationParams

pytestmark = pytest.mark.real_model

P = GenerationParams(max_tokens=48)


def _runs(svc, prompts, concept, **kw):
    out = []
    for p in prompts:
        chunk, settings = svc.compare(SteerRequest(prompt=p, concept=concept, params=P, **kw))
        out.append((chunk, settings))
    return out


def test_tutorial_step_runs_as_filled_for_add_ablate_and_rotate(default_service):
    from app.ui.tabs.playground import build_request
    from app.ui.tabs.tutorial import STEPS

    step = next(s for s in STEPS if s.title.startswith("Beyond adding"))
    f = {k.split(".", 1)[1]: v for k, v in step.fill.items()}
    texts = {}
    for op, param in ((f["op"], f["op_param"]), ("add", None), ("ablate", 1.0)):
        req = build_request(default_service, f["prompt"], "", f["concept"], f["layer"], f["strength"], False, "all",
                            "constant", 16, "add", 1.0, "", f["max_tokens"], 0.0, 1.0, 0,
                            op, param, f["op_layers"], f["condition"], 1.0)
        chunk, settings = default_service.compare(req)
        assert settings["op"] == op and chunk.steered_text.strip() and chunk.applied
        texts[op] = (chunk.baseline_text, chunk.steered_text)
    assert texts["rotate"][1] != texts["rotate"][0]  # the filled step visibly steers


def test_typical_projection_on_demand_matches_the_one_stored_at_extraction(default_service):
    svc = default_service
    stored = svc.concept_vectors("happy")
    assert "typical_projection" not in stored.extra  # shipped before it was stored: computed on demand
    on_demand, source = svc.typical_projection("happy", stored)
    assert source == "its positive prompts"
    fresh = svc.extract_concept("happy", save=False)
    tp = np.asarray(fresh.extra["typical_projection"])
    neg = np.asarray(fresh.extra["typical_projection_negative"])
    assert tp.shape == (svc.loaded.num_layers,) and np.all(tp[5:] > neg[5:])  # positives project higher
    again, _ = svc.typical_projection("happy", fresh)
    np.testing.assert_allclose(again, tp, rtol=1e-4)
    if np.allclose(fresh.vectors, stored.vectors, atol=1e-4):
        np.testing.assert_allclose(on_demand, tp, rtol=1e-3, atol=1e-3)
    chunk, settings = svc.compare(SteerRequest(prompt="Tell me about your weekend.", concept="happy", op="cap",
                                               op_param=0.0, params=GenerationParams(max_tokens=8)))
    assert settings["op"] == "cap" and settings["op_units"] == "its positive prompts" and chunk.applied
