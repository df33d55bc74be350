"""Generation speed on the default model, as ratios measured in one run.

- steered / unsteered decode speed (one row, one patched layer): target >= 0.97
- side-by-side (baseline + steered rows in ONE batch) wall time / one unsteered run: target <= 1.3
  (two sequential runs would be 2.0)
- a 16-cell sweep (4 layers x 4 strengths, + baseline, batched and scored) / one unsteered run:
  target <= 5 (sequential would be 16+)
Runs are interleaved (A B A B ...) and medians are reported, since the machine is shared.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import app.core  # noqa: E402,F401  (fast BLAS first)
import numpy as np  # noqa: E402

from app.core.generation import run_batch  # noqa: E402
from app.core.interventions import additive_rows  # noqa: E402
from app.core.steering import SteeringEntry  # noqa: E402
from app.core.sweeps import run_sweep  # noqa: E402
from app.service.model_service import ModelService  # noqa: E402
from app.types import ConceptVectors, GenerationParams  # noqa: E402

PROMPT = "Write a short story about a lighthouse keeper who finds a message in a bottle."


def timed_run(lm, prompt, vectors, rows, params):
    t0 = time.perf_counter()
    last = None
    for step in run_batch(lm, prompt, additive_rows(vectors, rows), params, stop_on_loop=False):
        last = step
    wall = time.perf_counter() - t0
    n = max(len(r.tokens) for r in last.rows)
    decode = (n - 1) / max(wall - last.prefill_seconds, 1e-9)
    return wall, decode, n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    svc = ModelService()
    info = svc.load("")
    lm = svc.loaded
    prompt = svc.tokenize_chat(PROMPT)
    L = lm.num_layers // 2
    rng = np.random.default_rng(0)
    # A vector at a realistic size: relative strength 0.3 at layer L.
    cap = svc.capture([PROMPT])
    mask = cap.mask.copy()
    mask[:, 0] = False
    typical = np.array([np.linalg.norm(cap.hidden[l][mask], axis=-1).mean() for l in range(lm.num_layers)], dtype=np.float32)
    vectors = rng.standard_normal((lm.num_layers, lm.hidden_size)).astype(np.float32)
    cv = ConceptVectors(info.model_id, info.fingerprint, "random", vectors, typical, recommended_layers=(L - 2, L + 2))
    coef = SteeringEntry(L, vectors[L], 0.3, float(typical[L])).coefficient
    params = GenerationParams(max_tokens=args.tokens, temperature=0.0, seed=0)
    timed_run(lm, prompt, {}, [{}], GenerationParams(max_tokens=4))  # warm-up

    plain, steered, side, plain_wall = [], [], [], []
    for _ in range(args.repeats):
        w, d, _ = timed_run(lm, prompt, {}, [{}], params)
        plain.append(d)
        plain_wall.append(w)
        _, d, _ = timed_run(lm, prompt, {L: vectors[L]}, [{L: coef}], params)
        steered.append(d)
        w, _, _ = timed_run(lm, prompt, {L: vectors[L]}, [{}, {L: coef}], params)
        side.append(w)
    single_wall = statistics.median(plain_wall)
    sweep_walls = []
    for _ in range(max(1, args.repeats - 1)):
        t0 = time.perf_counter()
        res = run_sweep(lm, prompt, cv, [L - 4, L - 2, L, L + 2], [0.1, 0.2, 0.3, 0.5], params)
        sweep_walls.append(time.perf_counter() - t0)
    rows = {
        "model": info.model_id,
        "blas": info.blas,
        "tokens": args.tokens,
        "decode_tok_s_unsteered": round(statistics.median(plain), 2),
        "decode_tok_s_steered": round(statistics.median(steered), 2),
        "ratio_steered_over_unsteered_decode": round(statistics.median(steered) / statistics.median(plain), 3),
        "single_run_s": round(single_wall, 2),
        "side_by_side_s": round(statistics.median(side), 2),
        "ratio_side_by_side_over_single": round(statistics.median(side) / single_wall, 3),
        "sweep16_s": round(statistics.median(sweep_walls), 2),
        "sweep16_batches": res.batches,
        "ratio_sweep16_over_single": round(statistics.median(sweep_walls) / single_wall, 3),
    }
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for k, v in rows.items():
            print(f"{k:>40}: {v}")
        print("targets: steered/unsteered >= 0.97, side-by-side/single <= 1.3, sweep16/single <= 5")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
