"""Layer patching on tiny models of every family: exact undo, exact no-ops, exact targeting."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest
from mlx_lm.models.cache import make_prompt_cache

from app.core.patching import (
    ForwardState,
    LayerWrapper,
    PatchError,
    Recorder,
    SteeringHook,
    is_patched,
    patch_layers,
)
from tiny_models import HIDDEN, prompt_tokens

T = 9  # prompt length: longer than the sliding windows (4) of llama / gemma3_text


def _tokens(batch: int = 1, length: int = T) -> mx.array:
    return mx.array([prompt_tokens(length, seed=10 + b) for b in range(batch)])


def _logits(model, tokens, cache=None) -> mx.array:
    out = model(tokens, cache=cache) if cache is not None else model(tokens)
    mx.eval(out)
    return out


def _vector(seed: int = 7, scale: float = 1.0) -> mx.array:
    rng = np.random.default_rng(seed)
    return mx.array((scale * rng.standard_normal(HIDDEN)).astype(np.float32))


def _record_all(model, tokens, extra: dict | None = None, state: ForwardState | None = None):
    """Logits and every block's output; ``extra[i]`` hooks run before layer i's recorder."""
    n = len(model.layers)
    recorders = [Recorder() for _ in range(n)]
    hooks = {i: [*(extra or {}).get(i, []), recorders[i]] for i in range(n)}
    with patch_layers(model, hooks, state=state):
        logits = model(tokens)
        outs = [r.outputs[0] for r in recorders]
        mx.eval(logits, outs)
    return logits, [np.array(o) for o in outs]


def _assert_restored(model, originals):
    assert not is_patched(model)
    assert len(model.layers) == len(originals)
    for now, before in zip(model.layers, originals):
        assert now is before


# ---- exact undo -----------------------------------------------------------------------------
def test_patch_then_unpatch_is_bit_identical(tiny):
    family, model, _ = tiny
    x = _tokens()
    originals = list(model.layers)
    base = _logits(model, x)

    # Wrapped with read-only hooks: same numbers while patched.
    patched, _ = _record_all(model, x)
    assert mx.array_equal(patched, base), family
    _assert_restored(model, originals)

    # Steered, then unpatched: the steering leaves no trace.
    mid = len(originals) // 2
    with patch_layers(model, {mid: [SteeringHook(_vector(scale=3.0))]}):
        steered = _logits(model, x)
    assert not mx.array_equal(steered, base)
    _assert_restored(model, originals)
    assert mx.array_equal(_logits(model, x), base)


def test_unpatch_after_exception_inside_block(tiny):
    _, model, _ = tiny
    x = _tokens()
    originals = list(model.layers)
    base = _logits(model, x)
    with pytest.raises(RuntimeError, match="boom"):
        with patch_layers(model, {i: [SteeringHook(_vector(scale=5.0))] for i in range(len(originals))}):
            _logits(model, x)
            assert is_patched(model)
            raise RuntimeError("boom")
    _assert_restored(model, originals)
    assert mx.array_equal(_logits(model, x), base)


def test_exception_raised_by_a_hook_also_unpatches(tiny):
    _, model, _ = tiny
    originals = list(model.layers)

    def bad_hook(h, state):
        raise ValueError("hook failed")

    with pytest.raises(ValueError, match="hook failed"):
        with patch_layers(model, {1: [bad_hook]}):
            _logits(model, _tokens())
    _assert_restored(model, originals)


def test_zero_vector_gives_identical_logits(tiny):
    _, model, _ = tiny
    x = _tokens(batch=2)
    base = _logits(model, x)
    n = len(model.layers)
    zero = mx.zeros((HIDDEN,), dtype=mx.float32)
    hooks = {i: [SteeringHook(zero, skip_first=False)] for i in range(n)}
    with patch_layers(model, hooks):
        out = _logits(model, x)
    assert mx.array_equal(out, base)
    # A real vector scaled by strength 0 is a zero vector too.
    with patch_layers(model, {n // 2: [SteeringHook(_vector() * 0.0)]}):
        assert mx.array_equal(_logits(model, x), base)


# ---- targeting ------------------------------------------------------------------------------
def test_vector_changes_its_layer_and_later_ones_only(tiny):
    family, model, _ = tiny
    x = _tokens()
    n = len(model.layers)
    base_logits, base = _record_all(model, x)
    v = _vector(scale=2.0)
    for L in sorted({0, n // 2, n - 1}):
        logits, steered = _record_all(model, x, extra={L: [SteeringHook(v)]})
        for i in range(n):
            if i < L:
                assert np.array_equal(steered[i], base[i]), f"{family}: layer {i} changed by a vector at {L}"
            else:
                # skip_first (default): position 0 is never touched, and causality keeps it so.
                assert np.array_equal(steered[i][:, 0], base[i][:, 0]), f"{family}: position 0 at layer {i}"
                assert not np.allclose(steered[i][:, 1:], base[i][:, 1:], atol=1e-6), (
                    f"{family}: layer {i} unchanged by a vector at {L}"
                )
        # At the steered layer the change is exactly the vector.
        np.testing.assert_allclose(steered[L][0, 1:] - base[L][0, 1:], np.broadcast_to(np.array(v), (T - 1, HIDDEN)), atol=1e-5)
        assert not mx.array_equal(logits, base_logits)


def test_skip_first_leaves_position_zero(tiny):
    _, model, _ = tiny
    x = _tokens()
    L = 1
    v = _vector(scale=2.0)
    _, base = _record_all(model, x)
    _, kept = _record_all(model, x, extra={L: [SteeringHook(v, skip_first=True)]})
    _, all_pos = _record_all(model, x, extra={L: [SteeringHook(v, skip_first=False)]})
    assert np.array_equal(kept[L][0, 0], base[L][0, 0])
    np.testing.assert_allclose(all_pos[L][0, 0] - base[L][0, 0], np.array(v), atol=1e-5)
    # At the steered layer, positions >= 1 get the vector either way.
    assert np.array_equal(kept[L][0, 1:], all_pos[L][0, 1:])
    np.testing.assert_allclose(kept[L][0, 1:] - base[L][0, 1:], np.broadcast_to(np.array(v), (T - 1, HIDDEN)), atol=1e-5)


def test_positions_follow_the_forward_phase(tiny):
    family, model, _ = tiny
    x = _tokens()
    L = len(model.layers) // 2
    v = _vector(scale=2.0)
    base_logits, base = _record_all(model, x)

    # Prefill: a "generated"-only vector does nothing, a "prompt" vector steers.
    logits, _ = _record_all(model, x, {L: [SteeringHook(v, positions="generated")]}, ForwardState("prompt"))
    assert mx.array_equal(logits, base_logits), family
    logits, rec = _record_all(model, x, {L: [SteeringHook(v, positions="prompt")]}, ForwardState("prompt"))
    assert not mx.array_equal(logits, base_logits)
    np.testing.assert_allclose(rec[L][0, 1:] - base[L][0, 1:], np.broadcast_to(np.array(v), (T - 1, HIDDEN)), atol=1e-5)

    # Generated tokens: a "prompt"-only vector does nothing; a "generated" one steers every
    # position of the step (no attention-sink exception), scaled by the schedule.
    gen = ForwardState("generated", step=3)
    logits, _ = _record_all(model, x, {L: [SteeringHook(v, positions="prompt")]}, gen)
    assert mx.array_equal(logits, base_logits)
    _, rec = _record_all(model, x, {L: [SteeringHook(v, positions="generated")]}, gen)
    np.testing.assert_allclose(rec[L][0] - base[L][0], np.broadcast_to(np.array(v), (T, HIDDEN)), atol=1e-5)
    _, rec = _record_all(model, x, {L: [SteeringHook(v, positions="generated", schedule=lambda s: 0.5 if s == 3 else 9.0)]}, gen)
    np.testing.assert_allclose(rec[L][0] - base[L][0], np.broadcast_to(0.5 * np.array(v), (T, HIDDEN)), atol=1e-5)
    logits, _ = _record_all(model, x, {L: [SteeringHook(v, positions="generated", schedule=lambda s: 0.0)]}, gen)
    assert mx.array_equal(logits, base_logits)
    # "all" steers in both phases.
    logits, _ = _record_all(model, x, {L: [SteeringHook(v, positions="all")]}, gen)
    assert not mx.array_equal(logits, base_logits)


def test_row_coefs_steer_only_nonzero_rows(tiny):
    family, model, _ = tiny
    x = _tokens(batch=2)
    L = len(model.layers) // 2
    v = _vector(scale=2.0)
    base_logits, base = _record_all(model, x)
    coefs = mx.array([0.0, 2.0])
    logits, rec = _record_all(model, x, {L: [SteeringHook(v, row_coefs=coefs)]})
    assert mx.array_equal(logits[0], base_logits[0]), f"{family}: baseline row changed"
    assert not np.allclose(np.array(logits[1]), np.array(base_logits[1]), atol=1e-6)
    for i in range(len(model.layers)):
        assert np.array_equal(rec[i][0], base[i][0])
    np.testing.assert_allclose(rec[L][1, 1:] - base[L][1, 1:], np.broadcast_to(2.0 * np.array(v), (T - 1, HIDDEN)), atol=1e-5)


# ---- the wrapper is transparent ------------------------------------------------------------
def test_wrapper_forwards_unknown_attributes_and_caches_work(tiny):
    family, model, _ = tiny
    n = len(model.layers)
    originals = list(model.layers)
    unpatched_cache_types = [type(c).__name__ for c in make_prompt_cache(model)]
    x = _tokens()
    # Reference: prefill + 3 decode steps with a KV cache, unpatched.
    cache = make_prompt_cache(model)
    ref = [_logits(model, x, cache)]
    for t in (5, 17, 200):
        ref.append(_logits(model, mx.array([[t]]), cache))

    with patch_layers(model, {i: [Recorder()] for i in range(n)}) as state:
        for i, (wrapper, block) in enumerate(zip(model.layers, originals)):
            assert isinstance(wrapper, LayerWrapper)
            assert wrapper.self_attn is block.self_attn
            assert not hasattr(wrapper, "no_such_attribute_anywhere")
            with pytest.raises(AttributeError):
                getattr(wrapper, "no_such_attribute_anywhere")
            if family == "llama":
                assert wrapper.use_sliding == block.use_sliding
                assert wrapper.use_sliding == (i % 2 == 1)
            if family == "gemma3_text":
                assert wrapper.self_attn.is_sliding == block.self_attn.is_sliding
        # make_cache (llama reads layer.use_sliding) works while patched.
        cache = make_prompt_cache(model)
        assert [type(c).__name__ for c in cache] == unpatched_cache_types
        got = [_logits(model, x, cache)]
        state.phase = "generated"
        for step, t in enumerate((5, 17, 200)):
            state.step = step
            got.append(_logits(model, mx.array([[t]]), cache))
    if family == "llama":
        assert "RotatingKVCache" in unpatched_cache_types
    for a, b in zip(got, ref):
        assert mx.array_equal(a, b), family
    _assert_restored(model, originals)


# ---- bad requests -----------------------------------------------------------------------------
def test_wrong_width_vector_is_refused(tiny):
    family, model, _ = tiny
    originals = list(model.layers)
    for bad in (mx.zeros((HIDDEN + 1,)), mx.zeros((HIDDEN - 8,)), mx.zeros((2, HIDDEN))):
        with pytest.raises(PatchError) as err:
            with patch_layers(model, {1: [SteeringHook(bad)]}):
                pytest.fail(f"{family}: patched with a vector of shape {bad.shape}")
        msg = str(err.value)
        assert str(tuple(bad.shape)) in msg and str(HIDDEN) in msg, msg
        assert "another model" in msg
        _assert_restored(model, originals)


def test_out_of_range_layer_is_refused(tiny):
    _, model, _ = tiny
    n = len(model.layers)
    originals = list(model.layers)
    for bad in (-1, n, n + 10, "1", True, 1.0):
        with pytest.raises(PatchError) as err:
            with patch_layers(model, {bad: [Recorder()]}):
                pytest.fail(f"patched layer {bad!r}")
        assert f"0-{n - 1}" in str(err.value) and repr(bad) in str(err.value)
        _assert_restored(model, originals)
    # A bad layer next to a good one: nothing at all is patched.
    with pytest.raises(PatchError):
        with patch_layers(model, {0: [Recorder()], n: [Recorder()]}):
            pass
    _assert_restored(model, originals)


def test_bad_positions_value_is_refused():
    with pytest.raises(PatchError, match="positions must be one of"):
        SteeringHook(mx.zeros((HIDDEN,)), positions="everywhere")


def test_nested_patch_of_same_layer_is_refused(tiny):
    _, model, _ = tiny
    x = _tokens()
    originals = list(model.layers)
    base = _logits(model, x)
    with patch_layers(model, {1: [Recorder()]}):
        outer = model.layers[1]
        with pytest.raises(PatchError, match="already patched"):
            with patch_layers(model, {0: [SteeringHook(_vector())], 1: [SteeringHook(_vector())]}):
                pytest.fail("nested patch of layer 1 was accepted")
        # The refused request touched nothing: the outer patch is intact, layer 0 unwrapped.
        assert model.layers[1] is outer and model.layers[0] is originals[0]
        assert mx.array_equal(_logits(model, x), base)
    _assert_restored(model, originals)
