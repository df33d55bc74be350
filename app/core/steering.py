"""Steering plans: which vector goes to which layer, how strong, where and when.

Strength can be *relative* (default) or *absolute*:
- relative s adds ``s * typical_norm[layer] * unit(vector[layer])``: s = 1.0 is a step as
  long as a typical token's residual vector at that layer, so one number means the same
  thing at every layer even though residual norms grow ~10x through the network;
- absolute s adds ``s * vector[layer]`` (the raw extracted vector times s).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from app.core.interventions import check_param, make, op_info
from app.domain import limits
from app.domain.parse import parse_float
from app.domain.requests import MODES, POSITIONS, SCHEDULES
from app.errors import InputError
from app.types import ConceptVectors

MAX_ABS_STRENGTH = limits.STRENGTH_LIMITS["absolute"]  # the largest strength of either mode


@dataclass(frozen=True)
class Schedule:
    """A multiplier over generated tokens (step 0 is the first generated token)."""

    kind: str = "constant"
    length: int = 16  # decay/ramp length, or K for a pulse over the first K tokens

    def __post_init__(self):
        if self.kind not in SCHEDULES:
            raise InputError(f"unknown schedule {self.kind!r}; choose one of {', '.join(SCHEDULES)}")
        if not isinstance(self.length, int) or self.length < 1 or self.length > limits.SCHEDULE_LENGTH_MAX:
            raise InputError(f"schedule length must be a whole number of tokens >= 1, got {self.length!r}")

    def value(self, step: int) -> float:
        if self.kind == "constant":
            return 1.0
        if self.kind == "linear_decay":
            return max(0.0, 1.0 - step / self.length)
        if self.kind == "ramp_up":
            return min(1.0, (step + 1) / self.length)
        return 1.0 if step < self.length else 0.0  # pulse


@dataclass(frozen=True)
class SteeringEntry:
    """One layer of a plan: the raw concept vector there and the strength to use it at."""

    layer: int
    vector: np.ndarray  # raw vector [H]
    strength: float
    typical_norm: float
    relative: bool = True
    typical_projection: float = 0.0  # cap/clamp: t = 1.0 is this projection (a typical positive prompt's)

    @property
    def coefficient(self) -> float:
        """Multiplier on the raw vector that realises this strength."""
        if not self.relative:
            return float(self.strength)
        n = float(np.linalg.norm(self.vector))
        return float(self.strength) * self.typical_norm / n if n > 0 else 0.0

    def absolute_vector(self) -> np.ndarray:
        return (self.coefficient * self.vector).astype(np.float32)

    def op_param(self, op: str) -> float:
        """The operation's parameter in the units its ``apply`` uses (``strength`` holds a, t or theta)."""
        if op == "add":
            return self.coefficient
        if op in ("cap", "clamp"):
            return float(self.strength) * float(self.typical_projection)
        return float(self.strength)


@dataclass(frozen=True)
class Condition:
    """Conditional steering: act only where the residual's projection on ``vectors[layer]``
    exceeds ``thresholds[layer]`` (projection units: the threshold times a typical projection)."""

    label: str
    vectors: dict  # layer -> raw condition vector [H]
    thresholds: dict  # layer -> threshold in projection units


@dataclass
class SteeringPlan:
    entries: list[SteeringEntry]
    mode: str = "add"  # "add" (residual addition) | "logits" (contrast of two rows' logits)
    schedule: Schedule = field(default_factory=Schedule)
    positions: str = "all"
    skip_first: bool = True
    guidance: float = 1.0  # logits mode: base + guidance * (steered - base)
    label: str = ""
    op: str = "add"  # a residual operation of app.core.interventions.OPS
    condition: Optional[Condition] = None

    def __post_init__(self):
        if self.mode not in MODES:
            raise InputError(f"unknown mode {self.mode!r}; choose add or logits")
        if self.positions not in POSITIONS:
            raise InputError(f"positions must be one of {', '.join(POSITIONS)}")
        check_finite(self.guidance, "guidance scale", limits.GUIDANCE_LIMIT)
        layers = [e.layer for e in self.entries]
        if len(set(layers)) != len(layers):
            raise InputError("each layer may appear only once in a plan")
        op_info(self.op)
        if self.op != "add":
            for e in self.entries:
                check_param(self.op, e.strength)

    def interventions(self) -> list:
        """The steered row's interventions, one per entry (wrapped in the condition, if any)."""
        out = []
        for e in self.entries:
            cond = thr = None
            if self.condition is not None:
                cond, thr = self.condition.vectors[e.layer], self.condition.thresholds[e.layer]
            out.append(make(self.op, e.layer, e.vector, e.op_param(self.op), cond, thr or 0.0))
        return out

    @property
    def read_layer(self) -> Optional[int]:
        """Where per-token projections are read: the first steered layer."""
        return min((e.layer for e in self.entries), default=None)


def check_finite(x: float, what: str, limit: float = MAX_ABS_STRENGTH) -> float:
    """A finite number with |x| <= limit (the lab's one number check, app.domain.parse)."""
    return parse_float(x, what, limit)


def plan_from_vectors(
    cv: ConceptVectors,
    layer_strengths: list[tuple[int, float]],
    relative: bool = True,
    typical_projection: Optional[np.ndarray] = None,
    **kwargs,
) -> SteeringPlan:
    """Build a plan from a concept's vectors and (layer, strength) choices, validating both.

    For an operation other than add, each strength is that operation's parameter (a, t, theta).
    """
    if not layer_strengths:
        raise InputError("choose at least one layer to steer")
    entries = []
    for layer, strength in layer_strengths:
        if not isinstance(layer, (int, np.integer)) or isinstance(layer, bool) or not 0 <= int(layer) < cv.num_layers:
            raise InputError(f"layer {layer!r} does not exist: this model has layers 0-{cv.num_layers - 1}")
        op = kwargs.get("op", "add")
        if op == "add":
            s = check_finite(strength, "strength", limits.strength_limit(relative))
        else:
            s = check_param(op, strength)
        tp = float(typical_projection[int(layer)]) if typical_projection is not None else 0.0
        entries.append(SteeringEntry(int(layer), cv.vectors[int(layer)], s, float(cv.typical_norms[int(layer)]), relative, tp))
    return SteeringPlan(entries=entries, **kwargs)


def mean_projection(features: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """float32 [L]: mean over prompts of (prompt's mean token feature . unit(vectors[l])).

    The mean token feature already excludes position 0, so this is the mean projection of a
    prompt's tokens: the unit in which cap/clamp targets and condition thresholds are given.
    """
    v = np.asarray(vectors, dtype=np.float64)
    n = np.linalg.norm(v, axis=1, keepdims=True)
    u = np.where(n > 0, v / np.where(n > 0, n, 1.0), 0.0)
    return np.einsum("lnh,lh->ln", np.asarray(features, dtype=np.float64), u).mean(axis=1).astype(np.float32)


def typical_projection_of(lm, token_lists, vectors: np.ndarray) -> np.ndarray:
    """Typical projection [L] of ``token_lists`` (chat-formatted prompts) on ``vectors``."""
    from app.core.extraction import capture_pooled

    mean, _, _ = capture_pooled(lm, token_lists)
    return mean_projection(mean, vectors)
