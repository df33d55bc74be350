"""One writer at a time for a library folder: threads of this process and other processes.

Every library write runs inside ``WriterLock``, and checks whether a slug is free inside it,
so "create if absent" is never a race (two saves of one new slug: exactly one wins). Threads
share a re-entrant lock; processes (the web lab and the CLI) share an ``flock`` on
``<root>/.lock`` where the platform has one.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: threads are still serialised
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".lock"


class WriterLock:
    def __init__(self, root: Path):
        self.path = Path(root) / LOCK_NAME
        self._thread = threading.RLock()
        self._depth = 0
        self._fd: int | None = None

    def __enter__(self) -> "WriterLock":
        self._thread.acquire()
        try:
            if self._depth == 0 and fcntl is not None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                except BaseException:
                    os.close(fd)
                    raise
                self._fd = fd
        except BaseException:
            self._thread.release()
            raise
        self._depth += 1
        return self

    def __exit__(self, *exc: object) -> None:
        self._depth -= 1
        if self._depth == 0 and self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)
        self._thread.release()
