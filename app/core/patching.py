"""Wrap decoder blocks to read or steer the residual stream, and always put them back.

mlx-lm has no hooks, so a chosen ``model.layers[i]`` is replaced by a ``LayerWrapper`` that
calls the original block and then lets hooks read or change its output (the residual
stream after block i). ``patch_layers`` is a context manager: on exit, also after an
exception or a cancel, the exact original block objects are back in the list.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional, Sequence

import mlx.core as mx
import mlx.nn as nn

from app.core import family
from app.core.models import layers_of
from app.errors import InputError

POSITIONS = ("all", "prompt", "generated")


class PatchError(InputError):
    """A patch request does not fit the model (bad layer, wrong width, nested patch)."""


@dataclass
class ForwardState:
    """What the current forward call is: the prompt (prefill) or generated token number ``step``."""

    phase: str = "prompt"  # "prompt" | "generated"
    step: int = 0


Hook = Callable[[mx.array, ForwardState], Optional[mx.array]]


class LayerWrapper(nn.Module):
    """Stands in for one decoder block; forwards every unknown attribute to it."""

    def __init__(self, block: nn.Module, index: int, hooks: Sequence[Hook], state: ForwardState):
        super().__init__()
        self._block = block
        self._index = index
        self._hooks = list(hooks)
        self._state = state

    def __getattr__(self, key):
        # MLX's __setattr__ calls hasattr() before _block exists: that must be AttributeError.
        try:
            block = self["_block"]
        except KeyError:
            raise AttributeError(key) from None
        if key in self:
            return self[key]
        return getattr(block, key)

    def __call__(self, x, *args, **kwargs):
        out = self._block(x, *args, **kwargs)
        h = out[0] if isinstance(out, tuple) else out
        for hook in self._hooks:
            new = hook(h, self._state)
            if new is not None:
                h = new
        if isinstance(out, tuple):
            return (h, *out[1:])
        return h


@dataclass
class SteeringHook:
    """Adds ``coef[row] * schedule(step) * vector`` to the chosen positions of the output.

    ``vector`` is in absolute units (already multiplied by the strength); ``row_coefs`` lets
    rows of one batch get different amounts (0 for a baseline row).
    """

    vector: mx.array  # [H]
    row_coefs: Optional[mx.array] = None  # [B]
    positions: str = "all"
    skip_first: bool = True
    schedule: Optional[Callable[[int], float]] = None

    def __post_init__(self):
        if self.positions not in POSITIONS:
            raise PatchError(f"positions must be one of {POSITIONS}, got {self.positions!r}")

    def __call__(self, h: mx.array, state: ForwardState) -> Optional[mx.array]:
        T = h.shape[1]
        if state.phase == "prompt":
            if self.positions == "generated":
                return None
            pos = mx.ones((T,), dtype=h.dtype)
            if self.skip_first:
                pos = mx.where(mx.arange(T) == 0, mx.array(0, h.dtype), pos)
        else:
            if self.positions == "prompt":
                return None
            scale = 1.0 if self.schedule is None else float(self.schedule(state.step))
            if scale == 0.0:
                return None
            pos = mx.full((T,), scale, dtype=h.dtype)
        vec = self.vector.astype(h.dtype)
        scale = pos[None, :, None]
        if self.row_coefs is not None:
            scale = self.row_coefs.astype(h.dtype)[:, None, None] * scale
        # where(), not a product: rows/positions with scale 0 must stay exact even if the
        # vector holds NaN/inf (0 * nan is nan).
        add = mx.where(scale != 0, scale * vec[None, None, :], mx.array(0, h.dtype))
        return h + add


@dataclass
class Recorder:
    """Keeps the block output (before later hooks) so callers can read the residual stream."""

    last_only: bool = False
    outputs: list[mx.array] = field(default_factory=list)

    def __call__(self, h: mx.array, state: ForwardState) -> None:
        self.outputs.append(h[:, -1, :] if self.last_only else h)
        return None


@contextlib.contextmanager
def patch_layers(model: nn.Module, hooks: dict[int, Sequence[Hook]], state: Optional[ForwardState] = None) -> Iterator[ForwardState]:
    """Wrap ``model.layers[i]`` for each i in ``hooks``; restore the originals on exit."""
    layers = layers_of(model)
    n = len(layers)
    hidden = None
    for i, hs in hooks.items():
        if not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < n:
            raise PatchError(f"layer {i!r} does not exist: this model has layers 0-{n - 1}")
        if isinstance(layers[i], LayerWrapper):
            raise PatchError(f"layer {i} is already patched (another steering run is active)")
        for h in hs:
            if isinstance(h, SteeringHook):
                width = h.vector.shape[-1]
                if hidden is None:
                    hidden = family.block_width(layers[i])
                if h.vector.ndim != 1 or (hidden is not None and width != hidden):
                    raise PatchError(
                        f"steering vector has shape {tuple(h.vector.shape)}, but layer {i} "
                        f"expects a vector of length {hidden}; it was made for another model"
                    )
    state = state or ForwardState()
    originals = {i: layers[i] for i in hooks}
    try:
        for i, hs in hooks.items():
            layers[i] = LayerWrapper(originals[i], i, hs, state)
        yield state
    finally:
        for i, block in originals.items():
            layers[i] = block


def is_patched(model: nn.Module) -> bool:
    return any(isinstance(layer, LayerWrapper) for layer in layers_of(model))
