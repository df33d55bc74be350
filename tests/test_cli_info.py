"""The command line as a user runs it: a real subprocess, real exit codes, real stderr."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from app import paths

REPO = Path(__file__).resolve().parent.parent
PY = REPO / ".venv" / "bin" / "python"
PYTHON = str(PY if PY.exists() else Path(sys.executable))


def run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*args], cwd=REPO, capture_output=True, text=True, timeout=timeout)


@pytest.mark.real_model
def test_info_json_describes_the_default_model():
    proc = run(PYTHON, "-m", "app", "info", "--json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["model_id"] == paths.DEFAULT_MODEL_ID
    assert info["family"] == "llama"
    assert info["num_layers"] == 30 and info["hidden_size"] == 576
    assert info["dtype"] == "float32"
    assert info["vocab_size"] == 49152 and info["has_chat_template"] is True
    assert len(info["fingerprint"]) == 16
    if platform.system() == "Linux" and platform.machine() == "x86_64":
        assert "OpenBLAS" in info["blas"], info["blas"]
        assert info["device"] == "cpu"


def test_info_with_a_missing_model_is_one_error_line():
    proc = run(PYTHON, "-m", "app", "info", "--model", "/nonexistent")
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error:") and "/nonexistent" in lines[0]
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""


def test_console_script_help():
    script = REPO / ".venv" / "bin" / "steering-lab"
    cmd = [str(script)] if script.exists() else [PYTHON, "-m", "app"]
    proc = run(*cmd, "--help", timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: steering-lab")
    for sub in ("serve", "info", "models", "prepare"):
        assert sub in proc.stdout
    proc = run(*cmd, "info", "--help", timeout=120)
    assert proc.returncode == 0 and "--model" in proc.stdout and "--json" in proc.stdout


def test_unknown_subcommand_is_a_usage_error():
    proc = run(PYTHON, "-m", "app", "no-such-command", timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "invalid choice" in proc.stderr
