"""Load a fast BLAS before MLX on Linux.

The Linux CPU wheel of MLX links the netlib reference BLAS (~2 GFLOP/s). MLX only imports
``cblas_*gemm`` and LAPACK symbols, so an OpenBLAS loaded first with RTLD_GLOBAL wins the
symbol lookup (~40-90x faster matmuls). This must run before ``import mlx.core``.
"""

from __future__ import annotations

import ctypes
import glob
import logging
import os
import platform
import sys
from pathlib import Path

log = logging.getLogger("steering_lab.blas")

_STATE: dict[str, str] = {"name": "not checked"}

DEBIAN_OPENBLAS = "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0"


def _candidates() -> list[str]:
    found = []
    env = os.environ.get("STEERING_LAB_BLAS")
    if env:
        found.append(env)
    found.append(DEBIAN_OPENBLAS)  # dynamic-arch build, safe on any x86-64 CPU
    for base in {sys.prefix, *[p for p in sys.path if p.endswith("site-packages")]}:
        found += sorted(glob.glob(str(Path(base) / "**" / "cmeel.prefix" / "lib" / "libopenblas.so*"), recursive=True))
        found += sorted(glob.glob(str(Path(base) / "cmeel.prefix" / "lib" / "libopenblas.so*")))
    seen, unique = set(), []
    for c in found:
        if c not in seen:
            seen.add(c)
            unique.append(c)
    return unique


def ensure_fast_blas() -> str:
    """Load OpenBLAS globally if MLX is not imported yet; return a description of the BLAS."""
    if _STATE["name"] != "not checked":
        return _STATE["name"]
    if platform.system() == "Darwin":
        _STATE["name"] = "Apple Accelerate / Metal"
        return _STATE["name"]
    if os.environ.get("STEERING_LAB_BLAS") == "reference":
        _STATE["name"] = "reference BLAS (forced by STEERING_LAB_BLAS=reference)"
        return _STATE["name"]
    if "mlx.core" in sys.modules:
        _STATE["name"] = "unknown (mlx was imported before the lab could load OpenBLAS)"
        log.warning(_STATE["name"])
        return _STATE["name"]
    for path in _candidates():
        if not os.path.exists(path):
            continue
        try:
            ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
        except OSError as exc:  # wrong architecture, missing deps
            log.debug("could not load %s: %s", path, exc)
            continue
        _STATE["name"] = f"OpenBLAS ({path})"
        log.info("BLAS: %s", _STATE["name"])
        return _STATE["name"]
    _STATE["name"] = "reference BLAS (slow: no OpenBLAS found)"
    log.warning(
        "No OpenBLAS found; MLX will use the reference BLAS and run ~50x slower on CPU. "
        "Run ./setup_local_cache.sh (installs cmeel-openblas) or apt-get install libopenblas0-pthread."
    )
    return _STATE["name"]


def active_blas() -> str:
    return _STATE["name"]
