"""Launch the web lab for API and browser tests (a free port, a throwaway library) and open its pages."""

from __future__ import annotations

import contextlib
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ServedLab:
    url: str
    service: Any  # the loaded ModelService behind the server
    library: Path


@contextlib.contextmanager
def served_lab(library_dir, prepare: Optional[Callable[[Any, pytest.MonkeyPatch], None]] = None) -> Iterator[ServedLab]:
    """Serve the lab (default model) in this process with STEERING_LAB_LIBRARY=library_dir.

    ``prepare(service, monkeypatch)`` runs after the model has loaded and before the server starts
    (to read the model untouched, or to wrap the service's calls); its patches last while the lab runs.
    """
    library = Path(library_dir)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STEERING_LAB_LIBRARY", str(library))
        from app.service.model_service import ModelService
        from app.ui.server import serve

        service = ModelService()
        service.load("")
        assert Path(service.library.user_root).resolve() == library.resolve()  # created while the env is set
        if prepare is not None:
            prepare(service, mp)
        port = free_port()
        demo = serve(port=port, block=False, service=service)
        try:
            yield ServedLab(f"http://127.0.0.1:{port}/", service, library)
        finally:
            demo.close()


@contextlib.contextmanager
def running_lab(library_dir) -> Iterator[str]:
    """Serve the lab (default model) with STEERING_LAB_LIBRARY=library_dir; yields its URL."""
    with served_lab(library_dir) as lab:
        yield lab.url


def open_page(browser, url: str, ready: str, width: int = 1280, height: int = 900, timeout_ms: int = 60_000):
    """A new page of ``browser`` at ``url``, returned once the ``ready`` selector is visible."""
    page = browser.new_page(viewport={"width": width, "height": height})
    page.set_default_timeout(timeout_ms)
    page.goto(url)
    page.wait_for_selector(ready, state="visible")
    return page
