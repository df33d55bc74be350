"""The command line shows only a LabError (and the OS errors of paths it was given) as the user's error.

A stray ValueError from deep inside is a bug: it must surface with its traceback, not as "error: ..."
in one line as if the input had been wrong (the rule of app.errors.user_message, shared with the UI).
"""

import pytest

from app import cli
from app.errors import InputError


def _run_with(monkeypatch, exc):
    def boom(args):
        raise exc

    monkeypatch.setattr(cli, "cmd_models", boom)
    return cli.main(["models"])


def test_a_lab_error_is_one_clear_line(monkeypatch, capsys):
    assert _run_with(monkeypatch, InputError("strength must be finite")) == 2
    assert capsys.readouterr().err.strip() == "error: strength must be finite"


def test_a_missing_file_is_one_clear_line(monkeypatch, capsys):
    assert _run_with(monkeypatch, FileNotFoundError("no such file: x.gguf")) == 2
    assert "error: no such file: x.gguf" in capsys.readouterr().err


@pytest.mark.parametrize("exc", [ValueError("shape mismatch"), KeyError("layer"), TypeError("bad")])
def test_an_internal_error_is_not_blamed_on_the_user(monkeypatch, capsys, exc):
    with pytest.raises(type(exc)):
        _run_with(monkeypatch, exc)
    assert "error:" not in capsys.readouterr().err
