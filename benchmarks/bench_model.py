"""Speed of the default model on this machine, as ratios measured in ONE run.

    .venv/bin/python -m benchmarks.bench_model [--tokens 128] [--reps 3]

Prints the active BLAS, fp32 matmul GFLOP/s, prefill and decode tokens/s, and two ratios the
lab's design relies on:
  * decode with one patched layer (a SteeringHook at layer 12) / unpatched decode  (target >= 0.97)
  * step time of a batch of 2 rows (baseline + steered) / a batch of 1        (target <= 1.3)
Variants run in lockstep, interleaved step by step (A B C D, then D C B A, ...), each with its
own KV cache, so drift and neighbours' load hit all of them alike; medians over repetitions of
the per-repetition ratios are reported. The machine is shared and noisy:
read the ratios, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import app.core  # noqa: F401  (loads the fast BLAS before mlx)
import mlx.core as mx
import numpy as np
from mlx_lm.models.cache import make_prompt_cache

from app.core import registry
from app.core.blas import active_blas
from app.core.chat import encode, format_chat
from app.core.models import load_model
from app.core.patching import ForwardState, SteeringHook, patch_layers
from benchmarks._harness import emit, load_note, run_lockstep

PROMPT = "Write a short, cheerful note to a friend about a sunny walk."
STEER_LAYER = 12


def matmul_gflops(n: int = 2048, reps: int = 5) -> float:
    a = mx.random.normal((n, n), dtype=mx.float32)
    b = mx.random.normal((n, n), dtype=mx.float32)
    mx.eval(a, b, a @ b)  # warm-up
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        mx.eval(a @ b)
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / statistics.median(times) / 1e9


class Decoder:
    """One variant's greedy decode with its own KV cache, advanced one step at a time.

    ``hooks`` (or None) are patched in only around this decoder's own forward calls, so
    variants can run in lockstep on one model: A B C D, D C B A, ... step by step, which
    exposes them all to the same background load.
    """

    def __init__(self, model, prompt: list[int], rows: int = 1, hooks: dict | None = None):
        self.model, self.prompt, self.rows, self.hooks = model, prompt, rows, hooks
        self.state = ForwardState()
        self.cache = make_prompt_cache(model)
        self.y: mx.array | None = None
        self.tokens: list[mx.array] = []
        self.prefill_s = 0.0
        self.step_s: list[float] = []

    def _patched(self):
        return patch_layers(self.model, self.hooks, state=self.state) if self.hooks else contextlib.nullcontext()

    def advance(self) -> None:
        with self._patched():
            t0 = time.perf_counter()
            if self.y is None:  # prefill
                self.state.phase = "prompt"
                logits = self.model(mx.array([self.prompt] * self.rows), cache=self.cache)
            else:
                self.state.phase, self.state.step = "generated", len(self.step_s)
                logits = self.model(self.y[:, None], cache=self.cache)
            self.y = mx.argmax(logits[:, -1, :], axis=-1)
            mx.eval(self.y)
            dt = time.perf_counter() - t0
        if not self.tokens:
            self.prefill_s = dt
        else:
            self.step_s.append(dt)
        self.tokens.append(self.y)

    def token_rows(self) -> list[list[int]]:
        return np.array(mx.stack(self.tokens, axis=1)).tolist()

    @property
    def decode_s(self) -> float:
        return sum(self.step_s)

    @property
    def step_ms(self) -> float:
        return 1000 * self.decode_s / len(self.step_s)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="", help="model id or folder (default: the bundled SmolLM2)")
    ap.add_argument("--tokens", type=int, default=128, help="greedy tokens per decode run")
    ap.add_argument("--reps", type=int, default=3, help="interleaved repetitions of every variant")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    args = ap.parse_args(argv)
    if args.json:  # the readable lines go to stderr, the JSON alone to stdout
        out = sys.stdout
        sys.stdout = sys.stderr

    print(f"BLAS: {active_blas()}")
    print(f"mlx {mx.__version__}, device {mx.default_device()}")
    gflops = matmul_gflops()
    print(f"fp32 2048x2048 matmul: {gflops:.1f} GFLOP/s")

    entry = registry.resolve(args.model)
    lm = load_model(entry.model_id, entry.path)
    model, tok = lm.model, lm.tokenizer
    prompt = encode(tok, format_chat(tok, PROMPT))
    layer = min(STEER_LAYER, lm.num_layers - 1)
    rng = np.random.default_rng(0)
    vector = mx.array(rng.standard_normal(lm.hidden_size).astype(np.float32) * 0.5)
    print(f"model: {lm.model_id} ({lm.num_layers} layers, hidden {lm.hidden_size}, {lm.info().dtype}); "
          f"prompt {len(prompt)} tokens; {args.tokens} greedy tokens; {args.reps} interleaved reps")

    side_hook = SteeringHook(vector, row_coefs=mx.array([0.0, 1.0]))  # row 0 baseline, row 1 steered
    factories = {
        "A unpatched b1": lambda: Decoder(model, prompt),
        "B patched b1": lambda: Decoder(model, prompt, hooks={layer: [SteeringHook(vector)]}),
        "C unpatched b2": lambda: Decoder(model, prompt, rows=2),
        "D side-by-side b2": lambda: Decoder(model, prompt, rows=2, hooks={layer: [side_hook]}),
    }
    names = list(factories)
    run_lockstep(factories, 8)  # warm-up
    reps = [run_lockstep(factories, args.tokens) for _ in range(args.reps)]
    runs = {n: [rep[n] for rep in reps] for n in names}

    med = statistics.median
    print()
    print(f"{'variant':<20} {'prefill tok/s':>14} {'decode tok/s (all rows)':>24} {'ms/step':>9}")
    for name in names:
        rs = runs[name]
        rows = rs[0].rows
        prefill = med(rows * len(prompt) / r.prefill_s for r in rs)
        decode = med(rows * len(r.step_s) / r.decode_s for r in rs)
        print(f"{name:<20} {prefill:>14.1f} {decode:>24.1f} {med(r.step_ms for r in rs):>9.1f}")

    def ratio(num: str, den: str) -> float:
        """Median over repetitions of the step-time ratio (the runs were interleaved step by step)."""
        return med(a.decode_s / b.decode_s for a, b in zip(runs[num], runs[den]))

    a, b, c, d = names
    patched_ratio = 1.0 / ratio(b, a)  # tok/s ratio = inverse of the time ratio
    batch_ratio = ratio(c, a)
    sbs_ratio = ratio(d, a)
    print()
    print(f"decode tok/s, patched layer {layer} / unpatched (b1): {patched_ratio:.3f}  "
          f"(target >= 0.97: {'OK' if patched_ratio >= 0.97 else 'MISSED'})")
    print(f"step time, batch 2 / batch 1 (unpatched):        {batch_ratio:.3f}  "
          f"(target <= 1.3: {'OK' if batch_ratio <= 1.3 else 'MISSED'})")
    print(f"step time, side-by-side b2 / unpatched b1:       {sbs_ratio:.3f}  "
          f"(target <= 1.3: {'OK' if sbs_ratio <= 1.3 else 'MISSED'})")

    # Sanity: the measurements ran what they claim.
    base = runs[a][0].token_rows()[0]
    steered = runs[b][0].token_rows()[0]
    same_a = all(r.token_rows()[0] == base for r in runs[a])
    steered_differs = steered != base
    sbs_row0 = all(r.token_rows()[0] == base for r in runs[d])
    sbs_row1 = all(r.token_rows()[1] == steered for r in runs[d])
    print(f"checks: unpatched runs agree={same_a}; steered tokens differ from baseline={steered_differs}; "
          f"side-by-side row 0 == baseline={sbs_row0}; row 1 == separate steered run={sbs_row1}")
    if args.json:
        sys.stdout = out
        variants = {}
        for name in names:
            rs = runs[name]
            rows = rs[0].rows
            variants[name] = {"rows": rows, "prefill_tok_s": round(med(rows * len(prompt) / r.prefill_s for r in rs), 1),
                              "decode_tok_s": round(med(rows * len(r.step_s) / r.decode_s for r in rs), 2),
                              "ms_per_step": round(med(r.step_ms for r in rs), 1)}
        emit({"blas": active_blas(), "matmul_gflops": round(gflops, 1), "model": lm.model_id, "tokens": args.tokens,
              "reps": args.reps, "layer": layer, **load_note(), "variants": variants,
              "ratio_patched_over_unpatched_decode": round(patched_ratio, 3),
              "ratio_b2_over_b1_step": round(batch_ratio, 3), "ratio_side_by_side_over_single_step": round(sbs_ratio, 3),
              "checks": {"unpatched_runs_agree": same_a, "steered_differs": steered_differs,
                         "side_by_side_row0_is_baseline": sbs_row0, "side_by_side_row1_is_steered": sbs_row1}}, True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
