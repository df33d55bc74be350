"""Concept creator and library: parsing the pair table, quality cards, library rows.

Pure functions over ``app.types`` dataclasses and plain lists; no Gradio, no model.
"""

from __future__ import annotations

import re
from typing import Any, Iterable, Mapping, Optional, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from app.service.lab import slugify, validate_slug
from app.types import CATEGORIES, Concept, ContrastPair, ConceptVectors, LayerQuality, SystemPromptPair

from .common import MAIN_COLOR, POS0_COLOR, SECOND_COLOR, THIRD_COLOR, empty_figure, finite, fmt, md_escape, pct, shorten

PAIR_HEADERS = ["positive", "negative"]
MIN_PAIRS = 2
RECOMMENDED_FILL = "rgba(251, 191, 36, 0.22)"  # amber band behind the recommended layers



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
    """Raise ValueError with a message a beginner can act on."""
    if problems:
        raise ValueError("Fix the pair table first: " + "; ".join(problems[:5]) + (" …" if len(problems) > 5 else ""))
    if not pairs:
        raise ValueError("There are no contrast pairs yet: add at least 2 rows (positive text | negative text), "
                         "paste them, or load a shipped concept as a template.")
    if len(pairs) < MIN_PAIRS:
        raise ValueError(f"Only {len(pairs)} contrast pair: add at least {MIN_PAIRS} (4–20 work well).")
    for i, p in enumerate(pairs, start=1):
        if p.positive == p.negative:
            raise ValueError(f"pair {i}: the positive and negative texts are identical, so they contrast nothing")


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
            raise ValueError("Give the concept a name (e.g. 'Sleepy'); the slug is made from it.")
        name = slug
    validate_slug(slug)
    category = (category or "custom").strip()
    if category not in CATEGORIES:
        raise ValueError(f"category must be one of {', '.join(CATEGORIES)}, got {category!r}")
    sp, sn = (system_positive or "").strip(), (system_negative or "").strip()
    if bool(sp) != bool(sn):
        raise ValueError("System prompts come in pairs: fill both the positive and the negative one, or neither.")
    return Concept(
        slug=slug, name=name, description=(description or "").strip(), category=category, pairs=list(pairs),
        system_prompts=SystemPromptPair(sp, sn) if sp else None, tags=[t for t in tags if t],
        provenance=dict(provenance or {"created_with": "concept creator"}),
    )


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


# ---- library ---------------------------------------------------------------------------------

LIBRARY_HEADERS = ["name", "slug", "category", "pairs", "source", "vectors", "validated"]

STATUS_TEXT = {
    "ready": "ready",
    "missing": "not extracted",
    "stale": "stale (pairs changed)",
    "mismatch": "other model",
    "no model": "no model loaded",
}


def library_rows(summaries: Iterable[Any], statuses: Mapping[str, str], user_copies: Iterable[str] = (),
                 calibration: Optional[Mapping[str, Mapping]] = None) -> list[list[Any]]:
    """Table rows for concept summaries (``ConceptSummary``-like) with their vector status and
    how reliably the calibrated setting steered on the validation prompts."""
    shadowing = set(user_copies)
    rows = []
    for s in summaries:
        if s.shipped:
            source = "shipped"
        elif s.slug in shadowing:
            source = "user (shadows shipped)"
        else:
            source = "user"
        st = statuses.get(s.slug, "")
        rows.append([s.name, s.slug, s.category, int(s.n_pairs), source, STATUS_TEXT.get(st, st),
                     efficacy_cell((calibration or {}).get(s.slug))])
    return rows


def _val(report: Optional[Mapping]) -> Optional[Mapping]:
    v = report.get("validation") if isinstance(report, Mapping) else None
    return v if isinstance(v, Mapping) and v.get("n_prompts") else None


def efficacy_cell(report: Optional[Mapping]) -> str:
    """'9/10 right way, 100% clean' for the library table ('' when not calibrated)."""
    v = _val(report)
    if v is None:
        return ""
    n = int(v["n_prompts"])
    right = int(round(float(v.get("right_way", 0)) * n))
    return f"{right}/{n} right way, {pct(v.get('clean_share'))} clean"


