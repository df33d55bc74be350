"""One rank of the two-rank calibration test (launched by tests/test_distributed.py via mlx.launch).

Every rank builds the same tiny model and concept vectors from fixed seeds, runs its share of
the (concept, prompt) sweeps through ``app.core.distributed.run_items``, and rank 0 writes the
gathered grids; every rank writes which items it ran.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import app.core  # noqa: F401,E402  (fast BLAS before mlx)
import numpy as np  # noqa: E402

from app.core import distributed  # noqa: E402

import calibration_grid  # noqa: E402


def main(out_dir: str) -> None:
    out = Path(out_dir)
    grp = distributed.group()
    ran: list[list] = []

    def fn(item):
        ran.append(list(item))
        return calibration_grid.sweep_item(item)

    result = distributed.run_items(calibration_grid.ITEMS, fn, calibration_grid.SHAPE, grp)
    (out / f"rank{grp.rank()}.json").write_text(json.dumps({"size": grp.size(), "ran": ran}))
    if distributed.is_main(grp):
        np.save(out / "gathered.npy", result)


if __name__ == "__main__":
    main(sys.argv[1])
