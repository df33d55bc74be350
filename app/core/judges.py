"""Judges: score texts for a concept by means independent of the concept's own vector.

The sweep's old readout (the text's projection on the concept's own direction) rewards any
emotional text, because concept-vs-neutral vectors share an "emotional vs neutral" part. A
judge looks at the text by other means: a sentiment lexicon (VADER), lexical categories
(empath), readability formulas (textstat), a word list, the answer's length, or a linear
probe trained one-vs-rest on the unsteered model (see app.core.probe), so "sad" must beat
"happy", not only "neutral".

Every judge has a ``raw`` score per text and a ``sign``; ``judge_scores`` = sign * raw, so
higher always means more of the concept. ``JUDGES`` is the one registry the UI/CLI read.
"""

from __future__ import annotations

import functools
import re
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Protocol, Sequence

import numpy as np

from app.errors import InputError
from app.types import JUDGE_KINDS, READABILITY_METRICS, Concept, JudgeSpec

_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)*")


class Judge(Protocol):
    kind: str
    sign: int
    label: str

    def raw(self, texts: Sequence[str]) -> np.ndarray: ...


def judge_scores(judge: Judge, texts: Sequence[str]) -> np.ndarray:
    """sign * raw score: higher always means more of the concept."""
    return float(judge.sign) * np.asarray(judge.raw(list(texts)), dtype=np.float64)


def words_of(text: str) -> list[str]:
    """Words (letters/digits, inner apostrophes kept: "don't", "o'er")."""
    return _WORD.findall(text)


def _lower_words(text: str) -> list[str]:
    return [w.lower() for w in words_of(text)]


def _arrow(sign: int, up: str, down: str) -> str:
    return up if sign > 0 else down


@dataclass
class SentimentJudge:
    """VADER compound valence in [-1, 1]: a lexicon with rules for negation, caps and '!'."""

    sign: int = 1
    kind: str = "sentiment"

    @property
    def label(self) -> str:
        return f"VADER sentiment ({_arrow(self.sign, 'higher = happier', 'lower = sadder')})"

    def raw(self, texts: Sequence[str]) -> np.ndarray:
        an = _vader()
        return np.array([an.polarity_scores(t)["compound"] if t.strip() else 0.0 for t in texts])


@dataclass
class LexiconJudge:
    """Share of words in empath lexical categories (summed over the categories given)."""

    categories: tuple[str, ...]
    sign: int = 1
    kind: str = "lexicon"

    def __post_init__(self) -> None:
        unknown = [c for c in self.categories if c not in _empath().cats]
        if not self.categories or unknown:
            raise InputError(f"judge.categories: unknown or missing empath categories {unknown or '[]'}")

    @property
    def label(self) -> str:
        return f"empath words of {'/'.join(self.categories)} ({_arrow(self.sign, 'higher', 'lower')} = more)"

    def raw(self, texts: Sequence[str]) -> np.ndarray:
        lex = _empath()
        out = []
        for t in texts:
            # empath's own tokenizer is str.split: "furious," and "Furious" would not match.
            scores = lex.analyze(t, categories=list(self.categories), tokenizer=_lower_words, normalize=True) if words_of(t) else None
            out.append(sum(scores.values()) if scores else 0.0)
        return np.array(out, dtype=np.float64)


@dataclass
class WordsJudge:
    """Share of the text's words that are in a list (case-insensitive, whole words or phrases)."""

    words: tuple[str, ...]
    sign: int = 1
    kind: str = "words"
    _pattern: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        items = [w.strip() for w in self.words if w and w.strip()]
        if not items:
            raise InputError("judge.words: the word list is empty")
        alts = "|".join(re.escape(w) for w in sorted(set(items), key=len, reverse=True))
        self._pattern = re.compile(rf"(?<![\w'])(?:{alts})(?![\w'])", re.IGNORECASE)

    @property
    def label(self) -> str:
        shown = ", ".join(self.words[:4]) + (", ..." if len(self.words) > 4 else "")
        return f"share of words like {shown} ({_arrow(self.sign, 'higher', 'lower')} = more)"

    def raw(self, texts: Sequence[str]) -> np.ndarray:
        return np.array([len(self._pattern.findall(t)) / max(len(words_of(t)), 1) for t in texts], dtype=np.float64)