def reliability_md(report: Optional[Mapping]) -> str:
    """How the calibrated setting (and each extraction method) did on the VALIDATION prompts."""
    v = _val(report)
    if v is None:
        return "_Not calibrated for this model yet: `steering-lab calibrate <slug> --save` measures it._"
    judge = md_escape(str(report.get("judge", "the concept's judge")))
    lines = [f"**Reliability on {int(v['n_prompts'])} validation prompts** (never used to choose the setting; "
             f"judged by {judge}, steered minus unsteered):",
             "", "| method | layer | strength | right way | wrong way | mean change | spread | clean |",
             "|---|---|---|---|---|---|---|---|"]
    variants = report.get("variants") or {}
    shown = {str(report.get("method")): v}
    for name, data in variants.items():
        if isinstance(data, Mapping) and _val(data) is not None and name not in shown:
            shown[name] = data["validation"]
    for name, row in shown.items():
        mark = " ✓" if name == report.get("method") else ""
        lines.append(f"| `{md_escape(name)}`{mark} | {row.get('layer', '')} | {fmt(row.get('strength'))} | "
                     f"{pct(row.get('right_way'))} | {pct(row.get('wrong_way'))} | {fmt(row.get('mean_change'), 3)} | "
                     f"{fmt(row.get('spread'), 3)} | {pct(row.get('clean_share'))} |")
    cons = finite(report.get("pair_consistency"))
    if cons is not None:
        lines += ["", f"Consistency of the pairs at layer {report.get('layer')}: mean pairwise cosine of the per-pair "
                      f"differences **{fmt(cons, 2)}** (1 = every pair points the same way)."]
    if report.get("eligible") is False:
        lines += ["", "⚠ No setting was coherent on 80% of the calibration prompts; this one is the least broken."]
    lines += ["", "✓ = the shipped method (chosen on the calibration prompts). *Clean* = distinct-2 ≥ 0.5 and no loop."]
    return "\n".join(lines)


def recommendations_md(concept: Concept) -> str:
    if not concept.recommended:
        return "_No saved recommendation yet: find one in the Sweeps tab and save it._"
    out = []
    for key, rec in sorted(concept.recommended.items()):
        unit = "relative" if rec.strength_mode == "relative" else "absolute"
        out.append(f"- `{md_escape(key)}`: layer **{rec.layer}**, strength **{fmt(rec.strength)}** ({unit}, "
                   f"from {md_escape(rec.source)})")
    return "\n".join(out)


JUDGE_TEXT = {
    "sentiment": "VADER sentiment of the answer",
    "lexicon": "share of words in the empath categories",
    "words": "share of the answer's words in a list",
    "length": "answer length in words",
    "readability": "readability formula",
    "probe": "a one-vs-rest probe on the unsteered model (this concept vs its negatives and the other concepts)",
}


def judge_md(concept: Concept, summary: Optional[Mapping[str, Any]] = None) -> str:
    """How the concept's effect is judged, independently of its own vector."""
    spec = concept.judge
    if spec is None:
        if len(concept.pairs) >= 4:
            return ("**Judge:** none declared — add `judge:` to the concept's YAML, e.g. `{kind: probe}` for a "
                    "probe trained one vs rest on the model (sentiment, lexicon, words, length and readability also exist).")
        return "**Judge:** none (add a `judge:` block, or at least 4 pairs for a probe)."
    what = JUDGE_TEXT.get(spec.kind, spec.kind)
    detail = ""
    if spec.kind == "lexicon":
        detail = ": " + ", ".join(md_escape(c) for c in spec.categories)
    elif spec.kind == "words":
        detail = ": " + ", ".join(md_escape(w) for w in spec.words[:12]) + (" …" if len(spec.words) > 12 else "")
    elif spec.kind == "readability":
        detail = f": `{md_escape(spec.metric)}`"
    way = "higher" if spec.sign > 0 else "lower"
    line = f"**Judge:** {what}{detail} — {way} = more {md_escape(concept.name.lower())}."
    acc = finite((summary or {}).get("accuracy"))
    if spec.kind == "probe":
        pair = finite((summary or {}).get("pair_accuracy"))
        line += (f" Held-out accuracy **{pct(acc)}**" + (f", held-out pairs ordered right {pct(pair)}" if pair is not None else "") + "."
                 if acc is not None else " (trained the first time it is needed; accuracy shown then).")
    return line


