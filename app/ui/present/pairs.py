"""The creator's pair table and form: cells in, validated contrast pairs and a ``Concept`` out.

Pure functions over ``app.types`` dataclasses and plain lists; no Gradio, no model.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Optional, Sequence

import numpy as np

from app.errors import InputError
from app.service.lab import slugify, validate_slug
from app.types import CATEGORIES, Concept, ContrastPair, SystemPromptPair

PAIR_HEADERS = ["positive", "negative"]
MIN_PAIRS = 2


# ---- the pair table ------------------------------------------------------------------------

def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float) and not np.isfinite(v):
        return ""
    return str(v).strip()


def table_rows(value: Any) -> list[list[str]]:
    """Rows of a Gradio Dataframe value (list of lists, dict with 'data', or a DataFrame)."""
    if value is None:
        return []
    if isinstance(value, Mapping):
        value = value.get("data") or []
    elif hasattr(value, "values") and hasattr(value, "columns"):  # pandas DataFrame
        value = value.values.tolist()
    rows = []
    for row in value:
        cells = [_cell(c) for c in list(row)[:2]]
        cells += [""] * (2 - len(cells))
        rows.append(cells)
    return rows


def table_to_pairs(value: Any) -> tuple[list[ContrastPair], list[str]]:
    """Contrast pairs from the table; blank rows are skipped, half-filled rows are problems."""
    pairs: list[ContrastPair] = []
    problems: list[str] = []
    for i, (pos, neg) in enumerate(table_rows(value), start=1):
        if not pos and not neg:
            continue
        if not pos or not neg:
            side = "positive" if not pos else "negative"
            problems.append(f"row {i}: the {side} text is empty (every pair needs both sides)")
            continue
        pairs.append(ContrastPair(pos, neg))
    return pairs, problems


def parse_pasted_pairs(text: str) -> tuple[list[ContrastPair], list[str]]:
    """One pair per line, ``positive | negative`` or ``positive<TAB>negative``; '#' lines are comments."""
    pairs: list[ContrastPair] = []
    problems: list[str] = []
    for i, raw in enumerate((text or "").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if "\t" in raw.strip("\n"):
            parts = raw.split("\t")
        elif "|" in line:
            parts = line.split("|")
        else:
            problems.append(f"line {i}: no '|' or tab between the positive and the negative text")
            continue
        parts = [p.strip() for p in parts if p.strip()]
        if len(parts) != 2:
            problems.append(f"line {i}: expected exactly two texts (positive | negative), found {len(parts)}")
            continue
        pairs.append(ContrastPair(parts[0], parts[1]))
    return pairs, problems


def pairs_to_rows(pairs: Iterable[ContrastPair]) -> list[list[str]]:
    return [[p.positive, p.negative] for p in pairs]


def append_pairs(value: Any, new: Sequence[ContrastPair]) -> list[list[str]]:
    """The table's non-blank rows followed by ``new`` pairs."""
    rows = [r for r in table_rows(value) if r[0] or r[1]]
    return rows + pairs_to_rows(new)


def check_pairs(pairs: Sequence[ContrastPair], problems: Sequence[str] = ()) -> None:
    """Raise InputError with a message a beginner can act on."""
    if problems:
        raise InputError("Fix the pair table first: " + "; ".join(problems[:5]) + (" …" if len(problems) > 5 else ""))
    if not pairs:
        raise InputError("There are no contrast pairs yet: add at least 2 rows (positive text | negative text), "
                         "paste them, or load a shipped concept as a template.")
    if len(pairs) < MIN_PAIRS:
        raise InputError(f"Only {len(pairs)} contrast pair: add at least {MIN_PAIRS} (4–20 work well).")
    for i, p in enumerate(pairs, start=1):
        if p.positive == p.negative:
            raise InputError(f"pair {i}: the positive and negative texts are identical, so they contrast nothing")


def slug_for(name: str) -> str:
    """A valid slug suggested from a display name ('' for an empty name)."""
    return slugify(name) if (name or "").strip() else ""


def concept_from_form(name: str, slug: str, description: str, category: str, pairs: Sequence[ContrastPair],
                      system_positive: str = "", system_negative: str = "", tags: Sequence[str] = (),
                      provenance: Optional[dict] = None) -> Concept:
    """A validated ``Concept`` from the creator's fields (the library re-validates on save)."""
    name = (name or "").strip()
    slug = (slug or "").strip() or slug_for(name)
    if not name:
        if not slug:
            raise InputError("Give the concept a name (e.g. 'Sleepy'); the slug is made from it.")
        name = slug
    validate_slug(slug)
    category = (category or "custom").strip()
    if category not in CATEGORIES:
        raise InputError(f"category must be one of {', '.join(CATEGORIES)}, got {category!r}")
    sp, sn = (system_positive or "").strip(), (system_negative or "").strip()
    if bool(sp) != bool(sn):
        raise InputError("System prompts come in pairs: fill both the positive and the negative one, or neither.")
    return Concept(
        slug=slug, name=name, description=(description or "").strip(), category=category, pairs=list(pairs),
        system_prompts=SystemPromptPair(sp, sn) if sp else None, tags=[t for t in tags if t],
        provenance=dict(provenance or {"created_with": "concept creator"}),
    )
