"""Field-level checks for concept data, collecting every problem with its line.

Kept apart from ``schema`` so the parse/dump entry points stay short and readable.
"""

from __future__ import annotations

import datetime as _dt
import functools
import math
from typing import Any

from app.domain import limits
from app.domain.methods import METHOD_NAMES
from app.types import (
    JUDGE_KINDS, PROBE_MIN_PAIRS, READABILITY_METRICS, ContrastPair, JudgeSpec, Recommendation,
)

from .errors import InvalidSlug
from .slugs import validate_model_key, validate_slug
from .yamlsafe import LineMap, not_unicode

CONCEPT_KEYS = (
    "name", "description", "category", "tags", "judge", "system_prompts", "pairs",
    "provenance", "recommended", "recipe", "recipe_options", "method", "opposite",
)
MAX_CONCEPT_BYTES = 2 * 1024 * 1024
MAX_NAME_LEN = 100
MAX_TEXT_LEN = limits.PAIR_TEXT_CHARS
MAX_PAIRS = limits.PAIRS_PER_CONCEPT
MAX_TAGS = 32
MAX_TAG_LEN = 40
STRENGTH_MODES = ("relative", "absolute")
_REC_KEYS = ("layer", "strength", "strength_mode", "source", "band")
MAX_BAND = 16  # band layers of one recommendation
# The keys each judge kind reads besides 'kind' and 'sign'.
JUDGE_KIND_KEYS = {
    "sentiment": (), "length": (), "lexicon": ("categories",), "words": ("words",),
    "readability": ("metric",), "probe": ("layer",),
}
MAX_JUDGE_WORDS = 500
MAX_WORD_LEN = 60


def kind(value: Any) -> str:
    """Name a YAML value the way a person editing the file thinks of it."""
    if value is None:
        return "an empty value"
    if isinstance(value, bool):
        return f"true/false ({value})"
    names = {str: "text", int: "a whole number", float: "a number", list: "a list", dict: "a mapping"}
    for typ, name in names.items():
        if isinstance(value, typ):
            return name
    return type(value).__name__


def _field(path: tuple) -> str:
    out = ""
    for step in path:
        out += f"[{step}]" if isinstance(step, int) else (f".{step}" if out else str(step))
    return out or "(top level)"


class Checker:
    """Collects problems (file, line, field, reason) instead of stopping at the first."""

    def __init__(self, source: str, lines: LineMap, prefix: tuple = ()):
        self.source, self.lines, self.prefix = source, lines, prefix
        self._found: list[tuple[int, str]] = []

    @property
    def problems(self) -> list[str]:
        """Messages in file order, so the first one printed is the first one to fix."""
        return [msg for _line, msg in sorted(self._found, key=lambda item: item[0])]

    def fail(self, path: tuple, msg: str, key: bool = False) -> None:
        line = self.lines.line(self.prefix + path, key=key)
        where = f", line {line}" if line else ""
        self._found.append((line or 0, f"{self.source}{where}: {_field(path)}: {msg}"))

    def text(self, value: Any, path: tuple, max_len: int, allow_blank: bool = False) -> str | None:
        if not isinstance(value, str):
            self.fail(path, f"must be text, got {kind(value)} (put quotes around it)")
            return None
        if not allow_blank and not value.strip():
            self.fail(path, "must not be empty")
            return None
        if len(value) > max_len:
            self.fail(path, f"is {len(value)} characters long; the maximum is {max_len}")
            return None
        bad = not_unicode(value)
        if bad:
            self.fail(path, bad)
            return None
        return value

    def mapping(self, value: Any, path: tuple, allowed: tuple | None = None) -> dict | None:
        if not isinstance(value, dict):
            self.fail(path, f"must be a mapping (key: value lines), got {kind(value)}")
            return None
        ok = True
        for key in value:
            if not isinstance(key, str):
                self.fail(path, f"keys must be text, got {kind(key)} {key!r}")
                ok = False
            elif not_unicode(key):
                self.fail(path, f"a key {not_unicode(key)}")
                ok = False
            elif allowed is not None and key not in allowed:
                self.fail(path + (key,), f"unknown key {key!r}; allowed keys: {', '.join(allowed)}", key=True)
                ok = False
        return value if ok else None

    def number(self, value: Any, path: tuple) -> float | None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(path, f"must be a number, got {kind(value)} (write 1e-3 as 0.001)")
            return None
        if not math.isfinite(value):
            self.fail(path, "must be a finite number (not .nan / .inf)")
            return None
        return float(value)

    def plain(self, value: Any, path: tuple) -> Any:
        """Free-form data (provenance, recipe_options): JSON-like values; dates become text."""
        if isinstance(value, (_dt.date, _dt.datetime)):
            return value.isoformat()
        if isinstance(value, float) and not math.isfinite(value):
            self.fail(path, "must be a finite number (not .nan / .inf)")
            return None
        if isinstance(value, str) and not_unicode(value):
            self.fail(path, not_unicode(value))
            return None
        if value is None or isinstance(value, (str, bool, int, float)):
            return value
        if isinstance(value, list):
            return [self.plain(v, path + (i,)) for i, v in enumerate(value)]
        if isinstance(value, dict) and self.mapping(value, path) is not None:
            return {k: self.plain(v, path + (k,)) for k, v in value.items()}
        if not isinstance(value, dict):
            self.fail(path, f"unsupported value {kind(value)}")
        return None


