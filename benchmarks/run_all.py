"""Run every benchmark and print ONE Markdown table for the README's Performance section.

    .venv/bin/python benchmarks/run_all.py [--quick] [--only NAME[,NAME]] [--json]

Each script in benchmarks/ runs in its own subprocess, one after another (never two at once:
they would slow each other down). Every known script prints one JSON object with ``--json``,
which is what this runner reads (a script it does not know shows its last printed line). A
script that is missing, fails or times out becomes a row saying so; it never stops the run. The first rows are the machine facts (CPU, cores, RAM, OS,
Python, mlx, BLAS); read the ratios, not the absolute speeds, on a shared machine.
``--quick`` uses short settings: a smoke test of the pipeline, not numbers to publish.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PYTHON = sys.executable

Row = tuple[str, str, str]  # (measure, value, target / note)


@dataclass
class Bench:
    name: str
    args: list[str]
    quick_args: list[str]
    parse: Callable[[str, dict], list[Row]]  # (stdout, context) -> rows
    about: str = ""
    timeout_s: int = 3600


@dataclass
class Outcome:
    name: str
    status: str  # "ok" | "failed" | "missing" | "skipped" | "timeout"
    seconds: float = 0.0
    rows: list[Row] = field(default_factory=list)
    detail: str = ""
    data: Any = None


# ---- parsers ---------------------------------------------------------------------------------
def _fmt(x: Optional[float], digits: int = 2, unit: str = "") -> str:
    if x is None:
        return "n/a"
    return f"{x:.{digits}f}{unit}"


def _target(x: Optional[float], op: str, limit: float, unit: str = "") -> str:
    if x is None:
        return f"{op} {limit:g}{unit}"
    ok = x >= limit if op == ">=" else x <= limit if op == "<=" else x < limit
    return f"{op} {limit:g}{unit} ({'OK' if ok else 'MISSED'})"


def parse_bench_model(out: str, ctx: dict) -> list[Row]:
    d = json.loads(out)
    ctx["mlx_variants"] = d["variants"]
    v = d["variants"]
    rows: list[Row] = [("BLAS / fp32 2048² matmul", f"{d['blas']} / {d['matmul_gflops']} GFLOP/s", "")]
    for name, t in v.items():
        rows.append((f"{name}: decode (all rows) / ms per step", f"{t['decode_tok_s']} tok/s / {t['ms_per_step']} ms", ""))
    patched, b2, sbs = (d.get(k) for k in ("ratio_patched_over_unpatched_decode", "ratio_b2_over_b1_step",
                                           "ratio_side_by_side_over_single_step"))
    rows.append(("decode speed, patched layer / unpatched", _fmt(patched, 3), _target(patched, ">=", 0.97)))
    rows.append(("step time, batch 2 / batch 1", _fmt(b2, 3), ""))
    rows.append(("step time, side-by-side / single", _fmt(sbs, 3), _target(sbs, "<=", 1.3)))
    bad = [k for k, ok in (d.get("checks") or {}).items() if not ok]
    rows.append(("token checks (side-by-side rows = separate runs)", "all pass" if not bad else "FAILED: " + ", ".join(bad), ""))
    return rows


def parse_bench_extract(out: str, ctx: dict) -> list[Row]:
    d = json.loads(out)
    r = d["ratio_extract_over_forward"]
    return [
        ("forward pass over a concept's prompts", _fmt(d["forward_best_s"], 3, " s"), ""),
        ("extraction, all layers, same prompts", _fmt(d["extract_best_s"], 3, " s"), ""),
        ("extraction / forward pass", _fmt(r, 2), _target(r, "<=", 1.3)),
        (f"extract all {d['concepts']} shipped concepts", f"{d['all_concepts_s']:.1f} s ({d['per_concept_s']:.1f} s per concept)", ""),
    ]


def parse_bench_calibration(out: str, ctx: dict) -> list[Row]:
    d = json.loads(out)
    return [
        (f"calibration scoring, {d['rows']} rows x {d['tokens']} tokens: full-pass scorer / the lab's",
         _fmt(d["full_pass_over_lab"], 2), ""),
        ("largest relative perplexity difference of the two scorers", f"{d['max_relative_perplexity_difference']:.1e}", "< 1e-3"),
    ]


def parse_bench_generate(out: str, ctx: dict) -> list[Row]:
    d = json.loads(out)
    ctx["generate"] = d
    v = d["variants"]
    rows: list[Row] = [(f"{name} ({d['tokens']} tokens)", f"{t['wall_s']} s" + (f", {t['decode_tok_s']} tok/s" if "decode_tok_s" in t else ""), "")
                       for name, t in v.items()]
    for key, verdict in (d.get("targets") or {}).items():
        rows.append((key.removeprefix("ratio_").replace("_", " "), f"{d[key]}", verdict))
    if "skipped" in (d.get("torch") or {}):
        rows.append(("PyTorch rows", "skipped", d["torch"]["skipped"]))
    return rows


def parse_ui_stream(out: str, ctx: dict) -> list[Row]:
    d = json.loads(out)
    if "skipped" in d:
        raise SkipBench(d["skipped"])
    t = d["targets"]
    return [
        ("Stop click -> last pane change", f"{d['stop']['stop_to_last_change_s']} s (at token {d['stop']['stop_clicked_at_token']})",
         f"<= 1 s ({t['stop within 1 s']})"),
        ("longest main-thread task while streaming", f"{d['longest_main_thread_task_ms']} ms",
         f"<= 200 ms ({t['no main-thread task over 200 ms']})"),
        ("bytes per token, long / short stream", f"{d['bytes_per_token_long_over_short']} "
         f"({d['long']['tokens_generated']} vs {d['short']['tokens_generated']} tokens)",
         f"~1 = linear ({t['bytes grow linearly (per-token ratio <= 1.5)']})"),
    ]


def parse_torch(out: str, ctx: dict) -> list[Row]:
    d = json.loads(out)
    if "skipped" in d:
        raise SkipBench(d["skipped"])
    ctx["torch"] = d
    v = d["variants"]
    a, dd = v["A unpatched b1"], v["D side-by-side b2"]
    rows = [
        (f"stack: {d['stack']}, torch {d['torch']}, {d['threads']} threads, {d['tokens']} tokens",
         "", ""),
        ("decode, batch 1", f"{a['decode_tok_s']} tok/s ({a['ms_per_step']} ms/step)", ""),
        ("decode, side-by-side batch 2 (all rows)", f"{dd['decode_tok_s']} tok/s ({dd['ms_per_step']} ms/step)", ""),
        ("decode speed, hooked / unpatched", f"{d['ratio_hooked_over_unpatched_decode']}", ""),
        ("step time, side-by-side / single", f"{d['ratio_side_by_side_over_single_step']}", ""),
    ]
    mlx = ctx.get("mlx_variants", {})
    if "A unpatched b1" in mlx and a["decode_tok_s"]:
        ratio = mlx["A unpatched b1"]["decode_tok_s"] / a["decode_tok_s"]
        rows.append(("MLX / PyTorch decode speed, batch 1 (same run)", f"{ratio:.2f}", "from bench_model, same tokens"))
    if "D side-by-side b2" in mlx and dd["decode_tok_s"]:
        ratio = mlx["D side-by-side b2"]["decode_tok_s"] / dd["decode_tok_s"]
        rows.append(("MLX / PyTorch decode speed, side-by-side", f"{ratio:.2f}", ""))
    return rows


def parse_soak(out: str, ctx: dict) -> list[Row]:
    d = json.loads(out)
    return [
        (f"resident memory after warm-up -> after {d['generations']} runs + {d['extractions']} extractions",
         f"{d['rss_after_warmup_mb']:.0f} -> {d['rss_end_mb']:.0f} MB (peak {d['rss_peak_mb']:.0f} MB)", ""),
        ("memory growth after warm-up", f"{d['growth_pct']:+.2f}% ({d['growth_mb']:+.1f} MB)",
         _target(d["growth_pct"], "<", d.get("target_pct", 10), "%")),
        ("side-by-side run / extraction (16 tokens)", f"{d['seconds_per_run']} s / {d['seconds_per_extraction']} s", ""),
    ]


def parse_text(out: str, ctx: dict) -> list[Row]:
    """Scripts this runner does not know: show their last printed line."""
    lines = [l.strip() for l in out.splitlines() if l.strip()]
    return [("last line of output", lines[-1][:160] if lines else "(no output)", "")]


class SkipBench(Exception):
    pass


BENCHES = [
    Bench("bench_model", ["--json", "--tokens", "64", "--reps", "3"], ["--json", "--tokens", "16", "--reps", "1"], parse_bench_model,
          "MLX decode, b1 vs b2, patched vs not (64 tokens, interleaved)"),
    Bench("bench_torch_reference", ["--json", "--tokens", "64", "--reps", "3"], ["--json", "--tokens", "16", "--reps", "1"],
          parse_torch, "same workload on PyTorch + transformers (optional)"),
    Bench("bench_extract", ["--json"], ["--json"], parse_bench_extract, "extraction cost vs a forward pass"),
    Bench("bench_calibration", ["--json"], ["--json", "--prompts", "1", "--tokens", "8", "--rounds", "1"],
          parse_bench_calibration, "calibration scoring vs the full-pass scorer it replaced"),
    Bench("bench_generate", ["--json"], ["--json", "--tokens", "16", "--rounds", "1"], parse_bench_generate,
          "side-by-side, sweep, mlx-lm and PyTorch reference rows in one interleaved run"),
    Bench("bench_ui_stream", ["--json"], ["--json", "--tokens", "64", "--short", "16", "--stop-at", "8"], parse_ui_stream,
          "headless Chromium: Stop delay, longest main-thread task, bytes per token"),
    Bench("soak_memory", ["--json", "--generations", "60", "--extractions", "6"],
          ["--json", "--generations", "24", "--extractions", "3"], parse_soak, "memory stays flat"),
]
NOT_BENCHMARKS = {"run_all", "__init__", "_harness"}


# ---- machine facts ---------------------------------------------------------------------------
def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def machine_facts(timeout: int = 300) -> list[Row]:
    cpu = re.search(r"^model name\s*:\s*(.+)$", _read("/proc/cpuinfo"), re.MULTILINE)
    mem = re.search(r"^MemTotal:\s*(\d+) kB", _read("/proc/meminfo"), re.MULTILINE)
    os_name = re.search(r'^PRETTY_NAME="?([^"\n]+)', _read("/etc/os-release"), re.MULTILINE)
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = os.cpu_count()

    def version(pkg: str) -> str:
        try:
            return importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    blas = "unknown"
    try:
        proc = subprocess.run([PYTHON, "-m", "app", "info", "--json"], cwd=str(REPO), capture_output=True, text=True,
                              timeout=timeout)
        if proc.returncode == 0:
            blas = json.loads(proc.stdout).get("blas", "unknown")
        else:
            blas = f"unknown (`app info` failed: {(proc.stderr.strip().splitlines() or ['?'])[-1][:100]})"
    except (OSError, subprocess.TimeoutExpired, ValueError) as e:
        blas = f"unknown ({type(e).__name__})"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return [
        ("CPU", cpu.group(1).strip() if cpu else platform.processor() or platform.machine(), ""),
        ("cores", f"{affinity} usable ({os.cpu_count()} online)", f"load average {load:.1f} at start"),
        ("RAM", f"{int(mem.group(1)) / 2**20:.1f} GiB" if mem else "unknown", ""),
        ("OS", f"{os_name.group(1) if os_name else platform.system()} ({platform.release()})", ""),
        ("Python", platform.python_version(), ""),
        ("date", time.strftime("%Y-%m-%d %H:%M %Z"), ""),
        ("mlx / mlx-lm", f"{version('mlx')} / {version('mlx-lm')}", ""),
        ("BLAS", blas, ""),
    ]


# ---- running ---------------------------------------------------------------------------------
def discover() -> list[Bench]:
    """The known benchmarks in a sensible order, then any other script found in benchmarks/."""
    known = {b.name for b in BENCHES}
    extra = [Bench(p.stem, [], [], parse_text, "(not known to run_all: raw output)")
             for p in sorted(HERE.glob("*.py")) if p.stem not in known and p.stem not in NOT_BENCHMARKS]
    return [*BENCHES, *extra]


def run_one(b: Bench, quick: bool, ctx: dict, timeout: Optional[int], log) -> Outcome:
    script = HERE / f"{b.name}.py"
    if not script.is_file():
        return Outcome(b.name, "missing", detail="script not found (not written yet?)")
    args = b.quick_args if quick else b.args
    if "--json" in args and '"--json"' not in script.read_text(encoding="utf-8", errors="replace"):
        args = [a for a in args if a != "--json"]  # this version of the script has no --json
    cmd = [PYTHON, "-m", f"benchmarks.{b.name}", *args]
    log(f"running {' '.join(cmd[1:])} ...")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=str(REPO), env=env, capture_output=True, text=True, errors="replace",
                              timeout=timeout or b.timeout_s)
    except subprocess.TimeoutExpired:
        return Outcome(b.name, "timeout", time.perf_counter() - t0, detail=f"no result after {timeout or b.timeout_s} s")
    seconds = time.perf_counter() - t0
    last_err = next((l.strip() for l in reversed(proc.stderr.splitlines()) if l.strip()), "")
    if proc.returncode != 0:
        # A script that measured and then missed its own target (the soak exits 1) still has numbers.
        try:
            rows = b.parse(proc.stdout, ctx) if proc.stdout.strip() else []
        except Exception:
            rows = []
        detail = f"exit {proc.returncode}" + (f": {last_err[:160]}" if last_err else "")
        return Outcome(b.name, "failed", seconds, rows, detail)
    try:
        rows = b.parse(proc.stdout, ctx)
    except SkipBench as e:
        return Outcome(b.name, "skipped", seconds, detail=str(e))
    except Exception as e:
        return Outcome(b.name, "failed", seconds, detail=f"output not understood ({type(e).__name__}: {e})"[:200])
    log(f"  {b.name}: ok in {seconds:.0f} s")
    return Outcome(b.name, "ok", seconds, rows)


def md_escape(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render(facts: list[Row], outcomes: list[Outcome], quick: bool) -> str:
    lines = ["| Benchmark | Measure | Value | Target / note |", "|---|---|---|---|"]
    for measure, value, note in facts:
        lines.append(f"| machine | {md_escape(measure)} | {md_escape(value)} | {md_escape(note)} |")
    for o in outcomes:
        if o.status != "ok":
            label = {"missing": "not run: script missing", "skipped": "skipped", "timeout": "TIMED OUT",
                     "failed": "FAILED"}[o.status]
            when = f"after {o.seconds:.0f} s" if o.status in ("failed", "timeout") else ""
            lines.append(f"| {o.name} | {label} | {md_escape(o.detail)} | {when} |")
        for measure, value, note in o.rows:
            lines.append(f"| {o.name} | {md_escape(measure)} | {md_escape(value)} | {md_escape(note)} |")
    if quick:
        lines.append("| all | settings | --quick (short runs: smoke test only) | do not publish |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    ap.add_argument("--only", action="append", default=[], metavar="NAME",
                    help="run only these benchmarks (repeat or comma-separate; e.g. bench_generate, soak_memory)")
    ap.add_argument("--quick", action="store_true", help="short settings for a quick smoke run")
    ap.add_argument("--timeout", type=int, default=None, help="seconds per benchmark (default: 3600)")
    ap.add_argument("--json", action="store_true", help="print the results as JSON instead of Markdown")
    args = ap.parse_args(argv)

    benches = discover()
    if args.only:
        wanted = {w.strip().removesuffix(".py") for item in args.only for w in item.split(",") if w.strip()}
        unknown = wanted - {b.name for b in benches}
        benches = [b for b in benches if b.name in wanted]
        benches += [Bench(name, [], [], parse_text) for name in sorted(unknown)]  # reported as missing
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    facts = machine_facts()
    ctx: dict = {}
    outcomes = [run_one(b, args.quick, ctx, args.timeout, log) for b in benches]
    if args.json:
        print(json.dumps({"machine": facts, "quick": args.quick,
                          "benchmarks": [o.__dict__ for o in outcomes]}, indent=2, default=str))
    else:
        print(render(facts, outcomes, args.quick))
    return 0 if all(o.status in ("ok", "skipped", "missing") for o in outcomes) else 1


if __name__ == "__main__":
    raise SystemExit(main())
