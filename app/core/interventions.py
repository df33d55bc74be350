"""What a steering hook does to a layer's output: one class per operation, and their registry.

Every residual operation maps a block's output ``h`` [rows, T, D] to a new one, given the
direction ``d`` and three per-row/per-position arrays the hook precomputes once per phase
(prefill, each decode step): ``coef`` = row parameter x position/schedule weight, ``active`` =
1 x that weight where the row uses this operation, ``param`` = the row's raw parameter.
Wherever ``active``/``coef`` is 0 the output is ``h`` itself (``mx.where``, not a product), so
a baseline row, a closed gate or a zero parameter is bit-identical to no steering at all.

Parameters per operation (``param``):
- ``add``: coefficient on the raw vector (strength already converted);
- ``ablate``: a in [0, 1]: ``h - a (h.u) u``;
- ``cap`` / ``clamp``: t in projection units: ``h + (min(h.u, t) - h.u) u`` / ``h + (t - h.u) u``;
- ``rotate``: theta in degrees, turning h within the plane of u and h's own component
  orthogonal to u (towards u for theta > 0), so its norm is kept.
``Conditional`` wraps any of them: it applies only where ``h . c > threshold`` for a condition
direction c, and records that gate per position. ``logits`` guidance acts on the logits of two
rows, not on a layer's output: its hook point is the sampler (see ``generation.run_batch``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Optional, Protocol, Sequence

import mlx.core as mx
import numpy as np

from app.domain import limits
from app.domain.requests import check_op_param
from app.errors import InputError


class Intervention(Protocol):
    """One operation at one layer for one row; rows with equal ``fuse_key`` share one hook."""

    name: ClassVar[str]
    hook_point: ClassVar[str]  # "residual" (a layer's output) | "logits"
    scales_param: ClassVar[bool]  # True: param 0 is the identity, so coef = param x weight
    layer: int
    param: float

    def direction(self) -> np.ndarray: ...

    def fuse_key(self) -> tuple: ...

    @staticmethod
    def apply(h: mx.array, d: mx.array, coef: mx.array, active: mx.array, param: mx.array) -> mx.array: ...


def unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    n = float(np.linalg.norm(v))
    return (v / n if n > 0 else v).astype(np.float32)


@dataclass(frozen=True, eq=False)
class _Residual:
    layer: int
    vector: np.ndarray  # the concept's raw vector at this layer [D]
    param: float
    hook_point: ClassVar[str] = "residual"
    scales_param: ClassVar[bool] = True
    name: ClassVar[str] = ""

    def direction(self) -> np.ndarray:
        return unit(self.vector)

    def fuse_key(self) -> tuple:
        return (self.name, int(self.layer), np.asarray(self.vector, dtype=np.float32).tobytes())


def _proj(h: mx.array, d: mx.array) -> mx.array:
    return (h @ d)[..., None]  # [B, T, 1]


@dataclass(frozen=True, eq=False)
class Add(_Residual):
    """``h + coef * v``: today's addition (bit-identical to the lab's first hook)."""

    name: ClassVar[str] = "add"

    def direction(self) -> np.ndarray:
        return np.asarray(self.vector, dtype=np.float32)

    @staticmethod
    def apply(h, d, coef, active, param):
        # where(), not a product: rows/positions with coef 0 stay exact even if d holds NaN/inf.
        add = mx.where(coef != 0, coef * d[None, None, :], mx.array(0, h.dtype))
        return h + add


@dataclass(frozen=True, eq=False)
class Ablate(_Residual):
    """``h - a (h.u) u``: remove (a = 1) or shrink the concept's component."""

    name: ClassVar[str] = "ablate"

    @staticmethod
    def apply(h, d, coef, active, param):
        return mx.where(coef != 0, h - (coef * _proj(h, d)) * d, h)


@dataclass(frozen=True, eq=False)
class Cap(_Residual):
    """``h + (min(h.u, t) - h.u) u``: never more of the concept than t."""

    name: ClassVar[str] = "cap"
    scales_param: ClassVar[bool] = False

    @staticmethod
    def apply(h, d, coef, active, param):
        p = _proj(h, d)
        return mx.where(active != 0, h + (active * (mx.minimum(p, param) - p)) * d, h)


@dataclass(frozen=True, eq=False)
class Clamp(_Residual):
    """``h + (t - h.u) u``: exactly t of the concept at every steered position."""

    name: ClassVar[str] = "clamp"
    scales_param: ClassVar[bool] = False

    @staticmethod
    def apply(h, d, coef, active, param):
        p = _proj(h, d)
        return mx.where(active != 0, h + (active * (param - p)) * d, h)


