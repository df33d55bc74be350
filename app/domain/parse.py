"""The lab's only parsers for typed-in lists and concept references.

- layer lists and ranges: ``"4-8, 12"`` -> ``[4, 5, 6, 7, 8, 12]`` (sizes checked BEFORE a range
  is expanded, so ``0-999999999`` is an error, not a memory spike);
- float lists: ``"0.1, 0.3"``;
- concept references: a slug, a mix ``"happy:0.7, excited:0.3"`` or a random control
  ``"random:happy"`` (`parse_ref`), with `parse_mix` for the mix text itself.

Every error is an ``InputError`` whose message names the field and shows a valid example.
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass
from typing import Iterable, Literal, Optional

from app.domain import limits
from app.errors import InputError

MIX_EXAMPLE = "happy:0.7, excited:0.3, formal:-0.5"
RANDOM_PREFIX = "random:"
_SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


# ---- numbers -----------------------------------------------------------------------------------
def _int(text: str, part: str, what: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise InputError(f"{what}: {part!r} is not a whole number or a range like 4-8") from None


def _split_range(part: str) -> Optional[tuple[str, str]]:
    """'4-8' -> ('4', '8'); '-1' and '7' -> None (a leading minus is a sign, not a range)."""
    if "-" not in part[1:]:
        return None
    head, tail = part[1:].split("-", 1)
    return part[0] + head, tail


def parse_layers(text: str, num_layers: Optional[int] = None, what: str = "layers",
                 repeats: Literal["error", "drop"] = "error", allow_empty: bool = False) -> list[int]:
    """'4-8, 12' (commas or semicolons) -> [4, 5, 6, 7, 8, 12].

    ``repeats="drop"`` keeps the first of repeated layers (export picks), ``"error"`` refuses them
    (sweeps, where a repeat would be a wasted cell). Empty text is an error unless ``allow_empty``.
    """
    text = (text or "").strip()
    if len(text) > limits.LIST_TEXT_CHARS:
        raise InputError(f"{what}: the text is {len(text)} characters long (at most {limits.LIST_TEXT_CHARS})")
    out: list[int] = []
    for part in (p.strip() for p in text.replace(";", ",").split(",")):
        if not part:
            continue
        rng = _split_range(part)
        if rng is None:
            out.append(_int(part, part, what))
            continue
        lo, hi = _int(rng[0], part, what), _int(rng[1], part, what)
        if hi < lo:
            raise InputError(f"{what}: the range {part!r} goes backwards; write it low-high, e.g. {hi}-{lo}")
        if len(out) + hi - lo + 1 > limits.LAYER_LIST_ITEMS:
            raise InputError(f"{what}: {part!r} is too many layers (at most {limits.LAYER_LIST_ITEMS} in one list)")
        out.extend(range(lo, hi + 1))
    if not out and not allow_empty:
        raise InputError(f"no {what} given; write e.g. 4-8, 12")
    for v in out:
        if v < 0 or (num_layers is not None and v >= num_layers):
            top = f"0-{num_layers - 1}" if num_layers else "0 or more"
            raise InputError(f"{what}: layer {v} is out of range: it does not exist (this model has layers {top})")
    if len(set(out)) != len(out):
        if repeats == "error":
            raise InputError(f"{what} repeat: {text!r}; name each layer once")
        seen: set[int] = set()
        out = [v for v in out if not (v in seen or seen.add(v))]
    return out


def parse_float(value: object, what: str, limit: Optional[float] = None) -> float:
    """A finite number, optionally with |value| <= limit, or an InputError naming ``what``."""
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise InputError(f"{what} must be a number, got {value!r}") from None
    if not math.isfinite(v):
        raise InputError(f"{what} must be a finite number, got {value!r}")
    if limit is not None and abs(v) > limit:
        raise InputError(f"{what} {v:g} is out of range (|{what}| <= {limit:g}: between {-limit:g} and {limit:g})")
    return v


def parse_floats(text: str, what: str = "strengths", limit: Optional[float] = None) -> list[float]:
    """'0.1, 0.3' -> [0.1, 0.3]; repeats, non-numbers, NaN and values past ``limit`` are errors."""
    text = (text or "").strip()
    if len(text) > limits.LIST_TEXT_CHARS:
        raise InputError(f"{what}: the text is {len(text)} characters long (at most {limits.LIST_TEXT_CHARS})")
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        raise InputError(f"no {what} given; write e.g. 0.1, 0.3")
    if len(parts) > limits.FLOAT_LIST_ITEMS:
        raise InputError(f"{what}: {len(parts)} values is too many (at most {limits.FLOAT_LIST_ITEMS})")
    one = what[:-1] if what.endswith("s") else what
    vals = [parse_float(p, one, limit) for p in parts]
    if len(set(vals)) != len(vals):
        raise InputError(f"{what} repeat: {text!r}; name each value once")
    return vals


# ---- concept references -------------------------------------------------------------------------
def looks_like_mix(text: str) -> bool:
    """A mix names weights or several concepts; a plain slug has neither ':' nor ','."""
    t = (text or "").strip()
    return not t.startswith(RANDOM_PREFIX) and (":" in t or "," in t)


def _unknown(slug: str, known: list[str], where: str) -> InputError:
    close = difflib.get_close_matches(slug, known, n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else (
        f"; known concepts: {', '.join(sorted(known)[:20])}" if known else "; the library has no concepts")
    return InputError(f"unknown concept {slug!r}{where}{hint}")


def _weight(raw: str, term: str, slug: str) -> float:
    if not raw:
        raise InputError(f"term {term!r} has no weight after ':'; e.g. {slug}:0.7 (or just {slug} for 1.0)")
    try:
        weight = float(raw)
    except ValueError:
        raise InputError(f"weight {raw!r} in {term!r} is not a number; e.g. {slug}:0.7") from None
    if not math.isfinite(weight):
        raise InputError(f"weight {raw!r} in {term!r} must be a finite number")
    if abs(weight) > limits.MIX_WEIGHT:
        raise InputError(f"weight {weight:g} in {term!r} is too large; use -{limits.MIX_WEIGHT:g} to {limits.MIX_WEIGHT:g}")
    return weight


def parse_mix(text: str, known: Optional[Iterable[str]] = None) -> list[tuple[str, float]]:
    """``"happy:0.7, excited:0.3"`` -> ``[("happy", 0.7), ("excited", 0.3)]``; a bare slug weighs 1.

    With ``known`` the slugs must exist (with a did-you-mean); without it only the form is checked.
    """
    known_list = None if known is None else list(known)
    if not isinstance(text, str) or not text.strip():
        raise InputError(f"the mix is empty; write concepts with weights, e.g. {MIX_EXAMPLE}")
    if len(text) > limits.MIX_TEXT_CHARS * 5:
        raise InputError(f"the mix text is {len(text)} characters long; write at most {limits.MIX_TERMS} terms")
    terms = [t.strip() for t in text.split(",")]
    if len(terms) > limits.MIX_TERMS:
        raise InputError(f"the mix has {len(terms)} terms; at most {limits.MIX_TERMS} concepts can be mixed")
    out: list[tuple[str, float]] = []
    for i, term in enumerate(terms, 1):
        if not term:
            raise InputError(f"term {i} of the mix is empty (two commas in a row?); e.g. {MIX_EXAMPLE}")
        parts = [p.strip() for p in term.split(":")]
        if len(parts) > 2:
            raise InputError(f"term {term!r} has more than one ':'; write concept:weight, e.g. happy:0.7")
        slug = parts[0].lower()
        if not slug:
            raise InputError(f"term {term!r} has no concept name before ':'; e.g. happy:0.7")
        weight = 1.0 if len(parts) == 1 else _weight(parts[1], term, slug)
        if known_list is not None and slug not in known_list:
            raise _unknown(slug, known_list, " in the mix")
        if known_list is None and not _SLUG_RE.match(slug):
            raise InputError(f"{slug!r} in the mix is not a concept name (lowercase letters, digits, - and _)")
        if slug in (s for s, _ in out):
            raise InputError(f"concept {slug!r} appears twice in the mix; combine its weights into one term")
        out.append((slug, weight))
    if all(w == 0 for _, w in out):
        raise InputError("every weight in the mix is 0: with all weights 0 the mix would be an empty vector")
    return out


@dataclass(frozen=True)
class ConceptRef:
    """What a concept field names: one slug, a mix of slugs, or a random control with a slug's norms."""

    kind: Literal["slug", "mix", "random"]
    text: str
    terms: tuple[tuple[str, float], ...] = ()

    @property
    def slug(self) -> str:
        """The slug of a plain or random reference ('' for a mix)."""
        return self.terms[0][0] if self.kind != "mix" and self.terms else ""

    @property
    def slugs(self) -> list[str]:
        return [s for s, _ in self.terms]


