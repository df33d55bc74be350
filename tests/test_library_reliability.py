"""The library never loses a concept and one request never stops the lab (no model needed).

* text that is not valid Unicode (a lone surrogate) is refused at the edge, and a concept file
  that cannot be read or served is skipped and reported, never fatal (listing, the CLI);
* layer ranges and uploads are bounded before they are expanded or parsed, and the process
  does not keep memory after such a request (RSS before/after, in this process);
* concurrent writes: two threads released by a ``threading.Barrier``, many times over;
* a job waiting for the model lock knows its place in line and gives up when cancelled;
* finite but absurd vectors are refused; messages name files relative to the library.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from app.errors import Cancelled, InputError
from app.library import ConceptExists, ConceptLibrary, ConceptValidationError, LibraryError, concept_to_yaml
from app.library.bundle import decode_bundle, encode_bundle
from app.types import Concept, ConceptVectors, ContrastPair

REPO = Path(__file__).resolve().parents[1]
MODEL = "org/Tiny-Model"
ROUNDS = 40  # races are caught within a few rounds before the fix; 40 makes a miss very unlikely


def concept(slug="joy", name="Joy", pairs=None, **kw) -> Concept:
    pairs = pairs or [ContrastPair("Yay, what a day!", "It is a day."), ContrastPair("So glad!", "Noted.")]
    return Concept(slug=slug, name=name, category="emotion", pairs=pairs, **kw)


def vectors(c: Concept | None, layers=3, hidden=4, seed=1) -> ConceptVectors:
    rng = np.random.default_rng(seed)
    return ConceptVectors(
        model_id=MODEL, model_fingerprint="fp", method="mean_diff",
        vectors=rng.standard_normal((layers, hidden)).astype(np.float32),
        typical_norms=np.full(layers, 4.0, np.float32),
        concept_fingerprint=c.pairs_fingerprint() if c else "",
    )


def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# ---- 1. text that is not Unicode; files that cannot be read or served ----------------------------
SURROGATE_YAML = 'name: "Bad \\ud800 name"\npairs:\n  - {positive: "a", negative: "b"}\n'


def test_lone_surrogates_are_refused_in_every_text_field(tmp_path):
    lib = ConceptLibrary(tmp_path / "user")
    bad = [
        concept(name="Bad \ud800"),
        concept(description="x \udfff y"),
        concept(tags=["ok", "t\ud800"]),
        concept(pairs=[ContrastPair("fine", "also fine"), ContrastPair("p \ud800", "n")]),
        concept(provenance={"note": "\ud800"}),
        concept(provenance={"\ud800": "key"}),
    ]
    for c in bad:
        with pytest.raises(ConceptValidationError, match="surrogate"):
            lib.save(c)
    assert not (tmp_path / "user" / "concepts").exists() or not any((tmp_path / "user" / "concepts").iterdir())
    # the same through YAML (the escape is valid YAML and valid UTF-8, the decoded text is not)
    with pytest.raises(ConceptValidationError, match="line 4: name:.*surrogate"):
        lib.import_bundle(
            "format: steering-lab-concept/1\nslug: bad\nconcept:\n  " + SURROGATE_YAML.replace("\n", "\n  "))


def _bad_library(root: Path) -> None:
    concepts = root / "concepts"
    concepts.mkdir(parents=True)
    (concepts / "bad-name.yaml").write_text(SURROGATE_YAML, encoding="utf-8")
    (concepts / "not-utf8.yaml").write_bytes(b"name: \xff\xfe\npairs: []\n")
    (concepts / "a-folder.yaml").mkdir()
    (concepts / "good.yaml").write_text(concept_to_yaml(concept("good", "Good")), encoding="utf-8")


def test_listing_skips_and_reports_files_that_cannot_be_read_or_served(tmp_path):
    root = tmp_path / "user"
    _bad_library(root)
    lib = ConceptLibrary(root)
    listed = lib.list()
    assert [s.slug for s in listed] == ["good"]
    reported = {p.name: msg for p, msg in lib.problems}
    assert set(reported) == {"bad-name.yaml", "not-utf8.yaml", "a-folder.yaml"}
    assert "surrogate" in reported["bad-name.yaml"]
    # everything listed can be served: strict UTF-8 JSON of every field works
    json.dumps([dataclasses.asdict(s) | {"source_path": str(s.source_path)} for s in listed]).encode("utf-8")
    for msg in reported.values():  # messages name the file inside the library, not the server path
        assert str(tmp_path) not in msg and msg.startswith("concepts/"), msg


def test_cli_concepts_list_survives_a_bad_file(tmp_path):
    root = tmp_path / "user"
    _bad_library(root)
    env = dict(os.environ, STEERING_LAB_LIBRARY=str(root), PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-m", "app", "concepts", "list", "--json"], cwd=str(REPO), env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    slugs = [r["slug"] for r in json.loads(proc.stdout)]
    assert "good" in slugs and "happy" in slugs and "bad-name" not in slugs
    assert "bad-name.yaml" in proc.stderr  # reported, as a log line


def test_the_page_builds_and_serialises_with_a_bad_file_in_the_library(tmp_path, monkeypatch):
    """Start-up: build the whole page over a library with bad files; its config must be valid JSON."""
    root = tmp_path / "user"
    _bad_library(root)
    monkeypatch.setenv("STEERING_LAB_LIBRARY", str(root))
    from app.service.model_service import ModelService
    from app.ui.server import build_app

    service = ModelService()  # no model: the lab still starts and says what to do
    demo = build_app(service)
    config = demo.get_config_file()
    text = json.dumps(config, default=str)
    text.encode("utf-8")
    assert "Good" in text and "bad-name.yaml" in text  # listed, and the skipped file is reported on the page


# ---- 2. bounded work -------------------------------------------------------------------------------
HOSTILE_RANGES = ["0-5000000", "0-30000000", "0-999999999", "1-999999999, 3", "5, 0-999999999"]


def test_layer_ranges_are_checked_before_they_are_expanded():
    from app.cli_concepts import parse_layer_range
    from app.errors import CLIError
    from app.domain.parse import parse_layers
    from app.ui.present.common import parse_layer_spec

    gc.collect()
    before = rss_bytes()
    for text in HOSTILE_RANGES:
        with pytest.raises(InputError, match="out of range|at most"):
            parse_layers(text, 30, "layers")
        with pytest.raises(InputError, match="at most"):
            parse_layers(text, None, "layers")  # no model bound: still bounded
        with pytest.raises(ValueError, match="does not exist|at most"):
            parse_layer_spec(text, 30, "GGUF layers")
        with pytest.raises(ValueError, match="at most"):
            parse_layer_spec(text, None, "GGUF layers")
        with pytest.raises(CLIError):
            parse_layer_range(text, 30)
        gc.collect()
        assert rss_bytes() <= before * 1.05, f"{text!r} grew the process to {rss_bytes() / before:.2f}x"
    assert parse_layers("4-8, 12", 30) == [4, 5, 6, 7, 8, 12]
    assert parse_layer_spec("8-10", 30) == [8, 9, 10]


def _pairs_bundle(n_pairs: int) -> str:
    pairs = "".join(f"    - {{positive: 'happy {i}', negative: 'plain {i}'}}\n" for i in range(n_pairs))
    return f"format: steering-lab-concept/1\nslug: big\nconcept:\n  name: Big\n  pairs:\n{pairs}"


def test_a_huge_bundle_is_refused_while_parsing_without_building_it(monkeypatch):
    import yaml.constructor

    built = []
    real = yaml.constructor.BaseConstructor.construct_document
    monkeypatch.setattr(yaml.constructor.BaseConstructor, "construct_document",
                        lambda self, node: built.append(1) or real(self, node))
    text = _pairs_bundle(5000)
    gc.collect()
    before = rss_bytes()
    with pytest.raises(ConceptValidationError, match="512 pairs"):
        decode_bundle(text)
    assert built == [], "the whole bundle was parsed into Python objects before the pair limit refused it"
    del text
    gc.collect()
    assert rss_bytes() <= before * 1.05
    text = _pairs_bundle(100_000)  # the request of the report: 100,000 pairs
    gc.collect()
    before = rss_bytes()
    with pytest.raises(ConceptValidationError, match="512 pairs"):
        decode_bundle(text.encode("utf-8"))
    gc.collect()
    assert rss_bytes() <= before * 1.05
    concept_back, _ = decode_bundle(_pairs_bundle(512))  # the limit itself still imports
    assert len(concept_back.pairs) == 512


def test_a_job_waiting_for_the_lock_knows_its_place_and_gives_up_when_cancelled():
    from app.service.jobs import CancelToken, JobRunner, follow

    jobs = JobRunner()
    started, release = threading.Event(), threading.Event()

    def first(tok):
        started.set()
        release.wait(30)
        return "first"

    holder = threading.Thread(target=lambda: jobs.run(first))
    holder.start()
    assert started.wait(30)
    token = CancelToken()
    events = follow(lambda: jobs.run(lambda tok: "second", token), token, poll_s=0.01)
    seen = []
    for kind, value in events:
        seen.append((kind, value))
        if kind == "wait":
            break
    assert seen[-1] == ("wait", 1), seen  # "waiting: 1 job ahead"
    release.set()
    rest = list(events)
    assert rest[-1] == ("done", "second")
    holder.join(30)
    # a waiting job that is cancelled never runs
    release.clear()
    started.clear()
    holder = threading.Thread(target=lambda: jobs.run(first))
    holder.start()
    assert started.wait(30)
    ran, token = [], CancelToken()
    waiter = threading.Thread(target=lambda: _catch(lambda: jobs.run(lambda tok: ran.append(1), token)))
    waiter.start()
    while token.waiting_ahead is None:
        threading.Event().wait(0.01)
    token.cancel()
    waiter.join(30)
    assert not waiter.is_alive(), "a cancelled job kept waiting for the model"
    release.set()
    holder.join(30)
    assert ran == []


def _catch(fn):
    try:
        fn()
    except Cancelled:
        pass


# ---- 3. concurrent writes -----------------------------------------------------------------------------
def _race(n: int, fn) -> list:
    """Run ``fn(i)`` in ``n`` threads released together; returns each result or exception."""
    barrier = threading.Barrier(n)
    out: list = [None] * n

    def run(i):
        barrier.wait()
        try:
            out[i] = fn(i)
        except Exception as exc:
            out[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return out


def test_two_renames_into_one_slug_exactly_one_wins_and_nothing_is_lost(tmp_path):
    for r in range(ROUNDS):
        lib = ConceptLibrary(tmp_path / f"r{r}")
        for slug in ("a", "b"):
            c = lib.save(concept(slug, slug.upper()))
            lib.save_vectors(slug, MODEL, vectors(c, seed=ord(slug)))
        out = _race(2, lambda i: lib.rename("ab"[i], "target"))
        ok = [o for o in out if not isinstance(o, Exception)]
        assert len(ok) == 1, f"round {r}: {out}"
        assert all(isinstance(o, ConceptExists) for o in out if isinstance(o, Exception)), out
        winner = "ab"[out.index(ok[0])]
        loser = "ab"[1 - out.index(ok[0])]
        assert sorted(s.slug for s in lib.list()) == sorted([loser, "target"])
        assert lib.get("target").name == winner.upper()
        assert lib.get(loser).name == loser.upper()
        for slug, seed in (("target", ord(winner)), (loser, ord(loser))):
            cv = lib.load_vectors(slug, MODEL)
            assert cv is not None and np.array_equal(cv.vectors, vectors(None, seed=seed).vectors), (r, slug)


def test_two_saves_of_one_new_slug_exactly_one_says_saved(tmp_path):
    for r in range(ROUNDS):
        lib = ConceptLibrary(tmp_path / f"r{r}")
        out = _race(2, lambda i: lib.save(concept("new", f"Version {i}")))
        ok = [o for o in out if not isinstance(o, Exception)]
        assert len(ok) == 1 and isinstance([o for o in out if o not in ok][0], ConceptExists), f"round {r}: {out}"
        assert lib.get("new").name == ok[0].name


def test_duplicate_and_rename_race_into_one_slug(tmp_path):
    for r in range(ROUNDS // 2):
        lib = ConceptLibrary(tmp_path / f"r{r}")
        lib.save(concept("a", "A"))
        lib.save(concept("b", "B"))
        out = _race(2, lambda i: lib.rename("a", "t") if i == 0 else lib.duplicate("b", "t"))
        assert sum(not isinstance(o, Exception) for o in out) == 1, f"round {r}: {out}"
        names = {s.slug: s.name for s in lib.list()}
        assert names["t"] in ("A", "B (copy)")
        assert ("a" in names) == (names["t"] != "A") and names["b"] == "B"


def test_a_failed_rename_leaves_no_copy(tmp_path, monkeypatch):
    lib = ConceptLibrary(tmp_path / "user")
    c = lib.save(concept("a", "A"))
    lib.save_vectors("a", MODEL, vectors(c))
    real = Path.read_bytes

    def unreadable(self):  # the vectors file cannot be read (a disk error, permissions)
        if self.suffix == ".safetensors":
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", unreadable)
    with pytest.raises((LibraryError, OSError)):
        lib.rename("a", "b")
    monkeypatch.undo()
    assert [s.slug for s in lib.list()] == ["a"], "the failed rename left a copy behind"
    assert not list((tmp_path / "user").rglob("b.*")) and not list((tmp_path / "user").rglob(".tmp-*"))
    assert lib.load_vectors("a", MODEL) is not None


# ---- 5. absurd vectors and messages ---------------------------------------------------------------
def test_finite_but_absurd_vectors_are_refused(tmp_path):
    lib = ConceptLibrary(tmp_path / "user")
    c = lib.save(concept())
    for bad in (dataclasses.replace(vectors(c), vectors=np.full((3, 4), 3e38, np.float32)),
                dataclasses.replace(vectors(c), typical_norms=np.full(3, 1e30, np.float32))):
        with pytest.raises(LibraryError, match="far beyond"):
            lib.save_vectors("joy", MODEL, bad)
    good = vectors(c)
    text = encode_bundle(c, {"org--tiny-model": good})
    huge = encode_bundle(c, {"org--tiny-model": good}).replace(
        text.split("vectors_b64: ")[1].split("\n")[0],
        __import__("base64").b64encode(np.full((3, 4), 3e38, "<f4").tobytes()).decode())
    with pytest.raises(LibraryError, match="far beyond"):
        lib.import_bundle(huge, slug="huge")
    assert not lib.exists("huge")


def test_two_processes_saving_one_new_slug_exactly_one_wins(tmp_path):
    """The web lab and the CLI are two processes: the writer lock is an flock, not only a thread lock."""
    import time

    for r in range(ROUNDS // 2):
        root = tmp_path / f"r{r}"
        ConceptLibrary(root).save(concept("other", "Other"))  # the folder exists, as in real use
        start = time.time() + 0.3
        pids = []
        for i in range(2):
            pid = os.fork()
            if pid == 0:  # the child: a fresh library object, like another process would have
                code = 3
                try:
                    lib = ConceptLibrary(root)
                    time.sleep(max(0.0, start - time.time()))  # released together
                    try:
                        lib.save(concept("new", f"Process {i}"))
                        code = 0
                    except ConceptExists:
                        code = 1
                finally:
                    os._exit(code)
            pids.append(pid)
        codes = sorted(os.WEXITSTATUS(os.waitpid(pid, 0)[1]) for pid in pids)
        assert codes == [0, 1], f"round {r}: exit codes {codes} (0 saved, 1 refused)"
        assert ConceptLibrary(root).get("new").name.startswith("Process ")
