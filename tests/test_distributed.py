"""app.core.distributed: disjoint work split, and two ranks on 127.0.0.1 gather the same bits
as one process.

The two-rank test launches ``mlx.launch --backend ring -n 2`` (MLX's own launcher, TCP ring on
this machine) on ``tests/distributed_worker.py``, which runs a tiny calibration workload: sweeps
of 3 concepts x 3 prompts on a tiny random llama.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import calibration_grid
import tiny_models
import numpy as np
import pytest

from app.core import distributed

TESTS = Path(__file__).resolve().parent


@pytest.mark.parametrize("n, size", [(0, 1), (1, 3), (7, 1), (9, 2), (10, 3), (5, 8)])
def test_items_are_split_disjointly_and_cover_everything(n, size):
    parts = [distributed.my_items(n, r, size) for r in range(size)]
    flat = sorted(i for p in parts for i in p)
    assert flat == list(range(n))
    assert max(len(p) for p in parts) - min(len(p) for p in parts) <= 1  # balanced


def test_bad_rank_is_refused():
    with pytest.raises(ValueError, match="rank"):
        distributed.my_items(3, 2, 2)


def test_single_process_runs_everything_in_order_and_checks_shapes():
    seen = []
    out = distributed.run_items([1, 2, 3], lambda x: seen.append(x) or np.full(2, x * 0.1), (2,))
    assert seen == [1, 2, 3] and out.dtype == np.float64
    np.testing.assert_array_equal(out, [[0.1, 0.1], [0.2, 0.2], [0.30000000000000004] * 2])
    with pytest.raises(ValueError, match="shape"):
        distributed.run_items([1], lambda x: np.zeros(3), (2,))


def _launcher() -> Path:
    exe = Path(sys.executable).parent / "mlx.launch"
    if not exe.exists():
        pytest.fail(f"mlx.launch is not installed next to {sys.executable}", pytrace=False)
    return exe


def _assert_all_ranks_ok(proc) -> None:
    """mlx.launch exits 0 even when a rank fails; it only warns 'Node with rank N exited with code'."""
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "exited with code" not in out, out[-3000:]


def test_two_ranks_on_localhost_gather_exactly_the_single_process_result(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(TESTS.parent))
    cmd = [str(_launcher()), "--backend", "ring", "-n", "2", "--python", sys.executable,
           str(TESTS / "distributed_worker.py"), str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    _assert_all_ranks_ok(proc)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["size"] for r in ranks] == [2, 2]
    ran = [[tuple(i) for i in r["ran"]] for r in ranks]
    assert ran[0] and ran[1] and not set(ran[0]) & set(ran[1])  # both worked, never on the same item
    assert sorted(ran[0] + ran[1]) == sorted(calibration_grid.ITEMS)
    gathered = np.load(tmp_path / "gathered.npy")
    single = distributed.run_items(calibration_grid.ITEMS, calibration_grid.sweep_item, calibration_grid.SHAPE)
    assert gathered.tobytes() == single.tobytes()  # bit-identical
    assert np.abs(single[:, 0]).sum() > 0  # the workload produced real scores, not zeros



def test_json_items_single_process_keeps_values_and_order():
    out = distributed.run_json_items(["a", "bb"], lambda s: [len(s), s * 2, 0.1 + 0.2, float("nan")])
    assert out[0][:3] == [1, "aa", 0.30000000000000004] and out[1][:3] == [2, "bbbb", 0.30000000000000004]
    assert all(np.isnan(o[3]) for o in out)


def test_calibrate_cli_distributed_over_two_ranks_reports_what_one_process_does(tmp_path):
    """`steering-lab calibrate --distributed` under mlx.launch == the plain command, on a tiny model:
    the whole coarse-to-fine search with judges, its prompts split over two ranks."""
    model, config = tiny_models.build("llama")
    folder = tiny_models.write_model_folder(model, config, tmp_path / "tiny-llama")
    env = dict(os.environ, PYTHONPATH=str(TESTS.parent), STEERING_LAB_LIBRARY=str(tmp_path / "lib"))
    args = ["calibrate", "happy", "sad", "--model", str(folder), "--methods", "mean_diff", "--layers", "1,3",
            "--strengths", "0.5,1", "--coarse-prompts", "3", "--coarse-tokens", "4", "--max-tokens", "4",
            "--val-tokens", "4", "--json"]
    cli = str(Path(sys.executable).parent / "steering-lab")
    single = subprocess.run([sys.executable, cli, *args], env=env, capture_output=True, text=True, timeout=600)
    assert single.returncode == 0, single.stderr[-2000:]
    dist = subprocess.run([str(_launcher()), "--backend", "ring", "-n", "2", "--python", sys.executable, cli,
                           *args, "--distributed"], env=env, capture_output=True, text=True, timeout=600)
    _assert_all_ranks_ok(dist)
    assert "rank 1 of 2:" in dist.stderr and "rank 0 of 2:" in dist.stderr
    want = json.loads(single.stdout)
    assert set(want) == {"happy", "sad"}
    from app.core.calibrate import load_prompts

    assert len(want["happy"]["validation"]["texts"]) == len(load_prompts("validation"))
    fine = want["happy"]["fine"]  # the two strengths at the chosen layer, then the two default band strengths
    assert [("band" in f, f["strength"]) for f in fine] == [(False, 0.5), (False, 1.0), (True, 0.05), (True, 0.08)]
    assert len(fine[0]["changes"]) == len(load_prompts("calibration"))
    assert json.loads(dist.stdout) == want  # only rank 0 prints, and it prints the same report
