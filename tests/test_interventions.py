"""Interventions beyond addition on tiny models: what each does to the residual at its layer, and
that the cached generation loop applies it exactly where an uncached recomputation does."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

import tiny_models
from app.core.effects import forced_logits, where_applied
from app.core.generation import run_batch
from app.core.interventions import OPS, Ablate, Add, Cap, Clamp, Conditional, Rotate, additive_rows, check_param, make, unit
from app.core.models import from_memory
from app.core.patching import Recorder, build_hooks, patch_layers
from app.core.steering import Schedule
from app.errors import InputError
from app.types import GenerationParams

T = 9
PROMPT = tiny_models.prompt_tokens(T)


def make_lm(family="llama", seed=0):
    from mlx_lm.tokenizer_utils import TokenizerWrapper

    model, config = tiny_models.build(family, seed)
    return from_memory(model, TokenizerWrapper(tiny_models.tiny_tokenizer(config["vocab_size"])), config, family)


def rand(seed, scale=1.0, n=tiny_models.HIDDEN):
    return (scale * np.random.default_rng(seed).standard_normal(n)).astype(np.float32)


def layer_outputs(model, rows, layer, batch=None):
    """Logits and the output of ``layer`` AFTER the interventions (a recorder placed behind them)."""
    hooks = build_hooks(rows)
    rec = Recorder()
    hooks.setdefault(layer, []).append(rec)
    x = mx.array([PROMPT] * (batch or len(rows)))
    with patch_layers(model, hooks):
        logits = model(x)
        mx.eval(logits, rec.outputs[0])
    return np.array(logits), np.array(rec.outputs[0])


@pytest.fixture(params=["llama", "qwen2", "gemma3_text"])
def model(request):
    return tiny_models.build(request.param)[0]


# ---- what each operation does at its layer ------------------------------------------------------
def test_ablation_zeroes_the_projection_and_keeps_the_orthogonal_part(model):
    L = 1
    base_logits, base = layer_outputs(model, [[], []], L)
    v = rand(3, 5.0)
    logits, out = layer_outputs(model, [[], [Ablate(L, v, 1.0)]], L)
    u = unit(v)
    assert np.array_equal(out[0], base[0]) and np.array_equal(logits[0], base_logits[0])  # baseline row exact
    assert np.abs(out[1, 1:] @ u).max() < 1e-4 * np.abs(base[1, 1:] @ u).max()  # projection gone
    assert np.array_equal(out[1, 0], base[1, 0])  # position 0 (attention sink) untouched
    orth = lambda h: h - np.outer(h @ u, u)
    np.testing.assert_allclose(orth(out[1, 1:]), orth(base[1, 1:]), atol=1e-4)
    assert not np.array_equal(logits[1], base_logits[1])
    # Along a coordinate axis the orthogonal part is untouched (bit for bit with a BLAS whose rows do not
    # depend on each other; OpenBLAS on AMD EPYC differs in the last bits between the two rows), the projection exactly 0.
    e = np.zeros(tiny_models.HIDDEN, np.float32)
    e[5] = 3.0
    _, axis = layer_outputs(model, [[], [Ablate(L, e, 1.0)]], L)
    keep = [i for i in range(tiny_models.HIDDEN) if i != 5]
    np.testing.assert_allclose(axis[1, 1:][:, keep], axis[0, 1:][:, keep], rtol=1e-5, atol=1e-5)
    assert np.all(axis[1, 1:, 5] == 0)
    assert np.array_equal(axis[0], base[0])
    # Partial ablation a = 0.5 halves the projection.
    _, half = layer_outputs(model, [[], [Ablate(L, v, 0.5)]], L)
    np.testing.assert_allclose(half[1, 1:] @ u, 0.5 * (base[0, 1:] @ u), rtol=1e-4, atol=1e-4)


def test_ablation_at_every_layer_zeroes_each_layer(model):
    n = len(model.layers)
    v = {i: rand(10 + i, 2.0) for i in range(n)}
    rows = [[Ablate(i, v[i], 1.0) for i in range(n)]]
    hooks = build_hooks(rows)
    recs = {i: Recorder() for i in range(n)}
    for i in range(n):
        hooks[i].append(recs[i])
    with patch_layers(model, hooks):
        mx.eval(model(mx.array([PROMPT])))
    for i in range(n):
        h = np.array(recs[i].outputs[0])[0, 1:]
        assert np.abs(h @ unit(v[i])).max() < 1e-3, i


def test_cap_never_raises_a_projection_above_t(model):
    L = 2
    v = rand(4, 1.0)
    u = unit(v)
    _, base = layer_outputs(model, [[], []], L)
    p = base[1, 1:] @ u
    t = float(np.median(p))  # half the positions are above t
    _, out = layer_outputs(model, [[], [Cap(L, v, t)]], L)
    assert np.array_equal(out[0], base[0])
    q = out[1, 1:] @ u
    assert np.all(q <= t + 1e-4)
    below = p <= t
    assert below.any() and (~below).any()
    assert np.array_equal(out[1, 1:][below], base[1, 1:][below])  # nothing below t moves at all
    np.testing.assert_allclose(q[~below], t, atol=1e-4)
    # Clamp sets every steered position to exactly t (up to float error).
    _, cl = layer_outputs(model, [[], [Clamp(L, v, t + 1.0)]], L)
    np.testing.assert_allclose(cl[1, 1:] @ u, t + 1.0, atol=1e-4)


def test_rotation_keeps_the_norm_and_zero_is_bit_identical(model):
    L = 1
    v = rand(5, 3.0)
    u = unit(v)
    base_logits, base = layer_outputs(model, [[], []], L)
    # theta = 0 inside a hook that rotates another row: bit-identical, not merely close.
    zero_logits, zero = layer_outputs(model, [[Rotate(L, v, 0.0)], [Rotate(L, v, 30.0)]], L)
    assert np.array_equal(zero_logits[0], base_logits[0]) and np.array_equal(zero[0], base[0])
    for theta in (15.0, 90.0, -40.0):
        logits, out = layer_outputs(model, [[], [Rotate(L, v, theta)]], L)
        np.testing.assert_allclose(np.linalg.norm(out[1], axis=-1), np.linalg.norm(base[1], axis=-1), rtol=1e-5)
        a0 = np.arccos(np.clip(base[1, 1:] @ u / np.linalg.norm(base[1, 1:], axis=-1), -1, 1))
        a1 = np.arccos(np.clip(out[1, 1:] @ u / np.linalg.norm(out[1, 1:], axis=-1), -1, 1))
        expect = np.abs(a0 - np.deg2rad(theta))  # the angle to u shrinks by theta (reflected past 0)
        np.testing.assert_allclose(a1, np.minimum(expect, 2 * np.pi - expect), atol=1e-3)
        assert not np.array_equal(logits[1], base_logits[1])


def test_conditional_gate_never_open_is_bit_identical_and_open_gate_acts_only_there(model):
    L = 1
    v, c = rand(6, 4.0), rand(7, 1.0)
    base_logits, base = layer_outputs(model, [[], []], L)
    shut = [[], [Conditional(Add(L, v, 1.0), c, 1e9)]]
    logits, out = layer_outputs(model, shut, L)
    assert np.array_equal(logits, base_logits) and np.array_equal(out, base)
    proj = base[0] @ unit(c)
    thr = float(np.median(proj[1:]))
    logits, out = layer_outputs(model, [[], [Conditional(Add(L, v, 1.0), c, thr)]], L)
    open_ = proj > thr
    open_[0] = False  # position 0 is skipped anyway
    np.testing.assert_allclose(out[1][open_] - base[1][open_], np.broadcast_to(v, (int(open_.sum()), v.size)), atol=1e-5)
    assert np.array_equal(out[1][~open_], base[1][~open_])


def test_add_intervention_equals_the_old_steering_hook(model):
    from app.core.patching import SteeringHook

    v = rand(8, 2.0)
    x = mx.array([PROMPT] * 2)
    with patch_layers(model, {1: [SteeringHook(mx.array(v), row_coefs=mx.array([0.0, 1.5]))]}):
        old = model(x)
        mx.eval(old)
    with patch_layers(model, build_hooks([[], [Add(1, v, 1.5)]])):
        new = model(x)
        mx.eval(new)
    assert mx.array_equal(old, new)


def test_registry_and_parameter_validation():
    assert {"add", "ablate", "cap", "clamp", "rotate", "logits"} <= set(OPS)
    assert OPS["logits"].hook_point == "logits" and OPS["rotate"].param == "theta"
    assert check_param("ablate", 0.5) == 0.5
    for op, bad in (("ablate", 1.5), ("rotate", 400), ("cap", float("nan")), ("ablate", "x")):
        with pytest.raises(InputError, match=OPS[op].param):
            check_param(op, bad)
    with pytest.raises(InputError, match="operation must be one of"):
        make("shear", 1, rand(1), 1.0)


def _op_help() -> str:
    from app.cli import build_parser

    return " ".join(a.help or "" for sp in build_parser()._subparsers._group_actions[0].choices.values()
                    for a in sp._actions if "--op" in a.option_strings)


def test_every_operation_parameter_range_is_the_one_in_limits(monkeypatch):
    """Core checks, plan building and the CLI's help all read limits.OP_PARAMS: narrowing it there narrows them all."""
    from app.core.interventions import RESIDUAL_OPS
    from app.core.steering import plan_from_vectors
    from app.domain import limits
    from app.types import ConceptVectors

    ranges = {op: (lo / 2, hi / 2, default / 2) for op, (lo, hi, default) in limits.OP_PARAMS.items()}
    monkeypatch.setattr(limits, "OP_PARAMS", ranges)
    cv = ConceptVectors("tiny", "fp", "mean_diff", np.stack([rand(i) for i in range(4)]), np.ones(4, np.float32))
    help_text = _op_help()
    for op in RESIDUAL_OPS:
        lo, hi, default = ranges[op]
        assert (OPS[op].lo, OPS[op].hi, OPS[op].default) == (lo, hi, default)
        assert check_param(op, lo) == lo and check_param(op, hi) == hi
        for bad in (lo - 1e-3, hi + 1e-3):
            with pytest.raises(InputError, match=OPS[op].param):
                check_param(op, bad)
        assert f"{op}: {OPS[op].help} ({OPS[op].param} in [{lo:g}, {hi:g}])" in help_text
        if op != "add":
            plan_from_vectors(cv, [(1, hi)], op=op)
            with pytest.raises(InputError, match=f"between {lo:g} and {hi:g}"):
                plan_from_vectors(cv, [(1, hi + 1e-3)], op=op)


