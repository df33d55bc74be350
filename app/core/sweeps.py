"""Layer, strength and layer x strength sweeps, run as rows of few batches and scored.

Every cell is one steered row; one baseline row runs in the first batch. Rows share the
prompt and the sampling noise, so each cell differs from the baseline only by its steering.
A cell is scored by the unsteered model (see app.core.scoring): concept score, perplexity
ratio to the baseline, distinct-2, longest repeat, length, and a coherence verdict that says
which rule decided (app.domain.coherence). The recommended setting is the coherent cell with the
highest concept score (ties: the smaller strength).

With a ``judge`` (app.core.judges), every cell also gets ``judge_score``: the judge's change
from the baseline text, signed so that positive = more of the concept, and the recommendation
uses it instead: the concept score is the text's move along the concept's OWN vector, which
rewards any emotional text, so it stays only as a secondary readout ("moved along the vector").
With ``prompted`` (the concept's system prompt around the same user text), an unsteered
prompted row rides in the first batch and its judge change is the reference to beat.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np

from app.core import family
from app.core.chat import pad_id
from app.core.generation import run_batch, validate_params
from app.core.judges import Judge, judge_scores
from app.core.prompted import joinable, run_alone
from app.core.interventions import OPS, check_param, make
from app.core.models import LoadedModel
from app.core.scoring import TextScores, score_continuations
from app.core.steering import Schedule, SteeringEntry, check_finite
from app.domain import limits
from app.core.style import allowance_of
from app.domain.coherence import coherence_verdict
from app.errors import InputError
from app.types import ConceptVectors, GenerationParams

MAX_CELLS = limits.SWEEP_CELLS
MEMORY_BUDGET_BYTES = limits.SWEEP_MEMORY_BYTES
MAX_ROWS_PER_BATCH = limits.SWEEP_ROWS_PER_BATCH


@dataclass
class SweepCell:
    layer: int
    strength: float
    text: str
    n_tokens: int
    finish: str
    concept_score: float
    perplexity: float
    ppl_ratio: float
    distinct2: float
    longest_repeat: int
    coherent: bool
    degenerate: bool
    verdict: str = ""  # which coherence rule decided, in words
    verdict_rule: str = ""
    judge_score: Optional[float] = None  # judge change from the baseline (sign applied); None: no judge

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class SweepResult:
    layers: list[int]
    strengths: list[float]
    relative: bool
    read_layer: int
    baseline_text: str
    baseline: dict
    cells: list[SweepCell] = field(default_factory=list)
    recommended: Optional[tuple[int, float]] = None
    seconds: float = 0.0
    batches: int = 0
    op: str = "add"  # the strengths are this operation's parameter values (a, t, theta)
    judge: Optional[dict] = None  # kind, label, baseline raw score, prompted_change
    prompted_text: Optional[str] = None

    def cell(self, layer: int, strength: float) -> SweepCell:
        for c in self.cells:
            if c.layer == layer and c.strength == strength:
                return c
        raise KeyError((layer, strength))

    def grid(self, field_name: str) -> np.ndarray:
        """[len(layers), len(strengths)] array of one cell field, for heatmaps."""
        g = np.full((len(self.layers), len(self.strengths)), np.nan)
        for c in self.cells:
            g[self.layers.index(c.layer), self.strengths.index(c.strength)] = float(getattr(c, field_name))
        return g

    def as_dict(self) -> dict:
        return {
            "layers": self.layers,
            "strengths": self.strengths,
            "relative": self.relative,
            "op": self.op,
            "judge": self.judge,
            "prompted_text": self.prompted_text,
            "read_layer": self.read_layer,
            "baseline_text": self.baseline_text,
            "baseline": self.baseline,
            "cells": [c.as_dict() for c in self.cells],
            "recommended": {"layer": self.recommended[0], "strength": self.recommended[1]} if self.recommended else None,
            "seconds": round(self.seconds, 2),
            "batches": self.batches,
        }


def rows_per_batch(lm: LoadedModel, prompt_len: int, max_tokens: int) -> int:
    """How many rows fit the memory budget (KV cache + logits per row), capped for CPU speed."""
    cfg = lm.config
    bytes_per = 4
    kv = family.kv_geometry(cfg, lm.num_layers, lm.hidden_size).cache_bytes(prompt_len + max_tokens, bytes_per)
    logits = int(cfg.get("vocab_size", 32000)) * bytes_per * 4
    act = (prompt_len * lm.hidden_size * 8) * bytes_per
    per_row = kv + logits + act
    return int(max(2, min(MAX_ROWS_PER_BATCH, MEMORY_BUDGET_BYTES // max(per_row, 1))))


def run_sweep(
    lm: LoadedModel,
    prompt: Sequence[int],
    cv: ConceptVectors,
    layers: Sequence[int],
    strengths: Sequence[float],
    params: GenerationParams,
    relative: bool = True,
    read_layer: Optional[int] = None,
    schedule: Schedule = Schedule(),
    positions: str = "all",
    progress: Optional[Callable[[int, int, str], None]] = None,
    should_stop: Optional[Callable[[], bool]] = None,
    op: str = "add",
    typical_projection: Optional[np.ndarray] = None,
    judge: Optional[Judge] = None,
    prompted: Optional[Sequence[int]] = None,
) -> SweepResult:
    """Sweep layers x values of ``op``'s parameter (strength for add, a, t or theta otherwise).

    1. check the grid, 2. pick the layer the concept score reads, 3. generate every cell in few
    batches (the baseline, and the prompted row when it can join, in the first), 4. score each
    cell against the baseline, 5. judge and recommend."""
    validate_params(params)
    layers, strengths = _checked_grid(cv, layers, strengths, relative, op, typical_projection)
    cells_spec = [(l, s) for l in layers for s in strengths]
    read_layer = _read_layer(cv, read_layer)
    t0 = time.perf_counter()
    joint = prompted is not None and joinable(lm.model)
    batches = _batches(cells_spec, rows_per_batch(lm, len(prompt), params.max_tokens), joint)
    rows = _SweepRows()
    for bi, batch in enumerate(batches):
        steps = run_batch(lm, prompt, _batch_rows(cv, batch, bi == 0, relative, op, typical_projection), params,
                          schedule, positions, True, should_stop=should_stop,
                          prompted=prompted if (joint and bi == 0) else None)
        rows.collect(_last_step(steps, progress, bi, len(batches), params.max_tokens), batch, bi == 0, joint)
    result = SweepResult(layers=layers, strengths=strengths, relative=relative, read_layer=read_layer,
                         baseline_text="", baseline={}, batches=len(batches), op=op)
    _score_cells(result, lm, prompt, cv, cells_spec, rows)
    if prompted is not None:
        if not joint:
            rows.prompted_tokens = list(run_alone(lm, prompted, params, should_stop).tokens)
        result.prompted_text = _decode_visible(lm.tokenizer, rows.prompted_tokens or [])
    if judge is not None:
        _judge_cells(result, judge)
    result.recommended = recommend(result.cells)
    result.seconds = time.perf_counter() - t0
    return result


def _checked_grid(cv: ConceptVectors, layers: Sequence[int], strengths: Sequence[float], relative: bool, op: str,
                  typical_projection: Optional[np.ndarray]) -> tuple[list[int], list[float]]:
    """The sweep's layers and values, each checked against the model and the operation's range."""
    layers = [int(l) for l in layers]
    if op == "add":
        strengths = [check_finite(s, "strength", limits.strength_limit(relative)) for s in strengths]
    else:
        strengths = [check_param(op, s, f"sweep value ({OPS[op].param})") for s in strengths]
        if op in ("cap", "clamp") and typical_projection is None:
            raise InputError(f"a {op} sweep needs the concept's typical projection")
    if not layers or not strengths:
        raise InputError("a sweep needs at least one layer and one strength")
    if len(set(layers)) != len(layers) or len(set(strengths)) != len(strengths):
        raise InputError("layers and strengths in a sweep must not repeat")
    for l in layers:
        if not 0 <= l < cv.num_layers:
            raise InputError(f"layer {l} does not exist: this model has layers 0-{cv.num_layers - 1}")
    if len(layers) * len(strengths) > MAX_CELLS:
        raise InputError(f"{len(layers) * len(strengths)} cells is too many for one sweep (at most {MAX_CELLS})")
    return layers, strengths


def _read_layer(cv: ConceptVectors, read_layer: Optional[int]) -> int:
    """The layer whose vector the concept score reads: given, else the middle of the recommended range."""
    if read_layer is not None:
        return read_layer
    a, b = cv.recommended_layers
    return (a + b) // 2 if b >= a and (a, b) != (0, 0) else cv.num_layers // 2


def _batches(cells: list[tuple[int, float]], per_batch: int, joint: bool) -> list[list[tuple[int, float]]]:
    """The cells in batches of ``per_batch`` rows; the first keeps room for the baseline (and prompted) row."""
    first = max(per_batch - (2 if joint else 1), 1)
    batches = [cells[:first]]
    rest = cells[first:]
    while rest:
        batches.append(rest[:per_batch])
        rest = rest[per_batch:]
    return batches


def _batch_rows(cv: ConceptVectors, batch: list[tuple[int, float]], first: bool, relative: bool, op: str,
                typical_projection: Optional[np.ndarray]) -> list[list]:
    """One row of interventions per cell, after an unsteered baseline row in the first batch."""
    return ([[]] if first else []) + [[_cell_intervention(cv, l, s, relative, op, typical_projection)]
                                      for l, s in batch]


def _last_step(steps, progress: Optional[Callable[[int, int, str], None]], bi: int, n_batches: int, max_tokens: int):
    """Run a batch's steps to the end, reporting progress over all batches; the final step."""
    last = None
    for step in steps:
        last = step
        if progress is not None:
            progress(bi * max_tokens + step.step + 1, n_batches * max_tokens, f"batch {bi + 1}/{n_batches}")
    assert last is not None
    return last


