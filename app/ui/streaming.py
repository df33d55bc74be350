"""Bounded streaming to the browser: every streaming handler sends its updates through here.

A model step takes ~50-100 ms, and each update the page receives costs a diff on the server, a
websocket/SSE message and a re-render on the page's main thread. Re-rendering every step's full
token-coloured HTML made the work per update grow with the length and the whole stream's with
its square; on a busy machine the page stopped answering. So handlers pass what they stream
through ``Coalesced`` (at most ``MAX_UPDATES_PER_S`` updates reach the page; the newest item is
always the one sent) and send plain text while streaming, which only grows at its end (Gradio
then sends just the appended text), and the expensive view once, at the end.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Generic, Iterable, Iterator, Optional, TypeVar

T = TypeVar("T")

MAX_UPDATES_PER_S = 10.0


class Throttle:
    """``ready()`` is true at most once per ``interval`` seconds (the first call always)."""

    def __init__(self, interval: float = 1.0 / MAX_UPDATES_PER_S, clock: Callable[[], float] = time.monotonic):
        self.interval, self.clock = interval, clock
        self._sent: Optional[float] = None

    def ready(self) -> bool:
        now = self.clock()
        if self._sent is not None and now - self._sent < self.interval:
            return False
        self._sent = now
        return True


class Coalesced(Generic[T]):
    """Iterate ``items`` fully but pass on only those a ``Throttle`` lets through.

    ``last`` is the newest item seen (sent or not), ``seen`` / ``sent`` count them: after the loop,
    render ``last`` as the final view, since it may have been held back.
    """

    def __init__(self, items: Iterable[T], interval: float = 1.0 / MAX_UPDATES_PER_S,
                 clock: Callable[[], float] = time.monotonic):
        self.items = items
        self.throttle = Throttle(interval, clock)
        self.last: Optional[T] = None
        self.seen = 0
        self.sent = 0

    def __iter__(self) -> Iterator[T]:
        for item in self.items:
            self.last = item
            self.seen += 1
            if self.throttle.ready():
                self.sent += 1
                yield item


def throttled(report: Callable[..., Any], interval: float = 1.0 / MAX_UPDATES_PER_S,
              clock: Callable[[], float] = time.monotonic) -> Callable[[int, int, str], None]:
    """Wrap a ``progress(done, total, desc)`` callback: at most ``interval``-spaced calls, and the last step."""
    throttle = Throttle(interval, clock)

    def call(done: int, total: int, desc: str) -> None:
        if done >= total or throttle.ready():
            report(done, total, desc)

    return call
