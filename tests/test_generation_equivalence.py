"""Shared prefill and pipelining change nothing: tokens, scores and logits equal the plain loop's, bit for bit.

Bit for bit needs a BLAS whose matmul rows do not depend on how many rows there are. OpenBLAS
picks its kernel by matrix size (a gemv path for one row, small-matrix kernels for tiny ones),
so on the tiny models' 64-wide matrices a 9-row and an 18-row product differ in the last bits:
the old loop itself gave batch row 0 other last bits than a one-row run. So these tests run
twice: in this process (OpenBLAS) tokens must be equal and numbers equal to float tolerance, and
``test_bit_identical_with_a_row_independent_blas`` re-runs them all with the netlib reference
BLAS (one loop order for every shape), where every bit must match. On the real model with
OpenBLAS the results are bit-identical too (test_generation_equivalence_real_model.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import app.core  # noqa: F401
import mlx.core as mx
import tiny_models
from app.core import generation
from app.core.generation import run_batch
from app.core.interventions import additive_rows
from app.core.models import from_memory
from app.core.patching import is_patched
from app.core.steering import Schedule
from app.errors import Cancelled
from app.types import GenerationParams
from reference_generation import reference_run_batch

PROMPT = tiny_models.prompt_tokens(9)
STRICT = os.environ.get("STEERING_LAB_BLAS") == "reference"


def same(a, b) -> bool:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if STRICT:
        return np.array_equal(a, b, equal_nan=True)
    return a.shape == b.shape and np.allclose(a, b, rtol=1e-5, atol=1e-4, equal_nan=True)


def make_lm(family):
    from mlx_lm.tokenizer_utils import TokenizerWrapper

    model, config = tiny_models.build(family)
    return from_memory(model, TokenizerWrapper(tiny_models.tiny_tokenizer(config["vocab_size"])), config, family)


def vectors_for(lm, layers, scale=8.0, seed=3):
    rng = np.random.default_rng(seed)
    return {l: (scale * rng.standard_normal(lm.hidden_size)).astype(np.float32) for l in layers}


def assert_identical(lm, vectors, rows, params, plan=None, **kw):
    """Run both loops; every step's tokens/scores/gates/finish and the logits of unfinished rows must match."""
    plan = plan if plan is not None else additive_rows(vectors, rows)
    ref = list(reference_run_batch(lm, PROMPT, plan, params, **kw))
    new = []
    for s in run_batch(lm, PROMPT, plan, params, **kw):
        new.append(([(list(r.tokens), list(r.scores), r.done, r.finish, list(r.gates)) for r in s.rows], s.logits))
        hooks = s.hooks
    assert len(new) == len(ref)
    ref_hooks = ref[-1][3]
    assert sorted(hooks) == sorted(ref_hooks)
    for layer in hooks:  # where the interventions acted (what the effects view reports) is unchanged, except
        # that the old loop ran one more decode call after the last step (its token was never used)
        for h, r in zip(hooks[layer], ref_hooks[layer]):
            used = [t for t in r.trace if not (t[0] == "generated" and t[1] >= len(ref) - 1)]
            assert h.trace == used
            if h.condition is not None:
                assert len(h.gates) == len(used)
                assert all(same(g, q) for g, q in zip(h.gates, r.gates))
    done_before = [False] * len(plan)
    for (got_rows, got_logits), (_, ref_rows, ref_logits, _) in zip(new, ref):
        assert [(t, d, f, g) for t, _, d, f, g in got_rows] == [(r.tokens, r.done, r.finish, r.gates) for r in ref_rows]
        assert all(same(g[1], r.scores) for g, r in zip(got_rows, ref_rows))
        # a row finished at an earlier step was fed another token since: its logits are unused
        live = [i for i, d in enumerate(done_before) if not d]
        assert same(np.array(got_logits)[live], np.array(ref_logits)[live])
        done_before = [r.done for r in ref_rows]
    assert not is_patched(lm.model)
    return ref[-1][1]


