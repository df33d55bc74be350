"""On the real default model: the shipped `happy` concept at its recommended setting works."""

from __future__ import annotations

import pytest

from app.library.slugs import model_key
from app.types import GenerationParams

pytestmark = pytest.mark.real_model

PROMPTS = ["Describe your morning routine.", "What is your opinion of rainy weather?", "Write two sentences about your job."]


def test_happy_recommended_setting_raises_the_judge_score(default_service):
    """Judged by VADER sentiment (independent of the vector), on prompts calibration never saw."""
    svc = default_service
    concept = svc.library.get("happy")
    rec = concept.recommended[model_key(svc.info().model_id)]
    assert rec.source == "calibration"
    scores = []
    for prompt in PROMPTS:
        res = svc.sweep(prompt, "happy", [rec.layer], [rec.strength], GenerationParams(max_tokens=24),
                        relative=rec.strength_mode == "relative")
        cell = res.cells[0]
        scores.append(cell.judge_score)
        assert cell.text.strip() and cell.text != res.baseline_text
    assert sum(scores) / len(scores) > 0, scores
    assert sum(s > 0 for s in scores) >= 2, scores


def test_shipped_vectors_load_without_extraction(default_service):
    svc = default_service
    info = svc.info()
    cv = svc.library.load_vectors("happy", info.model_id, info.fingerprint, info.hidden_size, info.num_layers)
    assert cv is not None, "precomputed vectors for the default model must ship in assets/vectors"
    assert cv.vectors.shape == (info.num_layers, info.hidden_size)


def test_cli_generate_uses_recommended_setting(default_service):
    import json
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "app", "generate", "--prompt", "Tell me about your weekend.", "--concept", "happy",
         "--max-tokens", "12", "--json"],
        capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    rec = default_service.library.get("happy").recommended[model_key(default_service.info().model_id)]
    assert data["settings"]["layers"][0]["layer"] == rec.layer
    assert data["settings"]["layers"][0]["strength"] == rec.strength
    assert data["settings"]["source"] == "calibration"
    assert data["baseline"] and data["steered"]


def test_cli_generate_with_a_repetition_penalty_says_so_and_changes_the_baseline():
    import json
    import subprocess
    import sys

    def run(*extra):
        out = subprocess.run([sys.executable, "-m", "app", "generate", "--prompt", "Tell me about your weekend.",
                              "--concept", "happy", "--max-tokens", "32", "--no-prompted", *extra],
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        return out.stdout

    plain = json.loads(run("--json"))
    penalised = json.loads(run("--json", "--repetition-penalty", "1.5"))
    assert plain["settings"]["repetition_penalty"] == 1.0 and penalised["settings"]["repetition_penalty"] == 1.5
    assert penalised["baseline"] != plain["baseline"], "the penalty did not reach the baseline row"
    assert "repetition penalty 1.5 (every row)" in run("--repetition-penalty", "1.5")
