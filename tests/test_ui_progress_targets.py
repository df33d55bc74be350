"""Layout containers are never progress targets: else every streamed message re-snapshots the page."""

from __future__ import annotations

import gradio as gr

from app.ui.progress_targets import container_progress_targets, keep_progress_off_containers


def _demo():
    with gr.Blocks() as demo:
        with gr.Tabs() as tabs:
            with gr.Tab("a", id="a"):
                box = gr.Textbox()
                go = gr.Button()
                other = gr.Button()
                only = gr.Button()
            with gr.Tab("b", id="b"):
                with gr.Accordion("more") as acc:
                    num = gr.Number()
        go.click(lambda: (gr.Tabs(selected="b"), "x"), None, [tabs, box])
        other.click(lambda: (gr.Accordion(open=True), 1), None, [acc, num], show_progress_on=[acc])
        only.click(lambda: gr.Tabs(selected="a"), None, [tabs])
    return demo, tabs, box, acc


def test_events_show_progress_on_their_other_outputs_not_on_containers():
    demo, tabs, box, acc = _demo()
    assert {t for _, t in container_progress_targets(demo.get_config_file())} == {"tabs", "accordion"}
    assert keep_progress_off_containers(demo) == 2  # the explicit show_progress_on is left as its author chose
    fns = list(demo.fns.values())
    assert fns[0].show_progress_on == [box] and fns[0].outputs == [tabs, box]  # the tab still switches
    assert fns[1].show_progress_on == [acc]
    assert fns[2].show_progress_on == []  # nothing else to show progress on
    left = container_progress_targets(demo.get_config_file())
    assert left == [(fns[1]._id, "accordion")]


def test_the_lab_page_has_no_container_among_its_progress_targets(tmp_path, monkeypatch):
    monkeypatch.setenv("STEERING_LAB_LIBRARY", str(tmp_path / "lib"))
    from app.service.model_service import ModelService
    from app.ui.server import build_app

    config = build_app(ModelService()).get_config_file()
    types = {c["id"]: c.get("type") for c in config["components"]}
    assert any(types.get(i) == "tabs" for d in config["dependencies"] for i in d["outputs"])  # tabs are switched
    assert container_progress_targets(config) == []
