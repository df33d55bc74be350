"""Shared fixtures: tiny models of several families, the real default model, an output folder.

``app.core`` is imported first so the fast BLAS is loaded before anything imports mlx.
The tests use the real prepared cache (``paths.cache_dir()`` finds ``.lab_cache`` beside the
checkout); nothing here redirects it.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

# Tests never write into the user's concept library: a throwaway one for the whole session.
os.environ.setdefault("STEERING_LAB_LIBRARY", tempfile.mkdtemp(prefix="steering-lab-test-library-"))

import app.core  # noqa: F401  (must run before mlx is imported anywhere)

import pytest

TESTS_DIR = Path(__file__).resolve().parent
if str(TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR))

import tiny_models  # noqa: E402


@pytest.fixture(params=tiny_models.FAMILIES)
def tiny(request):
    """``(family, model, config)`` for each tiny random model family (a fresh model per test)."""
    model, config = tiny_models.build(request.param)
    return request.param, model, config


@pytest.fixture(scope="session")
def default_service():
    """A ModelService with the bundled default model loaded (once per session)."""
    from app import paths
    from app.service.model_service import ModelService

    folder = paths.default_model_dir()
    if not (folder / "config.json").exists():
        pytest.fail(
            f"the bundled default model is not prepared at {folder}; run ./setup_local_cache.sh first",
            pytrace=False,
        )
    svc = ModelService()
    svc.load("")
    return svc


@pytest.fixture(scope="session")
def output_dir() -> Path:
    """tests/output: screenshots and other artefacts a person may want to look at."""
    out = TESTS_DIR / "output"
    out.mkdir(parents=True, exist_ok=True)
    return out


# ---- the web lab and a browser, shared by the API and browser tests ------------------------------------
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def chromium_path() -> str | None:
    """$CHROMIUM, else the first chromium on PATH (Debian's `chromium`; playwright's download does not work here)."""
    import shutil

    return os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="session")
def running_lab(tmp_path_factory):
    """The lab served once for the session (default model, a throwaway library); yields its URL."""
    from lab_server import running_lab as serve_lab

    with serve_lab(tmp_path_factory.mktemp("lab-library")) as url:
        yield url


@pytest.fixture(scope="session")
def browser():
    """One headless Chromium for the session (each test opens its own pages)."""
    path = chromium_path()
    if not path:
        pytest.fail("no Chromium found: run ./setup_local_cache.sh --dev (installs it) or set $CHROMIUM", pytrace=False)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="session")
def shots(output_dir) -> Path:
    """tests/output/screenshots: PNGs of browser steps, for a person to look at."""
    folder = output_dir / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder
