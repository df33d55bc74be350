"""The playground's handlers as plain methods over a Lab on a tiny model: no server, no browser."""

from __future__ import annotations

import gradio as gr
import pytest

from app.service.lab import Lab
from app.ui.streaming import session_id
from app.ui.tabs.playground import PlaygroundHandlers
from test_service_judges import tiny_service

# prompt, system, concept, layer, strength, absolute, positions, schedule, schedule_length, mode, guidance,
# extra_layers, max_tokens, temperature, top_p, seed, op, op_param, op_layers, condition, threshold, repetition_penalty
ARGS = ["w3 w4", "", "wordy", 1, 0.5, False, "all", "constant", 16, "add", 1.0, "", 6, 0.0, 1.0, 0, "add", None, "",
        "", 1.0, 1.0]


def _with(**changes):
    names = ["prompt", "system", "concept", "layer", "strength", "absolute", "positions", "schedule",
             "schedule_length", "mode", "guidance", "extra_layers", "max_tokens", "temperature", "top_p", "seed", "op",
             "op_param", "op_layers", "condition", "threshold", "repetition_penalty"]
    return [changes.get(n, v) for n, v in zip(names, ARGS)]


@pytest.fixture
def handlers(tmp_path):
    return PlaygroundHandlers(Lab(tiny_service(tmp_path)))


def _text(html: str) -> str:
    """The answer a pane shows (its title left out)."""
    import re

    body = html.split('class="pane">', 1)[-1]
    return re.sub(r"<[^>]+>", "", body)


def test_generate_streams_both_answers_and_ends_with_downloads(handlers):
    outs = list(handlers.generate(*_with(strength=0.0)))
    assert len(outs) >= 2 and all(len(o) == 7 for o in outs)
    baseline, steered, status, _effects, _applied, md, js = outs[-1]
    assert _text(baseline).strip() and _text(baseline) == _text(steered)  # strength 0: the baseline itself
    assert md.value and js.value and md.interactive
    assert "w3 w4" in open(md.value["path"], encoding="utf-8").read()


def test_a_repetition_penalty_reaches_both_answers_and_the_settings_line(handlers):
    plain = list(handlers.generate(*_with(strength=0.0, max_tokens=24)))[-1]
    penalised = list(handlers.generate(*_with(strength=0.0, max_tokens=24, repetition_penalty=2.0)))[-1]
    assert _text(penalised[0]) == _text(penalised[1])  # strength 0: the baseline itself, penalised alike
    assert _text(penalised[0]) != _text(plain[0]), "the penalty did not reach the baseline row"
    assert "repetition penalty 2" in penalised[2] and "repetition penalty" not in plain[2]


def test_a_stop_armed_before_the_run_starts_stops_it(handlers):
    lab = handlers.service
    lab.arm(session_id(None))  # the click armed a token ...
    assert lab.stop(session_id(None)) == 1  # ... and Stop came while the run still waited in the queue
    outs = list(handlers.generate(*ARGS))
    assert "stopped" in outs[-1][2].lower()
    assert "stopped" not in list(handlers.generate(*ARGS))[-1][2].lower()  # the next run starts clean


@pytest.mark.parametrize("changes, words", [
    (dict(prompt="  "), "prompt"),
    (dict(extra_layers="1:0.2"), "only once"),
    (dict(extra_layers="1:zero"), "not a strength"),
    (dict(strength=99.0), "strength"),
    (dict(repetition_penalty=0.5), "repetition penalty"),
    (dict(repetition_penalty=2.5), "repetition penalty"),
])
def test_bad_values_are_refused_naming_the_field(handlers, changes, words):
    with pytest.raises((gr.Error, ValueError), match=words):
        list(handlers.generate(*_with(**changes)))


def test_picking_a_concept_moves_the_sliders_to_its_setting(handlers):
    layer, strength, absolute = handlers.concept_picked("wordy")
    lab = handlers.service
    rec_layer, rec_strength, relative, _ = lab.recommended_setting("wordy", lab.resolve_vectors("wordy")[0])
    assert layer.value == rec_layer and strength.value == rec_strength and absolute.value is (not relative)
    assert "recommended" in layer.info
    assert handlers.toggle_absolute(True).maximum > handlers.toggle_absolute(False).maximum