def pair_list(chk: Checker, value: Any, path: tuple) -> list[ContrastPair]:
    if value is None:
        return []
    if not isinstance(value, list):
        chk.fail(path, f"must be a list of '- positive: ... / negative: ...' items, got {kind(value)}")
        return []
    if len(value) > MAX_PAIRS:
        chk.fail(path, f"has {len(value)} pairs; the maximum is {MAX_PAIRS}")
        return []
    pairs = []
    for i, item in enumerate(value):
        sub = text_pair(chk, item, path + (i,))
        if sub:
            pairs.append(ContrastPair(*sub))
    return pairs


def text_pair(chk: Checker, value: Any, path: tuple) -> tuple[str, str] | None:
    """A mapping with exactly non-empty 'positive' and 'negative' texts."""
    m = chk.mapping(value, path, ("positive", "negative"))
    if m is None:
        return None
    out = []
    for side in ("positive", "negative"):
        if side not in m:
            chk.fail(path, f"missing '{side}'")
        else:
            out.append(chk.text(m[side], path + (side,), MAX_TEXT_LEN))
    return (out[0], out[1]) if len(out) == 2 and None not in out else None


def tags(chk: Checker, value: Any) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list):
        chk.fail(("tags",), f"must be a list like [emotion, joy], got {kind(value)}")
        return []
    if len(value) > MAX_TAGS:
        chk.fail(("tags",), f"has {len(value)} tags; the maximum is {MAX_TAGS}")
    return [t for i, t in enumerate(value) if chk.text(t, ("tags", i), MAX_TAG_LEN) is not None]


def recommended(chk: Checker, value: Any) -> dict[str, Recommendation]:
    out: dict[str, Recommendation] = {}
    if value is None or chk.mapping(value, ("recommended",)) is None:
        return out
    for key, rec in value.items():
        path = ("recommended", key)
        try:
            validate_model_key(key)
        except InvalidSlug as e:
            chk.fail(path, str(e), key=True)
        m = chk.mapping(rec, path, _REC_KEYS)
        if m is None:
            continue
        layer, strength = m.get("layer"), m.get("strength")
        if isinstance(layer, bool) or not isinstance(layer, int) or layer < 0:
            chk.fail(path + ("layer",), f"must be a whole number >= 0, got {layer!r}")
            layer = None
        strength = chk.number(strength, path + ("strength",))
        mode = m.get("strength_mode", "relative")
        if mode not in STRENGTH_MODES:
            chk.fail(path + ("strength_mode",), f"must be one of {', '.join(STRENGTH_MODES)}, got {mode!r}")
        source = chk.text(m.get("source", "sweep"), path + ("source",), MAX_NAME_LEN)
        band = _band(chk, m.get("band"), path + ("band",), layer)
        if layer is not None and strength is not None and mode in STRENGTH_MODES and source is not None and band is not None:
            out[key] = Recommendation(layer=layer, strength=strength, strength_mode=mode, source=source, band=band)
    return out


def _band(chk: Checker, value: Any, path: tuple, layer: Any) -> tuple[int, ...] | None:
    """A recommendation's band: distinct whole layers >= 0, other than its main layer (None when invalid)."""
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > MAX_BAND:
        chk.fail(path, f"must be a list of at most {MAX_BAND} layer numbers, got {kind(value)}")
        return None
    if any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in value):
        chk.fail(path, f"must hold whole numbers >= 0, got {value!r}")
        return None
    if len(set(value)) != len(value) or layer in value:
        chk.fail(path, f"layers must be distinct and differ from the main layer {layer!r}, got {value!r}")
        return None
    return tuple(value)


def recipe(chk: Checker, value: Any) -> list[tuple[str, float]] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not value:
        chk.fail(("recipe",), f"must be a non-empty list of '- concept: slug / weight: number', got {kind(value)}")
        return None
    out = []
    for i, item in enumerate(value):
        path = ("recipe", i)
        m = chk.mapping(item, path, ("concept", "weight"))
        if m is None:
            continue
        try:
            slug = validate_slug(m.get("concept"))
        except InvalidSlug as e:
            chk.fail(path + ("concept",), str(e))
            continue
        weight = chk.number(m.get("weight"), path + ("weight",))
        if weight is not None:
            out.append((slug, weight))
    return out