def parse_ref(text: str, known: Optional[Iterable[str]] = None) -> ConceptRef:
    """Classify and check a concept field; the one place that knows the three spellings."""
    t = (text or "").strip()
    known_list = None if known is None else list(known)
    if not t:
        raise InputError(f"choose a concept (or type a mix like {MIX_EXAMPLE})")
    if looks_like_mix(t):
        return ConceptRef("mix", t, tuple(parse_mix(t, known_list)))
    kind: Literal["slug", "random"] = "slug"
    slug = t
    if t.startswith(RANDOM_PREFIX):
        kind, slug = "random", t[len(RANDOM_PREFIX):].strip()
    if known_list is not None and slug not in known_list:
        raise _unknown(slug, known_list, "")
    if known_list is None and not _SLUG_RE.match(slug):
        raise InputError(f"{slug!r} is not a concept name (lowercase letters, digits, - and _)")
    return ConceptRef(kind, t, ((slug, 1.0),))


# ---- extra layers of a plan as text (the playground's 'layer:strength' box) ------------------
def parse_layer_plan(text: str) -> list[tuple[int, float]]:
    """'16:0.2, 20:-0.1' -> [(16, 0.2), (20, -0.1)]; InputError with a clear message otherwise."""
    out: list[tuple[int, float]] = []
    for part in (text or "").split(","):
        part = part.strip()
        if not part:
            continue
        if ":" not in part:
            raise InputError(f"extra layers: write layer:strength pairs like 16:0.2, got {part!r}")
        a, b = (s.strip() for s in part.split(":", 1))
        try:
            layer = int(a)
        except ValueError:
            raise InputError(f"extra layers: {a!r} is not a layer number") from None
        try:
            strength = float(b)
        except ValueError:
            raise InputError(f"extra layers: {b!r} is not a strength") from None
        if not math.isfinite(strength):
            raise InputError(f"extra layers: strength for layer {layer} must be a finite number, got {b!r}")
        out.append((layer, strength))
    return out


def op_layers_from_text(text: str, num_layers: int) -> tuple[int, ...]:
    """'all', '8-20' or '4, 12' -> layer numbers for the operation ('' -> none extra)."""
    text = (text or "").strip().lower()
    if not text:
        return ()
    if text == "all":
        return tuple(range(num_layers))
    return tuple(parse_layers(text, num_layers, "operation layers"))
