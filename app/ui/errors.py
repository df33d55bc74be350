"""Turn exceptions in event handlers into clear messages in the page, never tracebacks."""

from __future__ import annotations

import functools
import inspect
import logging
from typing import Any, Callable

import gradio as gr

from app.errors import user_message

log = logging.getLogger("steering_lab.ui")


def _to_gr_error(exc: BaseException) -> gr.Error:
    if isinstance(exc, gr.Error):
        return exc
    msg = user_message(exc)
    if msg is None:
        log.exception("unexpected error in a UI handler")
        msg = f"Something went wrong inside the lab ({type(exc).__name__}). The server is still running; details are in its log."
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
    msg = getattr(exc, "message", None) if isinstance(exc, gr.Error) else user_message(exc)
    return f"**⚠ {headline}:** {msg or 'something went wrong inside the lab (details in the server log)'}"


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
