"""A "prompted" row in the same batch: the unsteered model under the concept's system prompt.

Its prompt has another length than the shared one, so it cannot share the prefill. It is
prefilled alone (no hooks: it is never steered), the shared prefill runs with a stand-in copy
of the shared prompt in its place (so every hook still sees the batch's row count), and then
the stand-in's cache and logits are replaced by the prompted row's. Decoding runs on one
``BatchKVCache`` per layer: the shorter rows are left-padded with masked zero keys, and each
row keeps its own rotary position (``offset``), so every row sees exactly its own tokens.

Only plain ``KVCache`` layers whose attention takes a per-row mask can be joined this way
(sliding-window or quantized caches, and gemma2's own attention, cannot); ``joinable`` says
so, and callers then run the prompted row as a batch of its own.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import mlx.core as mx
from mlx_lm.models.cache import BatchKVCache, KVCache, make_prompt_cache


def joinable(model: Any) -> bool:
    """True when every layer's cache is a plain KVCache AND the model's attention takes the
    per-row mask a left-padded batch needs (gemma2's own attention does not): tried once on
    a few tokens, remembered on the model object (a plain attribute, not a parameter)."""
    known = getattr(model, "_lab_joinable", None)
    if known is None:
        ok = all(type(c) is KVCache for c in make_prompt_cache(model))
        if ok:
            try:
                ok = _padded_rows_match(model)
            except Exception:  # noqa: BLE001 - any failure means: run the row on its own
                ok = False
        model._lab_joinable = known = ok
    return known


def _padded_rows_match(model: Any) -> bool:
    """Left-padded rows of a 3-row BatchKVCache batch give their solo logits (prefill + one step)."""
    rows = [[3, 1, 2], [0, 1, 2], [0, 0, 2]]
    caches = [BatchKVCache([0, 1, 2]) for _ in make_prompt_cache(model)]
    model(mx.array(rows), cache=caches)
    got = model(mx.array([[4], [4], [4]]), cache=caches)[:, -1, :].astype(mx.float32)
    for r, (row, pad) in enumerate(zip(rows, (0, 1, 2))):
        solo = make_prompt_cache(model)
        model(mx.array([row[pad:]]), cache=solo)
        want = model(mx.array([[4]]), cache=solo)[0, -1, :].astype(mx.float32)
        if not mx.allclose(got[r], want, rtol=1e-3, atol=1e-3).item():
            return False
    return True


def prefill_alone(model: Any, prompt: Sequence[int]) -> tuple[list[KVCache], mx.array]:
    """Cache and last-position logits [1, V] (float32) of ``prompt`` run as a batch of one
    (the final norm and the unembedding run at the last position only, as in run_batch)."""
    from app.core.models import layers_of
    from app.core.patching import ForwardState, last_position_only, patch_layers

    cache = make_prompt_cache(model)
    last = len(layers_of(model)) - 1
    with patch_layers(model, {last: [last_position_only]}, ForwardState(phase="prompt")):
        logits = model(mx.array([list(prompt)]), cache=cache)[:, -1, :].astype(mx.float32)
    return cache, logits


def _left_pad(x: mx.array, pad: int) -> mx.array:
    if pad == 0:
        return x
    zeros = mx.zeros((x.shape[0], x.shape[1], pad, x.shape[3]), x.dtype)
    return mx.concatenate([zeros, x], axis=2)


def join(shared: Sequence[KVCache], shared_len: int, alone: Sequence[KVCache], alone_len: int) -> list[BatchKVCache]:
    """Per-layer BatchKVCache: the shared rows but the last, then the prompted row.

    The last shared row is the stand-in and is dropped. Keys are left-padded to the longer
    prompt; ``left_padding`` masks the padding and ``offset`` keeps each row's positions.
    """
    T = max(shared_len, alone_len)
    pad_s, pad_a = T - shared_len, T - alone_len
    out = []
    for s, a in zip(shared, alone):
        keys_s, vals_s = s.keys[:-1, :, :shared_len, :], s.values[:-1, :, :shared_len, :]
        keys_a, vals_a = a.keys[:, :, :alone_len, :], a.values[:, :, :alone_len, :]
        n_shared = keys_s.shape[0]
        bc = BatchKVCache([pad_s] * n_shared + [pad_a])
        bc.keys = mx.concatenate([_left_pad(keys_s, pad_s), _left_pad(keys_a, pad_a)], axis=0)
        bc.values = mx.concatenate([_left_pad(vals_s, pad_s), _left_pad(vals_a, pad_a)], axis=0)
        bc._idx = T
        bc.offset = mx.array([shared_len] * n_shared + [alone_len])
        out.append(bc)
    return out


def run_alone(lm: Any, prompt: Sequence[int], params: Any, should_stop: Optional[Callable[[], bool]] = None) -> Any:
    """The prompted row as a batch of its own (models whose caches cannot join it): its RowState."""
    from app.core.generation import run_batch  # generation imports this module

    last = None
    for last in run_batch(lm, prompt, [[]], params, should_stop=should_stop):
        pass
    return last.rows[0]


def add_prompted(chunk: Any, row: Any, pieces: Any, n_prompt: int, where: str) -> None:
    """Put the prompted row's text so far (``pieces``: an incremental detokenizer) into a chunk."""
    pieces.update(row.tokens)
    chunk.prompted_text = pieces.text
    chunk.prompted_pieces = list(pieces.pieces)
    chunk.stats.update(prompted_tokens=len(row.tokens), prompted_finish=row.finish,
                       prompted_prompt_tokens=n_prompt, prompted_run=where)
