"""Many clients at once, two browsers at once, and cancels in the middle of every kind of long job.

One app for the module, in this process, with its own ``ModelService`` (so the test can look at the
model) and a temporary library. Small probes wrap the core calls the service makes (generation
stream, extraction, sweep) to record how each run ended: that is how a test tells "the cancelled
job really stopped" from "the client stopped listening while the model kept working".

Runs are tiny (4-6 tokens, 1x2 sweeps, 2-pair extractions) because the machine has two shared cores.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from lab_server import served_lab

pytestmark = [pytest.mark.real_model]

PROMPT = "Tell me about your weekend."
LOGIT_PROMPT = "The capital of France is"
GEN_TOKENS = 5
WAIT_S = 600  # generous upper bound for anything to finish on two busy cores (never a speed claim)


# ---- probes around the core calls ---------------------------------------------------------------
@dataclass
class Run:
    kind: str
    end: str = "running"  # running | finished | <exception name> | closed
    chunks: int = 0


@dataclass
class Probes:
    runs: list[Run] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self, kind: str) -> Run:
        run = Run(kind)
        with self.lock:
            self.runs.append(run)
        return run

    def of(self, kind: str) -> list[Run]:
        with self.lock:
            return [r for r in self.runs if r.kind == kind]


def install_probes(mp: pytest.MonkeyPatch) -> Probes:
    import app.service.concept_ops as concept_ops
    import app.service.generation_ops as generation_ops

    probes = Probes()
    stream, run_sweep, extract = generation_ops.compare_stream, generation_ops.run_sweep, concept_ops.extract

    def probed_stream(*args, **kwargs):
        run = probes.start("generate")
        try:
            for chunk in stream(*args, **kwargs):
                run.chunks += 1
                yield chunk
            run.end = "finished"
        except GeneratorExit:
            run.end = "closed"
            raise
        except BaseException as exc:
            run.end = type(exc).__name__
            raise

    def probed(kind, fn):
        def wrapper(*args, **kwargs):
            run = probes.start(kind)
            try:
                out = fn(*args, **kwargs)
            except BaseException as exc:
                run.end = type(exc).__name__
                raise
            run.end = "finished"
            return out

        return wrapper

    mp.setattr(generation_ops, "compare_stream", probed_stream)
    mp.setattr(generation_ops, "run_sweep", probed("sweep", run_sweep))
    mp.setattr(concept_ops, "extract", probed("extract", extract))
    return probes


# ---- the app --------------------------------------------------------------------------------------
@dataclass
class Lab:
    url: str
    service: Any
    library: Path
    probes: Probes
    logits_before: Any
    references: dict = field(default_factory=dict)

    def client(self):
        from gradio_client import Client

        return Client(self.url, verbose=False)


def model_logits(service) -> Any:
    """Logits of the loaded model for a fixed chat prompt (under the model lock, like any job)."""
    import mlx.core as mx

    with service.jobs.lock:
        ids = service.tokenize_chat(LOGIT_PROMPT)
        out = service.loaded.model(mx.array([ids]))
        mx.eval(out)
    return out


def library_snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))}


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    seen: dict[str, Any] = {}

    def prepare(service, mp):
        seen["logits"] = model_logits(service)  # before any request touched the model
        seen["probes"] = install_probes(mp)

    with served_lab(tmp_path_factory.mktemp("library"), prepare) as served:
        yield Lab(served.url, served.service, served.library, seen["probes"], seen["logits"])


def wait_idle(lab: Lab, timeout: float = WAIT_S) -> None:
    """Block until no job holds the model lock (the cancelled work has really ended)."""
    lock = lab.service.jobs.lock
    assert lock.acquire(timeout=timeout), "the model stayed busy"
    lock.release()


def assert_model_clean(lab: Lab) -> None:
    import mlx.core as mx

    from app.core.patching import is_patched

    wait_idle(lab)
    assert not is_patched(lab.service.loaded.model)
    after = model_logits(lab.service)
    assert after.shape == lab.logits_before.shape
    assert mx.array_equal(after, lab.logits_before).item(), "the model's logits changed"


# ---- requests ---------------------------------------------------------------------------------------
def _value(x):
    return x.get("value") if isinstance(x, dict) and "__type__" in x else x


def _tokens(pane_html: Any) -> int:
    return str(pane_html).count('class="tok')


def _record(result) -> dict:
    path = _value(result[-1])
    path = path.get("path") if isinstance(path, dict) else path
    return json.loads(Path(path).read_text(encoding="utf-8"))


def comparable(record: dict) -> dict:
    """A run's record without its timing (stats hold tokens/s)."""
    return {k: v for k, v in record.items() if k != "stats"}


