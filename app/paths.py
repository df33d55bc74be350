"""Where the lab keeps things: the repo's shipped files and a writable local cache."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_DIR = PACKAGE_DIR.parent
SHIPPED_CONCEPTS = REPO_DIR / "concepts"
SHIPPED_VECTORS = REPO_DIR / "assets" / "vectors"
DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
DEFAULT_MODEL_ID = "SmolLM2-135M-Instruct"  # model key: smollm2-135m-instruct
# Second real models ``steering-lab prepare --extra KEY`` prepares: key -> model id (= folder name).
EXTRA_MODELS = {"gemma3-270m": "gemma-3-270m"}


def cache_dir() -> Path:
    """The writable cache: $STEERING_LAB_HOME, else .lab_cache beside a source checkout."""
    env = os.environ.get("STEERING_LAB_HOME")
    if env:
        return Path(env).expanduser().resolve()
    if (REPO_DIR / "pyproject.toml").exists():
        return REPO_DIR / ".lab_cache"
    return Path.home() / ".cache" / "steering-lab"


def models_dir() -> Path:
    return cache_dir() / "models"


def user_library_dir() -> Path:
    env = os.environ.get("STEERING_LAB_LIBRARY")
    return Path(env).expanduser().resolve() if env else cache_dir() / "library"


def default_model_dir() -> Path:
    return models_dir() / DEFAULT_MODEL_NAME
