"""Sweeps read the concept's judge: per-cell judge change, the recommendation, the prompted reference."""

from __future__ import annotations

import numpy as np
import pytest

import app.core  # noqa: F401
import tiny_models
from app.core.judges import build_judge, judge_scores
from app.core.models import from_memory
from app.core.sweeps import SweepCell, recommend, run_sweep
from app.types import ConceptVectors, GenerationParams, JudgeSpec


def make_lm(family):
    from mlx_lm.tokenizer_utils import TokenizerWrapper

    model, config = tiny_models.build(family, 0)
    return from_memory(model, TokenizerWrapper(tiny_models.tiny_tokenizer(config["vocab_size"])), config, family)


def cell(layer, strength, concept, judge, coherent=True):
    return SweepCell(layer=layer, strength=strength, text="", n_tokens=1, finish="length", concept_score=concept,
                     perplexity=1.0, ppl_ratio=1.0, distinct2=1.0, longest_repeat=0, coherent=coherent,
                     degenerate=False, judge_score=judge)


def test_recommend_follows_the_judge_not_the_projection():
    cells = [cell(6, 0.2, concept=5.0, judge=-0.3), cell(12, 0.3, concept=1.0, judge=0.6),
             cell(18, 0.5, concept=9.0, judge=0.9, coherent=False)]
    assert recommend(cells) == (12, 0.3)
    no_judge = [cell(c.layer, c.strength, c.concept_score, None, c.coherent) for c in cells]
    assert recommend(no_judge) == (6, 0.2)  # without a judge: the old readout
    assert recommend([cell(6, 0.2, concept=5.0, judge=-0.1)]) is None  # nothing moved the right way


@pytest.mark.parametrize("family", ["qwen2", "llama"])
def test_sweep_cells_carry_the_judge_change_and_the_prompted_reference(family):
    lm = make_lm(family)
    rng = np.random.default_rng(0)
    L, H = lm.num_layers, lm.hidden_size
    cv = ConceptVectors(model_id=family, model_fingerprint="x", method="mean_diff",
                        vectors=rng.standard_normal((L, H)).astype(np.float32) * 3,
                        typical_norms=np.ones(L, dtype=np.float32) * 10)
    judge = build_judge(JudgeSpec("length", -1))
    prompt = tiny_models.prompt_tokens(8)
    prompted = tiny_models.prompt_tokens(13, seed=4)
    res = run_sweep(lm, prompt, cv, [1, 2], [0.0, 0.9], GenerationParams(max_tokens=12), judge=judge, prompted=prompted)
    base = judge_scores(judge, [res.baseline_text])[0]
    for c in res.cells:
        assert c.judge_score == pytest.approx(judge_scores(judge, [c.text])[0] - base)
        if c.strength == 0.0:
            assert c.judge_score == 0.0 and c.text == res.baseline_text
    assert res.prompted_text is not None and res.judge["kind"] == "length"
    assert res.judge["prompted_change"] == pytest.approx(judge_scores(judge, [res.prompted_text])[0] - base)
    d = res.as_dict()
    assert d["cells"][0]["judge_score"] is not None and d["judge"]["label"]


def test_sweep_verdicts_use_the_style_allowance_stored_with_the_vectors():
    """The same sweep, once with vectors that carry a style allowance of 4 and once without: the
    perplexity bound widens from 2.5x to 10x and the verdict names it; no other rule changes."""
    import dataclasses

    lm = make_lm("qwen2")
    rng = np.random.default_rng(1)
    L, H = lm.num_layers, lm.hidden_size
    plain = ConceptVectors(model_id="qwen2", model_fingerprint="x", method="mean_diff",
                           vectors=rng.standard_normal((L, H)).astype(np.float32),
                           typical_norms=np.ones(L, dtype=np.float32) * 10)
    styled = dataclasses.replace(plain, extra={"style_allowance": 4.0})
    kw = dict(layers=[1, 2], strengths=[0.3, 0.6, 1.0], params=GenerationParams(max_tokens=12))
    a = run_sweep(lm, tiny_models.prompt_tokens(8), plain, **kw)
    b = run_sweep(lm, tiny_models.prompt_tokens(8), styled, **kw)
    assert [c.text for c in a.cells] == [c.text for c in b.cells]
    flipped = 0
    for ca, cb in zip(a.cells, b.cells):
        assert (ca.verdict_rule == "perplexity") == (ca.ppl_ratio > 2.5)
        assert (cb.verdict_rule == "perplexity") == (cb.ppl_ratio > 10.0)
        if cb.verdict_rule in ("perplexity", "ok"):
            assert "times 4.00 for this concept's style" in cb.verdict
        if ca.verdict_rule != "perplexity":
            assert cb.verdict_rule == ca.verdict_rule
        flipped += ca.verdict_rule == "perplexity" and cb.verdict_rule != "perplexity"
    assert flipped >= 2  # this random model's cells at 0.6-1.0 sit between 2.5x and 10x
