"""Module-level tab handlers, called as plain functions (no server, no model)."""

from __future__ import annotations

import gradio as gr

from app.domain import limits
from app.domain.parse import parse_floats
from app.errors import InputError
from app.ui.tabs import sweeps, tutorial


def test_kind_of_sweep_follows_the_lists():
    assert sweeps.kind_of("12", "0.1, 0.3, 0.6") == "strength sweep"
    assert sweeps.kind_of("4, 8, 12", "0.3") == "layer sweep"
    assert sweeps.kind_of("4-8", "0.1,0.2") == "grid"
    assert sweeps.kind_of("4-", "0.1") is None  # half typed: leave the radio alone
    assert sweeps.kind_update("x", "0.1") == gr.update()


def test_a_failed_sweep_replaces_old_results_with_the_error():
    out = sweeps.error_outputs(InputError("strength 1.5 is out of range"))
    assert out[0] is None and "did not run" in out[1] and "1.5" in out[1]
    assert out[2] is None and out[4] is None  # no old heatmap or table under the error


def test_every_tutorial_example_is_inside_the_limits():
    for step in tutorial.STEPS:
        fill = step.fill
        if "sweeps.strengths" in fill:
            parse_floats(fill["sweeps.strengths"], limit=limits.strength_limit(True))  # raises if not
            assert sweeps.kind_of(fill["sweeps.layers"], fill["sweeps.strengths"]) == fill["sweeps.kind"]
        if "playground.strength" in fill:
            assert abs(fill["playground.strength"]) <= limits.strength_limit(True)


def test_tutorial_text_matches_the_app():
    bodies = " ".join(s.body + s.after for s in tutorial.STEPS)
    assert "Extract vectors" in bodies and "Run sweep" in bodies and "coherence score fall" not in bodies
    assert "10× longer" not in bodies and "{SINK}" in tutorial.STEPS[1].body  # the sink ratio is measured, not guessed
    assert "·" in tutorial.STEPS[0].body  # leading-space tokens are explained


def test_try_it_clears_the_target_tab_results():
    assert set(tutorial.reset_values("playground")) == {"playground.baseline", "playground.steered", "playground.status",
                                                         "playground.extra_layers", "playground.effects", "playground.op",
                                                         "playground.op_param", "playground.op_layers",
                                                         "playground.condition", "playground.threshold"}
    assert tutorial.reset_values("playground")["playground.extra_layers"] == ""  # a picked concept's band is not kept
    # step 7 leaves rotate/ablate behind; every other playground step runs plain addition again
    for step in tutorial.STEPS:
        if step.tab == "playground":
            wanted = {**tutorial.reset_values("playground"), **step.fill}
            assert wanted["playground.op"] == step.fill.get("playground.op", "add")
    assert tutorial.reset_values("sweeps")["sweeps.heatmap"] is None
    rot = tutorial._fill_value("playground.op_param", "15", 7, {"label": "Operation parameter: theta", "info": "-180 to 180"})
    assert rot["value"] == "15" and rot["info"] == "-180 to 180" and "theta" in rot["label"]
    hint = tutorial._fill_value("playground.layer", 12, 4)
    assert hint["value"] == 12 and "tutorial step 4" in hint["info"]


def test_page_load_handlers_that_share_a_component_run_in_order():
    from app.ui.server import on_load_chains

    a, b, c, d = object(), object(), object(), object()
    entries = [(None, [], [a, b]),  # header
               (None, [], [b, c]),  # depth fix: writes b too, so after the header
               (None, [], [d]),  # shares nothing: starts on load
               (None, [], [c])]  # the link's values: after the depth fix, so they are what the page shows
    assert on_load_chains(entries) == [None, 0, None, 1]
