"""The header's model picker switches to Gemma 3 270M (base) and back, through the HTTP API."""

from __future__ import annotations

import pytest
from lab_server import running_lab

from app.core import registry

pytestmark = pytest.mark.real_model
GEMMA = registry.EXTRAS["gemma3-270m"]


def _text(value) -> str:
    return value.get("value", "") if isinstance(value, dict) else str(value)


def _choices(value) -> list[str]:
    raw = value.get("choices", []) if isinstance(value, dict) else []
    return [c[0] if isinstance(c, (list, tuple)) else c for c in raw]


def test_picker_switches_to_the_base_model_and_back(tmp_path):
    if not (GEMMA.folder / "config.json").exists():
        pytest.skip(f"GEMMA NOT PREPARED: {GEMMA.folder} is missing; run `steering-lab prepare --extra "
                    "gemma3-270m` (./setup_local_cache.sh --dev does it). This test did NOT run.")
    from gradio_client import Client

    with running_lab(tmp_path / "library") as url:
        client = Client(url, verbose=False)
        line, picker = client.predict(GEMMA.model_id, api_name="/load_model")
        assert "gemma-3-270m" in _text(line) and "18 layers" in _text(line) and "base model" in _text(line)
        assert {"gemma-3-270m", "SmolLM2-135M-Instruct"} <= set(_choices(picker))
        out = client.predict("The capital of France is", "", True, api_name="/explore")
        assert "Paris" in str(out)  # the logit lens of the base model, through the UI
        line, _ = client.predict("SmolLM2-135M-Instruct", api_name="/load_model")
        assert "30 layers" in _text(line) and "base model" not in _text(line)
