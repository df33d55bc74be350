"""Service side of the operations beyond addition: their choices, typical projections, conditions.

Cap, clamp and the condition threshold are given in units of a concept's *typical projection*:
the mean projection of its positive prompts' tokens on the unit vector at that layer, so 1.0 =
"as much as a typical positive example". New extractions store it with the vectors; for
vectors stored before that (or mixes and imported vectors) it is computed here on demand and
kept in memory.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from app.core.interventions import OPS, RESIDUAL_OPS, OpInfo
from app.core.steering import Condition, typical_projection_of
from app.errors import InputError
from app.service.concept_ops import ConceptOps
from app.service.jobs import CancelToken
from app.service.session import ModelSession
from app.types import ConceptVectors


def operations() -> list[OpInfo]:
    """Registry entries in display order (the residual operations, then logits guidance)."""
    return [OPS[k] for k in RESIDUAL_OPS] + [v for k, v in OPS.items() if k not in RESIDUAL_OPS]


class InterventionOps:
    """Typical projections (cached per model and vectors) and conditions of the session's model."""

    def __init__(self, session: ModelSession, concepts: ConceptOps) -> None:
        self.session = session
        self.concepts = concepts
        self._projection_cache: dict[tuple, tuple[np.ndarray, str]] = {}

    def operations(self) -> list[OpInfo]:
        return operations()

    def typical_projection(self, concept: str, cv: ConceptVectors) -> tuple[np.ndarray, str]:
        """(per-layer typical projection, where it came from) for ``concept``'s vectors ``cv``."""
        stored = (cv.extra or {}).get("typical_projection")
        if isinstance(stored, list) and len(stored) == cv.num_layers:
            return np.asarray(stored, dtype=np.float32), "stored with the vectors"
        cache = self._projection_cache
        key = (concept.strip(), self.session.loaded.model_id, cv.vectors.tobytes()[:4096], cv.concept_fingerprint)
        if key not in cache:
            prompts, source = self._positive_prompts(concept.strip())
            cache[key] = (typical_projection_of(self.session.loaded, prompts, cv.vectors), source)
        return cache[key]

    def _positive_prompts(self, concept: str) -> tuple[list[list[int]], str]:
        from app.core.chat import encode, format_chat
        from app.core.extraction import NEUTRAL_PROMPTS

        tok = self.session.loaded.tokenizer
        try:
            c = self.session.library.get(concept)
        except Exception:  # a mix, a random control or an unknown name: no positives of its own
            c = None
        if c is not None and c.pairs:
            sys_p = c.system_prompts.positive if c.system_prompts else None
            return [encode(tok, format_chat(tok, p.positive, sys_p)) for p in c.pairs], "its positive prompts"
        return [encode(tok, format_chat(tok, p)) for p in NEUTRAL_PROMPTS], "neutral prompts (no pairs of its own)"

    def build_condition(self, condition: Optional[str], threshold: float, layers: Sequence[int],
                        token: Optional[CancelToken] = None) -> Optional[Condition]:
        if not condition:
            return None
        cv, label = self.concepts.resolve_vectors(condition, token)
        if cv.num_layers != self.session.loaded.num_layers:
            raise InputError(f"condition: {condition!r} has vectors for another model")
        tp, _ = self.typical_projection(condition, cv)
        return Condition(label=label, vectors={l: cv.vectors[l] for l in layers},
                         thresholds={l: float(threshold) * float(tp[l]) for l in layers})


class LensOps:
    """The vector lens for the quality card and the layer explorer."""

    def __init__(self, session: ModelSession) -> None:
        self.session = session

    def vector_lens(self, cv: ConceptVectors, k: int = 6, token: Optional[CancelToken] = None):
        """Top/bottom tokens of each layer's direction read through the final norm and the output head."""
        from app.core.lens import vector_lens

        if cv.num_layers != self.session.loaded.num_layers or cv.hidden_size != self.session.loaded.hidden_size:
            raise InputError("these vectors were made for another model; the lens needs this model's vectors")
        return self.session.jobs.run(lambda tok: vector_lens(self.session.loaded, cv.vectors, k=k), token)
