"""The mixer's handlers as plain methods over a Lab on a tiny model: no server, no browser."""

from __future__ import annotations

import gradio as gr
import pytest

from app.errors import LabError
from app.service.lab import Lab
from app.ui.tabs.mixer import N_SLOTS, MixerHandlers
from app.ui.widgets import concept_slugs
from test_service_judges import tiny_service


@pytest.fixture
def handlers(tmp_path):
    return MixerHandlers(Lab(tiny_service(tmp_path)))


def test_rows_and_text_mirror_each_other():
    rows = ["wordy", "plain", "", ""], [0.7, -0.3, 0.0, 0.0]
    text = MixerHandlers.rows_to_text(*rows[0], *rows[1])
    assert text == "wordy:0.7, plain:-0.3"
    assert all(u == gr.update() for u in MixerHandlers.text_to_rows(text, *rows[0], *rows[1]))  # already says it
    refill = MixerHandlers.text_to_rows("plain:0.5", *rows[0], *rows[1])
    assert [u["value"] for u in refill] == ["plain", "", "", "", 0.5, 0.0, 0.0, 0.0]
    assert all(u == gr.update() for u in MixerHandlers.text_to_rows("plain:", *rows[0], *rows[1]))  # half-typed
    five = ", ".join(f"c{i}:0.1" for i in range(N_SLOTS + 1))
    assert all(u == gr.update() for u in MixerHandlers.text_to_rows(five, *rows[0], *rows[1]))


def test_generate_streams_a_mix_against_its_baseline(handlers):
    outs = list(handlers.generate("wordy:0.7, plain:0.3", False, "", "w3 w4", 1, 0.5, 6))
    assert len(outs) >= 2 and all(len(o) == 5 for o in outs)
    baseline, steered, status, md, js = outs[-1]
    assert "wordy" in open(md.value["path"], encoding="utf-8").read() and js.value
    zero = list(handlers.generate("wordy:0.7, plain:0.3", False, "", "w3 w4", 1, 0.0, 6))[-1]
    assert zero[0].split('class="pane">')[-1] == zero[1].split('class="pane">')[-1]  # strength 0: the baseline


@pytest.mark.parametrize("args, words", [
    (("", False, "", "w3 w4", 1, 0.5, 6), "write a mix"),
    (("nosuch:1", False, "", "w3 w4", 1, 0.5, 6), "nosuch"),
    (("wordy:1", False, "", "  ", 1, 0.5, 6), "prompt"),
    (("wordy:1", False, "", "w3 w4", 99, 0.5, 6), "layer"),
    (("wordy:1", False, "", "w3 w4", 1, 0.5, 6, "cap"), "cap and clamp"),
])
def test_bad_input_is_a_clear_error_before_the_model_runs(handlers, args, words):
    with pytest.raises((gr.Error, LabError)) as err:  # the page's guard shows a LabError as a gr.Error
        handlers.request(*args)
    assert words in str(err.value).lower()


def test_cosine_covers_the_mix_and_the_projected_out_concept(handlers):
    fig = handlers.cosine("wordy:1", "plain", 1)
    assert list(fig.data[0].x) == ["wordy", "plain"]
    with pytest.raises(gr.Error):
        handlers.cosine("  ", "", 1)


def test_save_mix_stores_a_concept_the_library_then_lists(handlers):
    msg = handlers.save_mix("both", "Both", "wordy:0.5, plain:0.5", True, "", False)
    assert "`both`" in msg and "normalized" in msg
    assert "both" in concept_slugs(handlers.service)
    with pytest.raises(gr.Error):
        handlers.save_mix("  ", "", "wordy:1", False, "", False)
