"""Errors the user can fix, kept free of MLX and Gradio so every layer can raise them."""

from __future__ import annotations

from typing import Optional


class LabError(Exception):
    """Base of expected, user-facing failures: the message says what to do."""


class InputError(LabError, ValueError):
    """Bad user input (empty prompt, NaN strength, unknown layer, ...)."""


class ModelLoadError(LabError, RuntimeError):
    """A model could not be loaded; says what was tried and what is available."""


class Cancelled(LabError):
    """The job was cancelled; nothing partial was kept."""


class CLIError(LabError):
    """A command-line usage error."""


def user_message(exc: BaseException, also: tuple[type[BaseException], ...] = ()) -> Optional[str]:
    """The message of an expected failure (a ``LabError``, or one of ``also``); None for anything else.

    Only ``LabError`` is the user's to fix: a stray ``ValueError`` deep inside is a bug of the lab and
    must be logged with its traceback, not shown as if the input were wrong. The command line passes
    ``also`` for the OS errors of the paths it was given."""
    if isinstance(exc, (LabError, *also)):
        return str(exc) or type(exc).__name__
    return None