def gen(concept: str, strength: float, layer: int = 12, **kw) -> dict:
    return dict(prompt=PROMPT, concept=concept, layer=layer, strength=strength, max_tokens=GEN_TOKENS,
                temperature=0.0, seed=7, api_name="/generate", **kw)


GENERATIONS = [
    gen("happy", 0.3),
    gen("sad", 0.4),
    gen("angry", -0.3),  # negative strengths are valid
    gen("calm", 0.5, layer=16),
    gen("excited", 2.0, absolute=True),
    gen("brief", 0.3, layer=8),
    gen("verbose", 0.3, layer=20),
    gen("happy:0.5, sad:0.5", 0.3),
    gen("happy", 0.0),  # strength 0: both panes identical
    gen("sad", 0.0, layer=20),
]


def pairs_table(rows: list[list[str]]) -> dict:
    return {"headers": ["positive", "negative"], "data": rows}


EXTRACTIONS = [
    dict(name_v="Sleepy", slug_v="sleepy", desc_v="", cat_v="custom", sp_v="", sn_v="", method_v="mean_diff",
         table=pairs_table([["I'm so sleepy, I keep yawning.", "I'm at my desk reading the news."],
                            ["I could nap right here on the couch.", "I'm sitting on the couch watching TV."]]),
         api_name="/extract"),
    dict(name_v="Hungry", slug_v="hungry", desc_v="", cat_v="custom", sp_v="", sn_v="", method_v="mean_diff",
         table=pairs_table([["I'm starving, my stomach is growling.", "I'm reading a book in the park."],
                            ["I could eat a whole pizza right now.", "I could walk to the station now."]]),
         api_name="/extract"),
]

SWEEPS = [
    dict(concept="happy", prompt=PROMPT, layers="8", strengths="0.2,0.4", max_tokens=4, absolute=False,
         api_name="/sweep"),
    dict(concept="sad", prompt=PROMPT, layers="10,14", strengths="0.3", max_tokens=4, absolute=False,
         api_name="/sweep"),
]


def _key(kwargs: dict) -> str:
    return json.dumps({k: v for k, v in kwargs.items() if k != "table"} | {"t": str(kwargs.get("table"))},
                      sort_keys=True)


def summarize(kwargs: dict, result: Any) -> Any:
    """The deterministic part of a result, to compare a run under load with the same run alone."""
    api = kwargs["api_name"]
    if api == "/generate":
        return comparable(_record(result))
    if api == "/extract":
        quality_md, plot, status = result
        figure = json.loads(plot["plot"]) if isinstance(plot.get("plot"), str) else plot["plot"]
        return re.sub(r"extracted in [0-9.]+ s", "extracted in ? s", quality_md), figure["data"], status
    if api == "/sweep":
        summary, _heat, _lines, table, cell, cell_md, _md, _js = result
        return table, _value(cell), cell_md
    raise AssertionError(api)


def alone(lab: Lab, kwargs: dict) -> Any:
    """The same request run alone from a fresh client (cached per request)."""
    key = _key(kwargs)
    if key not in lab.references:
        kw = dict(kwargs)
        lab.references[key] = summarize(kwargs, lab.client().predict(**kw))
    return lab.references[key]


# ---- (a) many API clients at once ---------------------------------------------------------------------
def test_many_clients_at_once_see_only_their_own_steering(lab: Lab):
    requests = GENERATIONS + EXTRACTIONS + SWEEPS
    library_before = library_snapshot(lab.library)
    clients = [lab.client() for _ in requests]  # one session per request
    barrier = threading.Barrier(len(requests))
    results: dict[int, Any] = {}
    errors: dict[int, BaseException] = {}

    def run(i: int) -> None:
        try:
            barrier.wait(timeout=120)
            results[i] = clients[i].predict(**requests[i])
        except BaseException as exc:  # reported below with the request
            errors[i] = exc

    threads = [threading.Thread(target=run, args=(i,), name=f"client-{i}") for i in range(len(requests))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=WAIT_S)
    assert not any(t.is_alive() for t in threads), "a request never finished"
    assert not errors, {i: (requests[i]["api_name"], repr(e)) for i, e in errors.items()}
    assert sorted(results) == list(range(len(requests)))

    under_load = {i: summarize(requests[i], results[i]) for i in results}
    records = [under_load[i] for i in range(len(GENERATIONS))]
    for rec, req in zip(records, GENERATIONS):
        assert rec["steered"].strip() and rec["baseline"].strip(), rec
        assert rec["settings"]["concept"] == req["concept"]
        assert rec["settings"]["layers"][0]["layer"] == req["layer"]
        assert rec["settings"]["layers"][0]["strength"] == pytest.approx(req["strength"])
        if req["strength"] == 0:
            assert rec["baseline"] == rec["steered"] and rec["baseline_tokens"] == rec["steered_tokens"]
    # same prompt, seed and length: every unsteered baseline is the same text, whatever ran beside it
    assert len({(r["baseline"], tuple(r["baseline_tokens"])) for r in records}) == 1
    # and some steering did change the text (the check above is not vacuous)
    assert any(r["steered"] != r["baseline"] for r in records)

    # every request gives exactly what it gives when run alone afterwards
    for i, req in enumerate(requests):
        assert under_load[i] == alone(lab, req), f"request {i} ({req['api_name']}, {req.get('concept')}) differs"

    assert library_snapshot(lab.library) == library_before  # extraction without Save writes nothing
    assert_model_clean(lab)


