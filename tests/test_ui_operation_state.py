"""The playground's operation fields in the URL, and a sweep cell of any operation sent to the playground
(plain functions, no server)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from app.ui import urlstate

OPS = {"add": (-8.0, 8.0), "ablate": (0.0, 1.0), "rotate": (-180.0, 180.0)}
KNOWN = {"happy", "calm", "angry"}


class FakeService:
    def operations(self):
        return [SimpleNamespace(name="add", param="strength", lo=-8.0, hi=8.0, default=0.3, unit="relative"),
                SimpleNamespace(name="rotate", param="theta", lo=-180.0, hi=180.0, default=10.0, unit="degrees")]


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