@dataclass
class _SweepRows:
    """What the batches generated: each cell's tokens and finish, and the baseline (and prompted) row."""

    cells: dict[tuple[int, float], tuple[list[int], str]] = field(default_factory=dict)
    baseline_tokens: list[int] = field(default_factory=list)
    baseline_finish: str = ""
    prompted_tokens: Optional[list[int]] = None

    def collect(self, last, batch: list[tuple[int, float]], first: bool, joint: bool) -> None:
        offset = 0
        if first:
            self.baseline_tokens = list(last.rows[0].tokens)
            self.baseline_finish = last.rows[0].finish
            offset = 1
            self.prompted_tokens = list(last.rows[-1].tokens) if joint else None
        for j, cell in enumerate(batch):
            r = last.rows[offset + j]
            self.cells[cell] = (list(r.tokens), r.finish)


def _decode_visible(tok, ids: Sequence[int]) -> str:
    eos = set(getattr(tok, "eos_token_ids", []) or [])
    return tok.decode([t for t in ids if t not in eos])


def _score_cells(result: SweepResult, lm: LoadedModel, prompt: Sequence[int], cv: ConceptVectors,
                 cells_spec: list[tuple[int, float]], rows: _SweepRows) -> None:
    """Score every row (baseline first) under the unsteered model; fill the baseline and the cells of ``result``."""
    read_layer = result.read_layer
    norm = float(np.linalg.norm(cv.vectors[read_layer]))
    unit = cv.vectors[read_layer] / norm if norm > 0 else None
    conts = [rows.baseline_tokens] + [rows.cells[c][0] for c in cells_spec]
    scores = score_continuations(lm.model, prompt, conts, read_layer, unit, pad=pad_id(lm.tokenizer))
    base_scores: TextScores = scores[0]
    tok = lm.tokenizer
    eos = set(getattr(tok, "eos_token_ids", []) or [])

    def visible(ids: Sequence[int]) -> tuple[list[int], list[str]]:
        kept = [t for t in ids if t not in eos]
        return kept, [tok.decode([t]) for t in kept]

    base_visible = visible(rows.baseline_tokens)
    result.baseline_text = _decode_visible(tok, rows.baseline_tokens)
    result.baseline = {**base_scores.as_dict(), "finish": rows.baseline_finish}
    allowance = allowance_of(cv)
    for (l, s), sc in zip(cells_spec, scores[1:]):
        toks, finish = rows.cells[(l, s)]
        cs = (sc.projection - base_scores.projection) / norm if norm > 0 else float("nan")
        ppl_ratio = sc.perplexity / base_scores.perplexity if base_scores.perplexity > 0 else float("nan")
        ids, pieces = visible(toks)
        v = coherence_verdict(sc.n_tokens, sc.perplexity, sc.distinct2, finish, base_scores.perplexity,
                              base_scores.distinct2, ids, base_visible[0], pieces, base_visible[1],
                              allowance=allowance)
        result.cells.append(SweepCell(
            layer=l, strength=s, text=tok.decode(ids), n_tokens=len(toks),
            finish=finish, concept_score=float(cs), perplexity=sc.perplexity, ppl_ratio=float(ppl_ratio),
            distinct2=sc.distinct2, longest_repeat=sc.longest_repeat,
            coherent=v.coherent, degenerate=finish in ("loop", "nan"), verdict=v.reason, verdict_rule=v.rule,
        ))


