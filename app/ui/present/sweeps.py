"""Sweep results as heatmaps, line charts, tables and downloads (pure: no Gradio, no model).

Functions take the plain dict of ``SweepResult.as_dict()`` (layers, strengths, cells, baseline,
recommended), which is also what the UI keeps in its state and offers for download. A sweep
with a judge leads with the judge change (the independent readout); the projection on the
concept's own vector stays as a secondary panel, "moved along the vector".
"""

from __future__ import annotations

import json
import math
from typing import Any, Mapping, Optional, Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from app.ui.present.common import md_escape as md_text
from app.ui.present.common import finite as _num  # one rule: a finite float or None
from app.ui.present.common import judge_room_note

METRICS: dict[str, tuple[str, str]] = {
    # cell field -> (title, colorscale); the titles say which way is good
    "judge_score": ("Judge change vs baseline<br>(higher = more concept)", "RdBu_r"),
    "concept_score": ("Moved along the vector<br>(not a judge)", "RdBu_r"),
    "ppl_ratio": ("Perplexity ratio to baseline<br>(≈1 = as plausible; ≪1 often = looping)", "YlOrRd"),
    "distinct2": ("Distinct-2<br>(low = repetitive)", "Viridis"),
}

TABLE_HEADERS = ["layer", "strength", "judge Δ", "vector", "ppl×", "d-2", "ok", "text"]
TABLE_WIDTHS = ["8%", "10%", "9%", "9%", "8%", "7%", "7%", "42%"]


def as_sweep_dict(result: Any) -> dict:
    return result.as_dict() if hasattr(result, "as_dict") else dict(result)


def is_judged(data: Mapping[str, Any]) -> bool:
    return any(c.get("judge_score") is not None for c in data.get("cells") or [])


def fields_for(data: Mapping[str, Any]) -> tuple[str, ...]:
    """The panels to draw: the judge change first when the sweep has a judge."""
    rest = ("concept_score", "ppl_ratio", "distinct2")
    return ("judge_score",) + rest if is_judged(data) else rest


def cell_label(layer: Any, strength: Any) -> str:
    return f"L{int(layer)} · {float(strength):g}"


def find_cell(data: Mapping[str, Any], layer: Any, strength: Any) -> Optional[Mapping[str, Any]]:
    for c in data.get("cells") or []:
        if int(c["layer"]) == int(layer) and math.isclose(float(c["strength"]), float(strength), abs_tol=1e-9):
            return c
    return None


def grid(data: Mapping[str, Any], field: str) -> list[list[Optional[float]]]:
    """[len(layers)][len(strengths)] of one cell field (None where a cell is missing)."""
    layers, strengths = list(data["layers"]), list(data["strengths"])
    g: list[list[Optional[float]]] = [[None] * len(strengths) for _ in layers]
    for c in data.get("cells") or []:
        try:
            i, j = layers.index(int(c["layer"])), strengths.index(float(c["strength"]))
        except ValueError:
            continue
        g[i][j] = _num(c.get(field))
    return g


