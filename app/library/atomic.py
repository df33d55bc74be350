"""Crash-safe file writes.

A reader must only ever see the old file or the complete new one: write to a temp
file in the same directory, fsync it, ``os.replace`` it onto the target (atomic on
POSIX and Windows), then fsync the directory so the rename itself is durable.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

TMP_PREFIX = ".tmp-"


def _fsync_dir(directory: Path) -> None:
    """Persist a rename; not supported on every platform (e.g. Windows), so best effort."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_temp(target: Path, data: bytes) -> Path:
    """Write ``data`` durably to a fresh ``.tmp-*`` file beside ``target``; returns its path.

    The caller publishes it with ``os.replace`` (or a journal does, see ``txn``); until then
    ``clean_stray_temp_files`` treats it as a stray once its writer is gone.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp_name = target.parent / f"{TMP_PREFIX}{target.name}.{os.getpid()}-{secrets.token_hex(6)}.part"
    # O_EXCL: never reuse a file; mode 0o666 lets the umask decide, like an ordinary write.
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    fd = os.open(tmp_name, flags, 0o666)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except Exception:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise
    return tmp_name


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically, creating parent directories.

    On an ordinary exception the temp file is removed. If the process dies (or a
    ``BaseException`` such as KeyboardInterrupt interrupts it) a ``.tmp-*`` file may be
    left behind; ``clean_stray_temp_files`` removes those at the next start.
    """
    target = Path(path)
    tmp_name = write_temp(target, data)
    try:
        os.replace(tmp_name, target)
    except Exception:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise
    _fsync_dir(target.parent)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """UTF-8 text variant of ``atomic_write_bytes`` (newlines written as given)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def _writer_alive(name: str) -> bool:
    """True when the temp file's writer (pid in its name) is another process still running."""
    try:
        pid = int(name.rsplit(".", 2)[-2].split("-", 1)[0])
    except (ValueError, IndexError):
        return False  # older naming: treat as stray
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (killed, not yet reaped) is not writing anymore
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return True


def clean_stray_temp_files(root: str | os.PathLike, check_writers: bool = True) -> list[Path]:
    """Delete ``.tmp-*`` files under ``root`` left by a crash between write and rename.

    Symlinked directories are not followed. Returns the removed paths. ``check_writers=False``
    is for a caller holding the library's writer lock: then no writer can be mid-write, and a
    temp file is a stray even if its pid now belongs to some other (reused) process.
    """
    removed: list[Path] = []
    root_path = Path(root)
    if not root_path.is_dir():
        return removed
    for dirpath, _dirnames, filenames in os.walk(root_path, followlinks=False):
        for name in filenames:
            if name.startswith(TMP_PREFIX):
                if check_writers and _writer_alive(name):
                    continue  # another process (e.g. the web lab) is mid-save: not a stray
                stray = Path(dirpath) / name
                try:
                    stray.unlink()
                    removed.append(stray)
                except FileNotFoundError:
                    pass
    return removed
