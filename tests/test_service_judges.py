"""The service's judge wiring on a tiny model: declared judges score every row of a run, the
prompted row uses the concept's system prompt, and a default probe is never trained unasked."""

from __future__ import annotations

import app.core  # noqa: F401

import pytest

import tiny_models
from app.core.models import from_memory
from app.library import ConceptLibrary
from app.domain.requests import SteerRequest
from app.service.judge_ops import concept_slug, prompted_system
from app.service.model_service import ModelService
from app.types import Concept, ContrastPair, GenerationParams, JudgeSpec, SystemPromptPair

WORDS = [f"w{i}" for i in range(40, 52)]


def tiny_service(tmp_path):
    from mlx_lm.tokenizer_utils import TokenizerWrapper

    model, config = tiny_models.build("qwen2", 0)
    lm = from_memory(model, TokenizerWrapper(tiny_models.tiny_tokenizer(config["vocab_size"])), config, "tiny-qwen2")
    lib = ConceptLibrary(tmp_path / "lib", shipped_concepts=tmp_path / "none")
    pairs = [ContrastPair(f"{WORDS[i]} {WORDS[i + 1]} yes", f"{WORDS[i + 1]} {WORDS[i]} no") for i in range(6)]
    lib.save(Concept(slug="wordy", name="Wordy", pairs=pairs, judge=JudgeSpec("length", 1),
                     system_prompts=SystemPromptPair("w1 w2 w3 w4 w5 w6 w7", "w8")))
    lib.save(Concept(slug="plain", name="Plain", pairs=pairs))
    return ModelService(loaded=lm, library=lib)


def test_helpers():
    assert concept_slug("random:sad") == "sad" and concept_slug("happy:0.7, sad:0.3") is None
    c = Concept(slug="x", name="Sarcastic", pairs=[])
    assert prompted_system(c) == "Respond in a sarcastic way."
    assert prompted_system(c, "Be short.") == "Respond in a sarcastic way.\n\nBe short."


def test_compare_scores_baseline_prompted_and_steered_with_the_declared_judge(tmp_path):
    svc = tiny_service(tmp_path)
    req = SteerRequest(prompt="w3 w4", concept="wordy", layers=[(1, 0.5)], prompted=True,
                       params=GenerationParams(max_tokens=8))
    chunk, settings = svc.compare(req)
    judge = chunk.stats["judge"]
    assert judge["kind"] == "length" and settings["prompted_system"] == "w1 w2 w3 w4 w5 w6 w7"
    assert chunk.prompted_text is not None and chunk.stats["prompted_run"] == "same batch"
    for row, text in (("baseline", chunk.baseline_text), ("prompted", chunk.prompted_text),
                      ("steered", chunk.steered_text)):
        assert judge[row] == len(text.split())
    assert judge["steered_change"] == judge["steered"] - judge["baseline"]
    off, _ = svc.compare(SteerRequest(prompt="w3 w4", concept="wordy", layers=[(1, 0.5)],
                                      params=GenerationParams(max_tokens=8)))
    assert off.prompted_text is None and "prompted" not in off.stats["judge"]
    assert off.baseline_text == chunk.baseline_text and off.steered_text == chunk.steered_text


def test_default_probe_is_only_trained_when_asked(tmp_path):
    svc = tiny_service(tmp_path)
    assert svc.judge_spec("plain") == JudgeSpec("probe")
    assert svc.judge_for("plain") is None  # never trained behind a run's back
    chunk, _ = svc.compare(SteerRequest(prompt="w3 w4", concept="plain", layers=[(1, 0.5)],
                                        params=GenerationParams(max_tokens=4)))
    assert "judge" not in chunk.stats
    probe = svc.judge_for("plain", train=True)
    assert probe.kind == "probe" and 0.0 <= probe.accuracy <= 1.0
    assert svc.judge_for("plain") is probe  # now cached, so runs use it
    assert svc.judge_summary("plain")["accuracy"] == probe.accuracy
    assert svc.judge_for("happy:0.5, plain:0.5") is None


def test_sweep_uses_the_judge_and_the_prompted_row(tmp_path):
    svc = tiny_service(tmp_path)
    res = svc.sweep("w3 w4", "wordy", [1], [0.0, 0.5], GenerationParams(max_tokens=6))
    assert res.judge["kind"] == "length" and res.prompted_text is not None
    assert all(c.judge_score is not None for c in res.cells)
    assert res.cell(1, 0.0).judge_score == 0.0