def concept_card_md(concept: Concept, shipped: bool, user_copy: bool, status: str, model_id: str = "",
                    preview: int = 5, judge: Optional[Mapping[str, Any]] = None) -> str:
    """Markdown card for one concept: what it is, a few pairs, recommendations, vector status."""
    if shipped and user_copy:
        source = "your copy of a shipped concept (delete it to bring the shipped one back)"
    elif shipped:
        source = "shipped with the lab (read-only: duplicate it to edit)"
    else:
        source = "your concept"
    lines = [f"### {md_escape(concept.name)}  `{concept.slug}`",
             f"*{md_escape(concept.category)}* · {len(concept.pairs)} pairs · {source}"]
    if concept.tags:
        lines[-1] += " · tags: " + ", ".join(md_escape(t) for t in concept.tags)
    if concept.description:
        lines += ["", md_escape(concept.description)]
    if concept.recipe:
        lines += ["", "Mix of: " + ", ".join(f"{md_escape(s)} × {fmt(w)}" for s, w in concept.recipe)]
    if concept.system_prompts:
        lines += ["", f"System prompts: + “{md_escape(shorten(concept.system_prompts.positive, 70))}” / "
                      f"− “{md_escape(shorten(concept.system_prompts.negative, 70))}”"]
    if concept.pairs:
        lines += ["", "| positive | negative |", "|---|---|"]
        for p in concept.pairs[:preview]:
            lines.append(f"| {md_escape(shorten(p.positive, 70))} | {md_escape(shorten(p.negative, 70))} |")
        if len(concept.pairs) > preview:
            lines.append(f"| … {len(concept.pairs) - preview} more | |")
    lines += ["", judge_md(concept, judge)]
    lines += ["", "**Recommended settings**", recommendations_md(concept)]
    if model_id:
        lines += ["", f"**Vectors for `{md_escape(model_id)}`:** {STATUS_TEXT.get(status, status)}"]
        if status == "missing" and concept.recipe:
            lines[-1] = (f"**Vectors for `{md_escape(model_id)}`:** blended from the mixed concepts' vectors each time "
                         "it is used.")
        elif status == "missing":
            lines[-1] += " — they are extracted the first time you use the concept (or press Extract in the creator)."
        elif status == "stale":
            lines[-1] += " — the pairs changed after extraction; re-extract in the concept creator."
    return "\n".join(lines)


def quality_brief_md(quality: Sequence[LayerQuality], recommended: tuple[int, int]) -> str:
    """One line for cards: d′ and held-out accuracy at the best recommended layer."""
    q = {x.layer: x for x in quality}
    lo, hi = recommended
    inside = [q[l] for l in range(lo, hi + 1) if l in q]
    if not inside:
        return ""
    best = max(inside, key=lambda x: (finite(x.d_prime) or -1e9))
    return (f"Quality at layer {best.layer}: d′ {fmt(best.d_prime)}, held-out accuracy {pct(best.loo_accuracy)}, "
            f"relative norm {fmt(best.relative_norm, 3)}.")


def concept_choices(summaries: Iterable[Any], none_label: Optional[str] = None) -> list[tuple[str, str]]:
    """Dropdown choices ``(label, slug)``: 'Happy (happy)'; optionally a leading '(none)' -> ''."""
    out = [(none_label, "")] if none_label else []
    for s in summaries:
        label = s.name if s.name.casefold() == s.slug.replace("-", " ").casefold() else f"{s.name} ({s.slug})"
        out.append((f"{label} · {s.category}", s.slug))
    return out
