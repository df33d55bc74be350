"""Operations beyond addition on the bundled model, judged by means independent of the vectors.

Settings (which layers, a, theta) were chosen on other prompts (see the report in the README's
"Beyond addition" section); the prompts here were not used to choose them.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from app.core.judges import build_judge, judge_scores
from app.domain.requests import SteerRequest
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
    shipped = svc.concept_vectors("happy")
    # vectors saved before the typical projection was stored carry none: it is computed on demand
    stored = dataclasses.replace(shipped, extra={k: v for k, v in shipped.extra.items()
                                                 if not k.startswith("typical_projection")})
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
    assert settings["op"] == "cap" and settings["op_units"] == "stored with the vectors" and chunk.applied  # the shipped ones now carry it


# Settings chosen on other prompts ("Write a short note to your landlord about a broken heater.",
# "Describe your ideal holiday.", "Explain why people should recycle."; 48 greedy tokens): ablating formal
# at every layer under a formal system prompt moved the formal judge by -23, -31, -8 (every other layer:
# loops); rotating happy by 10 degrees at its recommended layer moved VADER by +1.33, -0.01, +0.53
# (20 degrees: one loop). Judged here on these prompts, which chose nothing.
VALIDATION = ["Write a message to a colleague asking for a meeting next week.",
              "Tell me about your favourite book.",
              "Describe a visit to the dentist.",
              "Explain how to bake bread."]


def _deltas(svc, concept, **kw) -> np.ndarray:
    judge = build_judge(svc.library.get(concept).judge)
    out = []
    for chunk, settings in _runs(svc, VALIDATION, concept, **kw):
        base, steered = judge_scores(judge, [chunk.baseline_text, chunk.steered_text])
        out.append(steered - base)
    return np.array(out)


@pytest.fixture(scope="module")
def mean_diff_service(default_service, tmp_path_factory):
    """The loaded model over a throwaway library without shipped vectors, so every concept's vectors are
    extracted with the method its YAML names; ``formal`` there is the shipped concept with ``method: mean_diff``."""
    from app import paths
    from app.library import ConceptLibrary
    from app.service.model_service import ModelService

    lib = ConceptLibrary(tmp_path_factory.mktemp("library"), paths.SHIPPED_CONCEPTS, None)
    svc = ModelService(loaded=default_service.loaded, library=lib)
    lib.save(dataclasses.replace(lib.get("formal"), method="mean_diff"), overwrite=True)
    return svc


def test_ablating_formal_at_every_layer_lowers_the_formality_judge(mean_diff_service):
    """Even when asked to be formal, the model cannot be once the direction is gone at every layer.

    The setting was chosen (on other prompts) with formal's mean_diff vectors, so that is what is ablated here,
    whatever method the calibration ships for formal (since 2026-12-07: `response`, whose ablation moved the judge
    by -12, +6, +9, -16 on these prompts: the same mean sign, on only 2 of 4)."""
    svc = mean_diff_service
    assert svc.concept_vectors("formal").method == "mean_diff"
    n = svc.loaded.num_layers
    d = _deltas(svc, "formal", op="ablate", op_param=1.0, op_layers=tuple(range(n)),
                system="Write in a highly formal, professional register.")
    # the formal judge: minus Flesch reading ease (higher = harder to read = more formal)
    assert d.mean() < 0 and (d < 0).sum() >= len(d) // 2 + 1, d


def test_rotating_towards_happy_raises_vader_sentiment(default_service):
    """Measured 2026-12-01: VADER deltas -0.08, +1.03, -0.001, +0.96 (mean +0.48). A first version also
    asked for a rise on most prompts and failed (2 of 4 rose, 2 did not move): rotation by 10 degrees
    raises sentiment on average and lowers it on none by more than noise, not on every prompt."""
    d = _deltas(default_service, "happy", op="rotate", op_param=10.0)
    assert d.mean() > 0.1 and d.min() > -0.2, d
