"""A tiny calibration workload: (concept, prompt) sweeps on a tiny random llama, fixed seeds.

Shared by the distributed test and its worker so both compute exactly the same items.
"""

from __future__ import annotations

import numpy as np
import tiny_models

from app.types import ConceptVectors, GenerationParams

CONCEPTS = 3
PROMPTS = 3
LAYERS = [1, 3]
STRENGTHS = [0.5, 1.0]
ITEMS = [(c, p) for c in range(CONCEPTS) for p in range(PROMPTS)]
SHAPE = (2, len(LAYERS), len(STRENGTHS))  # concept score, coherent
_LM = None


def lm():
    global _LM
    if _LM is None:
        from mlx_lm.tokenizer_utils import TokenizerWrapper

        from app.core.models import from_memory

        model, config = tiny_models.build("llama", seed=0)
        _LM = from_memory(model, TokenizerWrapper(tiny_models.tiny_tokenizer(config["vocab_size"])), config, "llama")
    return _LM


def vectors(concept: int) -> ConceptVectors:
    m = lm()
    rng = np.random.default_rng(100 + concept)
    return ConceptVectors(model_id="tiny", model_fingerprint="", method="mean_diff",
                          vectors=rng.standard_normal((m.num_layers, m.hidden_size)).astype(np.float32),
                          typical_norms=np.full(m.num_layers, 8.0, dtype=np.float32))


def sweep_item(item) -> np.ndarray:
    from app.core.sweeps import run_sweep

    concept, prompt = item
    res = run_sweep(lm(), tiny_models.prompt_tokens(6, seed=prompt), vectors(concept), LAYERS, STRENGTHS,
                    GenerationParams(max_tokens=6))
    return np.stack([np.nan_to_num(res.grid("concept_score")), res.grid("coherent")])
