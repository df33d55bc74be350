"""Service methods for side-by-side generation and sweeps (mixed into ModelService)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np

from app.core.generation import MAX_TOKENS_LIMIT, compare_stream
from app.core.steering import Schedule, SteeringPlan, plan_from_vectors
from app.core.sweeps import MAX_CELLS, SweepResult, run_sweep
from app.errors import InputError
from app.service.jobs import CancelToken
from app.types import ComparisonChunk, ConceptVectors, GenerationParams

DEFAULT_RELATIVE_STRENGTH = 0.3


@dataclass
class SteerRequest:
    """Everything a side-by-side run needs; the UI, the CLI and tests all build one."""

    prompt: str
    concept: str  # slug, mix text ("happy:0.7, excited:0.3") or "random:<slug>"
    layers: Optional[list[tuple[int, float]]] = None  # None: the concept's recommended setting
    relative: bool = True
    mode: str = "add"
    schedule: str = "constant"
    schedule_length: int = 16
    positions: str = "all"
    guidance: float = 1.0
    system: Optional[str] = None
    params: GenerationParams = field(default_factory=GenerationParams)
    normalize: bool = False  # mixes: rescale each layer to the weighted mean norm
    project_out: tuple[str, ...] = ()  # mixes: remove these concepts' directions


def is_mix(text: str) -> bool:
    return ":" in text or "," in text


class RecommendationOps:
    """Store a sweep's best setting in the concept (a user copy for shipped concepts)."""

    def save_recommendation(self, concept: str, layer: int, strength: float, relative: bool = True, source: str = "sweep") -> None:
        from app.library.slugs import model_key
        from app.types import Recommendation

        if is_mix(concept) or concept.startswith("random:"):
            raise InputError("recommendations can only be saved for a named concept")
        rec = Recommendation(layer=int(layer), strength=float(strength),
                             strength_mode="relative" if relative else "absolute", source=source)
        self.library.set_recommendation(concept.strip(), model_key(self.loaded.model_id), rec)


class GenerationOps(RecommendationOps):
    """Requires ``self.jobs``, ``self.loaded``, ``self.library`` and ConceptOps' methods."""

    # ---- resolving what to steer with ---------------------------------------------------
    def resolve_vectors(self, concept: str, token: Optional[CancelToken] = None, normalize: bool = False,
                        project_out: Sequence[str] = ()) -> tuple[ConceptVectors, str]:
        """Vectors for a slug, a mix or a random control, and a label for them."""
        text = (concept or "").strip()
        if not text:
            raise InputError("choose a concept (or type a mix like happy:0.7, excited:0.3)")
        if text.startswith("random:"):
            slug = text.split(":", 1)[1].strip()
            return self.random_control_vectors(slug), f"random control (norms of {slug})"
        if is_mix(text) or normalize or project_out:
            cv, recipe = self.mix_vectors(text, normalize=normalize, project_out=tuple(project_out))
            label = " + ".join(f"{w:g}×{s}" for s, w in recipe)
            if normalize:
                label += " (normalized)"
            if project_out:
                label += " without " + ", ".join(project_out)
            return cv, label
        return self.concept_vectors(text, token=token), text

    def recommended_setting(self, concept: str, cv: ConceptVectors) -> tuple[int, float, bool, str]:
        """(layer, strength, relative, source) for the loaded model."""
        from app.library.slugs import model_key

        text = concept.strip()
        if not is_mix(text) and not text.startswith("random:"):
            try:
                rec = self.library.get(text).recommended.get(model_key(self.loaded.model_id))
            except Exception:
                rec = None
            if rec is not None:
                return rec.layer, rec.strength, rec.strength_mode == "relative", rec.source
        a, b = cv.recommended_layers
        layer = (a + b) // 2 if (a, b) != (0, 0) else cv.num_layers // 2
        return layer, DEFAULT_RELATIVE_STRENGTH, True, "default (middle of the recommended layer range)"

    def build_plan(self, req: SteerRequest, token: Optional[CancelToken] = None) -> tuple[SteeringPlan, dict[str, Any]]:
        cv, label = self.resolve_vectors(req.concept, token, req.normalize, req.project_out)
        source = "request"
        layers = req.layers
        relative = req.relative
        if not layers:
            layer, strength, relative, source = self.recommended_setting(req.concept, cv)
            layers = [(layer, strength)]
        plan = plan_from_vectors(
            cv, [(int(l), s) for l, s in layers], relative=relative, mode=req.mode,
            schedule=Schedule(req.schedule, int(req.schedule_length)), positions=req.positions,
            guidance=req.guidance, label=label,
        )
        settings = {
            "concept": req.concept,
            "label": label,
            "layers": [{"layer": e.layer, "strength": e.strength, "coefficient": round(e.coefficient, 4)} for e in plan.entries],
            "strength_mode": "relative" if relative else "absolute",
            "mode": req.mode,
            "guidance": req.guidance,
            "schedule": req.schedule,
            "schedule_length": req.schedule_length,
            "positions": req.positions,
            "normalize": req.normalize,
            "project_out": list(req.project_out),
            "source": source,
            "model": self.loaded.model_id,
            "max_tokens": req.params.max_tokens,
            "temperature": req.params.temperature,
            "top_p": req.params.top_p,
            "seed": req.params.seed,
        }
        return plan, settings

    # ---- side by side ------------------------------------------------------------------
    def compare_stream(self, req: SteerRequest, token: Optional[CancelToken] = None) -> Iterator[tuple[ComparisonChunk, dict]]:
        """Stream (chunk, settings) pairs: baseline and steered text growing together."""
        from app.service.model_service import validate_text

        validate_text(req.prompt, "prompt")
        if req.system:
            validate_text(req.system, "system prompt")

        def job(emit: Callable[[Any], None], tok: CancelToken) -> None:
            plan, settings = self.build_plan(req, tok)
            prompt = self.tokenize_chat(req.prompt, req.system)
            for chunk in compare_stream(self.loaded, prompt, plan, req.params, should_stop=tok):
                emit((chunk, settings))

        return self.jobs.stream(job, token)

    def compare(self, req: SteerRequest, token: Optional[CancelToken] = None) -> tuple[ComparisonChunk, dict]:
        last = None
        for item in self.compare_stream(req, token):
            last = item
        if last is None:
            raise InputError("nothing was generated")
        return last

    # ---- sweeps ------------------------------------------------------------------------
    def sweep(
        self,
        prompt: str,
        concept: str,
        layers: Sequence[int],
        strengths: Sequence[float],
        params: GenerationParams = GenerationParams(max_tokens=32),
        relative: bool = True,
        system: Optional[str] = None,
        progress: Optional[Callable[[int, int, str], None]] = None,
        token: Optional[CancelToken] = None,
    ) -> SweepResult:
        from app.service.model_service import validate_text

        validate_text(prompt, "prompt")
        if len(layers) * len(strengths) > MAX_CELLS:
            raise InputError(f"{len(layers) * len(strengths)} cells is too many for one sweep (at most {MAX_CELLS})")

        def job(tok: CancelToken) -> SweepResult:
            cv, _ = self.resolve_vectors(concept, tok)
            tokens = self.tokenize_chat(prompt, system)
            return run_sweep(self.loaded, tokens, cv, layers, strengths, params, relative=relative,
                             progress=progress, should_stop=tok)

        return self.jobs.run(job, token)


