"""Bands vs single layers: each shipped concept at its shipped setting against a band at the same layer.

A band steers the layer AND the layers 2 and 4 either side with one (smaller) relative strength
(app.core.cellbatch.Cell.band). Scored like the calibration (the concept's judge vs the unsteered
answer; coherence by the sweep's rules; clean = distinct-2 >= 0.5 and no loop) on 8 prompts that
were in neither prompt set when the probe was run (2026-12-01, record in benchmarks/results/); they have since
been added to assets/prompts/calibration.txt, so the probe now measures on calibration prompts.
Usage: python benchmarks/band_probe.py [--concepts pirate,calm] [--strengths 0.05,0.08] [--tokens 48] [--json]
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import app.core  # noqa: E402,F401  (fast BLAS first)

from app.core.calibrate import evaluate  # noqa: E402
from app.core.cellbatch import Cell  # noqa: E402
from app.service.model_service import ModelService  # noqa: E402
from benchmarks.efficacy import shipped_setup  # noqa: E402

PROMPTS = ["What is your favourite way to spend an evening?", "Describe a market on a busy morning.",
           "How do you feel about getting up early?", "Tell me about a trip you remember.",
           "What do you think about cooking at home?", "Describe the view from your window.",
           "How would you spend a free afternoon?", "What do you think about snowy weather?"]
OFFSETS = (-4, -2, 2, 4)


def cells_for(settings, slugs, strengths, num_layers):
    """Per concept: the shipped single-layer cell, then one band cell per strength at the same layer."""
    cells = []
    for slug in slugs:
        layer, strength = settings[slug][:2]
        band = tuple(l for l in (layer + o for o in OFFSETS) if 1 <= l < num_layers)
        cells.append(Cell(slug, layer, strength))
        cells += [Cell(slug, layer, s, band) for s in strengths]
    return cells


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--concepts", default="", help="comma-separated slugs (default: every shipped concept)")
    ap.add_argument("--strengths", default="0.05,0.08", help="relative strengths of the band cells")
    ap.add_argument("--tokens", type=int, default=48)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    svc = ModelService()
    svc.load("")
    slugs = [s.strip() for s in args.concepts.split(",") if s.strip()]
    concepts, vectors, settings, scorers, _ = shipped_setup(svc, slugs)
    strengths = [float(s) for s in args.strengths.split(",") if s.strip()]
    cells = cells_for(settings, [c.slug for c in concepts], strengths, svc.loaded.num_layers)
    t0 = time.perf_counter()
    res = evaluate(svc.loaded, PROMPTS, vectors, cells, scorers, args.tokens, keep_texts=True,
                   progress=lambda m: print(f"[{time.perf_counter() - t0:5.0f} s] {m}", file=sys.stderr, flush=True))
    rows = []
    for c in cells:
        st = res[c]
        rows.append({**st.summary(with_texts=True), "concept": c.key, "eligible": st.eligible})
        if not args.json:
            what = f"band {','.join(map(str, c.layers))}" if c.band else f"layer {c.layer}"
            print(f"{c.key:12s} {what:18s} s={c.strength:<5g} right way {st.right_way:.2f}  wrong {st.wrong_way:.2f}  "
                  f"coherent {st.coherent_share:.2f}  clean {st.clean_share:.2f}  eligible {st.eligible}")
    summary = {"date": datetime.date.today().isoformat(), "model": svc.loaded.model_id, "prompts": PROMPTS,
               "tokens": args.tokens, "seconds": round(time.perf_counter() - t0, 1), "cells": rows}
    if args.json:
        print(json.dumps(summary, ensure_ascii=False, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
