"""Find a concept's recommended (layer, strength) for a model from sweeps over several prompts.

One layer x strength grid per prompt (each grid is a few batches, see ``sweeps``); a cell's
concept score is averaged over prompts, and a cell counts as coherent when it is coherent on
at least two thirds of the prompts. The recommendation is the coherent cell with the best mean
concept score (ties: the smaller strength). Used to fill the shipped concepts' settings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np

from app.core.chat import encode, format_chat
from app.core.models import LoadedModel
from app.core.sweeps import SweepResult, run_sweep
from app.types import ConceptVectors, GenerationParams

CALIBRATION_PROMPTS = (
    "Tell me about your weekend.",
    "Describe the town where you live.",
    "What do you think about Mondays?",
)
DEFAULT_STRENGTHS = (0.15, 0.25, 0.35, 0.5)


def default_layers(num_layers: int, count: int = 5) -> list[int]:
    """Evenly spaced layers over the middle of the network (20%-70% of the depth)."""
    lo, hi = max(1, round(num_layers * 0.2)), max(1, round(num_layers * 0.7))
    return sorted({int(round(x)) for x in np.linspace(lo, hi, count)})


@dataclass
class Calibration:
    layers: list[int]
    strengths: list[float]
    mean_score: np.ndarray  # [layers, strengths]
    coherent_share: np.ndarray  # [layers, strengths]
    recommended: Optional[tuple[int, float]]
    sweeps: list[SweepResult] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "layers": self.layers,
            "strengths": self.strengths,
            "mean_concept_score": np.round(self.mean_score, 3).tolist(),
            "coherent_share": np.round(self.coherent_share, 3).tolist(),
            "recommended": {"layer": self.recommended[0], "strength": self.recommended[1]} if self.recommended else None,
        }


def calibrate(
    lm: LoadedModel,
    cv: ConceptVectors,
    prompts: Sequence[str] = CALIBRATION_PROMPTS,
    layers: Optional[Sequence[int]] = None,
    strengths: Sequence[float] = DEFAULT_STRENGTHS,
    max_tokens: int = 32,
    progress: Optional[Callable[[int, int, str], None]] = None,
    should_stop: Optional[Callable[[], bool]] = None,
) -> Calibration:
    layers = list(layers) if layers is not None else default_layers(lm.num_layers)
    strengths = list(strengths)
    scores = np.zeros((len(layers), len(strengths)))
    coherent = np.zeros_like(scores)
    sweeps = []
    for i, prompt in enumerate(prompts):
        tokens = encode(lm.tokenizer, format_chat(lm.tokenizer, prompt))

        def prog(done: int, total: int, msg: str, i=i) -> None:
            if progress is not None:
                progress(i * total + done, total * len(prompts), f"prompt {i + 1}/{len(prompts)}, {msg}")

        res = run_sweep(lm, tokens, cv, layers, strengths, GenerationParams(max_tokens=max_tokens),
                        progress=prog, should_stop=should_stop)
        sweeps.append(res)
        s, c = prompt_grids(res)
        scores += s
        coherent += c
    return combine(layers, strengths, scores, coherent, len(prompts), sweeps)


def prompt_grids(res: SweepResult) -> tuple[np.ndarray, np.ndarray]:
    """One prompt's (concept score, coherent) grids as ``calibrate`` adds them up."""
    return np.nan_to_num(res.grid("concept_score")), res.grid("coherent")


def combine(layers: Sequence[int], strengths: Sequence[float], score_sum: np.ndarray, coherent_sum: np.ndarray,
            n_prompts: int, sweeps: Sequence[SweepResult] = ()) -> Calibration:
    """Means over prompts and the recommendation (also used by the distributed calibration)."""
    layers, strengths = list(layers), list(strengths)
    scores = score_sum / n_prompts
    coherent = coherent_sum / n_prompts
    ok = (coherent >= 2 / 3 - 1e-9) & (scores > 0)
    rec = None
    if ok.any():
        best = max(((scores[a, b], -strengths[b], a, b) for a in range(len(layers)) for b in range(len(strengths)) if ok[a, b]))
        rec = (layers[best[2]], strengths[best[3]])
    return Calibration(layers, strengths, scores, coherent, rec, list(sweeps))
