"""The layer explorer and raw captures: reading the residual stream of the session's model."""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import numpy as np

from app.core.capture import CaptureResult, capture
from app.core.chat import encode, format_chat, pad_id
from app.core.lens import Exploration, explore
from app.domain.checks import validate_prompts, validate_text
from app.service.concept_ops import ConceptOps
from app.service.intervention_ops import LensOps
from app.service.jobs import CancelToken
from app.service.session import ModelSession


class ExploreOps:
    """Norms, logit lens and concept projections per token, and the batched capture behind them."""

    def __init__(self, session: ModelSession, concepts: ConceptOps, lens: LensOps) -> None:
        self.session = session
        self.concepts = concepts
        self.lens = lens

    def explore(self, prompt: str, concept: Optional[str] = None, system: Optional[str] = None,
                chat: bool = True, top_k: int = 5, token: Optional[CancelToken] = None) -> Exploration:
        """Norms, logit lens and (optionally) per-token concept projections for a prompt."""
        validate_text(prompt, "prompt")

        def job(tok: CancelToken) -> Exploration:
            lm = self.session.loaded
            ids = self.session.tokenize_chat(prompt, system) if chat else lm.tokenizer.encode(prompt)
            units = None
            cv = None
            if concept:
                cv, _ = self.concepts.resolve_vectors(concept, tok)
                norms = np.linalg.norm(cv.vectors, axis=1, keepdims=True)
                units = cv.vectors / np.where(norms > 0, norms, 1.0)
            ex = explore(lm, ids, units, top_k=top_k)
            if cv is not None:
                ex.concept = concept or ""
                ex.typical_norms = cv.typical_norms
                ex.extra["recommended_layers"] = cv.recommended_layers
                ex.extra["vector_lens"] = self.lens.vector_lens(cv, token=tok)
            return ex

        return self.session.jobs.run(job, token)

    def capture(
        self,
        prompts: Sequence[str],
        system: Optional[str] = None,
        chat: bool = True,
        layers: Optional[Sequence[int]] = None,
        progress: Optional[Callable[[int, int], None]] = None,
        token: Optional[CancelToken] = None,
    ) -> CaptureResult:
        """Residual stream after every layer for ``prompts`` in one batched pass."""
        validate_prompts(prompts)

        def job(tok: CancelToken) -> CaptureResult:
            lm = self.session.loaded
            token_lists = [
                encode(lm.tokenizer, format_chat(lm.tokenizer, p, system)) if chat else encode(lm.tokenizer, p)
                for p in prompts
            ]
            return capture(lm.model, token_lists, pad=pad_id(lm.tokenizer), layers=layers,
                           progress=progress, should_stop=tok)

        return self.session.jobs.run(job, token)
