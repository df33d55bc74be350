"""JobRunner: one model job at a time, prompt cancellation, streams that clean up after themselves.

Timeouts below only guard against a hang (a deadlock would otherwise stall the suite); no
assertion depends on how long anything took.
"""

from __future__ import annotations

import threading
import time

import mlx.core as mx
import pytest

from app.core.patching import SteeringHook, is_patched, patch_layers
from app.errors import Cancelled
from app.service.jobs import CancelToken, JobRunner
from tiny_models import HIDDEN, build, prompt_tokens

HANG_GUARD = 60.0


def _free(runner: JobRunner) -> bool:
    """True if another thread can take the model lock (nothing is still running)."""
    got = []

    def probe():
        ok = runner.lock.acquire(timeout=HANG_GUARD)
        got.append(ok)
        if ok:
            runner.lock.release()  # an RLock is released by the thread that holds it

    t = threading.Thread(target=probe)
    t.start()
    t.join()
    return bool(got and got[0])


def test_jobs_from_two_threads_never_overlap():
    runner = JobRunner()
    events: list[tuple[str, str, int]] = []
    active = [0]
    max_active = [0]
    guard = threading.Lock()  # protects the bookkeeping only, not the jobs

    def job(name: str, i: int):
        def fn(token: CancelToken):
            with guard:
                active[0] += 1
                max_active[0] = max(max_active[0], active[0])
                events.append(("enter", name, i))
            time.sleep(0.002)  # give the other thread every chance to barge in
            with guard:
                events.append(("exit", name, i))
                active[0] -= 1
            return i

        return fn

    def worker(name: str):
        for i in range(15):
            assert runner.run(job(name, i)) == i

    def streamer(name: str):
        def fn(emit, token):
            for i in range(15):
                job(name, i)(token)
                emit(i)

        assert list(runner.stream(fn)) == list(range(15))

    threads = [threading.Thread(target=worker, args=("a",)), threading.Thread(target=worker, args=("b",)),
               threading.Thread(target=streamer, args=("s",))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(HANG_GUARD)
    assert not any(t.is_alive() for t in threads)
    assert len(events) == 2 * 45
    assert max_active[0] == 1
    # Every enter is immediately followed by the exit of the same job, for run() jobs.
    runs = [e for e in events if e[1] in ("a", "b")]
    for enter, exit_ in zip(runs[0::2], runs[1::2]):
        assert enter[0] == "enter" and exit_[0] == "exit" and enter[1:] == exit_[1:]
    assert {e[1] for e in events} == {"a", "b", "s"}


def test_cancel_all_stops_a_streaming_job_within_one_step():
    runner = JobRunner()
    ack = threading.Event()
    started: list[int] = []

    def fn(emit, token: CancelToken):
        step = 0
        while True:
            token.check()  # the one place a step looks at the token
            started.append(step)
            emit(step)
            while not ack.wait(0.01):  # the consumer acknowledges each item
                if token.cancelled:
                    break
            ack.clear()
            step += 1

    received = []
    for item in runner.stream(fn):
        received.append(item)
        if item == 3:
            assert runner.cancel_all() >= 1
        ack.set()
    # The stream ended quietly (Cancelled is not an error for the consumer) right after step 3.
    assert received == [0, 1, 2, 3]
    assert started == [0, 1, 2, 3]
    assert _free(runner)
    assert runner.run(lambda token: "next") == "next"


def test_cancel_all_also_cancels_a_queued_job():
    runner = JobRunner()
    release = threading.Event()
    inside = threading.Event()
    ran_second = []
    errors = []

    def first(token):
        inside.set()
        release.wait(HANG_GUARD)

    def second_thread():
        try:
            runner.run(lambda token: ran_second.append(1))
        except Cancelled as exc:
            errors.append(exc)

    t1 = threading.Thread(target=lambda: runner.run(first))
    t1.start()
    assert inside.wait(HANG_GUARD)
    t2 = threading.Thread(target=second_thread)
    t2.start()
    # Wait until the second job is registered (queued behind the lock), then cancel everything.
    for _ in range(int(HANG_GUARD / 0.005)):
        with runner._tokens_lock:
            if len(runner._tokens) >= 2:
                break
        time.sleep(0.005)
    assert runner.cancel_all() == 2
    release.set()
    t1.join(HANG_GUARD)
    t2.join(HANG_GUARD)
    assert not ran_second and len(errors) == 1
    assert _free(runner)


def test_closing_a_stream_early_cancels_the_worker_and_frees_the_lock():
    runner = JobRunner()
    model, _ = build("llama")
    x = mx.array([prompt_tokens(6)])
    base = model(x)
    mx.eval(base)
    emitted_after_cancel = []
    finished = threading.Event()

    def fn(emit, token: CancelToken):
        try:
            with patch_layers(model, {2: [SteeringHook(mx.ones((HIDDEN,)))]}):
                step = 0
                while True:
                    token.check()
                    out = model(x)
                    mx.eval(out)
                    if token.cancelled:
                        emitted_after_cancel.append(step)
                    emit(step)
                    step += 1
        finally:
            finished.set()

    gen = runner.stream(fn)
    assert next(gen) == 0
    assert next(gen) == 1
    gen.close()  # the browser's Stop / a client that went away
    assert finished.is_set()  # close() waited for the worker to leave its context managers
    assert len(emitted_after_cancel) <= 1  # at most the step that was already running
    assert not is_patched(model)
    assert mx.array_equal(model(x), base)
    assert _free(runner)
    assert runner.run(lambda token: "next") == "next"
    with runner._tokens_lock:
        assert not runner._tokens  # no stale tokens left for cancel_all


def test_a_stream_that_ends_by_itself_is_not_a_stop():
    """The page drains a finished run's last items (the judged answers) after the worker ended; a cancelled token
    then read as the user's Stop ("stopped — partial answer" at 48/48, the judge line dropped)."""
    runner = JobRunner()
    token = CancelToken()

    def fn(emit, t: CancelToken):
        for i in range(3):
            emit(i)

    assert list(runner.stream(fn, token)) == [0, 1, 2]
    assert not token.cancelled
    closed = CancelToken()
    gen = runner.stream(lambda emit, t: [emit(i) for i in range(100)], closed)
    next(gen)
    gen.close()  # a consumer that leaves early still stops the worker
    assert closed.cancelled


def test_an_error_in_a_streaming_job_reaches_the_consumer_and_frees_the_lock():
    runner = JobRunner()

    def fn(emit, token):
        emit("first")
        raise ValueError("bad input in the job")

    gen = runner.stream(fn)
    assert next(gen) == "first"
    with pytest.raises(ValueError, match="bad input in the job"):
        next(gen)
    assert _free(runner)
    assert runner.run(lambda token: 42) == 42


def test_a_cancelled_token_stops_a_job_before_it_starts():
    runner = JobRunner()
    token = CancelToken()
    token.cancel()
    ran = []
    with pytest.raises(Cancelled):
        runner.run(lambda t: ran.append(1), token)
    assert not ran and token() is True


def test_a_pages_stop_cancels_only_that_pages_runs_armed_or_running():
    """The one registry of per-browser-session tokens: Stop before the queued run starts stops it at its start,
    Stop while it runs stops it, and another page's (or scope's) run goes on."""
    runner = JobRunner()
    armed = runner.arm("page-a/run")
    assert runner.start("page-a/run") is armed  # the click's token is the one the run gets
    other_page, other_scope = runner.start("page-b/run"), runner.start("page-a/extract")
    assert runner.cancel_session("page-a/run") == 1
    assert armed.cancelled and not other_page.cancelled and not other_scope.cancelled
    runner.finish("page-a/run", armed)

    early = runner.arm("page-a/run")  # Stop while the run still waits in the queue ...
    assert runner.cancel_session("page-a/run") == 1 and early.cancelled
    waiting = runner.start("page-a/run")  # ... so that run starts already stopped and never runs
    assert waiting is early
    ran = []
    with pytest.raises(Cancelled):
        runner.run(lambda t: ran.append(1), waiting)
    assert not ran
    runner.finish("page-a/run", waiting)
    fresh = runner.start("page-a/run")  # the next run starts clean
    assert fresh is not early and not fresh.cancelled

    runner.finish("page-a/run", fresh)
    runner.finish("page-b/run", other_page)
    assert runner.cancel_session("page-a/run") == 0 and runner.cancel_session("page-b/run") == 0
    assert runner.cancel_session("page-a/extract") == 1 and other_scope.cancelled
