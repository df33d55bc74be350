"""The playground's operation fields in the URL, and a sweep cell of any operation sent to the playground
(plain functions, no server)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from app.ui import urlstate

OPS = {"add": (-8.0, 8.0), "ablate": (0.0, 1.0), "rotate": (-180.0, 180.0)}
KNOWN = {"happy", "calm", "angry"}


class FakeService:
    is_loaded = False  # 30 layers

    def operations(self):
        def op(name, param, lo, hi, default, unit):
            return SimpleNamespace(name=name, param=param, lo=lo, hi=hi, default=default, unit=unit, help=name,
                                   hook_point="residual")

        return [op("add", "strength", -8.0, 8.0, 0.3, "relative"), op("ablate", "a", 0.0, 1.0, 1.0, "share"),
                op("cap", "t", -10.0, 10.0, 0.5, "typical projection"),
                op("rotate", "theta", -180.0, 180.0, 10.0, "degrees")]


def test_operation_fields_are_read_from_the_url_and_checked():
    q = {"tab": "playground", "concept": "calm", "op": "rotate", "op_param": "20", "op_layers": "8-12",
         "condition": "angry", "threshold": "0.5"}
    pg = urlstate.read_params(q, 30, KNOWN, ops=OPS)["playground"]
    assert (pg["op"], pg["op_param"], pg["op_layers"], pg["condition"], pg["threshold"]) == \
        ("rotate", 20.0, "8-12", "angry", 0.5)
    assert urlstate.read_params({"op": "ablate", "op_layers": "all"}, 30, KNOWN, ops=OPS)["playground"]["op_layers"] == "all"
    bad = {"op": "explode", "op_param": "20", "condition": "nosuch", "threshold": "0.5"}
    assert urlstate.read_params(bad, 30, KNOWN, ops=OPS)["playground"] == {}
    out_of_range = urlstate.read_params({"op": "ablate", "op_param": "5", "op_layers": "10-40",
                                         "condition": "calm", "threshold": "99"}, 30, KNOWN, ops=OPS)["playground"]
    assert out_of_range == {"op": "ablate", "condition": "calm"}
    assert "op" not in urlstate.read_params({"op": "rotate"}, 30, KNOWN)["playground"]  # no registry: nothing


def test_the_url_writer_knows_every_playground_key():
    for key in urlstate.PLAYGROUND_KEYS:
        assert f'put("{key}"' in urlstate.PLAYGROUND_JS or (key == "abs" and 'put("abs"' in urlstate.PLAYGROUND_JS)


def test_a_sweep_cell_of_another_operation_fills_the_operation_fields():
    import gradio as gr

    from app.ui.tabs.sweeps import use_setting_updates

    data = {"prompt": "Hi", "concept": "happy", "op": "rotate", "relative": True}
    prompt, concept, layer, strength, absolute, op, op_param, advanced = use_setting_updates(FakeService(), data, "12|20.0")
    assert concept["value"] == "happy" and layer["value"] == 12
    assert "value" not in strength  # the strength slider is not the rotation angle
    assert op["value"] == "rotate" and op_param.value == "20" and "theta" in op_param.label
    assert advanced.open is True
    add = use_setting_updates(FakeService(), {**data, "op": "add"}, "12|0.3")
    assert add[3]["value"] == pytest.approx(0.3) and add[5]["value"] == "add"
    with pytest.raises(gr.Error):
        use_setting_updates(FakeService(), None, "12|0.3")


def test_the_mixer_offers_add_ablate_and_rotate_and_says_why_not_cap():
    import gradio as gr

    from app.ui.tabs import mixer

    assert mixer.mix_op_fields(FakeService(), "rotate", "20")["op"] == "rotate"
    assert mixer.mix_op_fields(FakeService(), "rotate", "20")["op_param"] == 20.0
    assert mixer.mix_op_fields(FakeService(), "add", "")["op_param"] is None
    with pytest.raises(gr.Error, match="cap and clamp need"):
        mixer.mix_op_fields(FakeService(), "cap", "0.5")
    assert "cap" in mixer.MIX_OPS_NOTE and "no examples of its own" in mixer.MIX_OPS_NOTE
