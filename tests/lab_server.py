"""Launch the web lab for API and browser tests, on a free port with a throwaway library."""

from __future__ import annotations

import contextlib
import os
import socket
from typing import Iterator


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_lab(library_dir) -> Iterator[str]:
    """Serve the lab (default model) with STEERING_LAB_LIBRARY=library_dir; yields its URL."""
    old = os.environ.get("STEERING_LAB_LIBRARY")
    os.environ["STEERING_LAB_LIBRARY"] = str(library_dir)
    from app.ui.server import serve

    port = free_port()
    demo = serve(port=port, block=False)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        demo.close()
        if old is None:
            os.environ.pop("STEERING_LAB_LIBRARY", None)
        else:
            os.environ["STEERING_LAB_LIBRARY"] = old
