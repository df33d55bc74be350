"""Folders for files the page offers for download, kept as a small bounded cache.

Every generation, sweep and export used to leave a ``steering-lab-*`` temp folder behind
(hundreds after one session). They now live under one parent folder, and only the newest
``MAX_KEPT`` are kept: Gradio copies a returned file into its own cache (cleaned by the
app's ``delete_cache``), so older folders are no longer needed.
"""

from __future__ import annotations

import getpass
import logging
import os
import shutil
import tempfile
from pathlib import Path

log = logging.getLogger("steering_lab.ui")

MAX_KEPT = 32
PARENT_PREFIX = "steering-lab-downloads-"


def parent_dir() -> Path:
    try:
        who = getpass.getuser()
    except Exception:  # no user name (containers): one folder per uid
        who = str(os.getuid()) if hasattr(os, "getuid") else "user"
    folder = Path(tempfile.gettempdir()) / f"{PARENT_PREFIX}{who}"
    folder.mkdir(mode=0o700, exist_ok=True)
    return folder


def out_dir(kind: str = "out") -> Path:
    """A fresh folder for one download; the oldest beyond ``MAX_KEPT`` are removed."""
    parent = parent_dir()
    folder = Path(tempfile.mkdtemp(prefix=f"{kind}-", dir=parent))
    prune(parent)
    return folder


def prune(parent: Path, keep: int = MAX_KEPT) -> int:
    folders = []
    for p in parent.iterdir():
        try:
            if p.is_dir() and not p.is_symlink():
                folders.append((p.stat().st_mtime, p))
        except OSError:
            continue
    folders.sort(reverse=True)
    for _, p in folders[keep:]:
        shutil.rmtree(p, ignore_errors=True)
    return max(0, len(folders) - keep)


def remove_upload(path: str | os.PathLike | None) -> None:
    """Delete a file Gradio stored for an upload once it was used (it holds the whole file)."""
    if not path:
        return
    try:
        from gradio.utils import get_upload_folder

        root = Path(get_upload_folder()).resolve()
        p = Path(path).resolve()
        if root not in p.parents:
            return  # not an upload (e.g. a path given by a test or the CLI): leave it alone
        p.unlink(missing_ok=True)
        if p.parent != root:
            p.parent.rmdir()  # Gradio puts each upload in its own folder; fails harmlessly if not empty
    except OSError:
        pass
    except Exception:
        log.exception("removing an upload failed")