# ---- cached decoding applies steering where an uncached recomputation does ----------------------
CASES = [
    ("add", 3.0, "all", Schedule()),
    ("ablate", 1.0, "all", Schedule()),
    ("rotate", 120.0, "generated", Schedule("linear_decay", 8)),
    ("cap", -0.5, "prompt", Schedule()),
    ("add", 4.0, "generated", Schedule("pulse", 3)),
]


@pytest.mark.parametrize("family", ["llama", "gemma3_text"])
@pytest.mark.parametrize("op,param,positions,schedule", CASES)
def test_cached_decoding_equals_uncached_recomputation(family, op, param, positions, schedule):
    lm = make_lm(family)
    L = 1
    _, h = layer_outputs(lm.model, [[]], L, batch=1)
    # Ablating / capping / rotating a random direction barely matters: use the residual's own mean.
    direction = rand(9, 4.0, lm.hidden_size) if op in ("add", "rotate") else h[0, 1:].mean(axis=0)
    steered = [make(op, L, direction, param)]
    if op == "add":
        steered.append(make("add", 2, rand(11, 3.0, lm.hidden_size), -1.0, condition=rand(12, 1.0, lm.hidden_size)))
    rows = [[], steered]
    params = GenerationParams(max_tokens=12)
    last = None
    for last in run_batch(lm, PROMPT, rows, params, schedule, positions, stop_on_loop=False):
        pass
    cached = last.rows[1].tokens
    assert cached != last.rows[0].tokens  # the steering changed something
    # Uncached: re-forward the whole growing sequence each step, greedy.
    seq = list(PROMPT)
    for _ in range(len(cached)):
        logits = forced_logits(lm.model, seq, len(PROMPT), [steered], positions, True, schedule.value)
        seq.append(int(mx.argmax(logits[0, -1]).item()))
    assert seq[len(PROMPT):] == cached, (family, op)
    # The trace says where it applied: prefill positions 1..T-1 unless only generated tokens steer.
    applied = where_applied(last.hooks, 1, len(PROMPT))
    prefill = [a for a in applied if a["phase"] == "prefill" and a["layer"] == L]
    decode = [a for a in applied if a["phase"] == "decode" and a["layer"] == L]
    assert (len(prefill) == 1 and prefill[0]["positions"] == [1, T - 1]) == (positions != "generated")
    if positions == "prompt":
        assert not decode
    else:
        assert [a["positions"][0] for a in decode] == [T + a["step"] for a in decode]
        assert decode[0]["step"] == 0
    assert not where_applied(last.hooks, 0, len(PROMPT))  # nothing at all on the baseline row


def test_additive_rows_drop_zero_coefficients():
    v = rand(1)
    rows = additive_rows({3: v}, [{}, {3: 0.0}, {3: 2.0}])
    assert rows[0] == [] and rows[1] == [] and rows[2][0].param == 2.0 and rows[2][0].layer == 3
