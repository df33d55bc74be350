"""Residual capture on tiny models of every family: matches plain runs, padding is invisible."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

from app.core.capture import CaptureResult, capture, pad_right
from app.core.patching import Recorder, SteeringHook, is_patched, patch_layers
from app.errors import Cancelled
from tiny_models import HIDDEN, prompt_tokens

LENGTHS = (3, 11, 6)  # different lengths, longer and shorter than the sliding windows (4)


def assert_close(actual: np.ndarray, desired: np.ndarray, msg: str = "") -> None:
    """Equal up to float32 rounding at the scale of each layer's activations.

    Batched and single runs sum in different orders; gemma's residual stream is ~10x larger
    than llama's, so the absolute tolerance (1e-5) is scaled by each layer's largest value.
    A real leak (padding, another row, a steering vector) is orders of magnitude larger.
    """
    assert actual.shape == desired.shape, (actual.shape, desired.shape)
    for i in range(desired.shape[0]):
        scale = max(1.0, float(np.abs(desired[i]).max()))
        np.testing.assert_allclose(actual[i], desired[i], rtol=1e-5, atol=1e-5 * scale, err_msg=f"{msg} layer {i}")


def _prompts() -> list[list[int]]:
    return [prompt_tokens(n, seed=100 + i) for i, n in enumerate(LENGTHS)]


def _alone(model, tokens: list[int]) -> np.ndarray:
    """[num_layers, len, hidden]: every block's output for one prompt run by itself."""
    n = len(model.layers)
    recs = [Recorder() for _ in range(n)]
    with patch_layers(model, {i: [recs[i]] for i in range(n)}):
        model(mx.array([tokens]))
        outs = [r.outputs[0] for r in recs]
        mx.eval(outs)
    return np.stack([np.array(o[0]) for o in outs])


def _hand_run_qwen2(model, tokens: list[int]) -> np.ndarray:
    """qwen2 block by block, without any patching: embed, then each layer with a causal mask."""
    inner = model.model
    h = inner.embed_tokens(mx.array([tokens]))
    outs = []
    for block in inner.layers:
        h = block(h, "causal" if len(tokens) > 1 else None, None)
        outs.append(h)
    mx.eval(outs)
    return np.stack([np.array(o[0]) for o in outs])


def test_capture_matches_each_prompt_run_alone(tiny):
    family, model, _ = tiny
    prompts = _prompts()
    originals = list(model.layers)
    res = capture(model, prompts, pad=0)
    n = len(originals)
    assert res.hidden.shape == (n, len(prompts), max(LENGTHS), HIDDEN)
    assert res.hidden.dtype == np.float32
    assert list(res.lengths) == list(LENGTHS)
    assert res.tokens == prompts
    for b, toks in enumerate(prompts):
        assert_close(res.row(b), _alone(model, toks), family)
    assert not is_patched(model)
    assert all(a is b for a, b in zip(model.layers, originals))


def test_capture_matches_a_hand_run_forward():
    """Independent of the patching code: qwen2's blocks called one by one by hand."""
    from tiny_models import build

    model, _ = build("qwen2")
    prompts = _prompts()
    res = capture(model, prompts, pad=0)
    for b, toks in enumerate(prompts):
        assert_close(res.row(b), _hand_run_qwen2(model, toks))


def test_padding_does_not_change_a_row(tiny):
    family, model, _ = tiny
    short = prompt_tokens(5, seed=1)
    long = prompt_tokens(12, seed=2)
    alone = capture(model, [short])
    batched = capture(model, [short, long], pad=7)  # a real token id as pad: it must not leak
    T = len(short)
    assert_close(batched.hidden[:, 0, :T], alone.hidden[:, 0, :T], family)
    assert np.all(batched.hidden[:, 0, T:] == 0.0)
    assert batched.mask.tolist() == [[True] * T + [False] * (12 - T), [True] * 12]
    # The long row is unaffected by sharing the batch too.
    assert_close(batched.row(1), capture(model, [long]).row(0), family)


def test_layer_subset_and_small_batches_agree_with_full_capture(tiny):
    _, model, _ = tiny
    prompts = _prompts()
    full = capture(model, prompts)
    chosen = [0, len(model.layers) - 1]
    seen = []
    part = capture(model, prompts, layers=chosen, batch_size=2, progress=lambda d, t: seen.append((d, t)))
    assert part.hidden.shape[0] == 2
    assert_close(part.hidden, full.hidden[chosen])
    assert seen == [(2, 3), (3, 3)]


def test_extra_hooks_steer_the_capture():
    from tiny_models import build

    model, _ = build("llama")
    prompts = _prompts()
    v = mx.ones((HIDDEN,))
    base = capture(model, prompts)
    steered = capture(model, prompts, extra_hooks={1: [SteeringHook(v)]})
    # The steering hook runs before the recorder of layer 1: real positions >= 1 moved by v.
    for b, n in enumerate(LENGTHS):
        np.testing.assert_allclose(steered.hidden[1, b, 1:n] - base.hidden[1, b, 1:n], 1.0, atol=1e-5)
        np.testing.assert_array_equal(steered.hidden[0, b], base.hidden[0, b])
    assert not is_patched(model)


def test_cancelled_capture_raises_and_leaves_model_unpatched(tiny):
    _, model, _ = tiny
    prompts = _prompts()
    originals = list(model.layers)
    with pytest.raises(Cancelled):
        capture(model, prompts, should_stop=lambda: True)
    # Cancelled between batches: one batch done, then the stop request is honoured.
    calls = []

    def stop_after_first() -> bool:
        calls.append(1)
        return len(calls) > 1

    done = []
    with pytest.raises(Cancelled):
        capture(model, prompts, batch_size=1, should_stop=stop_after_first, progress=lambda d, t: done.append(d))
    assert done == [1]
    assert not is_patched(model)
    assert all(a is b for a, b in zip(model.layers, originals))


def test_failure_inside_capture_leaves_model_unpatched():
    from tiny_models import build

    model, _ = build("gemma3_text")
    originals = list(model.layers)

    def broken(h, state):
        raise RuntimeError("broken hook")

    with pytest.raises(RuntimeError, match="broken hook"):
        capture(model, _prompts(), extra_hooks={2: [broken]})
    assert not is_patched(model)
    assert all(a is b for a, b in zip(model.layers, originals))


def test_empty_prompt_is_refused():
    with pytest.raises(ValueError, match="at least one token"):
        pad_right([[1, 2], []], 0)
    with pytest.raises(ValueError):
        pad_right([], 0)


def test_capture_result_helpers():
    hidden = np.arange(2 * 2 * 3 * 1, dtype=np.float32).reshape(2, 2, 3, 1)
    res = CaptureResult(hidden=hidden, lengths=np.array([1, 3]), tokens=[[5], [6, 7, 8]])
    assert res.mask.tolist() == [[True, False, False], [True, True, True]]
    assert res.row(0).shape == (2, 1, 1) and res.row(1).shape == (2, 3, 1)
