"""Memory soak: resident memory must stay flat over many side-by-side runs and extractions.

    .venv/bin/python benchmarks/soak_memory.py [--generations 200] [--extractions 20] [--json]

One process, the default model, the same service the UI uses: ``--generations`` side-by-side
runs (16 tokens; prompts, concepts, layers and strengths vary) with ``--extractions``
concept extractions (``save=False``) spread among them. Resident memory
(VmRSS from /proc/self/status, after gc.collect() and glibc's malloc_trim(0), so freed heap
pages the allocator still caches do not count; the raw reading is printed too) is read after
a warm-up (the first 10% of the runs, at least 20, and of the extractions, at least 2: caches,
vectors extracted on first use, MLX's buffer pool) and at the end, both right after a run.
Exits 1 if it grew by 10% or more: something keeps a reference per run (chunks, KV caches,
patched layers, parsed concepts). The user library is a temporary folder.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TARGET_GROWTH_PCT = 10.0
PROMPTS = [
    "Tell me about your day.",
    "Write a short note to a friend about the weekend.",
    "Describe the sea in two sentences.",
    "What do you think about rainy mornings?",
    "Give me advice for a job interview.",
    "Write a haiku about a cat.",
    "Explain what a library is to a child.",
    "How should I spend a free afternoon?",
    "Describe your favourite meal.",
    "What is the best way to learn to cook?",
    "Summarise the plot of a detective story you invent.",
    "Write two lines about the moon.",
]
CONCEPTS = ["happy", "sad", "pirate", "formal", "calm", "happy:0.6,calm:0.4"]
LAYERS = [8, 10, 12, 14, 16]
STRENGTHS = [0.3, -0.3, 0.15, 0.5, 0.2, 0.0]
EXTRACT = ["happy", "sad", "calm", "formal", "pirate", "brief", "poetic"]


def status_kb(field: str) -> int:
    """A ``kB`` field of /proc/self/status (VmRSS, VmHWM, ...); psutil is not a dependency."""
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status (Linux only)")


def _malloc_trim() -> None:
    """Hand free heap pages back to the OS (glibc), so RSS counts what is still referenced."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def rss_mb(trim: bool = True) -> float:
    """VmRSS after a full garbage collection (and malloc_trim: the verdict uses this reading)."""
    gc.collect()
    if trim:
        _malloc_trim()
    return status_kb("VmRSS") / 1024


def rss_pair() -> tuple[float, float]:
    """(raw VmRSS, VmRSS after malloc_trim)."""
    raw = rss_mb(trim=False)
    return raw, rss_mb(trim=True)


def mlx_mb() -> dict[str, float]:
    import mlx.core as mx

    out = {}
    for name in ("get_active_memory", "get_cache_memory", "get_peak_memory"):
        fn = getattr(mx, name, None)
        if fn is not None:
            out[name[4:]] = round(fn() / 2**20, 1)
    return out


