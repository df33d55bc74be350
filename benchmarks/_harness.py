"""The timing loops every benchmark shares: step-interleaved lockstep and interleaved rounds.

The machines are shared and noisy, so variants never run in blocks: either step by step in
lockstep (A B C D, then D C B A, ...) or run by run in rounds whose order alternates, so drift
and the neighbours' load hit all variants alike. Ratios are taken per round (paired) and their
median is reported. Every script prints one JSON object with ``--json``; run_all reads that.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
from typing import Any, Callable, Iterable, Mapping


def run_lockstep(factories: Mapping[str, Callable[[], Any]], tokens: int) -> dict[str, Any]:
    """Make one decoder per variant and advance them ``tokens`` times (prefill, then decode steps),
    one step each in turn, reversing the order every step. Decoders have ``advance()``."""
    decoders = {name: make() for name, make in factories.items()}
    names = list(decoders)
    for i in range(tokens):
        for name in names if i % 2 == 0 else names[::-1]:
            decoders[name].advance()
    return decoders


def interleaved_rounds(variants: Mapping[str, Callable[[], dict]], rounds: int,
                       log: Callable[[str], None] = lambda _m: None) -> dict[str, list[dict]]:
    """Run every variant once per round, in alternating order; each call returns a dict of measures."""
    names = list(variants)
    out: dict[str, list[dict]] = {n: [] for n in names}
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            out[name].append(variants[name]())
        log(f"round {r + 1}/{rounds} done")
    return out


def median(values: Iterable[float]) -> float:
    vals = [float(v) for v in values]
    return statistics.median(vals) if vals else float("nan")


def paired_ratio(runs: Mapping[str, list[dict]], num: str, den: str, key: str) -> float:
    """Median over rounds of runs[num][i][key] / runs[den][i][key]."""
    return median(a[key] / b[key] for a, b in zip(runs[num], runs[den]) if b[key])


def load_note() -> dict:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return {"load_average_at_start": round(load, 2), "cores": cores}


def emit(result: dict, as_json: bool, text_lines: Iterable[str] = ()) -> None:
    """One JSON object on stdout (``--json``) or readable lines."""
    if as_json:
        print(json.dumps(result, indent=2, default=str))
    else:
        for line in text_lines:
            print(line)


def stderr_log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
