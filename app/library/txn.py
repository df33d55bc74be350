"""All-or-nothing library changes that touch several files, even across a SIGKILL.

A concept lives in several files (``concepts/<slug>.yaml`` and one vectors file per model),
so renaming, importing or deleting it cannot be one ``os.replace``. A small redo journal
makes it one: every new file is first written durably as a ``.tmp-*`` file beside its
target, then one journal (``.journal-*.json``, itself written atomically) lists the renames
and deletions; the journal's appearance is the commit point. Then the renames and deletions
are applied and the journal removed. ``recover`` (run at every start, under the writer lock)
replays a journal a killed process left behind, so the library holds the old state (no
journal yet: the temp files are strays and get cleaned) or the new one (journal replayed),
never a mix.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
from pathlib import Path

from . import atomic
from .errors import LibraryError

log = logging.getLogger("steering_lab.library")

JOURNAL_PREFIX = ".journal-"


class Transaction:
    """Collect ``put``/``delete`` steps, then ``commit`` them as one step."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self._puts: dict[Path, bytes] = {}
        self._deletes: list[Path] = []

    def put(self, path: Path, data: bytes) -> None:
        self._puts[Path(path)] = data

    def delete(self, path: Path) -> None:
        path = Path(path)
        if path not in self._deletes:
            self._deletes.append(path)

    def _rel(self, path: Path) -> str:
        return str(Path(path).relative_to(self.root))

    def commit(self) -> None:
        deletes = [p for p in self._deletes if p not in self._puts and p.exists()]
        if not self._puts and not deletes:
            return
        recover(self.root)  # first finish any change an earlier failure left committed
        staged: list[tuple[Path, Path]] = []
        try:
            for target, data in self._puts.items():
                staged.append((atomic.write_temp(target, data), target))
            record = {"puts": [[self._rel(t), self._rel(d)] for t, d in staged],
                      "deletes": [self._rel(p) for p in deletes]}
            journal = self.root / f"{JOURNAL_PREFIX}{os.getpid()}-{secrets.token_hex(6)}.json"
            atomic.atomic_write_bytes(journal, json.dumps(record).encode("utf-8"))
        except Exception:
            for tmp, _ in staged:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
            raise
        try:
            _apply(self.root, record)
        except OSError as exc:  # committed: the journal stays and the next write or start finishes it
            raise LibraryError(f"the change was saved but could not be finished ({exc.strerror or exc}); "
                               "it is finished automatically the next time the library is written") from None
        os.unlink(journal)
        atomic._fsync_dir(self.root)


def _inside(root: Path, rel: object) -> Path | None:
    """A journal path, only if it stays inside the library (a journal is data, not trusted)."""
    if not isinstance(rel, str) or not rel or os.path.isabs(rel) or ".." in Path(rel).parts:
        return None
    return root / rel


def _apply(root: Path, record: dict) -> None:
    """Publish a committed journal; idempotent, so a replay after a crash finishes the job."""
    dirs: set[Path] = set()
    for pair in record.get("puts", []):
        tmp, target = (_inside(root, x) for x in pair) if isinstance(pair, list) and len(pair) == 2 else (None, None)
        if tmp is None or target is None:
            continue
        try:
            os.replace(tmp, target)
        except FileNotFoundError:  # already published before the crash
            continue
        dirs.add(target.parent)
    for rel in record.get("deletes", []):
        path = _inside(root, rel)
        if path is None:
            continue
        try:
            os.unlink(path)
        except FileNotFoundError:
            continue
        dirs.add(path.parent)
    for d in sorted(dirs):
        atomic._fsync_dir(d)


def recover(root: Path) -> list[str]:
    """Replay the journals of killed writers (call under the writer lock, before cleaning temps)."""
    root = Path(root)
    done = []
    for journal in sorted(root.glob(f"{JOURNAL_PREFIX}*.json")):
        try:
            record = json.loads(journal.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            record = None
        if isinstance(record, dict):
            _apply(root, record)
            log.warning("finished an interrupted library change (%s)", journal.name)
        else:
            log.warning("dropped an unreadable library journal (%s)", journal.name)
        journal.unlink(missing_ok=True)
        done.append(journal.name)
    if done:
        atomic._fsync_dir(root)
    return done
