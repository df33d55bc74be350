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
