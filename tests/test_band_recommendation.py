"""A recommendation with a band of layers: stored in the YAML, steered by default, offered to the playground."""

from __future__ import annotations

import dataclasses

from app.domain.requests import SteerRequest
from app.service.lab import Lab
from app.types import GenerationParams, Recommendation
from app.ui import widgets
from test_service_judges import tiny_service


def _with_rec(svc, slug, rec):
    from app.library.slugs import model_key

    svc.library.set_recommendation(slug, model_key(svc.loaded.model_id), rec)


def test_default_steering_uses_every_layer_of_the_recommended_band(tmp_path):
    svc = tiny_service(tmp_path)
    lab = Lab(svc)
    _with_rec(svc, "wordy", Recommendation(layer=1, strength=0.4, source="calibration", band=(0, 2)))
    assert svc.library.get("wordy").recommended  # stored (YAML round trip through the library)
    plan, settings = svc.build_plan(SteerRequest(prompt="w3 w4", concept="wordy", params=GenerationParams(max_tokens=4)))
    assert sorted((e.layer, e.strength) for e in plan.entries) == [(0, 0.4), (1, 0.4), (2, 0.4)]
    assert settings["source"] == "calibration"
    assert lab.recommended_band("wordy") == (0, 2)
    assert widgets.band_text(lab, "wordy") == "0:0.4, 2:0.4"
    # an explicit layer wins over the band; a concept without a band steers one layer
    plan, _ = svc.build_plan(SteerRequest(prompt="w3 w4", concept="wordy", layers=[(1, 0.2)]))
    assert [(e.layer, e.strength) for e in plan.entries] == [(1, 0.2)]
    _with_rec(svc, "plain", Recommendation(layer=2, strength=0.3))
    plan, _ = svc.build_plan(SteerRequest(prompt="w3 w4", concept="plain"))
    assert [(e.layer, e.strength) for e in plan.entries] == [(2, 0.3)]
    assert widgets.band_text(lab, "plain") == "" and widgets.band_text(lab, "") == ""
    assert widgets.band_text(lab, "wordy:0.5, plain:0.5") == ""  # a mix has no recommendation


def test_band_layers_the_model_lacks_are_dropped(tmp_path):
    svc = tiny_service(tmp_path)
    n = svc.loaded.num_layers
    _with_rec(svc, "wordy", Recommendation(layer=1, strength=0.4, band=(0, n + 3)))
    assert svc.recommended_band("wordy") == (0,)
    assert dataclasses.replace(Recommendation(1, 0.4, band=(0, 1, 2))).layer_plan() == [(1, 0.4), (0, 0.4), (2, 0.4)]


def test_efficacy_measures_a_band_setting_on_every_band_layer(tmp_path):
    import numpy as np

    from app.core.efficacy import measure
    from app.domain.requests import ExtractRequest

    svc = tiny_service(tmp_path)
    lab = Lab(svc)
    cv = lab.extract(ExtractRequest("wordy", save=False))
    concept = lab.concepts.get("wordy")
    scorer = lambda texts: np.array([len(t.split()) for t in texts], dtype=float)  # noqa: E731
    kw = dict(prompts=["w3 w4", "w5"], max_tokens=6, prompted=False)
    band = measure(svc.loaded, [concept], {"wordy": cv}, {"wordy": (1, 2.0, (0, 2))}, {"wordy": scorer}, **kw)["wordy"]
    one = measure(svc.loaded, [concept], {"wordy": cv}, {"wordy": (1, 2.0)}, {"wordy": scorer}, **kw)["wordy"]
    assert band.band == (0, 2) and band.row()["band"] == [0, 2] and one.band == ()
    assert band.texts != one.texts  # the band layers were steered too


def test_the_library_card_names_every_layer_of_a_band():
    from app.types import Concept
    from app.ui.present.library import recommendations_md

    c = Concept(slug="x", name="X", pairs=[], recommended={
        "m1": Recommendation(12, 0.08, source="calibration", band=(8, 10, 14, 16)), "m2": Recommendation(9, 0.3)})
    md = recommendations_md(c)
    assert "layers **8, 10, 12, 14, 16** (a band" in md and "layer **9**" in md


def test_calibrate_request_sizes_the_band_stage():
    import pytest

    from app.domain.requests import CalibrateRequest
    from app.errors import InputError
    from app.service.calibration_ops import search_plan

    assert search_plan(CalibrateRequest(("x",))).band_strengths == (0.05, 0.08)  # the default search tries bands
    assert search_plan(CalibrateRequest(("x",), band_strengths=())).band_strengths == ()
    assert search_plan(CalibrateRequest(("x",), band_strengths=(0.1,))).band_strengths == (0.1,)
    with pytest.raises(InputError, match="band-strengths"):
        CalibrateRequest(("x",), band_strengths=(float("nan"),))
