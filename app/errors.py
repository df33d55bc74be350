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


def user_message(exc: BaseException) -> Optional[str]:
    """A clear one-line message for expected failures; None for real bugs."""
    if isinstance(exc, (LabError, ValueError, FileNotFoundError, PermissionError, InterruptedError)):
        return str(exc) or type(exc).__name__
    return None
