"""The creator's handlers as plain methods over a Lab on a tiny model: template, extraction, Stop, save."""

from __future__ import annotations

import gradio as gr
import pytest

from app.service.lab import Lab
from app.ui.errors import guarded, shows_error
from app.ui.streaming import session_id
from app.ui.tabs.creator import EXTRACT_SCOPE, CreatorHandlers, extract_error
from test_service_judges import tiny_service


def _progress(*args, **kwargs) -> None:
    """Stands in for gr.Progress."""


@pytest.fixture
def handlers(tmp_path):
    return CreatorHandlers(Lab(tiny_service(tmp_path)))


def _form(handlers):
    name, slug, desc, cat, rows, sp, sn, *_ = handlers.load_template("wordy")
    return [name, slug, desc, cat, rows, sp, sn]


def _extract(handlers, form):
    run = guarded(shows_error(extract_error)(handlers.extract))
    return list(run(*form, "mean_diff", None, _progress))


def test_a_template_extracts_and_saves_with_its_vectors(handlers):
    form = _form(handlers)
    assert form[:2] == ["My Wordy", "my-wordy"] and len(form[4]) == 6
    card, _figure, cv, status = _extract(handlers, form)[-1]
    assert cv is not None and cv.num_layers == handlers.service.num_layers() and "Extracted 6 pairs" in status
    msg, slug, _ = handlers.save(*form, False, cv)
    assert slug == "my-wordy" and "ready to steer" in msg
    assert handlers.service.concepts.vector_status("my-wordy") == "ready"
    with pytest.raises(gr.Error, match="already"):
        handlers.save(*form, False, cv)


def test_the_creators_stop_reaches_only_the_extraction(handlers):
    lab, form = handlers.service, _form(handlers)
    lab.arm(session_id(None, EXTRACT_SCOPE))
    lab.stop(session_id(None))  # the playground's Stop of the same page: not the extraction
    assert _extract(handlers, form)[-1][2] is not None

    lab.arm(session_id(None, EXTRACT_SCOPE))  # an extraction waiting for the model ...
    handlers.stop_extract(None)  # ... and the creator's Stop
    gen = guarded(shows_error(extract_error)(handlers.extract))(*form, "mean_diff", None, _progress)
    outs = []
    with pytest.raises(gr.Error, match="cancel"):
        for out in gen:
            outs.append(out)
    assert "Extraction stopped" in outs[-1][3] and outs[-1][2] is None


def test_the_pairs_table_grows_shrinks_and_takes_pasted_lines():
    rows = CreatorHandlers.add_row([["a", "b"]])
    assert rows == [["a", "b"], ["", ""]]
    assert CreatorHandlers.remove_last(rows) == [["a", "b"]]
    assert CreatorHandlers.remove_last([["a", "b"]]) == [["", ""]]  # never an empty table
    table, left = CreatorHandlers.append_pasted([["a", "b"]], "I love it | I see it\nno bar here")
    assert ["I love it", "I see it"] in table and left  # the bad line stays in the box to be fixed
    table, left = CreatorHandlers.append_pasted([["", ""]], "x | y")
    assert ["x", "y"] in table and left == ""
    with pytest.raises(gr.Error):
        CreatorHandlers.append_pasted([["", ""]], "  ")


def test_the_slug_follows_the_name_until_typed_by_hand():
    assert CreatorHandlers.name_typed("Very Sleepy", "", False).value == "very-sleepy"
    assert CreatorHandlers.name_typed("Very Sleepy", "mine", True).value is None  # kept as the user typed it
