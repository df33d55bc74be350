"""Side-by-side generation and sweeps: a request becomes a steering plan, then a run under the model lock."""

from __future__ import annotations

from typing import Any, Callable, Iterator, Optional, Sequence

from app.core.comparison import compare_stream
from app.core.steering import Schedule, SteeringPlan, plan_from_vectors
from app.core.sweeps import SweepResult, run_sweep
from app.domain import limits
from app.domain.requests import SteerRequest
from app.core.interventions import OPS, op_info
from app.domain.checks import validate_text
from app.errors import InputError
from app.service.concept_ops import ConceptOps
from app.service.intervention_ops import InterventionOps
from app.service.jobs import CancelToken
from app.service.judge_ops import JudgeOps, concept_slug, prompted_system
from app.service.session import ModelSession
from app.types import ComparisonChunk, ConceptVectors, GenerationParams


class GenerationOps:
    """Side-by-side runs and sweeps on the session's model, steered by what ``concepts`` resolves."""

    def __init__(self, session: ModelSession, concepts: ConceptOps, interventions: InterventionOps,
                 judges: JudgeOps) -> None:
        self.session = session
        self.concepts = concepts
        self.interventions = interventions
        self.judges = judges

    def build_plan(self, req: SteerRequest, token: Optional[CancelToken] = None) -> tuple[SteeringPlan, dict[str, Any]]:
        cv, label = self.concepts.resolve_vectors(req.concept, token, req.normalize, req.project_out)
        source = "request"
        layers = req.layers
        relative = req.relative
        if not layers:
            layer, strength, relative, source = self.concepts.recommended_setting(req.concept, cv)
            layers = [(layer, strength)] + [(l, st) for l, st in self.concepts.recommended_band_plan(req.concept)
                                            if l != layer]
        layers, op_param = self._op_layers(req, layers)
        typical = self.interventions.typical_projection(req.concept, cv) if req.op in ("cap", "clamp") else None
        plan = plan_from_vectors(
            cv, layers, relative=relative, mode=req.mode,
            schedule=Schedule(req.schedule, int(req.schedule_length)), positions=req.positions,
            guidance=req.guidance, label=label, op=req.op,
            typical_projection=typical[0] if typical else None,
            condition=self.interventions.build_condition(req.condition, req.threshold, [int(l) for l, _ in layers], token),
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
            "op": req.op,
            "op_param": op_param,
            "op_param_name": OPS[req.op].param,
            "op_units": typical[1] if typical else OPS[req.op].unit,
            "condition": req.condition,
            "threshold": req.threshold if req.condition else None,
            "source": source,
            "model": self.session.loaded.model_id,
            "max_tokens": req.params.max_tokens,
            "temperature": req.params.temperature,
            "top_p": req.params.top_p,
            "seed": req.params.seed,
            "repetition_penalty": req.params.repetition_penalty,
        }
        return plan, settings

    def _op_layers(self, req: SteerRequest, layers: Sequence[tuple[int, float]]) -> tuple[list[tuple[int, float]], Optional[float]]:
        """For add: the layers as given. Otherwise every layer (plus op_layers) carries the op's parameter."""
        layers = [(int(l), s) for l, s in layers]
        if req.op == "add":
            if req.op_layers:
                raise InputError("op_layers is for ablate/cap/clamp/rotate; for add give layer:strength pairs")
            return layers, None
        param = OPS[req.op].default if req.op_param is None else req.op_param
        chosen = list(dict.fromkeys([l for l, _ in layers] + list(req.op_layers)))
        for l in chosen:
            if l >= self.session.loaded.num_layers:
                raise InputError(f"op_layers: layer {l} does not exist (layers 0-{self.session.loaded.num_layers - 1})")
        return [(l, param) for l in chosen], param

    # ---- side by side ------------------------------------------------------------------
    def compare_stream(self, req: SteerRequest, token: Optional[CancelToken] = None) -> Iterator[tuple[ComparisonChunk, dict]]:
        """Stream (chunk, settings) pairs: baseline and steered text growing together."""
        validate_text(req.prompt, "prompt")
        if req.system:
            validate_text(req.system, "system prompt")

        def job(emit: Callable[[Any], None], tok: CancelToken) -> None:
            plan, settings = self.build_plan(req, tok)
            prompt = self.session.tokenize_chat(req.prompt, req.system)
            prompted = self._prompted_tokens(req.concept, req.prompt, req.system) if req.prompted else None
            settings["prompted_system"] = prompted[1] if prompted else None
            for chunk in compare_stream(self.session.loaded, prompt, plan, req.params, should_stop=tok, effects=req.effects,
                                        prompted=prompted[0] if prompted else None):
                if chunk.done and req.judge:
                    judge = self.judges.judge_for(req.concept)
                    if judge is not None:
                        chunk.stats["judge"] = self.judges.judge_texts(judge, {
                            "baseline": chunk.baseline_text, "prompted": chunk.prompted_text,
                            "steered": chunk.steered_text})
                emit((chunk, settings))

        return self.session.jobs.stream(job, token)

    def _prompted_tokens(self, concept: str, prompt: str, system: Optional[str]) -> Optional[tuple[list[int], str]]:
        """(tokens, system prompt) of the prompted row; None for mixes (no single concept)."""
        slug = concept_slug(concept)
        if slug is None:
            return None
        sp = prompted_system(self.session.library.get(slug), system)
        return self.session.tokenize_chat(prompt, sp), sp

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
        op: str = "add",
        prompted: bool = True,
        judge: bool = True,
    ) -> SweepResult:
        """Sweep layers x strengths; for another ``op`` the strengths are its parameter (a, t, theta)."""
        validate_text(prompt, "prompt")
        op_info(op, "op")
        if len(layers) * len(strengths) > limits.SWEEP_CELLS:
            raise InputError(f"{len(layers) * len(strengths)} cells is too many for one sweep (at most {limits.SWEEP_CELLS})")

        def job(tok: CancelToken) -> SweepResult:
            cv, _ = self.concepts.resolve_vectors(concept, tok)
            tokens = self.session.tokenize_chat(prompt, system)
            typical = self.interventions.typical_projection(concept, cv)[0] if op in ("cap", "clamp") else None
            p_tokens = self._prompted_tokens(concept, prompt, system) if prompted else None
            return run_sweep(self.session.loaded, tokens, cv, layers, strengths, params, relative=relative,
                             progress=progress, should_stop=tok, op=op, typical_projection=typical,
                             judge=self.judges.judge_for(concept) if judge else None,
                             prompted=p_tokens[0] if p_tokens else None)

        return self.session.jobs.run(job, token)
