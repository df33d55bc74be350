"""Calibration scoring: the lab's scorer against the full-pass scorer it replaced, on one fine-stage batch.

A calibration judges every cell's text and reads its perplexity under the unsteered model (the
coherence rule). Until 2026-12-07 that perplexity came from ``token_nll``: prompt + text in one
pass per row, the unembedding at every position. ``cellbatch.score_rows`` now goes through the
sweep's scorer (``scoring.score_continuations``): the prompt runs once and its KV cache is copied
to every row, only the positions that predict a generated token are unembedded, and only their
log-probabilities leave MLX. The texts are generated once (greedy, the shipped concepts' vectors,
their shipped layer at the fine stage's strengths and bands, like one batch of the fine stage);
then both scorers score the same rows in interleaved rounds, and the perplexities must agree.

Usage: python -m benchmarks.bench_calibration [--prompts 2] [--tokens 48] [--rounds 3] [--json]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import app.core  # noqa: E402,F401  (fast BLAS first)

import mlx.core as mx  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks._harness import emit, interleaved_rounds, load_note, median, paired_ratio, stderr_log  # noqa: E402


def full_pass_perplexities(model, prompt, conts, pad, batch=16) -> list[float]:
    """The scorer calibration used before: prompt + continuation per row, logits at every position."""
    from app.core.capture import pad_right

    P, out = len(prompt), []
    for s in range(0, len(conts), batch):
        chunk = [list(c) or [pad] for c in conts[s:s + batch]]
        tokens, _ = pad_right([list(prompt) + c for c in chunk], pad)
        logits = model(tokens)[:, P - 1:-1, :].astype(mx.float32)
        T = logits.shape[1]
        target = np.full((len(chunk), T), pad, dtype=np.int32)
        for b, c in enumerate(chunk):
            target[b, :len(c)] = c[:T]
        picked = mx.take_along_axis(logits, mx.array(target)[..., None], axis=-1)[..., 0]
        nll = np.array(mx.logsumexp(logits, axis=-1) - picked)
        out.extend(float(np.exp(np.clip(nll[b, :len(c)].astype(np.float64).mean(), 0, 50))) for b, c in enumerate(chunk))
    return out


def fine_cells(concepts, settings):
    from app.core.cellbatch import Cell

    cells = []
    for c in concepts:
        layer = settings[c.slug][0]
        band = tuple(l for l in (layer - 4, layer - 2, layer + 2, layer + 4) if 1 <= l < 30)
        cells += [Cell(c.slug, layer, st) for st in (0.1, 0.15, 0.25, 0.35)]
        cells += [Cell(c.slug, layer, st, band) for st in (0.05, 0.08)]
    return cells


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=48)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    from benchmarks.efficacy import shipped_setup

    from app.core.calibrate import load_prompts
    from app.core.cellbatch import generate_padded, score_rows
    from app.core.chat import encode, eos_ids, format_chat, pad_id
    from app.service.model_service import ModelService

    note = load_note()
    svc = ModelService()
    svc.load("")
    lm = svc.loaded
    concepts, vectors, settings, _, _ = shipped_setup(svc)
    cells = fine_cells(concepts, settings)
    prompts = [encode(lm.tokenizer, format_chat(lm.tokenizer, p)) for p in load_prompts("calibration")[:args.prompts]]
    per = 1 + len(cells)
    t0 = time.perf_counter()
    gen = generate_padded(lm, [p for p in prompts for _ in range(per)], vectors,
                          [c for _ in prompts for c in [None, *cells]], args.tokens)
    generate_s = time.perf_counter() - t0
    stderr_log(f"generated {len(gen)} rows x {args.tokens} tokens in {generate_s:.1f} s")
    eos, pad = eos_ids(lm.tokenizer), pad_id(lm.tokenizer)
    groups = [(p, gen[i * per:(i + 1) * per]) for i, p in enumerate(prompts)]
    got: dict[str, list[float]] = {}

    def lab() -> dict:
        t = time.perf_counter()
        got["lab"] = [r.scores.perplexity for p, rows in groups for r in score_rows(lm, p, rows)]
        return {"seconds": time.perf_counter() - t}

    def full() -> dict:
        t = time.perf_counter()
        got["full"] = [x for p, rows in groups
                       for x in full_pass_perplexities(lm.model, p, [[t for t in toks if t not in eos] for toks, _ in rows], pad)]
        return {"seconds": time.perf_counter() - t}

    runs = interleaved_rounds({"lab": lab, "full": full}, args.rounds, stderr_log)
    a, b = np.array(got["lab"]), np.array(got["full"])
    ok = np.isfinite(a) & np.isfinite(b)
    result = {
        "benchmark": "bench_calibration", **note, "rows": len(gen), "tokens": args.tokens, "rounds": args.rounds,
        "generate_seconds": round(generate_s, 2),
        "lab_scoring_seconds_median": round(median(r["seconds"] for r in runs["lab"]), 2),
        "full_pass_scoring_seconds_median": round(median(r["seconds"] for r in runs["full"]), 2),
        "full_pass_over_lab": round(paired_ratio(runs, "full", "lab", "seconds"), 3),
        "max_relative_perplexity_difference": float(np.max(np.abs(a[ok] - b[ok]) / b[ok])) if ok.any() else None,
    }
    emit(result, args.json, [f"{k}: {v}" for k, v in result.items()])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