def _axes(data: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    return [f"{float(s):g}" for s in data["strengths"]], [f"L{int(l)}" for l in data["layers"]]


def _hover(data: Mapping[str, Any]) -> list[list[str]]:
    layers, strengths = list(data["layers"]), list(data["strengths"])
    h = [["" for _ in strengths] for _ in layers]
    for c in data.get("cells") or []:
        try:
            i, j = layers.index(int(c["layer"])), strengths.index(float(c["strength"]))
        except ValueError:
            continue
        text = (c.get("text") or "").replace("\n", " ")
        text = text[:90] + ("…" if len(text) > 90 else "")
        judge = _num(c.get("judge_score"))
        lead = f"judge {judge:+.3f} · " if judge is not None else ""
        h[i][j] = (f"{lead}vector {(_num(c.get('concept_score')) or 0):+.3f} · ppl× {(_num(c.get('ppl_ratio')) or 0):.2f}"
                   f" · d2 {(_num(c.get('distinct2')) or 0):.2f} · {'coherent' if c.get('coherent') else 'INCOHERENT'}"
                   f"<br>{_html_text(verdict_text(c))}<br>{_html_text(text)}")
    return h


def verdict_text(c: Mapping[str, Any]) -> str:
    """Which coherence rule decided this cell, in words (older results carry only the yes/no)."""
    reason = str(c.get("verdict") or "").strip()
    if reason:
        return reason
    return "coherent" if c.get("coherent") else "incoherent (this result was saved before verdicts had reasons)"


def _html_text(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def incoherent_cells(data: Mapping[str, Any]) -> list[tuple[int, float]]:
    return [(int(c["layer"]), float(c["strength"])) for c in data.get("cells") or [] if not c.get("coherent")]


def recommended_cell(data: Mapping[str, Any]) -> Optional[tuple[int, float]]:
    rec = data.get("recommended")
    if not rec:
        return None
    if isinstance(rec, Mapping):
        return int(rec["layer"]), float(rec["strength"])
    return int(rec[0]), float(rec[1])


def _cell_texts(data: Mapping[str, Any], z: list[list[Optional[float]]]) -> list[list[str]]:
    """Each cell's value, with ★ on the recommended cell and ✕ on incoherent ones."""
    layers, strengths = list(data["layers"]), list(data["strengths"])
    rec = recommended_cell(data)
    bad = set(incoherent_cells(data))
    out = []
    for i, l in enumerate(layers):
        row = []
        for j, s in enumerate(strengths):
            v = z[i][j]
            t = "–" if v is None else f"{v:.2f}"
            if rec is not None and rec[0] == l and math.isclose(rec[1], float(s)):
                t = "★ " + t
            if (int(l), float(s)) in bad:
                t += " ✕"
            row.append(t)
        out.append(row)
    return out


def _hatch_shapes(data: Mapping[str, Any], axis_suffix: str) -> list[dict]:
    """Diagonal hatching over incoherent cells (categorical axes: cell k spans k-0.5..k+0.5)."""
    layers, strengths = list(data["layers"]), list(data["strengths"])
    shapes = []
    for l, s in incoherent_cells(data):
        try:
            i, j = layers.index(l), strengths.index(s)
        except ValueError:
            continue
        x0, y0 = j - 0.5, i - 0.5
        for c in (-0.66, -0.33, 0.0, 0.33, 0.66):  # lines u - v = c inside the unit cell
            (u0, v0), (u1, v1) = ((c, 0.0), (1.0, 1.0 - c)) if c >= 0 else ((0.0, -c), (1.0 + c, 1.0))
            shapes.append(dict(type="line", xref=f"x{axis_suffix}", yref=f"y{axis_suffix}",
                               x0=x0 + u0, y0=y0 + v0, x1=x0 + u1, y1=y0 + v1,
                               line=dict(color="rgba(17,24,39,0.4)", width=1.5)))
    return shapes


def heatmap_figure(data: Mapping[str, Any], fields: Optional[Sequence[str]] = None) -> go.Figure:
    """One heatmap per metric (rows = layers, columns = strengths); ★ = recommended, hatched ✕ = incoherent."""
    data = as_sweep_dict(data)
    fields = tuple(fields or fields_for(data))
    x, y = _axes(data)
    hover = _hover(data)
    fig = make_subplots(rows=1, cols=len(fields), subplot_titles=[METRICS[f][0] for f in fields],
                        horizontal_spacing=0.1)
    shapes: list[dict] = []
    for k, field in enumerate(fields, start=1):
        z = grid(data, field)
        kw: dict[str, Any] = {}
        if field in ("concept_score", "judge_score"):
            vals = [abs(v) for row in z for v in row if v is not None]
            m = max(vals) if vals else 1.0
            kw = dict(zmid=0, zmin=-m, zmax=m)
        if field == "ppl_ratio":
            top = max((v for row in z for v in row if v is not None), default=3.0)
            kw = dict(zmin=0.5, zmax=max(3.0, min(6.0, top)))  # beyond 6x is "broken" anyway; keep the low end readable
        if field == "distinct2":
            kw = dict(zmin=0.0, zmax=1.0)
        fig.add_trace(
            go.Heatmap(z=z, x=x, y=y, colorscale=METRICS[field][1], customdata=hover, name=field,
                       text=_cell_texts(data, z), texttemplate="%{text}", textfont=dict(size=12),
                       hovertemplate="%{y} @ %{x}<br>%{customdata}<extra></extra>", xgap=2, ygap=2,
                       colorbar=dict(len=0.9, thickness=10),
                       **kw),
            row=1, col=k)
        shapes += _hatch_shapes(data, "" if k == 1 else str(k))
        fig.update_xaxes(title_text="strength", type="category", row=1, col=k)
        fig.update_yaxes(type="category", row=1, col=k, title_text="layer" if k == 1 else None)
    for k in range(1, len(fields) + 1):  # each colour bar just right of its own panel
        domain = fig.layout["xaxis" if k == 1 else f"xaxis{k}"].domain
        fig.data[[i for i, t in enumerate(fig.data) if t.type == "heatmap"][k - 1]].colorbar.x = domain[1] + 0.008
    fig.update_layout(height=max(340, 110 + 34 * len(y)), margin=dict(l=50, r=30, t=80, b=50), shapes=shapes,
                      template="plotly_white", showlegend=False)
    _small_titles(fig)
    return fig


def _small_titles(fig: go.Figure) -> None:
    """Two-line panel titles in a smaller font, so four panels side by side do not run into each other."""
    fig.update_annotations(font=dict(size=12))


def is_one_dimensional(data: Mapping[str, Any]) -> bool:
    return len(data["layers"]) == 1 or len(data["strengths"]) == 1


def line_figure(data: Mapping[str, Any]) -> go.Figure:
    """For a 1-D sweep: the metrics along the swept axis; ✕ marks incoherent points."""
    data = as_sweep_dict(data)
    along_layers = len(data["strengths"]) == 1 and len(data["layers"]) > 1
    xs = list(data["layers"]) if along_layers else list(data["strengths"])
    fixed = data["strengths"][0] if along_layers else data["layers"][0]
    cells = []
    for x in xs:
        c = find_cell(data, x, fixed) if along_layers else find_cell(data, fixed, x)
        cells.append(c or {})
    fields = fields_for(data)
    fig = make_subplots(rows=1, cols=len(fields), subplot_titles=[METRICS[f][0] for f in fields], horizontal_spacing=0.08)
    rec = recommended_cell(data)
    for k, field in enumerate(fields, start=1):
        ys = [_num(c.get(field)) for c in cells]
        symbols = ["circle" if c.get("coherent") else "x" for c in cells]
        colors = ["#4f46e5" if c.get("coherent") else "#dc2626" for c in cells]
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers", name=field, showlegend=False,
                                 marker=dict(symbol=symbols, color=colors, size=10),
                                 line=dict(color="#4f46e5")), row=1, col=k)
        if rec is not None:
            rx = rec[0] if along_layers else rec[1]
            if rx in xs:
                fig.add_trace(go.Scatter(x=[rx], y=[ys[xs.index(rx)]], mode="markers", name="recommended",
                                         marker=dict(symbol="star", size=18, color="#facc15",
                                                     line=dict(width=1.5, color="#111827")),
                                         showlegend=(k == 1)), row=1, col=k)
        fig.update_xaxes(title_text="layer" if along_layers else "strength", row=1, col=k)
        if field == "distinct2":
            fig.update_yaxes(range=[0, 1.05], row=1, col=k)
    what = f"strength {float(fixed):g}" if along_layers else f"layer {int(fixed)}"
    ref = (data.get("judge") or {}).get("prompted_change")
    if ref is not None and "judge_score" in fields:  # prompting instead of steering, as a reference line
        fig.add_hline(y=float(ref), line=dict(color="#059669", dash="dash"), row=1, col=1,
                      annotation_text="prompted", annotation_position="top left")
    fig.update_layout(height=370, margin=dict(l=40, r=20, t=110, b=50), template="plotly_white",
                      title=dict(text=f"Along the sweep (fixed {what}); red ✕ = incoherent", font=dict(size=13)),
                      legend=dict(orientation="h", y=-0.3, x=0))
    _small_titles(fig)
    return fig