@dataclass
class LengthJudge:
    """Answer length in words."""

    sign: int = 1
    kind: str = "length"

    @property
    def label(self) -> str:
        return f"answer length in words ({_arrow(self.sign, 'longer', 'shorter')} = more)"

    def raw(self, texts: Sequence[str]) -> np.ndarray:
        return np.array([len(words_of(t)) for t in texts], dtype=np.float64)


@dataclass
class ReadabilityJudge:
    """A textstat readability formula (syllables from pyphen: works offline)."""

    metric: str = "flesch_reading_ease"
    sign: int = 1
    kind: str = "readability"

    def __post_init__(self) -> None:
        if self.metric not in READABILITY_METRICS:
            raise InputError(f"judge.metric: must be one of {', '.join(READABILITY_METRICS)}, got {self.metric!r}")

    @property
    def label(self) -> str:
        return f"readability {self.metric} ({_arrow(self.sign, 'higher', 'lower')} = more)"

    def raw(self, texts: Sequence[str]) -> np.ndarray:
        fn = getattr(_textstat(), self.metric)
        return np.array([float(fn(t)) if words_of(t) else 0.0 for t in texts], dtype=np.float64)


@functools.lru_cache(maxsize=1)
def _vader() -> Any:
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


@functools.lru_cache(maxsize=1)
def _empath() -> Any:
    from empath import Empath

    return Empath()


@functools.lru_cache(maxsize=1)
def _textstat() -> Any:
    with warnings.catch_warnings():  # textstat 0.7.4 imports pkg_resources, which warns
        warnings.simplefilter("ignore")
        import textstat
    return textstat


def _probe(spec: JudgeSpec, lm: Any, concept: Optional[Concept], library_concepts: Optional[Sequence[Concept]]) -> Judge:
    from app.core.probe import train_probe  # needs MLX; the text judges do not

    if lm is None or concept is None:
        raise InputError("a probe judge needs the loaded model and the concept it judges")
    return train_probe(lm, concept, library_concepts or (), layer=spec.layer, sign=spec.sign)


Builder = Callable[[JudgeSpec, Any, Optional[Concept], Optional[Sequence[Concept]]], Judge]

JUDGES: dict[str, Builder] = {
    "sentiment": lambda s, *_: SentimentJudge(sign=s.sign),
    "lexicon": lambda s, *_: LexiconJudge(categories=tuple(s.categories), sign=s.sign),
    "words": lambda s, *_: WordsJudge(words=tuple(s.words), sign=s.sign),
    "length": lambda s, *_: LengthJudge(sign=s.sign),
    "readability": lambda s, *_: ReadabilityJudge(metric=s.metric or "flesch_reading_ease", sign=s.sign),
    "probe": _probe,
}
assert tuple(JUDGES) == JUDGE_KINDS, "the registry and app.types.JUDGE_KINDS must list the same kinds"


def build_judge(
    spec: JudgeSpec,
    *,
    lm: Any = None,
    concept: Optional[Concept] = None,
    library_concepts: Optional[Sequence[Concept]] = None,
) -> Judge:
    """The judge a spec describes; a probe is trained here (seconds on the default model)."""
    if spec.kind not in JUDGES:
        raise InputError(f"judge.kind: must be one of {', '.join(JUDGES)}, got {spec.kind!r}")
    if spec.sign not in (1, -1):
        raise InputError(f"judge.sign: must be 1 or -1, got {spec.sign!r}")
    return JUDGES[spec.kind](spec, lm, concept, library_concepts)


def default_spec(concept: Concept) -> Optional[JudgeSpec]:
    """The judge for a concept that declares none: the probe when it has enough pairs."""
    from app.types import PROBE_MIN_PAIRS

    if concept.judge is not None:
        return concept.judge
    return JudgeSpec(kind="probe") if len(concept.pairs) >= PROBE_MIN_PAIRS else None
