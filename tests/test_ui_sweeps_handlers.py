"""The sweeps tab's handlers as plain methods over a Lab on a tiny model: no server, no browser."""

from __future__ import annotations

import gradio as gr
import pytest

from app.domain import limits
from app.library.slugs import model_key
from app.service.lab import Lab
from app.ui.errors import guarded, shows_error
from app.ui.streaming import session_id
from app.ui.tabs.sweeps import SweepsHandlers, error_outputs
from test_service_judges import tiny_service

TOKENS = limits.SWEEP_MIN_TOKENS


def _progress(*args, **kwargs) -> None:
    """Stands in for gr.Progress (called with a fraction or a (done, total) pair and a description)."""


@pytest.fixture
def handlers(tmp_path):
    return SweepsHandlers(Lab(tiny_service(tmp_path)))


def _final(handlers, **kw):
    args = dict(concept="wordy", prompt="w3 w4", layers="1, 2", strengths="0.1, 0.4", max_tokens=TOKENS,
                absolute=False, op="add")
    args.update(kw)
    outs = list(handlers.sweep(**args, request=None, progress=_progress))
    return outs[-1]


def test_a_sweep_fills_the_table_picks_a_cell_and_writes_downloads(handlers):
    record, summary, _heat, _lines, _table, cell, cell_md, md, js = _final(handlers)
    assert len(record["cells"]) == 4 and {c["layer"] for c in record["cells"]} == {1, 2}
    assert cell.value in [v for _, v in cell.choices] and cell_md
    assert handlers.show_cell(record, cell.value) == cell_md
    assert "Run a sweep" in handlers.show_cell(None, None)
    assert "w3 w4" in open(md.value["path"], encoding="utf-8").read() and js.value


def test_the_repetition_penalty_reaches_every_row_of_the_sweep(handlers):
    plain = _final(handlers, max_tokens=24)[0]
    penalised = _final(handlers, max_tokens=24, repetition_penalty=2.0)[0]
    assert penalised["baseline_text"] != plain["baseline_text"], "the penalty did not reach the baseline row"
    assert [c["text"] for c in penalised["cells"]] != [c["text"] for c in plain["cells"]]
    with pytest.raises(gr.Error, match="repetition penalty"):
        _final(handlers, repetition_penalty=3.0)


def test_saving_a_cell_stores_the_recommendation_through_the_lab(handlers):
    record = _final(handlers)[0]
    note = handlers.save_recommendation(record, "2|0.4", "wordy", False)
    assert "layer 2, strength 0.4" in note
    rec = handlers.service.concepts.get("wordy").recommended[model_key("tiny-qwen2")]
    assert (rec.layer, rec.strength, rec.source) == (2, 0.4, "sweep")
    with pytest.raises(gr.Error, match="pick a cell"):
        handlers.save_recommendation(None, None, "wordy", False)


def test_a_stop_before_the_sweep_starts_stops_it(handlers):
    lab = handlers.service
    lab.arm(session_id(None))
    lab.stop(session_id(None))
    assert "Sweep stopped" in _final(handlers)[1]


def test_a_bad_list_is_written_where_the_results_go_and_raised_as_a_message(handlers):
    run = guarded(shows_error(error_outputs)(handlers.sweep))
    gen = run("wordy", "w3 w4", "1, 99", "0.1", TOKENS, False, "add", None, _progress)
    note = next(gen)[1]
    assert "did not run" in note and "99" in note
    with pytest.raises(gr.Error, match="99"):
        next(gen)
