"""Is a steered text still coherent? One verdict, with the rule that decided it, in words.

A cell of a sweep is coherent when all of these hold (checked in this order; the first that
fails is the reason):
1. it produced tokens, and the engine did not stop it for a loop or NaN;
2. its perplexity under the unsteered model is at most 2.5x the baseline's, times the concept's
   *style allowance* (below);
3. its distinct-2 is at least 0.35 and at least 60% of the baseline's;
4. it does not repeat itself (`app.domain.repetition`) more than the baseline does.
Perplexity alone cannot judge repetition: a loop is *easy* to predict, so its ratio falls below 1.

Style allowance: a concept that is a style (pirate, Shakespeare, casual) makes text less
predictable to the unsteered model BY DESIGN, so a fixed 2.5x bound calls fluent pirate speech
incoherent. The allowance is measured on the concept's own data, not on steered text: the median
perplexity of its positive examples over that of their neutral partners (``style_allowance``),
clipped to [1, MAX_STYLE_ALLOWANCE]. Emotions and registers whose examples are as plausible as
their partners get 1.0 (the plain rule); gibberish stays far above any allowance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Hashable, Optional, Sequence

from app.domain.repetition import Repetition, blame_steering, find_repetition

MAX_PPL_RATIO = 2.5  # perplexity at most 2.5x the baseline's
MIN_DISTINCT2_RATIO = 0.6  # distinct-2 at least 60% of the baseline's
MIN_DISTINCT2 = 0.35
MAX_STYLE_ALLOWANCE = 4.0  # at most 4x more perplexity for a style's sake (10x the baseline in all)


@dataclass(frozen=True)
class Verdict:
    coherent: bool
    rule: str  # "ok" | "empty" | "engine-loop" | "nan" | "perplexity" | "distinct-2" | "repetition"
    reason: str  # one sentence a newcomer can read
    repetition: Optional[Repetition] = None


def _finite(x: float) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def style_allowance(positive_perplexity: float, negative_perplexity: float) -> float:
    """How much less plausible the concept's examples are than their partners, in [1, MAX_STYLE_ALLOWANCE]."""
    if not (_finite(positive_perplexity) and _finite(negative_perplexity)) or negative_perplexity <= 0:
        return 1.0
    return float(min(max(positive_perplexity / negative_perplexity, 1.0), MAX_STYLE_ALLOWANCE))


def coherence_verdict(n_tokens: int, perplexity: float, distinct2: float, finish: str,
                      baseline_perplexity: float, baseline_distinct2: float,
                      tokens: Sequence[Hashable] = (), baseline_tokens: Sequence[Hashable] = (),
                      pieces: Optional[Sequence[str]] = None, baseline_pieces: Optional[Sequence[str]] = None,
                      allowance: float = 1.0) -> Verdict:
    """The verdict for one steered text against its baseline (see the module docstring);
    ``allowance`` is the concept's style allowance (1.0: none)."""
    if n_tokens == 0:
        return Verdict(False, "empty", "no tokens were generated")
    if finish == "loop":
        return Verdict(False, "engine-loop", "the generator stopped it: its last tokens were one short pattern repeated")
    if finish == "nan":
        return Verdict(False, "nan", "the numbers blew up (NaN): the strength is far too high")
    base_ppl = max(baseline_perplexity, 1.0) if _finite(baseline_perplexity) else None
    rep = find_repetition(tokens, pieces)
    base_rep = find_repetition(baseline_tokens, baseline_pieces)
    allowance = min(max(float(allowance), 1.0), MAX_STYLE_ALLOWANCE) if _finite(allowance) else 1.0
    limit = MAX_PPL_RATIO * allowance
    limit_text = (f"{MAX_PPL_RATIO:g}x" if allowance == 1.0 else
                  f"{MAX_PPL_RATIO:g}x times {allowance:.2f} for this concept's style = {limit:.2f}x")
    if base_ppl is not None and _finite(perplexity) and perplexity > limit * base_ppl:
        return Verdict(False, "perplexity",
                       f"perplexity is {perplexity / base_ppl:.2f}x the baseline's (limit {limit_text}): "
                       "the unsteered model finds this text implausible", rep)
    floor = max(MIN_DISTINCT2, MIN_DISTINCT2_RATIO * baseline_distinct2) if _finite(baseline_distinct2) else MIN_DISTINCT2
    if distinct2 < floor:
        return Verdict(False, "distinct-2",
                       f"distinct-2 is {distinct2:.2f} (needs at least {floor:.2f}): many word pairs repeat", rep)
    if blame_steering(rep, base_rep):
        assert rep is not None
        return Verdict(False, "repetition", rep.reason("the text"), rep)
    rep_note = ("it repeats itself no more than the baseline does" if rep is not None
                else "no phrase repeats over much of the text")
    ratio = f"perplexity {perplexity / base_ppl:.2f}x the baseline's" if base_ppl and _finite(perplexity) else "perplexity n/a"
    return Verdict(True, "ok", f"coherent: {ratio} (at most {limit_text}), distinct-2 {distinct2:.2f} "
                               f"(at least {floor:.2f}), {rep_note}", rep)
