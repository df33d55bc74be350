"""Only a LabError is the user's to fix; any other exception in a handler is a bug: logged with its
traceback, and the page says "internal error" instead of blaming the input (no server needed)."""

from __future__ import annotations

import logging

import gradio as gr
import pytest

from app.errors import InputError
from app.library.errors import ConceptNotFound
from app.ui.errors import error_note, guarded, shows_error


def _boom(*_):
    {}["no-such-key"]  # a bug deep inside, not the user's input


def _stray_value_error(*_):
    raise ValueError("could not broadcast shapes (3,) and (4,)")  # numpy-style, not the user's fault


@pytest.mark.parametrize("handler", [_boom, _stray_value_error], ids=["KeyError", "plain ValueError"])
def test_a_non_lab_exception_is_an_internal_error_logged_with_its_traceback(handler, caplog):
    with caplog.at_level(logging.ERROR, logger="steering_lab.ui"):
        with pytest.raises(gr.Error) as err:
            guarded(handler)("x")
    msg = err.value.message
    assert "internal error" in msg.lower() and "log" in msg
    assert "broadcast" not in msg and "no-such-key" not in msg  # the bug's text is for the log, not the page
    logged = [r for r in caplog.records if r.exc_info]
    assert logged, "the bug was not logged with its exception"
    text = caplog.text
    assert "Traceback" in text and handler.__name__ in text  # the traceback names the failing function


def test_generator_handlers_report_bugs_the_same_way(caplog):
    @guarded
    def stream():
        yield 1
        _stray_value_error()

    out = stream()
    assert next(out) == 1
    with caplog.at_level(logging.ERROR, logger="steering_lab.ui"), pytest.raises(gr.Error) as err:
        next(out)
    assert "internal error" in err.value.message.lower() and "Traceback" in caplog.text


@pytest.mark.parametrize("exc", [InputError("prompt is empty"), ConceptNotFound("no concept named 'x'")])
def test_lab_errors_are_shown_as_they_are_and_not_logged_as_bugs(exc, caplog):
    def handler():
        raise exc

    with caplog.at_level(logging.ERROR, logger="steering_lab.ui"), pytest.raises(gr.Error) as err:
        guarded(handler)()
    assert err.value.message == str(exc)
    assert not [r for r in caplog.records if r.exc_info]


def test_error_notes_say_internal_error_for_bugs_and_the_message_for_lab_errors():
    assert "prompt is empty" in error_note(InputError("prompt is empty"), "The run did not run")
    note = error_note(ValueError("shapes differ"), "The run did not run")
    assert "internal error" in note.lower() and "shapes differ" not in note

    @shows_error(lambda exc: error_note(exc, "The run did not run"))
    def plain():
        raise ValueError("shapes differ")

    gen = plain()
    assert "internal error" in next(gen).lower()
    with pytest.raises(ValueError):
        next(gen)
