"""What follows a model switch (app/ui/model_follow.py), called as plain functions (no server, no model)."""

from __future__ import annotations

import re
from types import SimpleNamespace

from app.ui import model_follow as mf


class FakeService:
    is_loaded = True

    def __init__(self, n_layers=18, chat=False, model_id="gemma-3-270m"):
        self._info = SimpleNamespace(num_layers=n_layers, has_chat_template=chat, model_id=model_id)

    def info(self):
        return self._info

    def list_models(self):
        return [SimpleNamespace(model_id="SmolLM2-135M-Instruct"), SimpleNamespace(model_id="gemma-3-270m")]


def test_layer_sliders_take_the_new_depth_and_move_only_values_outside_it():
    inside = mf.layer_slider_update(18, 12, "gemma-3-270m")
    assert (inside.minimum, inside.maximum) == (0, 17) and "value" not in inside.constructor_args
    assert "0–17" in inside.info and "gemma-3-270m" in inside.info
    outside = mf.layer_slider_update(18, 25, "gemma-3-270m")
    assert outside.constructor_args["value"] == 17
    assert mf.layer_slider_update(30, None, None).constructor_args["value"] == 0


def test_layer_lists_that_no_longer_fit_are_replaced():
    assert mf.fits("6,12", 18) and mf.fits("", 18) and mf.fits("all", 18, allow_all=True)
    assert not mf.fits("6,12,18", 18) and not mf.fits("all", 18) and not mf.fits("10-20", 18)
    kept = mf.sweep_layers_update("4-8", "grid", 18)
    assert "value" not in kept  # gr.update(): the user's list stays
    new = mf.sweep_layers_update("6,12,18", "grid", 18)
    assert mf.fits(new.value, 18) and "does not fit" in new.info
    assert mf.op_layers_update("8-25", 18).value == ""
    assert "value" not in mf.op_layers_update("all", 18)


def test_a_base_model_says_prompts_are_plain_text():
    keys = ["explorer.chat", "playground.prompt", "mixer.layer", "sweeps.layers", "sweeps.kind", "header.picker"]
    chat, prompt, layer, layers, kind, picker = mf.follow_updates(
        FakeService(), keys, [True, "Hi", 25, "6,12,18", "grid", "SmolLM2-135M-Instruct"])
    assert chat.value is False and chat.interactive is False and "plain text" in chat.label
    assert "plain text" in prompt.info.lower()
    assert layer.maximum == 17 and layer.constructor_args["value"] == 17
    assert mf.fits(layers.value, 18)
    assert picker.value == "gemma-3-270m"
    chat, prompt, *_ = mf.follow_updates(FakeService(30, True, "SmolLM2-135M-Instruct"), keys,
                                         [False, "Hi", 25, "6,12,18", "grid", "gemma-3-270m"])
    assert chat.value is True and chat.interactive is True and "plain text" not in chat.label
    assert "chat template" in prompt.info


def test_on_page_load_a_slider_built_for_this_depth_keeps_its_hint():
    keys = ["playground.layer", "mixer.layer"]
    same, other = mf.follow_updates(FakeService(18), keys, [12, 12], {"playground.layer": 17, "mixer.layer": 29})
    assert "maximum" not in same  # gr.update(): nothing to change
    assert other.maximum == 17
    moved = mf.follow_updates(FakeService(18), keys, [12, 12])[0]  # after a switch: always
    assert moved.maximum == 17 and "recommended layer" in moved.info


def test_a_list_that_fits_again_gets_its_usual_help_back():
    keys = ["sweeps.layers", "sweeps.kind"]
    up = mf.follow_updates(FakeService(30), keys, ["4,7,10", "grid"], infos={"sweeps.layers": "e.g. 4-20"})[0]
    assert up.info == "e.g. 4-20" and "value" not in up.constructor_args


def test_the_playgrounds_extra_layers_follow_the_depth():
    """The multi-layer plan ('16:0.2, 20:0.1') and the operation layers name layers: after a switch to an 18-layer
    model a plan naming layer 20 is cleared with a note, and both boxes' examples fit the new depth."""
    keys = ["playground.extra_layers", "playground.op_layers"]
    plan, op_layers = mf.follow_updates(FakeService(18), keys, ["16:0.2, 20:0.1", "8-20"])
    assert plan.value == "" and "does not fit" in plan.info and "20:0.1" in plan.info
    assert op_layers.value == ""
    for ph in (plan.placeholder, op_layers.placeholder):
        assert all(0 <= int(n) <= 17 for n in re.findall(r"\d+(?=[:,\- ]|$)", ph.replace("0.2", "").replace("0.1", "")))
    kept, _ = mf.follow_updates(FakeService(18), keys, ["9:0.2, 12:0.1", "all"])
    assert "value" not in kept and kept["placeholder"] == mf.plan_placeholder(18) == "e.g. 9:0.2, 12:0.1"
    assert mf.plan_placeholder(30) == "e.g. 16:0.2, 20:0.1" and mf.op_layers_placeholder(30) == "all, 8-20 or 4, 12"
    malformed, _ = mf.follow_updates(FakeService(18), keys, ["16 0.2", ""])
    assert "value" not in malformed  # the run refuses it with its own message; a switch does not eat it


def test_the_gguf_export_layers_follow_the_depth():
    (box,) = mf.follow_updates(FakeService(18), ["library.gguf_layers"], ["8-20"])
    assert box.value == "" and "does not fit" in box.info and box.placeholder == "all, or e.g. 5-12"
    (kept,) = mf.follow_updates(FakeService(18), ["library.gguf_layers"], ["all"])
    assert "value" not in kept and kept["placeholder"] == "all, or e.g. 5-12"
    assert mf.gguf_layers_placeholder(30) == "all, or e.g. 8-20"
