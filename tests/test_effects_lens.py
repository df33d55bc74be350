"""Seeing what a vector does, on tiny models: the vector lens and the per-token effect map."""

from __future__ import annotations

import numpy as np
import pytest

import tiny_models
from app.core.effects import effect_map
from app.core.comparison import compare_stream
from app.core.interventions import make
from app.core.lens import vector_lens
from app.core.steering import Condition, SteeringEntry, SteeringPlan
from app.types import GenerationParams
from test_interventions import PROMPT, make_lm, rand


def head_row(model, token: int) -> np.ndarray:
    """The output-head row of ``token`` (tied models: the embedding row)."""
    if "lm_head" in model:
        return np.array(model["lm_head"].weight[token])
    return np.array(model.model.embed_tokens.weight[token])


@pytest.mark.parametrize("family", ["llama", "qwen2", "gemma3_text", "phi3"])
def test_lens_of_a_token_direction_ranks_that_token_first(family):
    lm = make_lm(family)
    n = lm.num_layers
    tokens = [17 + 13 * i for i in range(n)]
    vectors = np.stack([head_row(lm.model, t) * (3.0 + i) for i, t in enumerate(tokens)])
    lens = vector_lens(lm, vectors, k=5)
    tok = lm.tokenizer
    for i, t in enumerate(tokens):
        assert lens.top[i][0][0] == tok.decode([t]), (family, i)
        assert tok.decode([t]) not in [b for b, _ in lens.bottom[i]]
    # the negated direction puts it at the bottom
    neg = vector_lens(lm, -vectors[:1], k=5)
    assert neg.bottom[0][0][0] == tok.decode([tokens[0]])


# The baseline and the steered row share one batched pass. With a BLAS whose result for a row does not
# depend on the other rows (the netlib reference; OpenBLAS on the machines this was first run on) an unsteered row's KL
# is exactly 0; OpenBLAS on AMD EPYC (AVX2) gives the two identical rows of a 2-row matmul last-bit
# differences, a KL of ~4e-7. Below this bound the rows are the same distribution; a steered row is > 1e-4.
ROW_NOISE_KL = 1e-5


def test_effect_map_is_zero_at_strength_zero_and_positive_when_steered():
    lm = make_lm("llama")
    v = rand(3, 5.0, lm.hidden_size)
    cont = tiny_models.prompt_tokens(10, seed=5)
    zero = effect_map(lm, PROMPT, cont, [make("add", 1, v, 0.0)])
    assert len(zero) == 10 and all(e.kl < ROW_NOISE_KL for e in zero)
    steered = effect_map(lm, PROMPT, cont, [make("add", 1, v, 2.0)])
    assert all(e.kl > 1e-4 for e in steered)
    assert any(e.promoted for e in steered)
    # only generated positions steered: still the first generated token's distribution comes from the
    # (unsteered) prompt pass, so its KL is exactly 0 and the rest are not
    gen_only = effect_map(lm, PROMPT, cont, [make("add", 1, v, 2.0)], positions="generated")
    assert gen_only[0].kl < ROW_NOISE_KL and all(e.kl > 1e-4 for e in gen_only[1:])


def test_compare_stream_reports_gates_where_applied_and_effects():
    lm = make_lm("llama")
    L = 1
    v, c = rand(3, 5.0, lm.hidden_size), rand(4, 1.0, lm.hidden_size)
    entry = SteeringEntry(L, v, 1.0, 10.0)
    shut = SteeringPlan([entry], condition=Condition("c", {L: c}, {L: 1e9}))
    final = list(compare_stream(lm, PROMPT, shut, GenerationParams(max_tokens=8), effects=True))[-1]
    assert final.divergence is None and final.baseline_pieces == final.steered_pieces  # a gate never open
    assert final.steered_gates == [0.0] * len(final.steered_gates) and final.steered_gates
    assert all(a["gate_open"] == 0 for a in final.applied)
    assert all(e["kl"] < ROW_NOISE_KL for e in final.effects)
    always = SteeringPlan([entry], condition=Condition("c", {L: c}, {L: -1e9}))
    final = list(compare_stream(lm, PROMPT, always, GenerationParams(max_tokens=8), effects=True))[-1]
    assert all(g == 1.0 for g in final.steered_gates) and final.divergence is not None
    assert final.applied[0]["phase"] == "prefill" and final.applied[0]["gate_open"] == len(PROMPT) - 1
    assert any(e["kl"] > 0 for e in final.effects)
    ablate = SteeringPlan([SteeringEntry(L, v, 1.0, 10.0)], op="ablate")
    final = list(compare_stream(lm, PROMPT, ablate, GenerationParams(max_tokens=4)))[-1]
    assert {a["op"] for a in final.applied} == {"ablate"} and final.applied[0]["coefficient"] == 1.0


def test_effect_map_in_logits_mode_compares_the_guided_mix():
    lm = make_lm("llama")
    v = rand(3, 5.0, lm.hidden_size)
    cont = tiny_models.prompt_tokens(10, seed=5)
    steer = [make("add", 1, v, 2.0)]
    assert all(e.kl == 0.0 for e in effect_map(lm, PROMPT, cont, steer, guidance=0.0))  # g = 0: the baseline
    added = effect_map(lm, PROMPT, cont, steer)
    same = effect_map(lm, PROMPT, cont, steer, guidance=1.0)  # g = 1: the steered row itself
    assert [e.kl for e in same] == pytest.approx([e.kl for e in added], rel=1e-3, abs=1e-5)
    strong = effect_map(lm, PROMPT, cont, steer, guidance=3.0)
    assert sum(e.kl for e in strong) > sum(e.kl for e in added) > 0
    plan = SteeringPlan([SteeringEntry(1, v, 2.0, 1.0)], mode="logits", guidance=2.0)
    final = list(compare_stream(lm, PROMPT, plan, GenerationParams(max_tokens=6), effects=True))[-1]
    assert len(final.effects) == len(final.steered_pieces) and any(e["kl"] > 0 for e in final.effects)