def schedule(generations: int, extractions: int) -> list[tuple[str, int]]:
    """Interleave ("gen", i) and ("extract", j): extraction j runs in the MIDDLE of the j-th
    stretch of runs, so every RSS reading is taken after a side-by-side run, never right after
    an extraction (whose freed temporaries the allocator may still hold)."""
    after = {}
    for j in range(extractions):
        at = min(max(int((j + 0.5) * generations / extractions), 1), generations - 1)
        after.setdefault(at, []).append(j)  # runs after the at-th generation, before the last one
    plan: list[tuple[str, int]] = []
    for i in range(generations):
        plan.append(("gen", i))
        plan.extend(("extract", j) for j in after.get(i + 1, []))
    return plan


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    ap.add_argument("--generations", type=int, default=200)
    ap.add_argument("--extractions", type=int, default=20)
    ap.add_argument("--tokens", type=int, default=16, help="tokens per side-by-side run")
    ap.add_argument("--warmup-generations", type=int, default=None, help="default: max(20, 10%%), capped below the total")
    ap.add_argument("--warmup-extractions", type=int, default=None, help="default: max(2, 10%%), capped below the total")
    ap.add_argument("--sample-every", type=int, default=20, help="record RSS every N runs (for the trend)")
    ap.add_argument("--json", action="store_true", help="print one JSON object at the end")
    args = ap.parse_args(argv)
    if args.generations < 2 or args.extractions < 0 or args.tokens < 1:
        ap.error("need --generations >= 2, --extractions >= 0 and --tokens >= 1")
    warm_g = args.warmup_generations if args.warmup_generations is not None else max(20, args.generations // 10)
    warm_e = args.warmup_extractions if args.warmup_extractions is not None else max(2, args.extractions // 10)
    warm_g = min(warm_g, args.generations - 1)
    warm_e = min(warm_e, max(args.extractions - 1, 0))

    tmp = tempfile.TemporaryDirectory(prefix="soak-library-")
    os.environ["STEERING_LAB_LIBRARY"] = tmp.name  # nothing the soak does reaches the real library

    import app.core  # noqa: F401  (fast BLAS before mlx)
    from app.domain.requests import SteerRequest
    from app.service.model_service import ModelService
    from app.types import GenerationParams

    log = (lambda *a: print(*a, file=sys.stderr, flush=True)) if args.json else (lambda *a: print(*a, flush=True))
    rss_start = rss_mb()
    t_load = time.perf_counter()
    svc = ModelService()
    info = svc.load("")
    rss_loaded = rss_mb()
    log(f"model {info.model_id} ({info.dtype}, BLAS {info.blas}) loaded in {time.perf_counter() - t_load:.1f} s; "
        f"RSS {rss_start:.0f} MB before, {rss_loaded:.0f} MB after")
    log(f"plan: {args.generations} side-by-side runs x {args.tokens} tokens, {args.extractions} extractions; "
        f"warm-up = first {warm_g} runs + {warm_e} extractions")

    gens = exts = 0
    rss_warm = None
    samples: list[tuple[int, int, float]] = []
    t0 = time.perf_counter()
    gen_seconds = ext_seconds = 0.0
    for kind, i in schedule(args.generations, args.extractions):
        if kind == "gen":
            req = SteerRequest(
                prompt=PROMPTS[i % len(PROMPTS)],
                concept=CONCEPTS[i % len(CONCEPTS)],
                layers=[(LAYERS[(i // 2) % len(LAYERS)], STRENGTHS[(i // 3) % len(STRENGTHS)])],
                params=GenerationParams(max_tokens=args.tokens, temperature=0.0 if i % 4 else 0.7, seed=i),
            )
            ts = time.perf_counter()
            chunk, _settings = svc.compare(req)
            gen_seconds += time.perf_counter() - ts
            assert chunk.done and chunk.stats["batch_rows"] == 2
            del chunk, _settings
            gens += 1
        else:
            ts = time.perf_counter()
            cv = svc.extract_concept(EXTRACT[i % len(EXTRACT)], save=False)
            ext_seconds += time.perf_counter() - ts
            assert cv.num_layers == info.num_layers
            del cv
            exts += 1
        if kind != "gen":
            continue  # readings only after a run (see schedule())
        if rss_warm is None and gens >= warm_g and exts >= warm_e:
            raw_warm, rss_warm = rss_pair()
            samples.append((gens, exts, rss_warm))
            log(f"warm-up done after {gens} runs + {exts} extractions: RSS {rss_warm:.1f} MB "
                f"(raw {raw_warm:.1f} MB before malloc_trim)  mlx {mlx_mb()}")
        elif gens % max(args.sample_every, 1) == 0 and gens < args.generations:  # the end is read below
            samples.append((gens, exts, rss_mb()))
            log(f"  {gens:>4} runs, {exts:>3} extractions: RSS {samples[-1][2]:.1f} MB  "
                f"({time.perf_counter() - t0:.0f} s)")
    raw_end, rss_end = rss_pair()
    samples.append((gens, exts, rss_end))
    hwm = status_kb("VmHWM") / 1024
    growth_mb = rss_end - rss_warm
    growth_pct = 100.0 * growth_mb / rss_warm
    raw_growth_pct = 100.0 * (raw_end - raw_warm) / raw_warm
    ok = growth_pct < TARGET_GROWTH_PCT
    result = {
        "model": info.model_id,
        "blas": info.blas,
        "generations": gens,
        "extractions": exts,
        "tokens_per_run": args.tokens,
        "warmup_generations": warm_g,
        "warmup_extractions": warm_e,
        "rss_start_mb": round(rss_start, 1),
        "rss_loaded_mb": round(rss_loaded, 1),
        "rss_after_warmup_mb": round(rss_warm, 1),
        "rss_end_mb": round(rss_end, 1),
        "rss_peak_mb": round(hwm, 1),
        "raw_rss_after_warmup_mb": round(raw_warm, 1),
        "raw_rss_end_mb": round(raw_end, 1),
        "raw_growth_pct": round(raw_growth_pct, 2),
        "growth_mb": round(growth_mb, 1),
        "growth_pct": round(growth_pct, 2),
        "target_pct": TARGET_GROWTH_PCT,
        "ok": ok,
        "mlx_memory_mb": mlx_mb(),
        "seconds_per_run": round(gen_seconds / max(gens, 1), 3),
        "seconds_per_extraction": round(ext_seconds / max(exts, 1), 3),
        "wall_s": round(time.perf_counter() - t0, 1),
        "samples": [{"generations": g, "extractions": e, "rss_mb": round(r, 1)} for g, e, r in samples],
    }
    tmp.cleanup()
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print()
        print(f"RSS after warm-up: {rss_warm:.1f} MB; at the end: {rss_end:.1f} MB; peak {hwm:.1f} MB "
              f"(before malloc_trim: {raw_warm:.1f} -> {raw_end:.1f} MB, {raw_growth_pct:+.2f}%)")
        print(f"growth: {growth_mb:+.1f} MB = {growth_pct:+.2f}% over {gens - warm_g} runs and "
              f"{exts - warm_e} extractions after warm-up (target < {TARGET_GROWTH_PCT:g}%: {'OK' if ok else 'MISSED'})")
        print(f"{result['seconds_per_run']} s per side-by-side run, {result['seconds_per_extraction']} s per "
              f"extraction, {result['wall_s']} s in all; MLX memory {result['mlx_memory_mb']}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
