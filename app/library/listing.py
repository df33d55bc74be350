"""Listing the library: which concept files there are, and what a list or picker shows of each.

A file that cannot be listed (wrong suffix, a name that is not a slug) is reported, never fatal.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from app.types import Concept

from .errors import InvalidSlug, LibraryError
from .schema import MAX_CONCEPT_BYTES, parse_concept
from .slugs import validate_slug


@dataclass(frozen=True)
class ConceptSummary:
    """What a concept list/picker shows, without holding every pair in memory."""

    slug: str
    name: str
    category: str
    tags: tuple[str, ...]
    description: str
    n_pairs: int
    shipped: bool  # True when the listed file is the shipped one (no user copy)
    source_path: Path


def read_concept_file(path: Path, slug: str, shown: str) -> Concept:
    """Parse one concept file, refusing oversized files before reading them.

    ``shown`` names the file in messages (relative to the library, never a server path).
    """
    try:
        size = path.stat().st_size
        if size > MAX_CONCEPT_BYTES:
            raise LibraryError(f"{shown}: file is {size} bytes; the limit is {MAX_CONCEPT_BYTES}")
        data = path.read_bytes()
    except OSError as e:
        raise LibraryError(f"{shown}: cannot read concept file ({e.strerror or type(e).__name__})") from None
    return parse_concept(data, slug, source=shown)


def concept_files(shipped_folder: Optional[Path], user_folder: Path) -> tuple[dict[str, tuple[Path, bool]], list]:
    """(slug -> (file, is shipped), problems): user files shadow shipped ones with the same slug."""
    problems: list[tuple[Path, str]] = []
    found: dict[str, tuple[Path, bool]] = {}
    for shipped, folder in ((True, shipped_folder), (False, user_folder)):
        if folder is None or not folder.is_dir():
            continue
        for path in sorted(folder.glob("*.yml")):
            problems.append((path, "concept files must end in .yaml; rename it to be listed"))
        for path in sorted(folder.glob("*.yaml")):
            try:
                found[validate_slug(path.stem)] = (path, shipped)
            except InvalidSlug as e:
                problems.append((path, f"file name is not a valid slug: {e}"))
    return found, problems


def matches(s: ConceptSummary, category: str | None, tag: str | None, text: str | None) -> bool:
    if category is not None and s.category != category:
        return False
    if tag is not None and tag.casefold() not in (t.casefold() for t in s.tags):
        return False
    if text:
        hay = " ".join((s.slug, s.name, s.description, *s.tags)).casefold()
        return text.casefold() in hay
    return True