def _cell_intervention(cv: ConceptVectors, layer: int, value: float, relative: bool, op: str,
                       typical_projection: Optional[np.ndarray]):
    entry = SteeringEntry(layer, cv.vectors[layer], value, float(cv.typical_norms[layer]), relative,
                          float(typical_projection[layer]) if typical_projection is not None else 0.0)
    return make(op, layer, cv.vectors[layer], entry.op_param(op))


def _judge_cells(result: SweepResult, judge: Judge) -> None:
    """Judge change of every cell (and of the prompted row) from the baseline text."""
    texts = [result.baseline_text] + [c.text for c in result.cells]
    if result.prompted_text is not None:
        texts.append(result.prompted_text)
    scores = judge_scores(judge, texts)
    for c, v in zip(result.cells, scores[1:1 + len(result.cells)]):
        c.judge_score = float(v - scores[0])
    result.judge = {
        "kind": judge.kind, "label": judge.label, "sign": judge.sign,
        "baseline_raw": float(scores[0]) * judge.sign,
        "prompted_change": float(scores[-1] - scores[0]) if result.prompted_text is not None else None,
        "accuracy": getattr(judge, "accuracy", None),
    }


def recommend(cells: Sequence[SweepCell]) -> Optional[tuple[int, float]]:
    """Best effect among coherent cells that moved the right way; ties -> smaller strength.

    The effect is the judge change where the sweep had a judge, else the concept score."""
    judged = any(c.judge_score is not None for c in cells)

    def effect(c: SweepCell) -> float:
        v = c.judge_score if judged else c.concept_score
        return float(v) if v is not None else float("nan")

    good = [c for c in cells if c.coherent and np.isfinite(effect(c)) and effect(c) > 0]
    if not good:
        return None
    best = max(good, key=lambda c: (round(effect(c), 6), -abs(c.strength)))
    return best.layer, best.strength
