"""Run model work on one worker thread at a time and stream its results.

MLX must not be driven from two threads at once, so every job holds the service lock. A
streaming job runs in its own thread and hands items over a queue; closing the consumer
(browser Stop, client gone) cancels the job, which then stops within one step and leaves
the model unpatched (its own context managers do that). ``follow`` does the same for jobs
that return one result (extraction, sweeps), so a client that leaves cancels every kind of
job. A job waiting for the lock knows its place in line (``token.waiting_ahead``), which
``follow`` reports, and it gives up as soon as it is cancelled.

The runner is also the one registry of per-browser-session cancel tokens, so a page's Stop stops
only that page's run (``arm`` / ``start`` / ``finish`` / ``cancel_session``, keyed by the page's
session id and, for the creator's extraction, a scope).
"""

from __future__ import annotations

import queue
import threading
from typing import Any, Callable, Iterator

from app.errors import Cancelled

_DONE = object()


WAIT_POLL_S = 0.25


class CancelToken:
    def __init__(self) -> None:
        self._event = threading.Event()
        self.waiting_ahead: int | None = None  # jobs ahead while this one waits for the lock

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def __call__(self) -> bool:  # usable directly as a ``should_stop`` callback
        return self._event.is_set()

    def check(self) -> None:
        if self._event.is_set():
            raise Cancelled("cancelled")


class JobRunner:
    def __init__(self) -> None:
        self.lock = threading.RLock()
        self._tokens: set[CancelToken] = set()
        self._tokens_lock = threading.Lock()
        self._line: list[CancelToken] = []  # running and waiting jobs, in arrival order
        self._armed: dict[str, CancelToken] = {}  # per browser session: the token of a click not yet started
        self._session_runs: dict[str, set[CancelToken]] = {}  # per browser session: its started runs

    def ahead_of(self, token: CancelToken) -> int:
        """How many jobs came before ``token`` and have not finished (the running one included)."""
        with self._tokens_lock:
            return self._line.index(token) if token in self._line else len(self._line)

    def _acquire(self, token: CancelToken) -> None:
        """Take the model lock, keeping ``token.waiting_ahead`` current; Cancelled if cancelled meanwhile."""
        if self.lock.acquire(blocking=False):
            return
        try:
            while True:
                token.waiting_ahead = max(1, self.ahead_of(token))
                if token.cancelled:
                    raise Cancelled("cancelled while waiting for the model")
                if self.lock.acquire(timeout=WAIT_POLL_S):
                    return
        finally:
            token.waiting_ahead = None

    def _register(self, token: CancelToken) -> None:
        with self._tokens_lock:
            self._tokens.add(token)

    def _unregister(self, token: CancelToken) -> None:
        with self._tokens_lock:
            self._tokens.discard(token)

    def cancel_all(self) -> int:
        with self._tokens_lock:
            tokens = list(self._tokens)
        for t in tokens:
            t.cancel()
        return len(tokens)

    # ---- per-browser-session cancel -------------------------------------------------------------
    # A click first *arms* a token (an unqueued event), then the queued run *starts* with it. Stop
    # cancels armed and running tokens alike: a run still waiting in the queue starts already
    # stopped, and a running one ends at its next step and shows what it has.
    def arm(self, session: str) -> CancelToken:
        token = CancelToken()
        with self._tokens_lock:
            self._armed[session] = token
        return token

    def start(self, session: str) -> CancelToken:
        """The token of ``session``'s run that starts now (the armed one if its click armed one)."""
        with self._tokens_lock:
            token = self._armed.pop(session, None) or CancelToken()
            self._session_runs.setdefault(session, set()).add(token)
        return token

    def finish(self, session: str, token: CancelToken) -> None:
        with self._tokens_lock:
            runs = self._session_runs.get(session)
            if runs is not None:
                runs.discard(token)
                if not runs:
                    del self._session_runs[session]

    def cancel_session(self, session: str) -> int:
        """Cancel ``session``'s armed and running tokens (its page's Stop); how many there were."""
        with self._tokens_lock:
            tokens = list(self._session_runs.pop(session, set()))
            armed = self._armed.get(session)  # kept: the queued run then starts with it, already stopped
        if armed is not None:
            tokens.append(armed)
        for t in tokens:
            t.cancel()
        return len(tokens)

    def run(self, fn: Callable[[CancelToken], Any], token: CancelToken | None = None) -> Any:
        """Run ``fn(token)`` under the model lock in the calling thread."""
        token = token or CancelToken()
        self._register(token)
        with self._tokens_lock:
            self._line.append(token)
        try:
            self._acquire(token)
            try:
                token.check()
                return fn(token)
            finally:
                self.lock.release()
        finally:
            with self._tokens_lock:
                self._line.remove(token)
            self._unregister(token)

    def stream(self, fn: Callable[[Callable[[Any], None], CancelToken], None], token: CancelToken | None = None) -> Iterator[Any]:
        """Run ``fn(emit, token)`` on a worker thread under the lock; yield what it emits."""
        token = token or CancelToken()
        q: "queue.Queue[Any]" = queue.Queue()

        def worker() -> None:
            try:
                self.run(lambda t: fn(q.put, t), token)
            except BaseException as exc:  # handed to the consumer, raised there
                q.put(exc)
            finally:
                q.put(_DONE)

        thread = threading.Thread(target=worker, name="steering-lab-job", daemon=True)
        self._register(token)
        thread.start()
        ended = False
        try:
            while True:
                item = q.get()
                if item is _DONE:
                    ended = True
                    break
                if isinstance(item, BaseException):
                    ended = True  # the worker has left already
                    if isinstance(item, Cancelled):
                        break
                    raise item
                yield item
        finally:
            # Only a consumer that closed early stops the worker. A stream that ended by itself leaves its
            # token alone: a page that still reads its last items must not take the end for a Stop.
            if not ended:
                token.cancel()
            self._unregister(token)
            thread.join(timeout=60)


def follow(fn: Callable[[], Any], token: CancelToken, poll_s: float = WAIT_POLL_S) -> Iterator[tuple[str, Any]]:
    """Run ``fn()`` (a service call that uses ``token``) on a worker thread.

    Yields ``("tick", None)`` once before starting, then ``("wait", n_ahead)`` whenever its place
    in line changes, ``("tick", None)`` every ``poll_s`` so a generator handler notices a client
    that left, then ``("done", result)``;
    an exception from ``fn`` is raised here. Closing the iterator cancels ``token``.
    """
    box: dict[str, Any] = {}
    done = threading.Event()

    def worker() -> None:
        try:
            box["result"] = fn()
        except BaseException as exc:  # handed to the consumer, raised there
            box["error"] = exc
        finally:
            done.set()

    # A first tick before any work: Gradio can only close (cancel) a generator it has seen yield once.
    yield "tick", None
    thread = threading.Thread(target=worker, name="steering-lab-follow", daemon=True)
    thread.start()
    finished = False
    try:
        shown = None
        while not done.wait(poll_s):
            ahead = token.waiting_ahead
            if ahead != shown:
                shown = ahead
                if ahead:
                    yield "wait", ahead
                    continue
            yield "tick", None
        finished = True
    finally:
        if not finished:  # the consumer went away: stop the job at its next step. No join: Gradio
            token.cancel()  # closes generators on its event loop, which must never wait for the model
    if "error" in box:
        raise box["error"]
    yield "done", box.get("result")
