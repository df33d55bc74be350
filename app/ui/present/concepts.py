"""Concept quality cards: the per-layer figure, the verdict, warnings and the summary after an extraction.

Pure functions over ``app.types`` dataclasses; no Gradio, no model. The pair table lives in ``pairs``
and the library's rows and cards in ``library``; their names are importable from here too, as before.
"""

from __future__ import annotations

import re
from typing import Mapping, Optional, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from app.types import ContrastPair, ConceptVectors

from .common import MAIN_COLOR, POS0_COLOR, SECOND_COLOR, THIRD_COLOR, empty_figure, finite, fmt, md_escape, pct
from .library import (  # noqa: F401  (the creator and library tabs read them as concepts.*)
    JUDGE_TEXT, LIBRARY_HEADERS, STATUS_TEXT, concept_card_md, concept_choices, efficacy_cell, judge_md,
    library_rows, quality_brief_md, recommendations_md, reliability_md)
from .pairs import (  # noqa: F401
    MIN_PAIRS, PAIR_HEADERS, append_pairs, check_pairs, concept_from_form, pairs_to_rows, parse_pasted_pairs,
    slug_for, table_rows, table_to_pairs)

RECOMMENDED_FILL = "rgba(251, 191, 36, 0.22)"  # amber band behind the recommended layers


# ---- quality card ----------------------------------------------------------------------------

