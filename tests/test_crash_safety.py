"""SIGKILL in the middle of saving a concept never leaves half a concept (house rule 3).

A child process (the venv's Python) saves a new version of an existing concept and its
vectors for two models, and is killed with SIGKILL:

* deterministically, just before the Nth file-system step of the atomic writes (temp-file
  open, temp-file write -- killed after HALF the bytes --, fsync, rename, directory fsync,
  ...), for every N, by routing ``app.library.atomic``'s ``os`` through a counting proxy;
* at random moments (5-80 ms) of a tight loop that saves revision 1, 2, 3, ...

After each kill a fresh ``ConceptLibrary`` must open the folder, remove the stray ``.tmp-*``
files, and every file must be exactly one complete version (old or new), never a mix.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from app.library import ConceptLibrary, StaleVectors, concept_to_yaml, model_key
from app.library.atomic import TMP_PREFIX
from app.library.vectors import load_vectors as load_vectors_file

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
SLUG = "joy"
MODEL_A = "org/Tiny-A"  # has vectors before the save
MODEL_B = "org/Tiny-B"  # gets its first vectors in the save
RANDOM_KILLS = 30

# Shared by the parent (exec'd below) and the child, so both build identical versions.
VERSIONS_SRC = r'''
import numpy as np
from app.types import Concept, ConceptVectors, ContrastPair

def make_concept(rev):
    """Revision ``rev`` of the concept: every field that is written changes with ``rev``."""
    pairs = [ContrastPair(f"Revision {rev}: what a wonderful day number {i}, I love it!",
                          f"Revision {rev}: it is day number {i}.") for i in range(6 + rev % 3)]
    return Concept(slug="joy", name=f"Joy r{rev}", description=f"revision {rev} " + "x" * 500,
                   category="emotion", pairs=pairs, tags=["emotion", f"rev{rev}"])

def make_vectors(rev, model_id, fingerprint):
    rng = np.random.default_rng(rev * 7919 + len(model_id))
    return ConceptVectors(
        model_id=model_id, model_fingerprint="fp-" + model_id, method="mean_diff",
        vectors=rng.standard_normal((30, 576)).astype(np.float32),
        typical_norms=np.full(30, 10.0 + rev, np.float32), concept_fingerprint=fingerprint,
        extra={"rev": rev},
    )
'''

CHILD_SRC = VERSIONS_SRC + r'''
import os, signal, sys
from pathlib import Path
import app.library.atomic as atomic
from app.library import ConceptLibrary

root, mode, arg = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
real_os = os

class _KillingWriter:
    """File object of the temp file: the 'write' step of a kill writes half, then dies."""
    def __init__(self, fh, proxy):
        self._fh, self._proxy = fh, proxy
    def write(self, data):
        if self._proxy.step("write"):
            self._fh.write(data[: len(data) // 2])
            self._fh.flush()
            real_os.kill(real_os.getpid(), signal.SIGKILL)
        return self._fh.write(data)
    def __getattr__(self, name):
        return getattr(self._fh, name)
    def __enter__(self):
        return self
    def __exit__(self, *exc):
        return self._fh.__exit__(*exc)

class _OsProxy:
    """``os`` as atomic.py sees it: counts the steps of every write and SIGKILLs at the Nth."""
    def __init__(self, kill_at):
        self.kill_at, self.count = kill_at, 0
    def step(self, name):
        self.count += 1
        return self.count == self.kill_at
    def _wrap(self, name):
        fn = getattr(real_os, name)
        def wrapped(*a, **kw):
            if self.step(name):
                real_os.kill(real_os.getpid(), signal.SIGKILL)
            return fn(*a, **kw)
        return wrapped
    def __getattr__(self, name):
        if name in ("open", "fsync", "replace", "close", "unlink"):
            return self._wrap(name)
        if name == "fdopen":
            return lambda *a, **kw: _KillingWriter(real_os.fdopen(*a, **kw), self)
        return getattr(real_os, name)

lib = ConceptLibrary(root)

def save(rev):
    stored = lib.save(make_concept(rev), overwrite=True)
    fp = stored.pairs_fingerprint()
    lib.save_vectors("joy", "org/Tiny-A", make_vectors(rev, "org/Tiny-A", fp))
    lib.save_vectors("joy", "org/Tiny-B", make_vectors(rev, "org/Tiny-B", fp))

if mode == "step":  # kill before the arg-th step (0: count the steps and finish normally)
    proxy = _OsProxy(arg)
    atomic.os = proxy
    save(1)
    print(f"steps {proxy.count}", flush=True)
else:  # "loop": save revisions arg, arg+1, ... until killed, reporting each finished one
    print("ready", flush=True)
    rev = arg
    while True:
        save(rev)
        print(f"done {rev}", flush=True)
        rev += 1
'''

_ns: dict = {}
exec(VERSIONS_SRC, _ns)
make_concept, make_vectors = _ns["make_concept"], _ns["make_vectors"]


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _write_initial(root: Path, rev: int, with_b: bool) -> None:
    """The state before the child runs: concept ``rev`` with vectors for A (and B if asked)."""
    if root.exists():
        shutil.rmtree(root)
    lib = ConceptLibrary(root)
    stored = lib.save(make_concept(rev))
    fp = stored.pairs_fingerprint()
    lib.save_vectors(SLUG, MODEL_A, make_vectors(rev, MODEL_A, fp))
    if with_b:
        lib.save_vectors(SLUG, MODEL_B, make_vectors(rev, MODEL_B, fp))


def _strays(root: Path) -> list[Path]:
    return [p for p in root.rglob(f"{TMP_PREFIX}*")]


def _concept_rev(lib: ConceptLibrary, revs: list[int]) -> int:
    """Which complete revision the concept is; fails on anything else."""
    path = lib.user_concepts / f"{SLUG}.yaml"
    text = path.read_text(encoding="utf-8")
    got = lib.get(SLUG)
    for rev in revs:
        if text == concept_to_yaml(make_concept(rev)):
            assert got == make_concept(rev)
            return rev
    pytest.fail(f"concept file is none of revisions {revs} (torn write?):\n{text[:300]}")


def _vectors_rev(lib: ConceptLibrary, model_id: str, revs: list[int], concept_rev: int) -> int | None:
    """Which complete revision the vectors are (None = absent); checks load_vectors agrees."""
    path = lib.user_vectors / model_key(model_id) / f"{SLUG}.safetensors"
    if not path.exists():
        assert lib.load_vectors(SLUG, model_id) is None
        return None
    raw = load_vectors_file(path)  # raises LibraryError on a torn file
    for rev in revs:
        want = make_vectors(rev, model_id, "")
        if np.array_equal(raw.vectors, want.vectors) and np.array_equal(raw.typical_norms, want.typical_norms):
            assert raw.extra == {"rev": rev}
            # Through the library: usable, or clearly stale when the concept moved on alone.
            if rev == concept_rev:
                cv = lib.load_vectors(SLUG, model_id)
                assert cv is not None and np.array_equal(cv.vectors, want.vectors)
                assert lib.vector_status(SLUG, model_id) == "ready"
            else:
                with pytest.raises(StaleVectors):
                    lib.load_vectors(SLUG, model_id)
                assert lib.vector_status(SLUG, model_id) == "stale"
            return rev
    pytest.fail(f"{path.name} for {model_id} is none of revisions {revs}")


def _check_after_kill(root: Path, revs: list[int]) -> tuple[int, int | None, int | None, int]:
    """Open the library as the next start would and classify every file; returns the revisions."""
    strays = len(_strays(root))
    lib = ConceptLibrary(root)  # must not raise; removes the temp files
    assert _strays(root) == [], "stray .tmp-* files survived the next ConceptLibrary()"
    listed = lib.list()
    assert [s.slug for s in listed] == [SLUG] and lib.problems == []
    c = _concept_rev(lib, revs)
    a = _vectors_rev(lib, MODEL_A, revs, c)
    b = _vectors_rev(lib, MODEL_B, revs, c)
    return c, a, b, strays


def _run_child(root: Path, mode: str, arg: int, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "-c", CHILD_SRC, str(root), mode, str(arg)], env=_env(), cwd=str(REPO),
                          capture_output=True, text=True, timeout=timeout)


def test_sigkill_at_every_step_of_the_atomic_writes(tmp_path):
    root = tmp_path / "lib"
    _write_initial(root, 0, with_b=False)
    counted = _run_child(root, "step", 0)
    assert counted.returncode == 0, counted.stderr
    n_steps = int(counted.stdout.split()[-1])
    assert n_steps >= 3 * 4, f"expected >= 4 steps per write for 3 writes, counted {n_steps}"
    assert _check_after_kill(root, [1])[:3] == (1, 1, 1)

    seen_states, strays_seen = set(), 0
    for n in range(1, n_steps + 1):
        _write_initial(root, 0, with_b=False)
        proc = _run_child(root, "step", n)
        assert proc.returncode == -signal.SIGKILL, f"step {n}: child was not killed: {proc.stderr[-2000:]}"
        c, a, b, strays = _check_after_kill(root, [0, 1])
        strays_seen += strays > 0
        # Files are written in order (concept, vectors A, vectors B): never a later one without the earlier.
        assert b in (None, 1), f"step {n}: vectors for B must be absent or new, got revision {b}"
        if b == 1:
            assert a == 1, f"step {n}: B was saved but A is old"
        if a == 1:
            assert c == 1, f"step {n}: vectors A are new but the concept is old"
        seen_states.add((c, a, b))
    # The injection really hit the middle of writes and every stage boundary.
    assert strays_seen >= 3, "no kill ever left a temp file behind; is the injection working?"
    assert seen_states == {(0, 0, None), (1, 0, None), (1, 1, None), (1, 1, 1)}, seen_states


def test_sigkill_at_random_times_in_a_save_loop(tmp_path):
    rng = random.Random(20240611)
    root = tmp_path / "lib"
    _write_initial(root, 0, with_b=True)
    prev = (0, 0, 0)  # revisions of (concept, vectors A, vectors B) on disk
    finished_total, strays_seen = 0, 0
    for i in range(RANDOM_KILLS):
        start = max(prev) + 1
        proc = subprocess.Popen([PYTHON, "-c", CHILD_SRC, str(root), "loop", str(start)], env=_env(), cwd=str(REPO),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
            time.sleep(rng.uniform(0.005, 0.080))
            os.kill(proc.pid, signal.SIGKILL)
            out, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == -signal.SIGKILL, f"kill {i}: child ended by itself: {err[-2000:]}"
        done = [int(line.split()[1]) for line in out.splitlines() if line.startswith("done ")]
        finished_total += len(done)
        # "done L" reached the pipe, so save L finished and save L+2 never started: every file is
        # revision L or L+1 (L+1 complete but unreported if the kill fell just before its print).
        # Before any "done", a file is unchanged or revision ``start``.
        if done:
            allowed = [{done[-1], done[-1] + 1}] * 3
        else:
            allowed = [{p, start} for p in prev]
        candidates = sorted(set().union(*allowed))
        c, a, b, strays = _check_after_kill(root, candidates)
        strays_seen += strays > 0
        for name, rev, ok in zip(("concept", "vectors A", "vectors B"), (c, a, b), allowed):
            assert rev in ok, f"kill {i}: {name} is revision {rev}, expected one of {sorted(ok)} (done={done[-3:]})"
        assert c >= a >= b, f"kill {i}: files saved out of order: concept r{c}, A r{a}, B r{b}"
        prev = (c, a, b)
    print(f"{RANDOM_KILLS} random kills, {finished_total} complete saves in between, "
          f"{strays_seen} kills left temp files")


# ---- multi-file operations: the concept changes as a whole, or not at all -----------------------------
# A forked child (cheap: the parent has imported everything) performs ONE concept-level operation on
# the same initial library (concept "joy" revision 0 with vectors for A and B) with ``os`` of both the
# atomic writes and the journal routed through the killing proxy above, and is SIGKILLed before its
# Nth file-system step, for every N. After each kill the next ConceptLibrary must show exactly the old
# library or exactly the new one, file for file: no concept without its vectors (a taken-but-empty
# slug), no half-renamed pair of copies, no temp file or journal left behind.
MULTI_OPS = ["rename", "duplicate", "delete", "bundle", "save-with-vectors", "import-gguf"]
_proxy_ns: dict = {}
exec(CHILD_SRC.split("lib = ConceptLibrary(root)")[0].replace(
    "root, mode, arg = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])", ""), _proxy_ns)


def _imported(slug: str):
    from app.types import Concept

    return Concept(slug=slug, name="Imported cv", category="imported", pairs=[], tags=["imported"],
                   recipe=[(slug, 1.0)], provenance={"file": "cv.gguf"})


def _multi_op(lib: ConceptLibrary, op: str, root: Path) -> None:
    if op == "rename":
        lib.rename(SLUG, "glee")
    elif op == "duplicate":
        lib.duplicate(SLUG, "glee")
    elif op == "delete":
        lib.delete(SLUG)
    elif op == "bundle":
        lib.import_bundle((root.parent / "bundle.yaml").read_text(encoding="utf-8"), slug="glee")
    elif op == "save-with-vectors":
        lib.save_with_vectors(make_concept(1), {m: make_vectors(1, m, "") for m in (MODEL_A, MODEL_B)}, overwrite=True)
    elif op == "import-gguf":  # what the service's import_gguf writes: an imported concept and its vectors
        lib.save_with_vectors(_imported("glee"), {MODEL_A: make_vectors(5, MODEL_A, "")})


def _fork_op(root: Path, op: str, kill_at: int) -> tuple[int, int]:
    """(wait status, steps counted) of a forked child running ``op`` and killed before step ``kill_at``."""
    import app.library.atomic as atomic
    import app.library.txn as txn

    count_file = root.parent / "steps"
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            lib = ConceptLibrary(root)
            proxy = _proxy_ns["_OsProxy"](kill_at)
            atomic.os = txn.os = proxy
            _multi_op(lib, op, root)
            count_file.write_text(str(proxy.count))
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    steps = int(count_file.read_text()) if kill_at == 0 and count_file.exists() else -1
    return status, steps


def _canonical(path: Path):
    """A file's content; vectors files as (metadata, tensors), since safetensors orders metadata freely."""
    import safetensors

    from app.library.vectors import _header

    data = path.read_bytes()
    if path.suffix != ".safetensors":
        return data
    _, meta = _header(data, path.name)
    tensors = sorted((n, v["dtype"], tuple(v["shape"]), bytes(v["data"])) for n, v in safetensors.deserialize(data))
    return sorted(meta.items()), tensors


