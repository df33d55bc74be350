"""Bounded streaming: at most ~10 updates/s reach the page, plain text that only grows while streaming, colours at the end."""

from __future__ import annotations

from types import SimpleNamespace

from gradio.utils import diff

from app.service.jobs import JobRunner
from app.types import ComparisonChunk, GenerationParams
from app.ui.present import generation as pg
from app.ui.streaming import Coalesced, Throttle, session_id, stream_comparison, throttled


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


# ---- Stop acts at once -------------------------------------------------------------------------
def test_until_stopped_returns_while_the_next_item_is_still_being_made():
    import threading

    from app.service.jobs import CancelToken
    from app.ui.streaming import until_stopped

    token, in_step, release, step_done = CancelToken(), threading.Event(), threading.Event(), threading.Event()

    def items():
        yield 1
        in_step.set()
        release.wait(30)  # a model step under way when Stop is clicked
        step_done.set()
        yield 2

    got = []
    for x in until_stopped(items(), token, poll_s=0.01):
        got.append(x)
        in_step.wait(30)
        token.cancel()
    assert got == [1]
    assert not step_done.is_set()  # it did not wait for the step; what that step makes is dropped
    release.set()


def test_until_stopped_passes_everything_and_errors_through():
    from app.service.jobs import CancelToken
    from app.ui.streaming import until_stopped

    token = CancelToken()
    assert list(until_stopped(iter(range(50)), token, poll_s=0.01)) == list(range(50))
    assert not token.cancelled

    def broken():
        yield 1
        raise ValueError("bad input")

    import pytest

    with pytest.raises(ValueError, match="bad input"):
        list(until_stopped(broken(), CancelToken(), poll_s=0.01))


def test_stop_shows_the_coloured_partial_answer_without_waiting_for_the_model_step():
    import threading

    tokens, release = [], threading.Event()

    def steer(req, token=None):
        tokens.append(token)

        def gen():
            yield from _chunks_upto(5, 400)
            release.wait(30)  # the step under way
            yield from _chunks_upto(6, 400)
        return gen()

    runner = JobRunner()
    service = SimpleNamespace(steer=steer, start=runner.start, finish=runner.finish)
    req = SimpleNamespace(params=GenerationParams(max_tokens=400), prompt="p", system=None)
    outs = stream_comparison(service, req, None)
    next(outs)  # "preparing"
    next(outs)  # the first streamed update
    runner.cancel_session(session_id(None))  # the page's Stop
    rest = list(outs)
    release.set()
    final = rest[-1]
    assert final[1].count('<span class="tok') == 5  # the answer as it was at the Stop, coloured
    assert "stopped" in final[2]
    assert tokens[0].cancelled


def _chunks_upto(i: int, n: int):
    for k, item in enumerate(_chunks(n), start=1):
        if k == i:
            yield item
            return