@pytest.mark.parametrize("family", tiny_models.FAMILIES)
@pytest.mark.parametrize("temperature", [0.0, 0.9])
def test_side_by_side_and_sweep_rows_are_bit_identical(family, temperature):
    lm = make_lm(family)
    n = lm.num_layers
    mid = n // 2
    vec = vectors_for(lm, range(n))
    params = GenerationParams(max_tokens=10, temperature=temperature, top_p=0.9, seed=4)
    # side by side, one steered layer; the read layer is the steered one
    assert_identical(lm, {mid: vec[mid]}, [{}, {mid: 1.0}], params, read_layer=mid, read_unit=vec[mid] / 8.0,
                     stop_on_loop=False)
    # a sweep-like batch: several layers (first and last included), one baseline row
    rows = [{}] + [{l: c} for l in (0, mid, n - 1) for c in (0.5, 2.0)]
    final = assert_identical(lm, {l: vec[l] for l in (0, mid, n - 1)}, rows, params, stop_on_loop=False)
    assert final[0].tokens != final[-1].tokens  # the rows were really steered


@pytest.mark.parametrize("family", ["llama", "gemma3_text", "phi3"])
@pytest.mark.parametrize("positions", ["all", "prompt", "generated"])
@pytest.mark.parametrize("schedule", [Schedule("constant"), Schedule("linear_decay", 4), Schedule("pulse", 2)])
def test_positions_schedules_and_multi_layer_plans(family, positions, schedule):
    lm = make_lm(family)
    n = lm.num_layers
    vec = vectors_for(lm, (1, n - 2), scale=12.0)
    rows = [{}, {1: 1.0, n - 2: 0.5}, {n - 2: 1.0}]
    params = GenerationParams(max_tokens=8, temperature=0.7, seed=9)
    assert_identical(lm, vec, rows, params, schedule=schedule, positions=positions, read_layer=0,
                     read_unit=vec[1] / 12.0, stop_on_loop=False)


@pytest.mark.parametrize("family", ["qwen2", "gemma2"])
def test_logits_mode_rows_are_bit_identical(family):
    lm = make_lm(family)
    L = 1
    vec = vectors_for(lm, (L,), scale=15.0)
    params = GenerationParams(max_tokens=10, temperature=1.0, seed=2)
    assert_identical(lm, vec, [{}, {}, {L: 1.0}], params, guided_pairs=((1, 2, 3.0),), read_layer=L,
                     read_unit=vec[L] / 15.0)


@pytest.mark.parametrize("family", ["llama", "olmo2"])
def test_other_operations_and_conditional_gates_are_bit_identical(family):
    from app.core import interventions as iv

    lm = make_lm(family)
    n = lm.num_layers
    vec = vectors_for(lm, (1, 2, n - 1), scale=6.0)
    plan = [[], [iv.make("ablate", 2, vec[2], 1.0)], [iv.make("cap", 1, vec[1], 0.5)],
            [iv.make("rotate", n - 1, vec[n - 1], 30.0)], [iv.make("add", 2, vec[2], 1.0, condition=vec[1], threshold=0.0)]]
    params = GenerationParams(max_tokens=8, temperature=0.6, seed=1)
    final = assert_identical(lm, None, None, params, plan=plan, read_layer=1, read_unit=vec[1] / 6.0, stop_on_loop=False)
    assert final[4].gates  # the conditional row recorded its gate every step


def test_rows_that_finish_early_keep_their_bookkeeping():
    """EOS and loop stops per row stay exact while later steps are already queued."""
    lm = make_lm("llama")
    L = 2
    vec = vectors_for(lm, (L,), scale=30.0)
    params = GenerationParams(max_tokens=40, seed=0)
    free = list(reference_run_batch(lm, PROMPT, additive_rows(vec, [{}, {L: 1.0}]), params, stop_on_loop=False))[-1][1]
    eos_tok = next(t for t in free[0].tokens[2:8] if t not in free[1].tokens)

    class Tok:
        eos_token_ids = {eos_tok}
        eos_token_id = eos_tok
        pad_token_id = 0

    lm2 = from_memory(lm.model, Tok(), lm.config, "llama")
    final = assert_identical(lm2, vec, [{}, {L: 1.0}, {L: 3.0}], params)
    assert final[0].finish == "eos"
    assert {r.finish for r in final[1:]} <= {"length", "loop", "eos"}


