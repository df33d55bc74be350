"""Read the residual stream after every layer for a batch of prompts in one forward pass.

Prompts of different lengths are right-padded: with causal attention a real token never
sees a later (padded) position, so each row's real positions are exactly those of an
unpadded run, and the returned mask marks the padded positions that must never count.
The logits of the forward pass are never evaluated (MLX is lazy), so the unembedding
costs nothing here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from app.core.models import layers_of
from app.core.patching import Hook, Recorder, patch_layers
from app.errors import Cancelled


@dataclass
class CaptureResult:
    hidden: np.ndarray  # float32 [num_layers, batch, max_len, hidden]; output of layers[i]
    lengths: np.ndarray  # int [batch]
    tokens: list[list[int]]

    @property
    def mask(self) -> np.ndarray:
        """bool [batch, max_len]: True at real (non-padded) positions."""
        T = self.hidden.shape[2]
        return np.arange(T)[None, :] < self.lengths[:, None]

    def row(self, b: int) -> np.ndarray:
        """[num_layers, len_b, hidden] for prompt ``b`` without padding."""
        return self.hidden[:, b, : self.lengths[b], :]


def pad_right(token_lists: Sequence[Sequence[int]], pad: int) -> tuple[mx.array, np.ndarray]:
    if not token_lists or any(len(t) == 0 for t in token_lists):
        raise ValueError("every prompt must have at least one token")
    lengths = np.array([len(t) for t in token_lists], dtype=np.int64)
    T = int(lengths.max())
    arr = np.full((len(token_lists), T), pad, dtype=np.int32)
    for i, t in enumerate(token_lists):
        arr[i, : len(t)] = t
    return mx.array(arr), lengths


def capture(
    model: nn.Module,
    token_lists: Sequence[Sequence[int]],
    pad: int = 0,
    layers: Optional[Sequence[int]] = None,
    batch_size: int = 16,
    progress: Optional[Callable[[int, int], None]] = None,
    should_stop: Optional[Callable[[], bool]] = None,
    extra_hooks: Optional[dict[int, Sequence[Hook]]] = None,
) -> CaptureResult:
    """Residual stream after each chosen layer (default: all) for every prompt."""
    n_layers = len(layers_of(model))
    chosen = list(range(n_layers)) if layers is None else list(layers)
    T = max(len(t) for t in token_lists) if token_lists else 0
    out: Optional[np.ndarray] = None
    all_lengths = np.zeros(len(token_lists), dtype=np.int64)
    for start in range(0, len(token_lists), batch_size):
        if should_stop is not None and should_stop():
            raise Cancelled("capture cancelled")
        chunk = token_lists[start : start + batch_size]
        tokens, lengths = pad_right(chunk, pad)
        recorders = {i: Recorder() for i in chosen}
        hooks: dict[int, list[Hook]] = {i: [] for i in chosen}
        for i, hs in (extra_hooks or {}).items():
            hooks.setdefault(i, []).extend(hs)
        for i in chosen:
            hooks[i].append(recorders[i])
        with patch_layers(model, hooks):
            model(tokens)
            states = [recorders[i].outputs[0] for i in chosen]
            mx.eval(states)
        block = np.stack([np.array(s.astype(mx.float32)) for s in states])  # [L, b, t, H]
        if out is None:
            out = np.zeros((len(chosen), len(token_lists), T, block.shape[-1]), dtype=np.float32)
        out[:, start : start + len(chunk), : block.shape[2], :] = block
        all_lengths[start : start + len(chunk)] = lengths
        if progress is not None:
            progress(min(start + batch_size, len(token_lists)), len(token_lists))
    assert out is not None
    mask = np.arange(T)[None, :] < all_lengths[:, None]
    out[:, ~mask, :] = 0.0  # padded positions carry no information
    return CaptureResult(hidden=out, lengths=all_lengths, tokens=[list(t) for t in token_lists])
