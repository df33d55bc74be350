"""Service method behind the layer explorer (mixed into ModelService)."""

from __future__ import annotations

from typing import Optional

import numpy as np

from app.core.lens import Exploration, explore
from app.domain.checks import validate_text
from app.service.jobs import CancelToken


class ExploreOps:
    def explore(self, prompt: str, concept: Optional[str] = None, system: Optional[str] = None,
                chat: bool = True, top_k: int = 5, token: Optional[CancelToken] = None) -> Exploration:
        """Norms, logit lens and (optionally) per-token concept projections for a prompt."""
        validate_text(prompt, "prompt")

        def job(tok: CancelToken) -> Exploration:
            lm = self.loaded
            ids = self.tokenize_chat(prompt, system) if chat else self.loaded.tokenizer.encode(prompt)
            units = None
            cv = None
            if concept:
                cv, _ = self.resolve_vectors(concept, tok)
                norms = np.linalg.norm(cv.vectors, axis=1, keepdims=True)
                units = cv.vectors / np.where(norms > 0, norms, 1.0)
            ex = explore(lm, ids, units, top_k=top_k)
            if cv is not None:
                ex.concept = concept or ""
                ex.typical_norms = cv.typical_norms
                ex.extra["recommended_layers"] = cv.recommended_layers
                ex.extra["vector_lens"] = self.vector_lens(cv, token=tok)
            return ex

        return self.jobs.run(job, token)
