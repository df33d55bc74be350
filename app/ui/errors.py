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