# ---- (b) two browsers pressing Generate together ---------------------------------------------------------
def _wait_run_done(page) -> None:
    page.wait_for_function(
        """() => {
            const badge = document.querySelector('#pg-status .badge');
            const s = document.querySelectorAll('#pg-steered .tok').length;
            const b = document.querySelectorAll('#pg-baseline .tok').length;
            return badge && s > 0 && b > 0 && !/generating|preparing|waiting/i.test(badge.textContent);
        }""",
        timeout=WAIT_S * 1000,
    )


@pytest.mark.browser
def test_two_browsers_generate_at_the_same_time(lab: Lab, output_dir: Path, browser):
    # the session's one Chromium (tests/conftest.py): a second sync_playwright in the same process fails
    shots = output_dir / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    concepts = ("happy", "sad")
    contexts = []
    try:
        pages = []
        for concept in concepts:
            context = browser.new_context(viewport={"width": 1280, "height": 800})
            contexts.append(context)
            page = context.new_page()
            page.set_default_timeout(120_000)
            page.goto(f"{lab.url}?tab=playground&concept={concept}&layer=12&strength=0.3&max_tokens=6")
            page.wait_for_selector("#pg-generate", state="visible")
            page.wait_for_function(
                "() => document.querySelector('#pg-max-tokens input[type=number]').value === '6'")
            pages.append(page)
        # press both buttons in the same instant (one JS call each, no waiting in between)
        for page in pages:
            page.evaluate("() => document.querySelector('#pg-generate').click()")
        for page in pages:
            _wait_run_done(page)
        for page, concept in zip(pages, concepts):
            steered = page.locator("#pg-steered .pane").inner_text()
            baseline = page.locator("#pg-baseline .pane").inner_text()
            assert steered.strip() and baseline.strip()
            assert page.locator("#pg-status .settings-line").inner_text().startswith(concept)
            assert "tok/s" in page.locator("#pg-status").inner_text()
        for i, page in enumerate(pages, 1):
            page.screenshot(path=str(shots / f"concurrency_page{i}_{concepts[i - 1]}.png"), full_page=False)
        # same prompt and seed: the two pages agree on the unsteered baseline
        assert pages[0].locator("#pg-baseline .pane").inner_text() == \
            pages[1].locator("#pg-baseline .pane").inner_text()
    finally:
        for context in contexts:
            context.close()
    assert_model_clean(lab)


# ---- (c) cancel in the middle, then the next job of that kind ------------------------------------------
def _wait_streaming(job, min_outputs: int = 3) -> None:
    """Until the run has streamed a few updates (the 'waiting' one, then tokens)."""
    deadline = time.monotonic() + WAIT_S
    while len(job.outputs()) < min_outputs:
        assert not job.done(), "the run ended before it could be cancelled"
        assert time.monotonic() < deadline, "no tokens streamed"
        time.sleep(0.05)


def _wait_started(job, probes: Probes, kind: str, before: int) -> None:
    """Until the model work of a submitted (non-streaming) job has begun."""
    deadline = time.monotonic() + WAIT_S
    while len(probes.of(kind)) <= before:
        assert not job.done(), "the job ended before it could be cancelled"
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.05)


def _wait_ended(run: Run) -> None:
    deadline = time.monotonic() + WAIT_S
    while run.end == "running":
        assert time.monotonic() < deadline, "the cancelled run never ended"
        time.sleep(0.1)