def test_the_shared_prefill_is_used_and_gated():
    lm = make_lm("llama")
    from mlx_lm.models.cache import QuantizedKVCache, make_prompt_cache

    cache = make_prompt_cache(lm.model)
    n = lm.num_layers
    plan = generation._SharedPrefill.plan(lm.model, cache, 3, [2, 4], "all")
    assert plan is not None and plan.layer == 2
    assert generation._SharedPrefill.plan(lm.model, cache, 3, [2], "generated").layer == n - 1
    assert generation._SharedPrefill.plan(lm.model, cache, 1, [2], "all") is None
    cache[0] = QuantizedKVCache()
    assert generation._SharedPrefill.plan(lm.model, cache, 3, [2], "all") is None


def test_prefill_runs_one_row_below_the_steered_layer(monkeypatch):
    """The blocks up to the steered one really see ONE row during the prompt (the saving is real)."""
    lm = make_lm("llama")
    blocks = list(lm.model.model.layers)
    index = {id(b): i for i, b in enumerate(blocks)}
    seen: dict[int, list[int]] = {}
    cls = type(blocks[0])
    original = cls.__call__

    def spy(self, x, *a, **k):
        seen.setdefault(index[id(self)], []).append(x.shape[0])
        return original(self, x, *a, **k)

    monkeypatch.setattr(cls, "__call__", spy)
    vec = vectors_for(lm, (2,))
    list(run_batch(lm, PROMPT, additive_rows(vec, [{}, {2: 1.0}, {2: 2.0}]), GenerationParams(max_tokens=3)))
    assert [seen[i][0] for i in range(lm.num_layers)] == [1, 1, 1, 3, 3]  # prompt: blocks 0-2 run one row
    assert all(s[1:] == [3, 3] for s in seen.values())  # decode steps: every row


def test_cancel_mid_pipeline_unpatches_and_leaves_nothing_running():
    lm = make_lm("gemma3_text")
    L = 2
    vec = vectors_for(lm, (L,))
    x = mx.array([PROMPT])
    before = lm.model(x)
    mx.eval(before)
    calls = {"n": 0}

    def stop():
        calls["n"] += 1
        return calls["n"] > 5

    steps = []
    with pytest.raises(Cancelled):
        for s in run_batch(lm, PROMPT, additive_rows(vec, [{}, {L: 1.0}]), GenerationParams(max_tokens=50), should_stop=stop,
                           read_layer=L, read_unit=vec[L] / 8.0):
            steps.append(s.step)
            assert is_patched(lm.model)  # patched while running
    assert steps == [0, 1, 2, 3, 4]
    assert not is_patched(lm.model)
    assert mx.array_equal(lm.model(x), before).item()


def test_closing_the_stream_early_unpatches():
    lm = make_lm("llama")
    vec = vectors_for(lm, (1,))
    gen = run_batch(lm, PROMPT, additive_rows(vec, [{}, {1: 1.0}]), GenerationParams(max_tokens=50))
    next(gen)
    next(gen)
    assert is_patched(lm.model)
    gen.close()
    assert not is_patched(lm.model)


def test_bit_identical_with_a_row_independent_blas():
    """Every test above again, with the reference BLAS: now tokens, scores and logits must match exactly."""
    here = Path(__file__).resolve()
    env = dict(os.environ, STEERING_LAB_BLAS="reference")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", str(here), "-q", "-p", "no:cacheprovider", "-k", "not row_independent_blas"],
        cwd=str(here.parents[1]), env=env, capture_output=True, text=True, timeout=900,
    )
    tail = proc.stdout[-3000:]
    assert proc.returncode == 0, tail
    assert " passed" in tail and "failed" not in tail and "skipped" not in tail, tail
