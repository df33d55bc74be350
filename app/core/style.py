"""A concept's style allowance, measured on its own contrast pairs (see app.domain.coherence).

Each pair's positive and negative text is read as the model's answer to one neutral user
message; the median perplexity of the positives over that of the negatives says how much less
plausible the concept's own examples are to the unsteered model. Extraction stores the result
in ``ConceptVectors.extra``; sweeps and calibration read it from there (``allowance_of``).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from app.core.chat import encode, format_chat, pad_id
from app.domain.coherence import style_allowance

QUESTION = "Say something."  # the neutral user turn the examples answer


def example_perplexities(lm: Any, texts: Sequence[str]) -> list[float]:
    """Perplexity of each text as the unsteered model's answer to ``QUESTION``."""
    from app.core.scoring import score_continuations

    tok = lm.tokenizer
    prompt = encode(tok, format_chat(tok, QUESTION))
    conts = [list(tok.encode(t, add_special_tokens=False)) or [pad_id(tok)] for t in texts]
    return [s.perplexity for s in score_continuations(lm.model, prompt, conts, None, None, pad_id(tok))]


def measure_style(lm: Any, concept: Any) -> dict[str, float]:
    """``{"style_allowance", "positive_perplexity", "negative_perplexity"}`` from the concept's pairs."""
    pos = float(np.median(example_perplexities(lm, [p.positive for p in concept.pairs])))
    neg = float(np.median(example_perplexities(lm, [p.negative for p in concept.pairs])))
    return {"style_allowance": round(style_allowance(pos, neg), 4),
            "positive_perplexity": round(pos, 3), "negative_perplexity": round(neg, 3)}


def allowance_of(cv: Any) -> float:
    """The allowance stored with a concept's vectors (1.0 for vectors extracted before it existed,
    imports and random controls)."""
    try:
        return float((getattr(cv, "extra", None) or {}).get("style_allowance", 1.0))
    except (TypeError, ValueError):
        return 1.0
