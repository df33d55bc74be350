"""``calibrate`` for many concepts as one distributed job (see ``app.core.distributed``).

The work items are (concept, prompt) pairs; each is one layer x strength sweep, reduced to its
(concept score, coherent) grids exactly as ``calibrate`` adds them up. Rank 0 then sums the
grids per concept in prompt order and applies ``calibrate.combine``, so the result equals
``calibrate`` run concept by concept in one process.
"""

from __future__ import annotations

from typing import Callable, Mapping, Optional, Sequence

import numpy as np

from app.core.calibrate import CALIBRATION_PROMPTS, DEFAULT_STRENGTHS, Calibration, combine, default_layers, prompt_grids
from app.core.chat import encode, format_chat
from app.core.distributed import run_items
from app.core.models import LoadedModel
from app.core.sweeps import run_sweep
from app.types import ConceptVectors, GenerationParams


def calibrate_many(
    lm: LoadedModel,
    vectors: Mapping[str, ConceptVectors],
    prompts: Sequence[str] = CALIBRATION_PROMPTS,
    layers: Optional[Sequence[int]] = None,
    strengths: Sequence[float] = DEFAULT_STRENGTHS,
    max_tokens: int = 32,
    grp=None,
    progress: Optional[Callable[[int, int], None]] = None,
) -> dict[str, Calibration]:
    """Calibrations of every concept in ``vectors``, each rank sweeping its share of the items."""
    layers = list(layers) if layers is not None else default_layers(lm.num_layers)
    strengths = list(strengths)
    slugs = list(vectors)
    items = [(slug, i) for slug in slugs for i in range(len(prompts))]
    tokens = [encode(lm.tokenizer, format_chat(lm.tokenizer, p)) for p in prompts]

    def sweep(item: tuple[str, int]) -> np.ndarray:
        slug, i = item
        res = run_sweep(lm, tokens[i], vectors[slug], layers, strengths, GenerationParams(max_tokens=max_tokens))
        return np.stack(prompt_grids(res))

    grids = run_items(items, sweep, (2, len(layers), len(strengths)), grp, progress)
    out = {}
    for slug in slugs:
        score = np.zeros((len(layers), len(strengths)))
        coherent = np.zeros_like(score)
        for k, (s, _) in enumerate(items):
            if s == slug:
                score += grids[k, 0]
                coherent += grids[k, 1]
        out[slug] = combine(layers, strengths, score, coherent, len(prompts))
    return out
