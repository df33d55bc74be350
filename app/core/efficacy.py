"""Does each concept steer the way its name says, on prompts nothing was chosen on?

For every concept at one setting (method, layer, relative strength), on every validation
prompt: the unsteered baseline, the steered text, and the "prompted" text (no steering, the
concept's own positive system prompt) are scored by the concept's judge. A prompt counts as
a success when the steered judge score is above the baseline's (sign applied) AND the steered
text is clean (distinct-2 >= 0.5, no loop). Used by benchmarks/efficacy.py and the real-model
test; steered cells of all concepts share one batch per prompt, prompted rows one batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping, Optional, Sequence

import numpy as np

from app.core.calibrate import generate_all
from app.core.cellbatch import Cell, generate_plain
from app.core.chat import encode, eos_ids, format_chat
from app.types import Concept, ConceptVectors

Scorer = Callable[[Sequence[str]], np.ndarray]  # texts -> signed judge scores (higher = more concept)


@dataclass
class ConceptEfficacy:
    slug: str
    method: str
    layer: int
    strength: float
    changes: list[float] = field(default_factory=list)  # steered - baseline, per prompt
    clean: list[bool] = field(default_factory=list)
    prompted_changes: list[float] = field(default_factory=list)  # prompted - baseline
    texts: list[str] = field(default_factory=list)
    band: tuple[int, ...] = ()  # more layers steered at the same strength (a calibrated band)

    @property
    def right_way(self) -> float:
        return float(np.mean(np.asarray(self.changes) > 0)) if self.changes else 0.0

    @property
    def success(self) -> float:
        """Share of prompts moved the right way AND clean (the efficacy target's measure)."""
        ok = [(c > 0) and k for c, k in zip(self.changes, self.clean)]
        return float(np.mean(ok)) if ok else 0.0

    def row(self) -> dict:
        pc = np.asarray(self.prompted_changes)
        return {
            "concept": self.slug, "method": self.method, "layer": self.layer, "strength": self.strength,
            "band": list(self.band),
            "n_prompts": len(self.changes), "right_way": round(self.right_way, 3),
            "wrong_way": round(float(np.mean(np.asarray(self.changes) < 0)), 3) if self.changes else 0.0,
            "success": round(self.success, 3), "mean_change": round(float(np.mean(self.changes)), 4),
            "spread": round(float(np.std(self.changes)), 4), "clean_share": round(float(np.mean(self.clean)), 3),
            "prompted_right_way": round(float(np.mean(pc > 0)), 3) if pc.size else None,
            "prompted_mean_change": round(float(pc.mean()), 4) if pc.size else None,
        }


def measure(lm, concepts: Sequence[Concept], vectors: Mapping[str, ConceptVectors],
            settings: Mapping[str, tuple], scorers: Mapping[str, Scorer], prompts: Sequence[str],
            max_tokens: int = 64, prompted: bool = True,
            log: Optional[Callable[[str], None]] = None,
            prompted_texts: Optional[Mapping[str, Sequence[str]]] = None,
            repetition_penalty: float = 1.0) -> dict[str, ConceptEfficacy]:
    """Baseline / steered / prompted for each concept on each prompt (greedy).

    ``settings[slug]`` is (layer, strength) or (layer, strength, band layers).
    ``prompted_texts`` (slug -> one text per prompt, from ``prompted_generations``) skips
    generating the prompted rows again: they do not depend on the steering setting.
    """
    out = {}
    for c in concepts:
        layer, strength, *band = settings[c.slug]  # (layer, strength) or (layer, strength, band layers)
        out[c.slug] = ConceptEfficacy(c.slug, vectors[c.slug].method, layer, strength,
                                      band=tuple(band[0]) if band else ())
    cells = [Cell(c.slug, out[c.slug].layer, out[c.slug].strength, out[c.slug].band) for c in concepts]
    baselines = []
    for base, texts in generate_all(lm, prompts, vectors, cells, max_tokens, log, repetition_penalty):
        baselines.append(base.text)
        for c, t in zip(concepts, texts):
            e = out[c.slug]
            s = scorers[c.slug]([base.text, t.text])
            e.changes.append(float(s[1] - s[0]))
            e.clean.append(t.clean)
            e.texts.append(t.text)
    if prompted:
        with_sp = [c for c in concepts if c.system_prompts is not None]
        texts = dict(prompted_texts or {})
        missing = [c for c in with_sp if len(texts.get(c.slug, ())) != len(prompts)]
        texts.update(prompted_generations(lm, missing, prompts, max_tokens, log, repetition_penalty))
        for c in with_sp:
            for i, text in enumerate(texts[c.slug]):
                s = scorers[c.slug]([baselines[i], text])
                out[c.slug].prompted_changes.append(float(s[1] - s[0]))
    return out


def prompted_generations(lm, concepts: Sequence[Concept], prompts: Sequence[str], max_tokens: int = 64,
                         log: Optional[Callable[[str], None]] = None,
                         repetition_penalty: float = 1.0) -> dict[str, list[str]]:
    """slug -> the unsteered answer to each prompt under the concept's positive system prompt."""
    rows = [(c, i) for c in concepts for i in range(len(prompts))]
    if not rows:
        return {}
    if log:
        log(f"prompted: {len(rows)} rows in one batch")
    toks = [encode(lm.tokenizer, format_chat(lm.tokenizer, prompts[i], c.system_prompts.positive)) for c, i in rows]
    eos = eos_ids(lm.tokenizer)
    out: dict[str, list[str]] = {}
    for (c, _), (t, _) in zip(rows, generate_plain(lm, toks, max_tokens, repetition_penalty)):
        out.setdefault(c.slug, []).append(lm.tokenizer.decode([x for x in t if x not in eos]))
    return out
