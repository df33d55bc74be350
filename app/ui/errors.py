"""Turn exceptions in event handlers into clear messages in the page, never tracebacks.

Only a ``LabError`` (bad input, a missing model, a library refusal, a cancel) is shown as the user's
to fix. Anything else is a bug of the lab: it is logged with its traceback and the page says so
("internal error ... see the log") instead of blaming the input.
"""

from __future__ import annotations

import functools
import inspect
import logging
from typing import Any, Callable

import gradio as gr

from app.errors import user_message

log = logging.getLogger("steering_lab.ui")


def internal_error_text(exc: BaseException) -> str:
    """What the page says for a bug of the lab (the tests look for "something went wrong" as its mark)."""
    return (f"Internal error inside the lab ({type(exc).__name__}): something went wrong that is not your input. "
            "The server is still running; see its log for the traceback.")


def message_of(exc: BaseException) -> str:
    """The one line the page shows for ``exc`` (a ``gr.Error`` keeps its own)."""
    if isinstance(exc, gr.Error):
        return str(getattr(exc, "message", "") or exc)
    return user_message(exc) or internal_error_text(exc)


def _to_gr_error(exc: BaseException) -> gr.Error:
    """Called inside the ``except`` block, so a bug is logged with its traceback."""
    if isinstance(exc, gr.Error):
        return exc
    msg = user_message(exc)
    if msg is None:
        log.error("internal error in a UI handler", exc_info=exc)
        msg = internal_error_text(exc)
    return gr.Error(msg, print_exception=False)


def guarded(fn: Callable) -> Callable:
    """Decorator for Gradio handlers (plain functions and generators alike)."""
    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def gen_wrapper(*args: Any, **kwargs: Any):
            try:
                yield from fn(*args, **kwargs)
            except GeneratorExit:
                raise
            except Exception as exc:
                raise _to_gr_error(exc) from None

        return gen_wrapper

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            raise _to_gr_error(exc) from None

    return wrapper


def error_note(exc: BaseException, headline: str) -> str:
    """Markdown for a failed run, to be written where its result goes: ``**⚠ The sweep did not run:** ...``."""
    return f"**⚠ {headline}:** {message_of(exc)}"


def shows_error(on_error: Callable[[BaseException], Any]) -> Callable[[Callable], Callable]:
    """Decorator for handlers whose errors must stay on the page until the next run, not only in a toast.

    On an error the handler yields ``on_error(exc)`` (its outputs, with the message where the results go)
    and then raises as before (toast, error badge). The wrapper is a generator for plain handlers too.
    Put it under ``@guarded``.
    """

    def decorate(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any):
            try:
                if inspect.isgeneratorfunction(fn):
                    yield from fn(*args, **kwargs)
                else:
                    yield fn(*args, **kwargs)
            except GeneratorExit:
                raise
            except Exception as exc:
                yield on_error(exc)
                raise

        return wrapper

    return decorate
