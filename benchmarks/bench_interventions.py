"""Decode speed of each operation, as ratios measured in one run (default model).

For every operation: a 2-row batch (baseline + a row steered by that operation at one layer)
against the same 2-row batch with no steering at all. The hooks build their per-phase weights
once, so each ratio should be close to 1.0 (target >= 0.95). Runs are interleaved and medians
are reported, since the machine is shared.
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
from app.core.interventions import Add, Conditional, make  # noqa: E402
from app.service.model_service import ModelService  # noqa: E402
from app.types import GenerationParams  # noqa: E402

PROMPT = "Write a short story about a lighthouse keeper who finds a message in a bottle."


def decode_rate(lm, prompt, rows, params) -> float:
    t0 = time.perf_counter()
    last = None
    for last in run_batch(lm, prompt, rows, params, stop_on_loop=False):
        pass
    wall = time.perf_counter() - t0
    n = max(len(r.tokens) for r in last.rows)
    return (n - 1) / max(wall - last.prefill_seconds, 1e-9)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=48)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    svc = ModelService()
    svc.load("")
    lm = svc.loaded
    prompt = svc.tokenize_chat(PROMPT)
    L = lm.num_layers // 2
    v = np.random.default_rng(0).standard_normal(lm.hidden_size).astype(np.float32)
    cases = {
        "add": [make("add", L, v, 0.5)],
        "ablate": [make("ablate", L, v, 1.0)],
        "cap": [make("cap", L, v, 0.0)],
        "rotate": [make("rotate", L, v, 10.0)],
        "conditional add": [Conditional(Add(L, v, 0.5), v, 0.0)],
    }
    params = GenerationParams(max_tokens=args.tokens)
    decode_rate(lm, prompt, [[], []], params)  # warm-up
    rates: dict[str, list[float]] = {"none": [], **{k: [] for k in cases}}
    for _ in range(args.repeats):
        rates["none"].append(decode_rate(lm, prompt, [[], []], params))
        for name, steered in cases.items():
            rates[name].append(decode_rate(lm, prompt, [[], steered], params))
    med = {k: statistics.median(v) for k, v in rates.items()}
    out = {"tokens": args.tokens, "repeats": args.repeats, "decode_tok_per_s": {k: round(v, 2) for k, v in med.items()},
           "ratio_to_unsteered": {k: round(med[k] / med["none"], 3) for k in cases}}
    print(json.dumps(out, indent=2) if args.json else "\n".join(f"{k}: {v}" for k, v in out["ratio_to_unsteered"].items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
