"""Run model work on one worker thread at a time and stream its results.

MLX must not be driven from two threads at once, so every job holds the service lock. A
streaming job runs in its own thread and hands items over a queue; closing the consumer
(browser Stop, client gone) cancels the job, which then stops within one step and leaves
the model unpatched (its own context managers do that).
"""

from __future__ import annotations

import queue
import threading
from typing import Any, Callable, Iterator

from app.errors import Cancelled

_DONE = object()


class CancelToken:
    def __init__(self) -> None:
        self._event = threading.Event()

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

    def run(self, fn: Callable[[CancelToken], Any], token: CancelToken | None = None) -> Any:
        """Run ``fn(token)`` under the model lock in the calling thread."""
        token = token or CancelToken()
        self._register(token)
        try:
            with self.lock:
                token.check()
                return fn(token)
        finally:
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
        try:
            while True:
                item = q.get()
                if item is _DONE:
                    break
                if isinstance(item, BaseException):
                    if isinstance(item, Cancelled):
                        break
                    raise item
                yield item
        finally:
            token.cancel()  # consumer closed early: stop the worker at its next step
            self._unregister(token)
            thread.join(timeout=60)