def _files(root: Path) -> dict:
    return {str(p.relative_to(root)): _canonical(p) for p in sorted(root.rglob("*")) if p.is_file()}


def _multi_initial(root: Path) -> None:
    _write_initial(root, 0, with_b=True)
    bundle = ConceptLibrary(root).export_bundle(SLUG)  # joy r0 with both vectors, imported as "glee"
    (root.parent / "bundle.yaml").write_text(bundle, encoding="utf-8")


def _leftovers(root: Path) -> list[str]:
    return [p.name for p in root.rglob("*") if p.name.startswith((TMP_PREFIX, ".journal-"))]


@pytest.mark.parametrize("op", MULTI_OPS)
def test_sigkill_at_every_step_of_a_multi_file_operation(tmp_path, op):
    root = tmp_path / "lib"
    _multi_initial(root)
    old = _files(root)
    status, n_steps = _fork_op(root, op, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, f"{op}: the operation failed without a kill"
    ConceptLibrary(root)
    new = _files(root)
    assert new != old and n_steps >= 4, (op, n_steps)
    seen, strays_seen = set(), 0
    for n in range(1, n_steps + 1):
        _multi_initial(root)
        status, _ = _fork_op(root, op, n)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, f"{op} step {n}: not killed"
        strays_seen += bool(_leftovers(root))
        lib = ConceptLibrary(root)  # the next start: finishes or drops the change
        assert _leftovers(root) == [], f"{op} step {n}: left behind {_leftovers(root)}"
        now = _files(root)
        state = "old" if now == old else "new" if now == new else None
        assert state is not None, (f"{op} step {n}: the library is neither the old nor the new state: "
                                   f"{sorted(now)} vs old {sorted(old)} / new {sorted(new)}")
        lib.list()
        assert lib.problems == [], f"{op} step {n}: {lib.problems}"
        seen.add(state)
    assert seen == {"old", "new"}, f"{op}: every kill gave {seen}; is the injection working?"
    assert strays_seen >= 1, f"{op}: no kill ever left a temp file or journal behind"
