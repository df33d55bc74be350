"""The lab's one rule for "this text repeats itself", with the reason in words.

A text repeats itself when ONE of these holds (tokens are ids or token strings):

- **cycle**: it ends in a short pattern (1-12 tokens) said at least 3 times in a row, 9+ tokens in
  all ("!!!!!!!!!", " I is! I is! I is!");
- **copy**: a phrase of 4+ tokens occurs at least twice (without overlapping) and its copies cover
  at least half of the text (one sentence said three times in a 48-token answer);
- **refrain**: a phrase of 8+ tokens occurs at least 3 times and its copies cover at least 30% of
  the text (a 60-token paragraph six times in 512 tokens).

The playground badge, the sweep's coherence verdict and the coherence tests all call
`find_repetition`; the generation engine's early stop calls `tail_cycle` (the same kind of cycle,
held to a longer span so that a short answer is never cut off).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Hashable, Literal, Optional, Sequence

CYCLE_MAX_PERIOD = 12
CYCLE_MIN_REPEATS = 3
CYCLE_MIN_TOKENS = 9
COPY_MIN_TOKENS, COPY_MIN_COVERAGE = 4, 0.5
REFRAIN_MIN_TOKENS, REFRAIN_MIN_COUNT, REFRAIN_MIN_COVERAGE = 8, 3, 0.3
PHRASE_CHARS = 60  # how much of a repeated phrase the reason quotes

RULE_TEXT = (f"a text repeats itself when it ends in a short pattern said {CYCLE_MIN_REPEATS}+ times in a row, "
             f"when copies of one phrase ({COPY_MIN_TOKENS}+ tokens) cover half of it, or when a phrase of "
             f"{REFRAIN_MIN_TOKENS}+ tokens comes back {REFRAIN_MIN_COUNT}+ times covering "
             f"{REFRAIN_MIN_COVERAGE:.0%} of it")


@dataclass(frozen=True)
class Repetition:
    """Which rule fired, on which phrase, how often and over how much of the text."""

    rule: Literal["cycle", "copy", "refrain"]
    phrase: str  # the repeated tokens as text (token strings joined, or ids when no text is known)
    phrase_tokens: int
    count: int
    covered: int  # tokens inside the copies
    total: int

    @property
    def coverage(self) -> float:
        return self.covered / self.total if self.total else 0.0

    def reason(self, what: str = "the answer") -> str:
        quoted = _quote(self.phrase)
        if self.rule == "cycle":
            return (f"{what} ends in {quoted} ({self.phrase_tokens} token{'s' if self.phrase_tokens > 1 else ''}) "
                    f"repeated {self.count} times in a row, covering {self.coverage:.0%} of it")
        return (f"the phrase {quoted} ({self.phrase_tokens} tokens) repeats {self.count} times, "
                f"covering {self.coverage:.0%} of {what}")


def _quote(phrase: str) -> str:
    p = " ".join(phrase.split()) or phrase.replace("\n", "↵") or "∅"
    if len(p) > PHRASE_CHARS:
        p = p[: PHRASE_CHARS - 1].rstrip() + "…"
    return f"'{p}'"


def _as_text(toks: Sequence[Hashable]) -> str:
    if all(isinstance(t, str) for t in toks):
        return "".join(toks)  # type: ignore[arg-type]
    return " ".join(str(t) for t in toks)


def _encode(tokens: Sequence[Hashable]) -> str:
    """One character per distinct token, so substring search runs in C."""
    ids: dict[Hashable, int] = {}
    return "".join(chr(0x100 + ids.setdefault(t, len(ids))) for t in tokens)


# ---- cycles at the end -------------------------------------------------------------------------
def cycle_at_end(tokens: Sequence[Hashable], max_period: int = 8) -> tuple[int, int]:
    """(period, repeats) of the short cycle (>= 3 repeats) covering most of the end; (0, 0) if none."""
    toks = list(tokens)
    best = (0, 0)
    for period in range(1, max_period + 1):
        if len(toks) < period:
            break
        cycle = toks[-period:]
        reps, i = 0, len(toks)
        while i - period >= 0 and toks[i - period:i] == cycle:
            reps += 1
            i -= period
        if reps >= CYCLE_MIN_REPEATS and reps * period > best[0] * best[1]:
            best = (period, reps)
    return best


def repeating_tail(tokens: Sequence[Hashable], max_period: int = 8) -> int:
    """How many tokens at the end are a short cycle repeated at least 3 times (0 if none)."""
    period, reps = cycle_at_end(tokens, max_period)
    return period * reps


def tail_cycle(tokens: Sequence[Hashable], max_period: int = CYCLE_MAX_PERIOD, min_span: int = 24) -> Optional[int]:
    """Period p if the last max(min_span, 3p) tokens are one p-token pattern repeated (engine stop)."""
    t = list(tokens)
    for p in range(1, max_period + 1):
        span = max(min_span, 3 * p)
        if len(t) < span:
            continue
        tail = t[-span:]
        if all(tail[i] == tail[i - p] for i in range(p, span)):
            return p
    return None


# ---- repeated phrases anywhere -------------------------------------------------------------------
def most_repeated_phrase(tokens: Sequence[Hashable], min_tokens: int = COPY_MIN_TOKENS,
                         min_copies: int = 2) -> Optional[tuple[int, int, int]]:
    """(start, length, copies) of the phrase (``min_tokens``+ long, ``min_copies``+ non-overlapping
    copies) whose copies cover the most tokens.

    Ties go to more copies (the shortest unit of a loop). Lengths grow until no phrase of that
    length occurs twice, so ordinary text costs a few passes.
    """
    s = _encode(tokens)
    n_all = len(s)
    best: Optional[tuple[int, int, int]] = None
    best_key = (0, 0)
    for n in range(min_tokens, n_all // 2 + 1):
        first: dict[str, int] = {}
        repeated: dict[str, int] = {}
        for i in range(n_all - n + 1):
            g = s[i:i + n]
            if g in first:
                repeated.setdefault(g, first[g])
            else:
                first[g] = i
        if not repeated:
            break
        for g, start in repeated.items():
            copies = s.count(g)  # non-overlapping, left to right
            key = (copies * n, copies)
            if copies >= min_copies and key > best_key:
                best, best_key = (start, n, copies), key
    return best


def _phrase(rule, hit: tuple[int, int, int], total: int, text_of) -> Repetition:
    start, n, copies = hit
    return Repetition(rule, text_of(start, start + n), n, copies, n * copies, total)


def find_repetition(tokens: Sequence[Hashable], pieces: Optional[Sequence[str]] = None) -> Optional[Repetition]:
    """The strongest repetition in ``tokens`` under the rule above, or None.

    ``pieces`` (token strings, same length) are used to quote the phrase when ``tokens`` are ids.
    Cached: a finished answer is re-rendered on every streamed update of its neighbour.
    """
    return _find(tuple(tokens), None if pieces is None else tuple(pieces))


@functools.lru_cache(maxsize=128)
def _find(tokens: tuple, pieces: Optional[tuple]) -> Optional[Repetition]:
    toks = [t for t in tokens if t != ""]
    text_of = (lambda a, b: "".join(pieces[a:b])) if pieces is not None and len(pieces) == len(toks) else \
        (lambda a, b: _as_text(toks[a:b]))
    total = len(toks)
    if total < CYCLE_MIN_TOKENS:
        return None
    found: list[Repetition] = []
    period, reps = cycle_at_end(toks, CYCLE_MAX_PERIOD)
    if reps and period * reps >= CYCLE_MIN_TOKENS:
        found.append(Repetition("cycle", text_of(total - period, total), period, reps, period * reps, total))
    hit = most_repeated_phrase(toks, COPY_MIN_TOKENS, 2)
    if hit is not None and hit[1] * hit[2] >= COPY_MIN_COVERAGE * total:
        found.append(_phrase("copy", hit, total, text_of))
    else:
        hit = most_repeated_phrase(toks, REFRAIN_MIN_TOKENS, REFRAIN_MIN_COUNT)
        if hit is not None and hit[1] * hit[2] >= REFRAIN_MIN_COVERAGE * total:
            found.append(_phrase("refrain", hit, total, text_of))
    return max(found, key=lambda r: (r.covered, r.count), default=None)


def blame_steering(steered: Optional[Repetition], baseline: Optional[Repetition]) -> bool:
    """A repetition counts against the steering unless the baseline repeats at least as much."""
    return steered is not None and (baseline is None or steered.coverage > baseline.coverage + 0.2)