@dataclass(frozen=True, eq=False)
class Rotate(_Residual):
    """Turn h by theta degrees towards u in the plane of u and h's orthogonal part; |h| is kept."""

    name: ClassVar[str] = "rotate"

    @staticmethod
    def apply(h, d, coef, active, param):
        p = _proj(h, d)
        r = h - p * d
        rn = mx.sqrt(mx.sum(r * r, axis=-1, keepdims=True))
        theta = coef * (math.pi / 180.0)
        cos, sin = mx.cos(theta), mx.sin(theta)
        p_new = p * cos + rn * sin
        rn_new = rn * cos - p * sin
        safe = mx.where(rn > 0, rn, mx.array(1, h.dtype))
        new = p_new * d + (rn_new / safe) * r
        return mx.where((coef != 0) & (rn > 0), new, h)


@dataclass(frozen=True, eq=False)
class Conditional:
    """Apply ``inner`` only where the residual's projection on ``condition`` exceeds ``threshold``."""

    inner: _Residual
    condition: np.ndarray  # raw condition vector at inner.layer [D]
    threshold: float  # in projection units (h . unit(condition))
    name: ClassVar[str] = "conditional"
    hook_point: ClassVar[str] = "residual"

    @property
    def layer(self) -> int:
        return self.inner.layer

    @property
    def param(self) -> float:
        return self.inner.param

    @property
    def scales_param(self) -> bool:
        return self.inner.scales_param

    def direction(self) -> np.ndarray:
        return self.inner.direction()

    def condition_direction(self) -> np.ndarray:
        return unit(self.condition)

    def fuse_key(self) -> tuple:
        return ("conditional", self.inner.fuse_key(), np.asarray(self.condition, np.float32).tobytes(),
                float(self.threshold))

    def apply(self, h, d, coef, active, param):
        return self.inner.apply(h, d, coef, active, param)


# ---- the registry the UI and the CLI read their choices from ----------------------------------
@dataclass(frozen=True)
class OpInfo:
    """One registered operation; its parameter's range and default come from ``limits.OP_PARAMS``."""

    name: str
    cls: type
    help: str
    param: str  # what the parameter is called (the sweep axis)
    unit: str = ""
    hook_point: str = "residual"

    @property
    def lo(self) -> float:
        return limits.OP_PARAMS[self.name][0]

    @property
    def hi(self) -> float:
        return limits.OP_PARAMS[self.name][1]

    @property
    def default(self) -> float:
        return limits.OP_PARAMS[self.name][2]


OPS: dict[str, OpInfo] = {
    "add": OpInfo("add", Add, "add the concept vector (strength x typical norm along it)", "strength",
                  "relative to the layer's typical residual norm"),
    "ablate": OpInfo("ablate", Ablate, "remove the concept's component: h - a (h.u) u", "a",
                     "share of the component removed"),
    "cap": OpInfo("cap", Cap, "cap the projection on the concept at t", "t",
                  "typical projection of the concept's positive prompts"),
    "clamp": OpInfo("clamp", Clamp, "set the projection on the concept to t", "t",
                    "typical projection of the concept's positive prompts"),
    "rotate": OpInfo("rotate", Rotate, "rotate towards the concept by theta, keeping the norm", "theta", "degrees"),
    "logits": OpInfo("logits", type(None), "contrast a steered row's logits with the baseline's (acts on the "
                     "sampler, not a layer)", "guidance", "base + g (steered - base)", "logits"),
}
RESIDUAL_OPS = tuple(k for k, v in OPS.items() if v.hook_point == "residual")


def op_info(name: str, what: str = "operation") -> OpInfo:
    if name not in OPS or OPS[name].hook_point != "residual":
        raise InputError(f"{what} must be one of {', '.join(RESIDUAL_OPS)}, got {name!r}")
    return OPS[name]


def check_param(name: str, value: float, what: str = "operation parameter") -> float:
    """The parameter of op ``name`` as a float inside its range, or an error naming it."""
    info = op_info(name)
    return check_op_param(name, value, f"{what} ({info.param} for {name})")


def make(name: str, layer: int, vector: np.ndarray, param: float, condition: Optional[np.ndarray] = None,
         threshold: float = 0.0):
    """One row's intervention at one layer (``param`` already in absolute units)."""
    iv = op_info(name).cls(int(layer), np.asarray(vector, dtype=np.float32), float(param))
    if condition is not None:
        iv = Conditional(iv, np.asarray(condition, dtype=np.float32), float(threshold))
    return iv


def additive_rows(vectors: dict[int, np.ndarray], row_coefs: Sequence[dict[int, float]]) -> list[list[Add]]:
    """The old (vectors, per-row coefficients) form as interventions per row (zero coefs dropped)."""
    return [[Add(int(l), vectors[l], float(c)) for l, c in rc.items() if float(c) != 0.0 and l in vectors]
            for rc in row_coefs]


def check_exportable(op: str) -> None:
    """Only addition is a llama.cpp control vector (it adds direction.N to block N's output)."""
    if op != "add":
        op_info(op, "op")
        raise InputError(f"cannot export {op!r} as a llama.cpp control vector: that format can only add a fixed "
                         f"vector to each layer's output, so only the add operation is expressible (no approximation "
                         f"is written); export the concept with op add, or run {op} in the lab")