def parse_int_list(text: str, what: str = "layers", upper: Optional[int] = None) -> list[int]:
    """'4-8, 12' -> [4, 5, 6, 7, 8, 12] with clear errors."""
    out: list[int] = []
    text = (text or "").strip()
    if not text:
        raise InputError(f"no {what} given")
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part[1:]:
            a, b = part[0] + part[1:].split("-", 1)[0], part[1:].split("-", 1)[1]
            a_i, b_i = _int(a, part, what), _int(b, part, what)
            if b_i < a_i:
                raise InputError(f"{what}: range {part!r} goes backwards; write it low-high, e.g. {b_i}-{a_i}")
            check_range_size(a_i, b_i, len(out), what, upper)  # before expanding: "0-999999999" is 11 characters
            out.extend(range(a_i, b_i + 1))
        else:
            out.append(_int(part, part, what))
    for v in out:
        if v < 0 or (upper is not None and v >= upper):
            raise InputError(f"{what}: {v} is out of range (0-{upper - 1 if upper else '...'})")
    if len(set(out)) != len(out):
        raise InputError(f"{what} repeat: {text!r}")
    return out


MAX_LIST_ITEMS = 4096  # no model has more layers; bounds the work of any "a-b" a user types


def check_range_size(lo: int, hi: int, have: int, what: str, upper: Optional[int] = None) -> None:
    """Refuse a range ``lo-hi`` that leaves the model (or would be huge) before it is expanded."""
    if upper is not None and (lo < 0 or hi >= upper):
        bad = lo if lo < 0 else hi
        raise InputError(f"{what}: {bad} is out of range (0-{upper - 1})")
    if hi - lo + 1 + have > MAX_LIST_ITEMS:
        raise InputError(f"{what}: the range {lo}-{hi} has {hi - lo + 1} values; at most {MAX_LIST_ITEMS} are allowed")


def _int(text: str, part: str, what: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise InputError(f"{what}: {part!r} is not a whole number or a range like 4-8") from None


def parse_float_list(text: str, what: str = "strengths") -> list[float]:
    from app.core.steering import check_finite

    parts = [p.strip() for p in (text or "").split(",") if p.strip()]
    if not parts:
        raise InputError(f"no {what} given")
    vals = [check_finite(p, what[:-1] if what.endswith("s") else what) for p in parts]
    if len(set(vals)) != len(vals):
        raise InputError(f"{what} repeat: {text!r}")
    return vals