def method(chk: Checker, value: Any) -> str | None:
    """The extraction method the shipped vectors use (one of the registry's names)."""
    if value is None:
        return None
    if not isinstance(value, str) or value not in METHOD_NAMES:
        chk.fail(("method",), f"must be one of {', '.join(METHOD_NAMES)}, got {value!r}")
        return None
    return value


def opposite(chk: Checker, value: Any, own_slug: str) -> str | None:
    """Slug of the concept whose positives the bipolar method contrasts against."""
    if value is None:
        return None
    try:
        slug = validate_slug(value)
    except InvalidSlug as e:
        chk.fail(("opposite",), str(e))
        return None
    if slug == own_slug:
        chk.fail(("opposite",), f"a concept cannot be its own opposite ({slug!r})")
        return None
    return slug
@functools.lru_cache(maxsize=1)
def lexicon_categories() -> frozenset[str]:
    """The empath categories a lexicon judge may name (loaded once, only when needed)."""
    from empath import Empath

    return frozenset(Empath().cats)


def _text_list(chk: Checker, value: Any, path: tuple, what: str) -> tuple[str, ...] | None:
    if not isinstance(value, list) or not value:
        chk.fail(path, f"must be a non-empty list of {what}, like [a, b], got {kind(value) if value != [] else 'an empty list'}")
        return None
    if len(value) > MAX_JUDGE_WORDS:
        chk.fail(path, f"has {len(value)} entries; the maximum is {MAX_JUDGE_WORDS}")
        return None
    out = [chk.text(v, path + (i,), MAX_WORD_LEN) for i, v in enumerate(value)]
    return None if None in out else tuple(out)


def judge(chk: Checker, value: Any, n_pairs: int) -> JudgeSpec | None:
    """A concept's ``judge:`` block (see app.core.judges); ``n_pairs`` gates the probe."""
    path = ("judge",)
    if value is None:
        return None
    allowed = ("kind", "sign") + tuple(k for ks in JUDGE_KIND_KEYS.values() for k in ks)
    m = chk.mapping(value, path, tuple(dict.fromkeys(allowed)))
    if m is None:
        return None
    k = m.get("kind")
    if k not in JUDGE_KINDS:
        chk.fail(path + ("kind",), f"must be one of {', '.join(JUDGE_KINDS)}, got {k!r}")
        return None
    ok = True
    for key in m:
        if key not in ("kind", "sign") + JUDGE_KIND_KEYS[k]:
            chk.fail(path + (key,), f"is not used by a {k} judge (it reads: kind, sign{''.join(', ' + x for x in JUDGE_KIND_KEYS[k])})", key=True)
            ok = False
    sign = m.get("sign", 1)
    if isinstance(sign, bool) or sign not in (1, -1):
        chk.fail(path + ("sign",), f"must be 1 (higher score = more of the concept) or -1 (lower = more), got {sign!r}")
        ok = False
    fields: dict[str, Any] = {}
    if k == "lexicon":
        cats = _text_list(chk, m.get("categories"), path + ("categories",), "lexical categories")
        if cats is not None:
            known = lexicon_categories()
            for i, c in enumerate(cats):
                if c not in known:
                    close = sorted(x for x in known if x[:3] == c[:3])[:5]
                    hint = f" (similar: {', '.join(close)})" if close else ""
                    chk.fail(path + ("categories", i), f"unknown lexical category {c!r}{hint}; the categories are empath's")
                    cats = None
        fields["categories"] = cats
    elif k == "words":
        fields["words"] = _text_list(chk, m.get("words"), path + ("words",), "words")
    elif k == "readability":
        metric = m.get("metric", "flesch_reading_ease")
        if metric not in READABILITY_METRICS:
            chk.fail(path + ("metric",), f"must be one of {', '.join(READABILITY_METRICS)}, got {metric!r}")
            metric = None
        fields["metric"] = metric
    elif k == "probe":
        layer = m.get("layer")
        if layer is not None and (isinstance(layer, bool) or not isinstance(layer, int) or layer < 0):
            chk.fail(path + ("layer",), f"must be a whole number >= 0 (or left out for the middle layer), got {layer!r}")
            ok = False
        if n_pairs < PROBE_MIN_PAIRS:
            chk.fail(path + ("kind",), f"a probe judge is trained on the concept's pairs and needs at least {PROBE_MIN_PAIRS}; this concept has {n_pairs}")
            ok = False
        fields["layer"] = layer
    if not ok or any(v is None for key, v in fields.items() if key != "layer"):
        return None
    return JudgeSpec(kind=k, sign=int(sign), **fields)