def _quality_arrays(cv: ConceptVectors) -> dict[str, np.ndarray]:
    q = sorted(cv.quality, key=lambda x: x.layer)
    L = cv.num_layers
    vec_norm = np.asarray(cv.norms, dtype=np.float64) if L else np.zeros(0)
    typical = np.asarray(cv.typical_norms, dtype=np.float64)
    if q and len(q) == L:
        d = np.array([x.d_prime for x in q], dtype=np.float64)
        loo = np.array([x.loo_accuracy for x in q], dtype=np.float64)
        pc1 = np.array([x.pc1_share for x in q], dtype=np.float64)
    else:
        d = loo = pc1 = np.full(L, np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(typical > 0, vec_norm / typical, np.nan)
    return {"vector_norm": vec_norm, "typical_norm": typical, "relative_norm": rel, "d_prime": d,
            "loo_accuracy": loo, "pc1_share": pc1}


def _clean(arr: np.ndarray) -> list:
    return [finite(v) for v in arr]


def quality_figure(cv: ConceptVectors, title: str = "") -> go.Figure:
    """Two panels per layer: vector/typical norms (+ relative norm) and d′ (+ leave-one-out accuracy)."""
    L = cv.num_layers
    if L == 0:
        return empty_figure(title or "Concept quality", "no layers to show")
    a = _quality_arrays(cv)
    layers = list(range(L))
    fig = make_subplots(
        rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.12,
        specs=[[{"secondary_y": True}], [{"secondary_y": True}]],
        subplot_titles=("How long the vector is", "How well it separates your pairs"),
    )
    fig.add_trace(go.Scatter(x=layers, y=_clean(a["vector_norm"]), name="vector norm", mode="lines+markers",
                             line=dict(color=MAIN_COLOR, width=2), marker=dict(size=5),
                             hovertemplate="layer %{x}<br>vector norm %{y:.2f}<extra></extra>"), row=1, col=1)
    fig.add_trace(go.Scatter(x=layers, y=_clean(a["typical_norm"]), name="typical token norm", mode="lines",
                             line=dict(color=SECOND_COLOR, width=2, dash="dash"),
                             hovertemplate="layer %{x}<br>typical token norm %{y:.1f}<extra></extra>"), row=1, col=1)
    fig.add_trace(go.Scatter(x=layers, y=_clean(a["relative_norm"]), name="relative norm (vector / typical)",
                             mode="lines", line=dict(color=POS0_COLOR, width=1.5, dash="dot"),
                             hovertemplate="layer %{x}<br>relative norm %{y:.3f}<extra></extra>"),
                  row=1, col=1, secondary_y=True)
    fig.add_trace(go.Bar(x=layers, y=_clean(a["d_prime"]), name="d′ (separation)", marker_color=MAIN_COLOR,
                         opacity=0.75, hovertemplate="layer %{x}<br>d′ %{y:.2f}<extra></extra>"), row=2, col=1)
    fig.add_trace(go.Scatter(x=layers, y=_clean(a["loo_accuracy"]), name="leave-one-out accuracy",
                             mode="lines+markers", line=dict(color=THIRD_COLOR, width=2), marker=dict(size=5),
                             hovertemplate="layer %{x}<br>held-out accuracy %{y:.0%}<extra></extra>"),
                  row=2, col=1, secondary_y=True)
    lo, hi = cv.recommended_layers
    if L > 0 and 0 <= lo <= hi < L and not (lo == hi == 0 and L > 2):
        for row in (1, 2):
            fig.add_vrect(x0=lo - 0.5, x1=hi + 0.5, fillcolor=RECOMMENDED_FILL, line_width=0, layer="below",
                          row=row, col=1)
        fig.add_annotation(x=(lo + hi) / 2, y=0.98, xref="x", yref="y domain", yanchor="top", showarrow=False,
                           text=f"recommended<br>{lo}–{hi}" if hi > lo else f"recommended<br>{lo}",
                           font=dict(size=10, color="#92400e"), bgcolor="rgba(255,255,255,0.6)")
    for ann in fig.layout.annotations[:2]:  # the two panel titles: left-aligned, out of the band's way
        ann.update(x=0.0, xanchor="left", font=dict(size=12, color="#475569"))
    fig.update_layout(
        title=dict(text=title or "Concept quality per layer", x=0.01, xanchor="left", font=dict(size=15)),
        height=560, template="plotly_white", margin=dict(l=60, r=60, t=90, b=50), bargap=0.25,
        legend=dict(orientation="h", yanchor="top", y=-0.1, xanchor="left", x=0.0), hovermode="x unified",
    )
    fig.update_xaxes(title_text="layer (residual stream after block i)", row=2, col=1)
    fig.update_yaxes(title_text="norm", row=1, col=1, secondary_y=False)
    fig.update_yaxes(title_text="relative", row=1, col=1, secondary_y=True, showgrid=False, rangemode="tozero")
    fig.update_yaxes(title_text="d′", row=2, col=1, secondary_y=False, rangemode="tozero")
    fig.update_yaxes(title_text="accuracy", row=2, col=1, secondary_y=True, range=[0, 1.05], tickformat=".0%",
                     showgrid=False)
    return fig


def verdict(cv: ConceptVectors) -> tuple[str, str]:
    """('ok' | 'warn' | 'bad', one sentence) judged at the recommended layers."""
    a = _quality_arrays(cv)
    lo, hi = cv.recommended_layers
    sl = slice(max(lo, 0), hi + 1)
    loo, d = a["loo_accuracy"][sl], a["d_prime"][sl]
    if not np.any(np.isfinite(loo)) or not np.any(np.isfinite(d)):
        return "warn", "No quality numbers are stored for these vectors (imported?); try them in the playground."
    best_loo, best_d = float(np.nanmax(loo)), float(np.nanmax(d))
    if best_loo >= 0.9 and best_d >= 2.0:
        return "ok", "Clear concept: held-out pairs agree with the vector and the classes are far apart."
    if best_loo >= 0.75 and best_d >= 1.0:
        return "warn", "Usable, but noisy: add more (and more varied) pairs to make it sharper."
    return "bad", ("Weak: the vector does not separate your pairs reliably. Make each negative differ from its "
                   "positive only in the concept, and add more pairs.")


EARLY_SHARE = 0.6  # the first layers separate this well relative to the recommended ones: words, not meaning
CUE_SHARE = 0.5  # one word in at least half of the pairs' differences: a surface cue
_WORD = re.compile(r"[a-z']+")
_STOP = frozenset("a an and are as at be but by for from i i'm in is it it's me my of on or so that the this to was "
                  "we with you".split())


def early_separation(cv: ConceptVectors) -> Optional[tuple[int, float, float]]:
    """(layer, early d′, best recommended d′) when layer 0 or 1 separates nearly as well as the recommended layers.

    Layers 0-1 see little more than the tokens themselves: separation there comes from the words of the pairs.
    (Measured on the default model: every shipped concept's layer-0/1 d′ is 0.6-1.1x its best middle-layer d′.)
    """
    a = _quality_arrays(cv)
    d = a["d_prime"]
    lo, hi = cv.recommended_layers
    if cv.num_layers < 4 or not np.any(np.isfinite(d[:2])) or not np.any(np.isfinite(d[max(lo, 0):hi + 1])):
        return None
    layer = int(np.nanargmax(d[:2]))
    best = float(np.nanmax(d[max(lo, 0):hi + 1]))
    return (layer, float(d[layer]), best) if best > 0 and d[layer] >= EARLY_SHARE * best else None


def shared_cue_words(pairs: Sequence[ContrastPair], top: int = 3) -> list[tuple[str, int]]:
    """Words that only the positive side has, found in at least half of the pairs: (word, pairs), most first."""
    counts: dict[str, int] = {}
    for p in pairs:
        pos, neg = set(_WORD.findall(p.positive.lower())), set(_WORD.findall(p.negative.lower()))
        for w in pos - neg - _STOP:
            counts[w] = counts.get(w, 0) + 1
    n = max(len(pairs), 1)
    hits = sorted(((w, c) for w, c in counts.items() if len(pairs) >= 4 and c >= CUE_SHARE * n),
                  key=lambda wc: (-wc[1], wc[0]))
    return hits[:top]


def quality_warnings(cv: ConceptVectors, pairs: Sequence[ContrastPair] = ()) -> list[str]:
    """Why a well-separating vector may still not steer, each with what to do about it."""
    out = []
    remedies = ("Remedies: write more varied pairs (say the concept differently in each), try the system-prompt "
                "contrast method, and trust the judge's verdict in the playground or a sweep over this card.")
    early = early_separation(cv)
    if early is not None:
        out.append(f"⚠ **Layer {early[0]} already separates your pairs** (d′ {fmt(early[1])}, vs {fmt(early[2])} at "
                   "the recommended layers): that early, the model sees little more than *which words* your texts "
                   "use, so good separation here does not show that the vector carries the meaning or that it "
                   f"steers. {remedies}")
    cues = shared_cue_words(pairs)
    if cues:
        words = ", ".join(f"“{md_escape(w)}” ({c} of {len(pairs)} pairs)" for w, c in cues)
        out.append(f"⚠ **Your pairs differ mostly in a few shared words:** {words}. The vector can learn those words "
                   f"instead of the concept. {remedies}")
    return out


def quality_summary_md(cv: ConceptVectors, name: str = "", calibration: Optional[Mapping] = None,
                       pairs: Sequence[ContrastPair] = ()) -> str:
    """The numbers behind the quality chart, with what they mean (and warnings a "good" card must not hide);
    with ``calibration`` (the library concept's stored report) also how reliably its shipped setting steers."""
    L = cv.num_layers
    a = _quality_arrays(cv)
    lo, hi = cv.recommended_layers
    mid = (lo + hi) // 2
    kind, sentence = verdict(cv)
    warnings = quality_warnings(cv, pairs)
    if warnings and kind == "ok":  # "good" must mean the vector steers; a surface cue is not that
        kind, sentence = "warn", "Separates your pairs well, but see the warning below before trusting it."
    badge = {"ok": "badge-ok", "warn": "badge-warn", "bad": "badge-bad"}[kind]
    label = {"ok": "good", "warn": "fair", "bad": "weak"}[kind]
    n_pairs = (cv.extra or {}).get("n_pairs")
    head = f"### Quality of “{md_escape(name)}”" if name else "### Quality"
    lines = [head, f'<span class="badge {badge}">{label}</span> {sentence}', ""]
    if warnings:
        lines += [*warnings, ""]
    facts = [f"**Recommended layers: {lo}–{hi}**" if hi > lo else f"**Recommended layer: {lo}**"]
    facts[-1] += f" (of 0–{L - 1}). Start at layer {mid} with relative strength 0.2–0.4."
    d = a["d_prime"]
    inside = d[max(lo, 0):hi + 1]
    if np.any(np.isfinite(inside)):
        best = max(lo, 0) + int(np.nanargmax(inside))
        facts.append(f"Best separation in that range: **d′ = {fmt(d[best])}** at layer {best}; held-out accuracy "
                     f"there **{pct(a['loo_accuracy'][best])}**.")
    if np.any(np.isfinite(d)):
        top = int(np.nanargmax(d))
        if not lo <= top <= hi and d[top] > 0:
            why = (" Early layers mostly see the *words* of your texts, not the concept, so steering there is "
                   "unreliable." if top < max(2, L // 5) else "")
            facts.append(f"The highest d′ overall ({fmt(d[top])}) is at layer {top}, outside the recommended "
                         f"range.{why}")
    if 0 <= mid < L:
        facts.append(f"At layer {mid} the vector is **{fmt(a['relative_norm'][mid], 3)}×** a typical token's length "
                     f"(vector {fmt(a['vector_norm'][mid])}, typical token {fmt(a['typical_norm'][mid], 1)}); "
                     f"one-direction share (PC1) {pct(a['pc1_share'][mid])}.")
    meta = f"Method `{cv.method}`"
    if n_pairs:
        meta += f", {n_pairs} pairs"
    secs = (cv.extra or {}).get("seconds")
    if finite(secs) is not None:
        meta += f", extracted in {fmt(secs, 1)} s"
    facts.append(meta + f" on `{md_escape(cv.model_id)}`.")
    lines += [f"- {f}" for f in facts]
    lines += ["", "<details><summary>What do these numbers mean?</summary>", "",
              "- **d′** — distance between the positive and negative prompts along the vector, in units of their "
              "spread. Above ~2 the two groups barely overlap.",
              "- **Leave-one-out accuracy** — build the vector without one pair, then check that this unseen pair's "
              "positive still scores higher than its negative. 50% = chance, 100% = every pair.",
              "- **Relative norm** — vector length ÷ typical token length at that layer. Steering strengths in the "
              "lab are relative to the typical length, so the vector's own length does not matter for steering.",
              "- **Recommended layers** — the best-scoring contiguous middle layers (not the first or last layer).",
              "", "</details>"]
    if calibration:
        lines += ["", "#### The library's calibrated setting for this concept", reliability_md(calibration)]
    return "\n".join(lines)
