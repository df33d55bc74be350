"""The coarse-to-fine calibration search over many concepts at once (see ``calibrate``).

Every stage collects the cells of ALL concepts and runs them prompt by prompt, so one batch
carries dozens of concepts' rows with one shared baseline: on a 2-core CPU that is what
makes 16 concepts x 5 extraction methods affordable.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from typing import Callable, Mapping, Optional, Sequence

import numpy as np

from app.core.calibrate import CellStats, Judges, evaluate, pair_consistency, rank_layers, select
from app.core.cellbatch import Cell
from app.core.extraction import concept_features, method_inputs, unit_rows, vectors_from_features
from app.errors import InputError
from app.domain.methods import COMPARED_METHODS, mean_diff
from app.core.style import measure_style
from app.types import Concept, ConceptVectors

Log = Optional[Callable[[str], None]]


@dataclass(frozen=True)
class SearchPlan:
    """Sized so 16 concepts fit a shared 2-core machine; every number is a CLI flag."""

    coarse_layers: Optional[tuple[int, ...]] = None  # None: every 4th layer from 2 (2, 6, ..., 26 on 30 layers)
    coarse_strengths: tuple[float, ...] = (0.2, 0.35)  # two, so a layer that needs more strength still ranks
    coarse_prompts: int = 2  # stages 1-2 use the first N calibration prompts ...
    coarse_tokens: int = 32  # ... and this many tokens
    top_layers: int = 1  # layers carried from the depth scan to the method and fine stages
    method_strengths: tuple[float, ...] = (0.2, 0.35)
    fine_strengths: tuple[float, ...] = (0.1, 0.15, 0.2, 0.3, 0.45, 0.6)
    # fine stage, beside the single-layer cells: the same relative strength at the layer AND at these
    # offsets from it (a band; see cellbatch.Cell); () tries single layers only
    band_strengths: tuple[float, ...] = (0.05, 0.08)
    band_offsets: tuple[int, ...] = (-4, -2, 2, 4)
    cal_tokens: int = 48
    val_tokens: int = 64
    methods: tuple[str, ...] = COMPARED_METHODS
    validate_all_methods: bool = False  # False: validate the chosen method and mean_diff only
    repetition_penalty: float = 1.0  # every stage's rows, baseline included (1.0 = off)

    def layers_for(self, num_layers: int) -> list[int]:
        if self.coarse_layers is not None:
            return [l for l in self.coarse_layers if 0 <= l < num_layers]
        return list(range(2, max(num_layers - 1, 3), 4)) or [num_layers // 2]

    def band_of(self, layer: int, num_layers: int) -> tuple[int, ...]:
        """The other layers of the band centred on ``layer`` (those outside 1..num_layers-1 dropped)."""
        return tuple(l for l in (layer + o for o in self.band_offsets) if 1 <= l < num_layers and l != layer)

    def fine_cells(self, key: str, layers: Sequence[int], num_layers: int) -> list[Cell]:
        """The fine stage of one concept: every strength at each layer alone, then each band strength on its band."""
        cells = [Cell(key, l, st) for l in layers for st in self.fine_strengths]
        for l in layers:
            band = self.band_of(l, num_layers)
            cells += [Cell(key, l, st, band) for st in self.band_strengths if band]
        return cells


def build_variants(lm, concepts: Sequence[Concept], methods: Sequence[str] = COMPARED_METHODS, log: Log = None,
                   targets: Optional[Sequence[str]] = None,
                   ) -> tuple[dict[str, dict[str, ConceptVectors]], dict[str, dict[str, float]]]:
    """Vectors of every applicable method for each target (default: all ``concepts``), and
    pair consistency per layer; the other concepts only lend their features.

    Features are captured once per concept and shared: bipolar reads the opposite's positives,
    no_shared the unit mean_diff vectors of the other concepts of the same category.
    """
    feats, typical = {}, {}
    for c in concepts:
        if log:
            log(f"{c.slug}: capturing features")
        feats[c.slug], typical[c.slug], _ = concept_features(lm, c)
    units = {s: unit_rows(mean_diff(f)) for s, f in feats.items()}
    out: dict[str, dict[str, ConceptVectors]] = {}
    consistency: dict[str, dict[str, float]] = {}
    for c in concepts:
        if targets is not None and c.slug not in targets:
            continue
        out[c.slug] = {}
        opposite_pos = feats[c.opposite].pos if c.opposite in feats else None
        mates = [units[o.slug] for o in concepts if o.category == c.category and o.slug != c.slug]
        if log:
            log(f"{c.slug}: vectors of {', '.join(methods)}")
        for m in methods:
            try:
                f = method_inputs(lm, c, m, feats[c.slug], opposite_pos=opposite_pos,
                                  category_units=np.stack(mates, 1) if mates else None)
            except InputError:
                continue  # this concept lacks what the method reads (an opposite, category mates, system prompts)
            out[c.slug][m] = vectors_from_features(lm, c, m, f, typical[c.slug], extra={"n_pairs": len(c.pairs)})
        f = feats[c.slug]
        style = measure_style(lm, c)
        for cv in out[c.slug].values():
            cv.extra.update(style)
        consistency[c.slug] = {str(l): round(pair_consistency(f.pos, f.neg, l), 4) for l in range(lm.num_layers)}
    return out, consistency


def _flat(variants: Mapping[str, Mapping[str, ConceptVectors]]) -> dict[str, ConceptVectors]:
    return {f"{s}:{m}": cv for s, ms in variants.items() for m, cv in ms.items()}


def _run(lm, prompts, *, variants, cells, judges, tokens, log, stop, stage: str, keep_texts=False, runner=None,
         repetition_penalty: float = 1.0):
    t0 = time.perf_counter()
    res = evaluate(lm, prompts, _flat(variants), cells, judges, tokens, keep_texts,
                   progress=(lambda m: log(f"{stage}: {m}")) if log else None, should_stop=stop, runner=runner,
                   repetition_penalty=repetition_penalty)
    if log:
        log(f"{stage}: {len(cells)} cells x {len(prompts)} prompts in {time.perf_counter() - t0:.0f} s")
    return res


def _of(stats: Mapping[Cell, CellStats], key: str) -> list[CellStats]:
    return [s for c, s in stats.items() if c.key == key]


def run_search(lm, variants: Mapping[str, Mapping[str, ConceptVectors]], judges: Judges,
               cal_prompts: Sequence[str], val_prompts: Sequence[str], plan: SearchPlan = SearchPlan(),
               log: Log = None, should_stop: Optional[Callable[[], bool]] = None,
               runner=None) -> dict[str, dict]:
    """Choose (method, layer, strength) per concept on ``cal_prompts``; report on ``val_prompts``.

    ``runner`` (see ``calibrate.evaluate``) spreads each stage's prompts over distributed ranks;
    every rank then takes the same decisions from the same gathered results.
    """
    coarse = list(cal_prompts[:plan.coarse_prompts])
    slugs = [s for s in variants if "mean_diff" in variants[s]]
    run = functools.partial(_run, lm, variants=variants, judges=judges, log=log, stop=should_stop, runner=runner,
                            repetition_penalty=plan.repetition_penalty)
    cells = [Cell(f"{s}:mean_diff", l, st) for s in slugs for l in plan.layers_for(lm.num_layers)
             for st in plan.coarse_strengths]
    depth = run(coarse, cells=cells, tokens=plan.coarse_tokens, stage="depth")
    top = {s: rank_layers(_of(depth, f"{s}:mean_diff"), plan.top_layers) for s in slugs}
    cells = [Cell(f"{s}:{m}", l, st) for s in slugs for m in variants[s] for l in top[s]
             for st in plan.method_strengths]
    methods = run(coarse, cells=[c for c in cells if c not in depth], tokens=plan.coarse_tokens, stage="methods")
    methods.update({c: depth[c] for c in cells if c in depth})
    best_of: dict[str, dict[str, CellStats]] = {}
    chosen: dict[str, str] = {}
    for s in slugs:
        best_of[s] = {m: select(_of(methods, f"{s}:{m}")) or _fallback(_of(methods, f"{s}:{m}")) for m in variants[s]}
        chosen[s] = max(best_of[s], key=lambda m: (best_of[s][m].eligible, round(best_of[s][m].objective, 6),
                                                     m == "mean_diff"))
    cells = [c for s in slugs for c in plan.fine_cells(f"{s}:{chosen[s]}", top[s], lm.num_layers)]
    fine = run(list(cal_prompts), cells=cells, tokens=plan.cal_tokens, stage="fine")
    final = {s: select(_of(fine, f"{s}:{chosen[s]}")) or _fallback(_of(fine, f"{s}:{chosen[s]}")) for s in slugs}
    val_cells: dict[str, dict[str, Cell]] = {}
    for s in slugs:
        others = best_of[s] if plan.validate_all_methods else {"mean_diff": best_of[s]["mean_diff"]}
        val_cells[s] = {m: Cell(f"{s}:{m}", b.layer, b.strength) for m, b in others.items() if m != chosen[s]}
        val_cells[s][chosen[s]] = Cell(f"{s}:{chosen[s]}", final[s].layer, final[s].strength, final[s].band)
    cells = [c for s in slugs for c in val_cells[s].values()]
    val = run(list(val_prompts), cells=cells, tokens=plan.val_tokens, stage="validation", keep_texts=True)
    return {s: _report(s, chosen[s], final[s], best_of[s], val_cells[s], val, depth, fine) for s in slugs}


def _report(s, method, final, best_of, val_cells, val, depth, fine) -> dict:
    return {
        "method": method, "layer": final.layer, "strength": final.strength, "band": list(final.band),
        "eligible": final.eligible, "calibration": final.summary(),
        "validation": val[val_cells[method]].summary(with_texts=True),
        "variants": {m: {"calibration": b.summary(),
                         **({"validation": val[val_cells[m]].summary(with_texts=True)} if m in val_cells else {})}
                     for m, b in best_of.items()},
        "depth": [d.summary() for d in _of(depth, f"{s}:mean_diff")],
        "fine": [d.summary() for d in _of(fine, f"{s}:{method}")],
    }


def _fallback(stats: Sequence[CellStats]) -> CellStats:
    """No cell is coherent enough: the most coherent one, then the best objective (flagged by eligible=False)."""
    return max(stats, key=lambda s: (min(s.coherent_share, s.clean_share), round(s.objective, 6), -s.strength))
