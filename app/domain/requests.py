"""What the UI and the CLI ask the lab for: frozen requests that check themselves once, on creation.

A widget value or an argv string becomes one of these, and from then on every layer can trust
it: the names of modes, schedules, positions and operations and the bounds of their numbers live
here and in ``limits``, not in each caller. Numpy only (no MLX, no Gradio).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional, Sequence, get_args

import numpy as np

from app.domain import limits
from app.domain.checks import validate_params
from app.domain.parse import parse_float
from app.errors import InputError
from app.types import GenerationParams

Mode = Literal["add", "logits"]  # add to the residual stream | contrast two rows' logits
ScheduleKind = Literal["constant", "linear_decay", "ramp_up", "pulse"]
Positions = Literal["all", "prompt", "generated"]
MODES: tuple[str, ...] = get_args(Mode)
SCHEDULES: tuple[str, ...] = get_args(ScheduleKind)
POSITIONS: tuple[str, ...] = get_args(Positions)
# the operations at a layer (app.core.interventions.OPS registers their classes); logits is a Mode
RESIDUAL_OP_NAMES: tuple[str, ...] = tuple(k for k in limits.OP_PARAMS if k != "logits")

__all__ = ["GenerationParams", "SteerRequest", "SweepRequest", "ExtractRequest", "CalibrateRequest", "MODES", "SCHEDULES", "POSITIONS"]


def _choice(value: object, allowed: Sequence[str], what: str) -> str:
    if value not in allowed:
        raise InputError(f"{what} must be one of {', '.join(allowed)}, got {value!r}")
    return str(value)


def _layer_numbers(value: object, what: str) -> tuple[int, ...]:
    if not isinstance(value, (tuple, list)) or any(
            isinstance(x, bool) or not isinstance(x, (int, np.integer)) or x < 0 for x in value):
        raise InputError(f"{what} must be layer numbers >= 0, got {value!r}")
    return tuple(int(x) for x in value)


def check_op_param(op: str, value: object, what: str = "operation parameter") -> float:
    """``value`` as a float inside operation ``op``'s range (limits.OP_PARAMS), or an error naming ``what``."""
    lo, hi, _ = limits.OP_PARAMS[op]
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise InputError(f"{what} must be a number, got {value!r}") from None
    if not np.isfinite(v) or not lo <= v <= hi:
        raise InputError(f"{what} must be between {lo:g} and {hi:g}, got {value!r}")
    return v


@dataclass(frozen=True)
class SteerRequest:
    """Everything a side-by-side run needs; the UI, the CLI and tests all build one."""

    prompt: str
    concept: str  # slug, mix text ("happy:0.7, excited:0.3") or "random:<slug>"
    layers: Optional[list[tuple[int, float]]] = None  # None: the concept's recommended setting
    relative: bool = True
    mode: Mode = "add"
    schedule: ScheduleKind = "constant"
    schedule_length: int = 16
    positions: Positions = "all"
    guidance: float = 1.0
    system: Optional[str] = None
    params: GenerationParams = field(default_factory=GenerationParams)
    normalize: bool = False  # mixes: rescale each layer's sum to the weighted mean norm of its parts
    project_out: tuple[str, ...] = ()  # mixes: remove these concepts' directions
    op: str = "add"  # one of RESIDUAL_OP_NAMES (app.core.interventions.OPS)
    op_param: Optional[float] = None  # a / t / theta; None: the operation's default (add uses the strengths)
    op_layers: tuple[int, ...] = ()  # more layers for the operation (e.g. every layer for ablation)
    condition: Optional[str] = None  # conditional steering: only where this concept's projection is high
    threshold: float = 1.0  # ... above threshold x its typical positive projection
    effects: bool = False  # also compute the per-token effect map at the end
    prompted: bool = False  # add the unsteered row under the concept's system prompt
    judge: bool = True  # score baseline / prompted / steered with the concept's judge at the end

    def __post_init__(self):
        """Validate the choices and the operation fields once, naming the field."""
        fix = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731  (frozen)
        _choice(self.mode, MODES, "mode")
        _choice(self.schedule, SCHEDULES, "schedule")
        _choice(self.positions, POSITIONS, "positions")
        _choice(self.op, RESIDUAL_OP_NAMES, "op")
        if self.op_param is not None:
            fix("op_param", check_op_param(self.op, self.op_param, f"op_param (for {self.op})"))
        fix("op_layers", _layer_numbers(self.op_layers, "op_layers"))
        if self.condition is not None and (not isinstance(self.condition, str) or not self.condition.strip()):
            raise InputError("condition must be a concept name (or left out)")
        fix("threshold", parse_float(self.threshold, "threshold", limits.CONDITION_THRESHOLD_LIMIT))
        fix("guidance", parse_float(self.guidance, "guidance scale", limits.GUIDANCE_LIMIT))
        fix("project_out", tuple(self.project_out or ()))


