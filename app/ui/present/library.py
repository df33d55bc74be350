"""The library tab's table rows and concept cards, and how reliably a concept's calibrated setting steers.

Pure functions over ``app.types`` dataclasses and plain dicts; no Gradio, no model.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Optional, Sequence

from app.types import Concept, LayerQuality, layers_label

from .common import finite, fmt, md_escape, pct, shorten


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
             "", "| method | layer(s) | strength | right way | wrong way | mean change | spread | clean |",
             "|---|---|---|---|---|---|---|---|"]
    variants = report.get("variants") or {}
    shown = {str(report.get("method")): v}
    for name, data in variants.items():
        if isinstance(data, Mapping) and _val(data) is not None and name not in shown:
            shown[name] = data["validation"]
    for name, row in shown.items():
        mark = " ✓" if name == report.get("method") else ""
        where = layers_label(row["layer"], row.get("band", ())) if "layer" in row else ""
        lines.append(f"| `{md_escape(name)}`{mark} | {where} | {fmt(row.get('strength'))} | "
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
        where = (f"layers **{', '.join(str(l) for l, _ in sorted(rec.layer_plan()))}** (a band: each at the same strength)"
                 if rec.band else f"layer **{rec.layer}**")
        out.append(f"- `{md_escape(key)}`: {where}, strength **{fmt(rec.strength)}** ({unit}, "
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
                    preview: int = 5, judge: Optional[Mapping[str, Any]] = None,
                    other_models: Sequence[str] = ()) -> str:
    """Markdown card for one concept: what it is, a few pairs, recommendations, vector status.

    ``other_models``: the other models this concept has stored vectors for (vectors are per model)."""
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
    if other_models:
        lines += ["", "Also stored for: " + ", ".join(f"`{md_escape(m)}`" for m in other_models)
                  + " (each model keeps its own vectors; load it in the header to use them)."]
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
