"""Bounded streaming: at most ~10 updates/s reach the page, plain text that only grows while streaming, colours at the end."""

from __future__ import annotations

from types import SimpleNamespace

from gradio.utils import diff

from app.service.jobs import JobRunner
from app.types import ComparisonChunk, GenerationParams
from app.ui.present import generation as pg
from app.ui.streaming import Coalesced, Throttle, stream_comparison, throttled


class FakeClock:
    def __init__(self, step: float):
        self.t, self.step = 0.0, step

    def __call__(self) -> float:
        self.t += self.step
        return self.t


def test_throttle_lets_one_call_through_per_interval():
    clock = FakeClock(0.03)
    th = Throttle(0.1, clock)
    passed = [th.ready() for _ in range(40)]  # 1.2 s of calls every 30 ms
    assert passed[0]
    assert 10 <= sum(passed) <= 13


def test_coalesced_sends_few_items_and_keeps_the_newest():
    stream = Coalesced(range(500), interval=0.1, clock=FakeClock(0.004))  # 500 items over 2 s
    sent = list(stream)
    assert stream.seen == 500 and stream.last == 499
    assert 18 <= len(sent) <= 22 and sent == sorted(sent)


def test_throttled_progress_always_reports_the_last_step():
    calls = []
    report = throttled(lambda d, t, desc: calls.append(d), interval=0.1, clock=FakeClock(0.001))
    for i in range(1, 301):
        report(i, 300, "x")
    assert calls[0] == 1 and calls[-1] == 300 and len(calls) < 10


def test_streaming_panes_only_grow_at_the_end_and_are_escaped():
    pieces = ["Hello", " <script>alert(1)</script>", " & more", "\n", "é"]
    views = [pg.streaming_pane_html("Steered", pieces[:i]) for i in range(len(pieces) + 1)]
    for a, b in zip(views, views[1:]):
        assert b.startswith(a)
        assert all(op == "append" for op, _, _ in diff(a, b))  # Gradio sends only the new text
    assert "<script>" not in views[-1] and "&lt;script&gt;" in views[-1]


def _chunks(n: int):
    for i in range(1, n + 1):
        pieces = [f" w{j}<" for j in range(i)]
        yield ComparisonChunk(
            baseline_text="".join(pieces), steered_text="".join(pieces), baseline_pieces=pieces,
            steered_pieces=pieces, baseline_scores=[0.1] * i, steered_scores=[0.5] * i, divergence=None,
            done=i == n, stats={"step": i, "steered_finish": "length" if i == n else "", "baseline_finish": ""},
        ), {"concept": "happy", "layers": [{"layer": 3, "strength": 0.3}]}


def test_the_playground_stream_sends_bounded_plain_updates_and_a_coloured_end():
    runner = JobRunner()  # the lab keeps the page's cancel token; the stream takes it and hands it back
    service = SimpleNamespace(steer=lambda req, token=None: _chunks(400), start=runner.start, finish=runner.finish)
    req = SimpleNamespace(params=GenerationParams(max_tokens=400), prompt="p", system=None)
    outs = list(stream_comparison(service, req, None))
    streaming, final = outs[1:-1], outs[-1]
    assert len(streaming) <= 5  # 400 chunks arrived at once: the page gets a handful of updates
    assert all('<span class="tok' not in o[0] for o in streaming)  # plain text while streaming
    assert final[1].count('<span class="tok') == 400  # the full coloured view, once, with every token
    for a, b in zip(streaming, streaming[1:]):
        assert all(op == "append" for op, _, _ in diff(a[1], b[1]))
