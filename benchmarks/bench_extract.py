"""What does extracting a concept cost compared with just running its prompts through the model?

On the default model: extracting a 24-pair concept (happy, first 24 pairs) for ALL layers
(capture, pooling, vectors, quality) versus one plain batched forward pass over the same 48
chat-formatted prompts (``model(tokens)`` + ``mx.eval`` of the logits). Best of 3 runs each,
interleaved, in one process; the ratio is the number to watch (target <= 1.3). Then one full
extraction of every shipped concept.

    .venv/bin/python -m benchmarks.bench_extract
"""

from __future__ import annotations

import app.core  # noqa: F401  (fast BLAS before mlx)

import dataclasses
import time

import mlx.core as mx

from app import paths
from app.core.blas import active_blas
from app.core.capture import pad_right
from app.core.chat import pad_id
from app.core.extraction import concept_prompts, extract
from app.library import parse_concept
from app.service.model_service import ModelService

RUNS = 3
N_PAIRS = 24


def main(argv=None) -> None:
    import argparse
    import json
    import sys

    ap = argparse.ArgumentParser(description="extraction cost vs a plain forward pass")
    ap.add_argument("--json", action="store_true", help="print one JSON object (the text goes to stderr)")
    args = ap.parse_args(argv)
    out = sys.stdout
    if args.json:
        sys.stdout = sys.stderr
    svc = ModelService()
    info = svc.load("")
    lm = svc.loaded
    happy = parse_concept((paths.SHIPPED_CONCEPTS / "happy.yaml").read_text(encoding="utf-8"), "happy")
    concept = dataclasses.replace(happy, pairs=happy.pairs[:N_PAIRS])
    token_lists, _ = concept_prompts(lm.tokenizer, concept)
    tokens, lengths = pad_right(token_lists, pad_id(lm.tokenizer))
    print(f"model {info.model_id}: {info.num_layers} layers, hidden {info.hidden_size}, {info.dtype}, BLAS {active_blas()}")
    print(f"{len(token_lists)} prompts, {int(lengths.sum())} tokens (padded batch {tokens.shape[0]}x{tokens.shape[1]})")

    def plain() -> float:
        t0 = time.perf_counter()
        logits = lm.model(tokens)
        mx.eval(logits)
        return time.perf_counter() - t0

    def extraction() -> float:
        t0 = time.perf_counter()
        extract(lm, concept, "mean_diff")
        return time.perf_counter() - t0

    plain()  # warm-up (allocations, kernels) counted for neither
    plain_times, extract_times = [], []
    for _ in range(RUNS):
        plain_times.append(plain())
        extract_times.append(extraction())
    p, e = min(plain_times), min(extract_times)
    print(f"plain forward pass (48 prompts, logits):   best {p:.3f} s  runs {', '.join(f'{t:.3f}' for t in plain_times)}")
    print(f"extraction, all {info.num_layers} layers (mean_diff):  best {e:.3f} s  runs {', '.join(f'{t:.3f}' for t in extract_times)}")
    print(f"ratio extraction / forward pass: {e / p:.2f}  (target <= 1.3)")

    slugs = sorted(p.stem for p in paths.SHIPPED_CONCEPTS.glob("*.yaml"))
    t0 = time.perf_counter()
    pairs = prompts = 0
    for slug in slugs:
        c = parse_concept((paths.SHIPPED_CONCEPTS / f"{slug}.yaml").read_text(encoding="utf-8"), slug)
        cv = extract(lm, c, "mean_diff")
        pairs += cv.extra["n_pairs"]
        prompts += cv.extra["num_prompts"]
    total = time.perf_counter() - t0
    print(f"full extraction of all {len(slugs)} shipped concepts ({pairs} pairs, {prompts} prompts): {total:.1f} s "
          f"({total / max(len(slugs), 1):.1f} s per concept)")
    if args.json:
        sys.stdout = out
        print(json.dumps({"model": info.model_id, "blas": active_blas(), "forward_best_s": round(p, 3),
                          "extract_best_s": round(e, 3), "ratio_extract_over_forward": round(e / p, 3),
                          "concepts": len(slugs), "pairs": pairs, "prompts": prompts, "all_concepts_s": round(total, 1),
                          "per_concept_s": round(total / max(len(slugs), 1), 1)}, indent=2))


if __name__ == "__main__":
    main()
