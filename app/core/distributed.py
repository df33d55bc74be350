"""Run a list of independent work items over MLX distributed ranks; gather the results on rank 0.

The lab's long jobs (calibrating every concept: a grid per (concept, prompt)) are lists of
items whose results are independent. Launched with ``mlx.launch`` (ring backend over TCP, one
process per rank, on one machine or several Macs from a hostfile), each rank runs the items
``rank, rank + size, ...`` and contributes a fixed-size float64 array per item. The arrays are
combined with ``mx.distributed.all_sum`` over their bit patterns (int64 views: every item is
non-zero on exactly one rank, and integer addition of zeros is exact), so the gathered results
are bit-identical to a single-process run. Without ``mlx.launch`` the group has size 1 and the
items simply run in order.

    mlx.launch --backend ring -n 2 --python .venv/bin/python .venv/bin/steering-lab calibrate all --distributed

``run_items`` gathers fixed-size arrays; ``run_json_items`` gathers any JSON value (the
calibration's per-prompt judge changes, coherence flags and texts).
"""

from __future__ import annotations

import json
from typing import Any, Callable, Optional, Sequence, TypeVar

import mlx.core as mx
import numpy as np

T = TypeVar("T")


def group() -> "mx.distributed.Group":
    """The distributed group (size 1 unless launched by ``mlx.launch``)."""
    return mx.distributed.init()


def my_items(n_items: int, rank: int, size: int) -> list[int]:
    """The indices rank ``rank`` of ``size`` runs: strided, so neighbours (often the same
    concept, similar cost) spread over ranks; disjoint, and together they cover every item."""
    if size < 1 or not 0 <= rank < size:
        raise ValueError(f"rank {rank} is not in a group of size {size}")
    return list(range(rank, n_items, size))


def run_items(items: Sequence[T], fn: Callable[[T], np.ndarray], shape: Sequence[int],
              grp: Optional["mx.distributed.Group"] = None,
              progress: Optional[Callable[[int, int], None]] = None) -> np.ndarray:
    """float64 ``[len(items), *shape]`` of ``fn(item)`` for every item, on every rank.

    Each rank calls ``fn`` only on its own items; ``fn`` must return an array of ``shape``.
    """
    grp = grp if grp is not None else group()
    rank, size = grp.rank(), grp.size()
    shape = tuple(int(s) for s in shape)
    out = np.zeros((len(items), *shape), dtype=np.float64)
    mine = my_items(len(items), rank, size)
    for done, i in enumerate(mine, 1):
        value = np.asarray(fn(items[i]), dtype=np.float64)
        if value.shape != shape:
            raise ValueError(f"work item {i} returned shape {value.shape}, expected {shape}")
        out[i] = value
        if progress is not None:
            progress(done, len(mine))
    if size == 1:
        return out
    return _all_sum_exact(out.view(np.int64), grp).astype(np.int64).view(np.float64).reshape(out.shape)


def _all_sum_exact(values: np.ndarray, grp) -> np.ndarray:
    """Sum an int array over ranks (exact: each position is non-zero on at most one rank)."""
    with mx.stream(mx.cpu):  # the ring backend reduces on the CPU
        total = mx.distributed.all_sum(mx.array(values), group=grp)
        mx.eval(total)
    return np.array(total)


def run_json_items(items: Sequence[T], fn: Callable[[T], Any],
                   grp: Optional["mx.distributed.Group"] = None) -> list[Any]:
    """``[fn(item) for item in items]`` on every rank, each rank running only its own items.

    For results of any JSON shape (numbers, booleans, texts): each one travels as UTF-8 JSON in
    a byte buffer; Python's float repr round-trips exactly, so the results equal a local run.
    """
    grp = grp if grp is not None else group()
    rank, size = grp.rank(), grp.size()
    mine = my_items(len(items), rank, size)
    if size == 1:
        return [fn(items[i]) for i in mine]
    blobs = {i: json.dumps(fn(items[i]), ensure_ascii=False).encode("utf-8") for i in mine}
    lengths = np.zeros(len(items), dtype=np.int64)
    for i, b in blobs.items():
        lengths[i] = len(b)
    lengths = _all_sum_exact(lengths, grp)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    buf = np.zeros(int(lengths.sum()), dtype=np.int32)  # one byte per int32: sums stay exact
    for i, b in blobs.items():
        buf[starts[i]:starts[i] + len(b)] = np.frombuffer(b, dtype=np.uint8)
    data = _all_sum_exact(buf, grp).astype(np.uint8).tobytes()
    return [json.loads(data[starts[i]:starts[i] + lengths[i]].decode("utf-8")) for i in range(len(items))]


def is_main(grp: Optional["mx.distributed.Group"] = None) -> bool:
    """True on rank 0 (the rank that reports and writes)."""
    return (grp if grp is not None else group()).rank() == 0
