"""Slugs (concept ids) and model keys: the names that become file and folder names.

They are validated strictly because they are joined into filesystem paths; a bad
slug must never escape the library folder or hit a reserved Windows device name.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

from .errors import InvalidSlug

MAX_SLUG_LEN = 64
MAX_MODEL_KEY_LEN = 120
_SLUG_RE = re.compile(r"[a-z0-9][a-z0-9_-]*")
_ALLOWED = "lowercase letters a-z, digits 0-9, '-' and '_', starting with a letter or digit"
WINDOWS_RESERVED = frozenset(
    ["con", "prn", "aux", "nul"]
    + [f"com{i}" for i in range(1, 10)]
    + [f"lpt{i}" for i in range(1, 10)]
)


def validate_slug(s: object) -> str:
    """Return ``s`` unchanged if it is a valid slug, else raise ``InvalidSlug`` saying why."""
    if not isinstance(s, str):
        raise InvalidSlug(f"slug must be a string, got {type(s).__name__}; allowed: {_ALLOWED}")
    if not s:
        raise InvalidSlug(f"slug is empty; allowed: 1-{MAX_SLUG_LEN} characters, {_ALLOWED}")
    if len(s) > MAX_SLUG_LEN:
        raise InvalidSlug(
            f"slug is {len(s)} characters long; allowed: at most {MAX_SLUG_LEN} characters, {_ALLOWED}"
        )
    if "/" in s or "\\" in s:
        raise InvalidSlug(f"slug {s!r} contains a path separator ('/' or '\\'); allowed: {_ALLOWED}")
    if ".." in s:
        raise InvalidSlug(f"slug {s!r} contains '..'; allowed: {_ALLOWED}")
    bad = sorted({ch for ch in s if not ("a" <= ch <= "z" or "0" <= ch <= "9" or ch in "-_")})
    if bad:
        shown = ", ".join(repr(ch) for ch in bad)
        raise InvalidSlug(f"slug {s!r} contains characters that are not allowed ({shown}); allowed: {_ALLOWED}")
    if not _SLUG_RE.fullmatch(s):
        raise InvalidSlug(f"slug {s!r} must start with a letter or digit, not {s[0]!r}; allowed: {_ALLOWED}")
    if s in WINDOWS_RESERVED:
        raise InvalidSlug(
            f"slug {s!r} is a reserved device name on Windows (con, prn, aux, nul, com1-9, lpt1-9); "
            f"add a word, e.g. {s + '-concept'!r}"
        )
    return s


def _ascii_fold(text: str) -> str:
    """Best-effort transliteration: 'Café Größe' -> 'Cafe Groe' (accents dropped)."""
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")


def slugify(name: str) -> str:
    """Make a valid slug from a display name, e.g. 'Très Happy!' -> 'tres-happy'."""
    s = re.sub(r"[^a-z0-9]+", "-", _ascii_fold(str(name)).lower()).strip("-")
    s = s[:MAX_SLUG_LEN].rstrip("-")
    if not s:
        return "concept"
    if s in WINDOWS_RESERVED:
        s = f"{s}-concept"
    return validate_slug(s)


def _looks_like_path(model_id: str) -> bool:
    """Hub ids are exactly 'org/name'; anything else with separators is a filesystem path."""
    if model_id.startswith(("/", "~", ".")) or "\\" in model_id or re.match(r"^[A-Za-z]:", model_id):
        return True
    return model_id.count("/") > 1


def model_key(model_id: str) -> str:
    """Filesystem-safe folder name for a model id or local path.

    'mlx-community/Qwen2.5-0.5B-Instruct-4bit' -> 'mlx-community--qwen2.5-0.5b-instruct-4bit'
    '/x/y/SmolLM2-135M-Instruct' -> 'smollm2-135m-instruct' (last path component).
    """
    raw = str(model_id).strip().rstrip("/\\")
    if not raw:
        raise InvalidSlug("model id is empty; pass a hub id like 'org/name' or a local model path")
    if _looks_like_path(raw):
        parts = [raw.replace("\\", "/").rsplit("/", 1)[-1]]
    else:
        parts = raw.split("/")
    cleaned = [re.sub(r"[^a-z0-9._-]+", "-", _ascii_fold(p).lower()).strip(".-_") for p in parts]
    key = "--".join(p for p in cleaned if p) or "model"
    if len(key) > MAX_MODEL_KEY_LEN:
        digest = hashlib.sha256(raw.encode("utf-8")).hexdigest()[:8]
        key = f"{key[: MAX_MODEL_KEY_LEN - 9]}-{digest}"
    if key.split(".")[0] in WINDOWS_RESERVED:
        key = f"model-{key}"
    return key


def validate_model_key(key: object) -> str:
    """A model key stored in YAML must already be normalised (``model_key(key) == key``)."""
    if not isinstance(key, str) or not key:
        raise InvalidSlug(f"model key must be a non-empty string, got {key!r}")
    normal = model_key(key)
    if normal != key:
        raise InvalidSlug(f"model key {key!r} is not normalised; write it as {normal!r}")
    return key
