"""Errors written where the results go (app.ui.errors.shows_error), as plain functions (no server)."""

from __future__ import annotations

import pytest

from app.errors import Cancelled, InputError
from app.ui.errors import error_note, guarded, shows_error


def test_a_failed_handler_yields_its_error_outputs_then_raises():
    @shows_error(lambda exc: ("note: " + error_note(exc, "The run did not run"), None))
    def plain(x):
        if x < 0:
            raise InputError("x must be >= 0")
        return "ok", x

    assert list(plain(1)) == [("ok", 1)]
    gen = plain(-1)
    first = next(gen)
    assert "did not run" in first[0] and "x must be" in first[0] and first[1] is None
    with pytest.raises(ValueError):
        next(gen)


def test_generators_keep_streaming_and_guarded_still_turns_errors_into_messages():
    import gradio as gr

    @guarded
    @shows_error(lambda exc: error_note(exc, "The stream did not run"))
    def stream(n):
        yield from range(n)
        raise InputError("boom at the end")

    out = stream(2)
    assert [next(out), next(out)] == [0, 1]
    assert "boom at the end" in next(out)
    with pytest.raises(gr.Error):
        next(out)


def test_explorer_and_creator_errors_clear_the_old_result():
    from app.ui.tabs import creator, explorer

    out = explorer.explore_error(InputError("bad prompt"))
    assert len(out) == 6 and "bad prompt" in out[0] and out[4] == []
    md, _plot, cv, note = creator.extract_error(InputError("need 2 pairs"))
    assert md == "" and cv is None and "need 2 pairs" in note
    assert "stopped" in creator.extract_error(Cancelled("cancelled"))[3]