def cells_table(data: Mapping[str, Any]) -> list[list[Any]]:
    rows = []
    for c in data.get("cells") or []:
        text = (c.get("text") or "").replace("\n", " ")
        rows.append([
            int(c["layer"]), float(c["strength"]),
            round(_num(c["judge_score"]), 3) if _num(c.get("judge_score")) is not None else "–",
            round(_num(c.get("concept_score")) or 0.0, 3),
            round(_num(c.get("ppl_ratio")) or 0.0, 2), round(_num(c.get("distinct2")) or 0.0, 2),
            "yes" if c.get("coherent") else "NO ✕",
            text[:120] + ("…" if len(text) > 120 else ""),
        ])
    return rows


def _signed(judge: Mapping[str, Any]) -> Optional[float]:
    """The baseline's judge score with the concept's sign (higher = more concept); the sweep stores it raw."""
    raw, sign = judge.get("baseline_raw"), judge.get("sign")
    try:
        return float(raw) * float(sign if sign is not None else 1)
    except (TypeError, ValueError):
        return None


def summary_markdown(data: Mapping[str, Any], concept: str) -> str:
    rec = recommended_cell(data)
    n = len(data.get("cells") or [])
    bad = len(incoherent_cells(data))
    mode = "relative" if data.get("relative", True) else "absolute"
    nl, ns = len(data["layers"]), len(data["strengths"])
    head = (f"**{n} cells** ({nl} layer{'s' * (nl != 1)} × {ns} strength{'s' * (ns != 1)}, {mode} strength) in "
            f"{data.get('seconds', 0):g} s; concept read at layer {data.get('read_layer')}. "
            f"{bad} incoherent (hatched, ✕).")
    judge = data.get("judge") or {}
    if judge:
        head += f"\n\nJudge: {_html_text(str(judge.get('label', '')))}."
        if judge.get("prompted_change") is not None:
            head += (f" Prompting instead (no steering, the concept's system prompt) changes it by "
                     f"**{float(judge['prompted_change']):+.3f}**: a cell must beat that to be worth steering.")
        room = judge_room_note(judge.get("kind"), _signed(judge))
        if room:
            head += f" ⚠ {room}"
    if rec is None:
        advice = ("Try other layers, or strengths between the coherent and the incoherent (✕) ones." if bad
                  else "Try other layers or stronger settings.")
        return head + f"\n\n**No recommended setting:** no coherent cell moved the text toward the concept. {advice}"
    by = "the largest judge change" if is_judged(data) else "the highest concept score (no judge: moved along the vector)"
    return head + f"\n\n**Recommended (★): layer {rec[0]}, strength {rec[1]:g}** for `{concept}` — the coherent cell " \
                  f"with {by}."


