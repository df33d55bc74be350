"""Wrap decoder blocks to read or steer the residual stream, and always put them back.

mlx-lm has no hooks, so a chosen ``model.layers[i]`` is replaced by a ``LayerWrapper`` that
calls the original block and then lets hooks read or change its output (the residual
stream after block i). ``patch_layers`` is a context manager: on exit, also after an
exception or a cancel, the exact original block objects are back in the list.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional, Sequence

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from app.core import family
from app.core.interventions import Add
from app.core.models import layers_of
from app.domain.requests import POSITIONS
from app.errors import InputError



class PatchError(InputError):
    """A patch request does not fit the model (bad layer, wrong width, nested patch)."""


@dataclass
class ForwardState:
    """What the current forward call is: the prompt (prefill), generated token number ``step``,
    or ``full``: one uncached pass over prompt + generated tokens (the first ``prompt_len``
    positions are the prompt, position ``prompt_len + i`` is generated token i)."""

    phase: str = "prompt"  # "prompt" | "generated" | "full"
    step: int = 0
    prompt_len: int = 0


Hook = Callable[[mx.array, ForwardState], Optional[mx.array]]


def last_position_only(h: mx.array, state: ForwardState) -> Optional[mx.array]:
    """A hook for the LAST block: in the prompt phase only the last position's logits are used,
    so the final norm and the unembedding run there alone (rows of a matmul do not depend on the
    other rows; with left padding the last position is every row's last real token)."""
    if state.phase == "prompt" and h.shape[1] > 1:
        return h[:, -1:, :]
    return None


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


class InterventionHook:
    """Applies one fused ``Intervention`` to the rows that use it, at the chosen positions.

    Position weights (skip position 0, the schedule on generated tokens) times the rows'
    parameters are built ONCE per phase shape and reused: a decode step only looks them up,
    so a steered row costs what an unsteered one does. ``trace`` records, in plain Python,
    every call (phase, step, first position, length, schedule weight) for the "where it
    applies" report; a conditional hook also keeps its gate per call in ``gates``.
    """

    def __init__(self, op: Any, direction: mx.array, row_params: Optional[mx.array] = None,
                 row_active: Optional[mx.array] = None, positions: str = "all", skip_first: bool = True,
                 schedule: Optional[Callable[[int], float]] = None, condition: Optional[tuple[mx.array, float]] = None,
                 layer: int = -1):
        if positions not in POSITIONS:
            raise PatchError(f"positions must be one of {POSITIONS}, got {positions!r}")
        self.op, self.direction, self.positions, self.skip_first = op, direction, positions, skip_first
        self.schedule, self.condition, self.layer = schedule, condition, layer
        self.row_params = row_params
        if row_active is None and row_params is not None:
            row_active = (row_params != 0).astype(mx.float32) if op.scales_param else mx.ones(row_params.shape)
        self.row_active = row_active
        self.trace: list[tuple[str, int, int, int, float]] = []
        self.gates: list[mx.array] = []
        self.last_gate: Optional[mx.array] = None
        self._cache: dict[tuple, tuple] = {}
        self._seen = 0

    # -- per-phase weights, built once -------------------------------------------------------
    def _prompt_weight(self, T: int) -> Optional[np.ndarray]:
        if self.positions == "generated":
            return None
        w = np.ones(T, dtype=np.float32)
        if self.skip_first:
            w[0] = 0.0
        return w

    def _full_weight(self, T: int, prompt_len: int) -> Optional[np.ndarray]:
        w = np.zeros(T, dtype=np.float32)
        if self.positions != "generated":
            w[: min(prompt_len, T)] = 1.0
            if self.skip_first:
                w[0] = 0.0
        if self.positions != "prompt":
            for t in range(prompt_len, T):
                w[t] = 1.0 if self.schedule is None else float(self.schedule(t - prompt_len))
        return w if w.any() else None

    def _arrays(self, weight: np.ndarray, dtype) -> tuple:
        pos = mx.array(weight).astype(dtype)[None, :, None]
        if self.row_params is None:
            coef = active = pos
            param = mx.array(1, dtype)
        else:
            param = self.row_params.astype(dtype)[:, None, None]
            coef = param * pos
            active = self.row_active.astype(dtype)[:, None, None] * pos
        out = (self.direction.astype(dtype), coef, active, param)
        mx.eval(*out)
        return out

    def _weights(self, T: int, state: ForwardState, dtype) -> Optional[tuple]:
        """(direction, coef, active, param) for this call and its schedule weight, or None: no-op."""
        scale = 1.0
        if state.phase == "prompt":
            key: tuple = ("prompt", T, dtype)
        elif state.phase == "full":
            key = ("full", T, state.prompt_len, dtype)
        else:
            if self.positions == "prompt":
                return None
            scale = 1.0 if self.schedule is None else float(self.schedule(state.step))
            if scale == 0.0:
                return None
            key = ("generated", T, scale, dtype)
        if key in self._cache:
            got = self._cache[key]
            return (got, scale) if got is not None else None
        if state.phase == "prompt":
            w = self._prompt_weight(T)
        elif state.phase == "full":
            w = self._full_weight(T, state.prompt_len)
        else:
            w = np.full(T, scale, dtype=np.float32)
        got = None if w is None else self._arrays(w, dtype)
        self._cache[key] = got
        return (got, scale) if got is not None else None

    def __call__(self, h: mx.array, state: ForwardState) -> Optional[mx.array]:
        T = h.shape[1]
        self.last_gate = None
        start = self._seen if state.phase == "generated" else 0
        self._seen = start + T
        got = self._weights(T, state, h.dtype)
        if got is None:
            return None
        (d, coef, active, param), scale = got
        self.trace.append((state.phase, int(state.step), start, T, scale))
        if self.condition is not None:
            cd, thr = self.condition
            gate = ((h @ cd.astype(h.dtype)) > thr).astype(h.dtype)[..., None]  # [B, T, 1]
            self.last_gate = gate[:, :, 0]
            self.gates.append(self.last_gate)
            coef, active = coef * gate, active * gate
        return self.op.apply(h, d, coef, active, param)


class SteeringHook(InterventionHook):
    """Adds ``coef[row] * schedule(step) * vector`` to the chosen positions of the output.

    ``vector`` is in absolute units (already multiplied by the strength); ``row_coefs`` lets
    rows of one batch get different amounts (0 for a baseline row).
    """

    def __init__(self, vector: mx.array, row_coefs: Optional[mx.array] = None, positions: str = "all",
                 skip_first: bool = True, schedule: Optional[Callable[[int], float]] = None):
        super().__init__(Add, vector, row_coefs, None, positions, skip_first, schedule)
        self.vector = vector


def build_hooks(rows: Sequence[Sequence[Any]], positions: str = "all", skip_first: bool = True,
                schedule: Optional[Callable[[int], float]] = None) -> dict[int, list[InterventionHook]]:
    """One hook per (layer, fused operation) from interventions per row; rows not in it stay exact."""
    B = len(rows)
    groups: dict[tuple, list[tuple[int, Any]]] = {}
    for r, row in enumerate(rows):
        for iv in row:
            groups.setdefault(iv.fuse_key(), []).append((r, iv))
    hooks: dict[int, list[InterventionHook]] = {}
    for members in groups.values():
        first = members[0][1]
        params = np.zeros(B, dtype=np.float32)
        active = np.zeros(B, dtype=np.float32)
        for r, iv in members:
            params[r] += float(iv.param)
            active[r] = 1.0
        if first.scales_param and not np.any(params != 0):
            continue
        cond = None
        if hasattr(first, "condition_direction"):
            cond = (mx.array(first.condition_direction()), float(first.threshold))
        hook = InterventionHook(first, mx.array(first.direction()), mx.array(params), mx.array(active),
                                positions, skip_first, schedule, cond, int(first.layer))
        hooks.setdefault(int(first.layer), []).append(hook)
    return hooks


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
            if isinstance(h, InterventionHook):
                width = h.direction.shape[-1]
                if hidden is None:
                    hidden = family.block_width(layers[i])
                if h.direction.ndim != 1 or (hidden is not None and width != hidden):
                    raise PatchError(
                        f"steering vector has shape {tuple(h.direction.shape)}, but layer {i} "
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