def _next_generation_is_normal(lab: Lab) -> None:
    req = gen("happy", 0.3)
    result = lab.client().predict(**req)
    rec = comparable(_record(result))
    assert rec["steered"].strip() and rec["steered"] == alone(lab, req)["steered"]
    zero = comparable(_record(lab.client().predict(**gen("happy", 0.0))))
    assert zero["baseline"] == zero["steered"]


LONG_TOKENS = 400


def test_stop_generate_in_the_middle(lab: Lab):
    client = lab.client()
    before = len(lab.probes.of("generate"))
    job = client.submit(**{**gen("happy", 0.3), "max_tokens": LONG_TOKENS})
    _wait_streaming(job)
    client.predict(api_name="/stop_generate")  # same client = same browser session
    result = job.result(timeout=WAIT_S)
    assert "stopped" in result[2]
    rec = _record(result)
    assert 0 < len(rec["steered_tokens"]) < LONG_TOKENS and rec["stats"]["steered_finish"] == "cancelled"
    run = lab.probes.of("generate")[before]
    _wait_ended(run)
    assert run.chunks < LONG_TOKENS
    assert_model_clean(lab)
    _next_generation_is_normal(lab)
    assert_model_clean(lab)


def test_closing_the_client_job_stops_the_generation(lab: Lab):
    client = lab.client()
    before = len(lab.probes.of("generate"))
    job = client.submit(**{**gen("sad", 0.4), "max_tokens": LONG_TOKENS})
    _wait_streaming(job)
    job.cancel()
    run = lab.probes.of("generate")[before]
    _wait_ended(run)
    assert run.chunks < LONG_TOKENS, "the model kept generating for a client that had gone"
    assert_model_clean(lab)
    _next_generation_is_normal(lab)
    assert_model_clean(lab)


MANY_PAIRS = pairs_table([[f"Yawn... I'm so sleepy this evening, number {i}, my eyes keep closing on me.",
                           f"I'm at my desk this evening, number {i}, reading the news on my laptop."]
                          for i in range(16)])


def test_cancel_extraction_in_the_middle(lab: Lab):
    client = lab.client()
    before = len(lab.probes.of("extract"))
    job = client.submit(**{**EXTRACTIONS[0], "table": MANY_PAIRS})
    _wait_started(job, lab.probes, "extract", before)
    job.cancel()  # the Stop button's cancel; the API has no other way to stop an extraction
    cancelled = lab.probes.of("extract")[before]
    _wait_ended(cancelled)
    assert_model_clean(lab)
    # the next extraction runs normally and gives what it gives alone
    result = lab.client().predict(**EXTRACTIONS[1])
    assert "Recommended layer" in result[0] and "Extracted 2 pairs" in result[2]
    assert summarize(EXTRACTIONS[1], result) == alone(lab, EXTRACTIONS[1])
    assert_model_clean(lab)
    # finally: the cancelled extraction must have stopped, not read all 32 prompts for nobody
    assert cancelled.end == "Cancelled", (
        f"the extraction ran to the end ({cancelled.end}) after its client cancelled it")


def test_stop_sweep_in_the_middle(lab: Lab):
    client = lab.client()
    before = len(lab.probes.of("sweep"))
    job = client.submit(**{**SWEEPS[0], "layers": "8,12", "max_tokens": 64})
    _wait_started(job, lab.probes, "sweep", before)
    client.predict(api_name="/stop_sweep")
    result = job.result(timeout=WAIT_S)
    assert "Sweep stopped" in result[0]
    run = lab.probes.of("sweep")[before]
    _wait_ended(run)
    assert run.end == "Cancelled"
    assert_model_clean(lab)
    result = lab.client().predict(**SWEEPS[0])
    assert "2 cells" in result[0]
    assert summarize(SWEEPS[0], result) == alone(lab, SWEEPS[0])
    assert_model_clean(lab)


def test_closing_the_client_job_stops_the_sweep(lab: Lab):
    client = lab.client()
    before = len(lab.probes.of("sweep"))
    job = client.submit(**{**SWEEPS[1], "strengths": "0.3,0.5", "max_tokens": 64})
    _wait_started(job, lab.probes, "sweep", before)
    job.cancel()
    cancelled = lab.probes.of("sweep")[before]
    _wait_ended(cancelled)
    assert_model_clean(lab)
    result = lab.client().predict(**SWEEPS[1])
    assert "2 cells" in result[0]
    assert summarize(SWEEPS[1], result) == alone(lab, SWEEPS[1])
    assert_model_clean(lab)
    assert cancelled.end == "Cancelled", (
        f"the sweep ran to the end ({cancelled.end}) after its client cancelled it")