def cell_markdown(data: Mapping[str, Any], layer: Any, strength: Any) -> str:
    c = find_cell(data, layer, strength)
    if c is None:
        return "Pick a cell to read its text."
    rec = recommended_cell(data)
    star = " ★ recommended" if rec and rec[0] == int(layer) and math.isclose(rec[1], float(strength)) else ""
    verdict = "coherent" if c.get("coherent") else "**incoherent**"
    return "\n".join([
        f"### Layer {int(c['layer'])}, strength {float(c['strength']):g}{star}",
        (f"judge change **{_num(c['judge_score']):+.3f}** · " if _num(c.get("judge_score")) is not None else "") +
        f"moved along the vector {(_num(c.get('concept_score')) or 0):+.3f} · perplexity ratio "
        f"{(_num(c.get('ppl_ratio')) or 0):.2f} · distinct-2 {(_num(c.get('distinct2')) or 0):.2f} · longest repeat "
        f"{c.get('longest_repeat', 0)} · finish {c.get('finish', '?')} · {verdict}",
        "",
        f"**Verdict:** {md_text(verdict_text(c))}.",
        "",
        "**Steered:**",
        "",
        _quote(c.get("text") or ""),
        "",
        "**Baseline:**",
        "",
        _quote(data.get("baseline_text") or ""),
    ] + (["", "**Prompted (no steering, the concept's system prompt):**", "", _quote(data["prompted_text"])]
         if data.get("prompted_text") is not None else []))


def _quote(text: str) -> str:
    safe = _html_text(text)
    return "\n".join("> " + line for line in (safe or "(empty)").splitlines()) or "> (empty)"


def sweep_record(data: Mapping[str, Any], concept: str, prompt: str, max_tokens: int) -> dict:
    return {"concept": concept, "prompt": prompt, "max_tokens": max_tokens, **as_sweep_dict(data)}


def sweep_json(record: Mapping[str, Any]) -> str:
    return json.dumps(record, indent=2, ensure_ascii=False, default=str)


def sweep_markdown(record: Mapping[str, Any]) -> str:
    lines = [f"# Sweep: {record.get('concept', '?')}", "", f"**Prompt:** {record.get('prompt', '')}", "",
             summary_markdown(record, str(record.get("concept", "?"))), "", "## Cells", "",
             "| " + " | ".join(TABLE_HEADERS) + " |", "|" + "---|" * len(TABLE_HEADERS)]
    for row in cells_table(record):
        row = list(row)
        row[-1] = str(row[-1]).replace("|", "\\|")
        lines.append("| " + " | ".join(str(v) for v in row) + " |")
    lines += ["", "## Baseline", "", record.get("baseline_text") or "(empty)", ""]
    return "\n".join(lines)


def cosine_figure(slugs: Sequence[str], matrix: Any, layer: int) -> go.Figure:
    """Cosine similarity of concept directions at one layer (the concept mixer's 'how alike are they?')."""
    z = [[_num(v) for v in row] for row in (matrix.tolist() if hasattr(matrix, "tolist") else matrix)]
    names = [str(s) for s in slugs]
    fig = go.Figure(go.Heatmap(
        z=z, x=names, y=names, zmin=-1, zmax=1, zmid=0, colorscale="RdBu_r", texttemplate="%{z:.2f}",
        hovertemplate="cos(%{y}, %{x}) = %{z:.3f}<extra></extra>", colorbar=dict(thickness=10)))
    fig.update_layout(title=dict(text=f"Cosine similarity of the concept directions at layer {int(layer)}",
                                 font=dict(size=13)),
                      height=max(280, 90 + 45 * len(names)), margin=dict(l=60, r=20, t=50, b=40),
                      template="plotly_white", yaxis=dict(autorange="reversed", type="category"),
                      xaxis=dict(type="category"))
    return fig