@dataclass(frozen=True)
class SweepRequest:
    """A layers x values sweep of one concept; for an operation other than add the values are its parameter."""

    prompt: str
    concept: str
    layers: tuple[int, ...]
    strengths: tuple[float, ...]
    params: GenerationParams = field(default_factory=lambda: GenerationParams(max_tokens=limits.DEFAULT_SWEEP_TOKENS))
    relative: bool = True
    system: Optional[str] = None
    op: str = "add"
    prompted: bool = True
    judge: bool = True

    def __post_init__(self):
        _choice(self.op, RESIDUAL_OP_NAMES, "op")
        object.__setattr__(self, "layers", _layer_numbers(self.layers, "layers"))
        limit = limits.strength_limit(self.relative) if self.op == "add" else limits.op_param_limit(self.op)
        object.__setattr__(self, "strengths", tuple(parse_float(s, "strengths", limit) for s in self.strengths))
        cells = len(self.layers) * len(self.strengths)
        if not cells:
            raise InputError("a sweep needs at least one layer and one strength")
        if cells > limits.SWEEP_CELLS:
            raise InputError(f"{cells} cells is too many for one sweep (at most {limits.SWEEP_CELLS})")


@dataclass(frozen=True)
class ExtractRequest:
    """Extract a library concept's vectors at every layer; ``method`` None: the concept's own, else mean_diff."""

    slug: str
    method: Optional[str] = None  # a name of app.domain.methods.METHODS (checked there, with the choices)
    save: bool = True  # store them when the concept is saved in the library as extracted

    def __post_init__(self):
        if not isinstance(self.slug, str) or not self.slug.strip():
            raise InputError("slug must name a concept of the library")
        if self.method is not None and (not isinstance(self.method, str) or not self.method.strip()):
            raise InputError("method must be an extraction method's name (or left out)")


@dataclass(frozen=True)
class CalibrateRequest:
    """The calibration search of ``steering-lab calibrate`` (maintainers): which concepts, the search's size,
    where the result goes. ``None`` leaves a stage's default (see app.core.calib_search.SearchPlan)."""

    concepts: tuple[str, ...]  # slugs, or ("all",) for every concept with pairs
    methods: Optional[tuple[str, ...]] = None
    layers: Optional[tuple[int, ...]] = None  # of the depth scan
    strengths: Optional[tuple[float, ...]] = None  # of the fine stage
    coarse_strengths: Optional[tuple[float, ...]] = None  # of the depth and method stages
    band_strengths: Optional[tuple[float, ...]] = None  # fine stage, on a band of layers; () = single layers only
    coarse_prompts: int = 2
    coarse_tokens: int = 32
    top_layers: int = 1
    validate_all_methods: bool = False
    max_tokens: int = 48
    val_tokens: int = 64
    repetition_penalty: float = 1.0  # every row of every stage, baselines included (1.0 = off)
    save: bool = False  # into the user's library
    ship: bool = False  # into the repository's shipped concepts, vectors and assets/calibration
    reuse_vectors: bool = False
    distributed: bool = False
    log: Optional[str] = None  # also append progress lines here; the raw result goes beside it

    def __post_init__(self):
        object.__setattr__(self, "concepts", tuple(str(c).strip() for c in self.concepts if str(c).strip()))
        if not self.concepts:
            raise InputError("concepts: name at least one concept slug (or 'all')")
        for name in ("coarse_prompts", "coarse_tokens", "top_layers", "max_tokens", "val_tokens"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise InputError(f"--{name.replace('_', '-')} must be at least 1")
        if self.layers is not None:
            object.__setattr__(self, "layers", _layer_numbers(self.layers, "layers"))
        validate_params(GenerationParams(repetition_penalty=self.repetition_penalty))  # the one range check
        for name in ("strengths", "coarse_strengths", "band_strengths"):
            values = getattr(self, name)
            if values is not None:
                object.__setattr__(self, name, tuple(parse_float(v, name.replace("_", "-")) for v in values))
