"""Figures and text for the layer explorer, built from an ``Exploration`` (duck-typed).

An exploration has ``tokens`` (T pieces), ``norms`` [L, T], ``lens_top`` [L][T] -> top-k
(token, prob), optional ``projections`` [L, T], ``concept``, ``typical_norms`` [L] and
``extra["recommended_layers"]``. Layer i means "the residual stream after block i".
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np
import plotly.graph_objects as go

from app.errors import InputError
from app.domain import limits

from .common import (
    MAIN_COLOR,
    POS0_COLOR,
    SECOND_COLOR,
    empty_figure,
    finite,
    fmt,
    md_escape,
    pct,
    show_token,
    style_figure,
    token_axis_labels,
)

LAYER_AXIS = "layer (residual stream after block i)"
TOKEN_AXIS = "prompt token (position, piece; · = space, ↵ = newline)"
TEXT_IN_CELLS_MAX_TOKENS = limits.TEXT_IN_CELLS_MAX_TOKENS  # beyond this, cell labels become unreadable

HOWTO = {
    "norms": (
        "**How to read this:** each point is the average length (L2 norm) of the residual-stream vector "
        "after that layer. Position 0 is drawn separately: it is the *attention sink*, far larger than every "
        "other token, which is why steering vectors ignore it. The log scale lets both fit."
    ),
    "norm_heatmap": (
        "**How to read this:** one cell per (token, layer); brighter = longer residual vector (log colour "
        "scale, hover for the exact value). Norms grow with depth as each block adds to the stream; the "
        "bright first column is the attention sink."
    ),
    "lens": (
        "**How to read this:** the *logit lens* pushes each layer's residual through the model's final norm "
        "and output head: the cell shows the token that layer would predict *next*, colour = its probability. "
        "Early layers mostly echo the input; the real prediction usually forms in the last third."
    ),
    "lens_table": (
        "**How to read this:** the five most likely next tokens at the **last** prompt position, per layer. "
        "Watch where the final answer first appears and how its probability grows toward the top."
    ),
    "projection": (
        "**How to read this:** how far each token's residual points along the chosen concept's direction (dot "
        "product with that layer's unit vector, divided by a typical token's norm so layers compare). Red = toward "
        "the concept, blue = away, white = 0. Position 0 (the sink) may saturate; hover for exact values."
    ),
    "cosine": (
        "**How to read this:** cosine similarity between two concepts' steering vectors at each layer: 1 = same "
        "direction, 0 = unrelated, −1 = opposite. Related concepts (happy and excited) share an "
        "\"emotional vs neutral\" part, so expect clearly positive values in the middle layers."
    ),
}


def _norms(ex: Any) -> np.ndarray:
    arr = np.asarray(ex.norms, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"norms must be [layers, tokens], got shape {arr.shape}")
    return arr


def _none_if_nan(arr: np.ndarray) -> list:
    """Nested lists with NaN/inf replaced by None (JSON-safe; plotly shows gaps)."""
    if arr.ndim == 1:
        return [finite(v) for v in arr]
    return [_none_if_nan(row) for row in arr]


def _nanmean_rows(arr: np.ndarray) -> np.ndarray:
    """Row means ignoring NaN; an all-NaN row gives NaN without a warning."""
    ok = np.isfinite(arr)
    counts = ok.sum(axis=1)
    sums = np.where(ok, arr, 0.0).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def norm_profile(ex: Any) -> tuple[np.ndarray, np.ndarray]:
    """(mean norm over positions 1.. per layer, norm at position 0 per layer); NaNs ignored."""
    norms = _norms(ex)
    pos0 = norms[:, 0] if norms.shape[1] else np.full(norms.shape[0], np.nan)
    rest = norms[:, 1:]
    if rest.shape[1] == 0:
        mean_rest = np.full(norms.shape[0], np.nan)
    else:
        mean_rest = _nanmean_rows(rest)
    return mean_rest, pos0


def norms_figure(ex: Any) -> go.Figure:
    """Mean residual norm per layer, with position 0 (the attention sink) as its own line."""
    mean_rest, pos0 = norm_profile(ex)
    layers = list(range(len(pos0)))
    fig = go.Figure()
    fig.add_trace(go.Scatter(
        x=layers, y=_none_if_nan(mean_rest), mode="lines+markers", name="mean over tokens (without position 0)",
        line=dict(color=MAIN_COLOR, width=2), marker=dict(size=6),
        hovertemplate="layer %{x}<br>mean norm %{y:.1f}<extra></extra>",
    ))
    fig.add_trace(go.Scatter(
        x=layers, y=_none_if_nan(pos0), mode="lines+markers", name="position 0 (attention sink)",
        line=dict(color=POS0_COLOR, width=2, dash="dot"), marker=dict(size=6),
        hovertemplate="layer %{x}<br>position-0 norm %{y:.1f}<extra></extra>",
    ))
    typical = getattr(ex, "typical_norms", None)
    if typical is not None and len(typical) == len(layers):
        fig.add_trace(go.Scatter(
            x=layers, y=_none_if_nan(np.asarray(typical, dtype=np.float64)), mode="lines",
            name=f"typical token norm from {ex.concept or 'the concept'}'s prompts",
            line=dict(color=SECOND_COLOR, width=1.5, dash="dash"),
            hovertemplate="layer %{x}<br>typical norm %{y:.1f}<extra></extra>",
        ))
    style_figure(fig, "Residual-stream norm per layer", LAYER_AXIS, "norm (log scale)", height=360)
    fig.update_yaxes(type="log", dtick=1)  # labels at powers of ten only
    fig.update_layout(legend=dict(y=1.02))
    return fig


def parse_token_range(text: Any, n_tokens: int) -> tuple[int, int]:
    """'40-79' -> (40, 80), clipped to the prompt and to HEATMAP_TOKENS columns; empty -> the first window."""
    from app.domain.parse import parse_layers

    size = limits.HEATMAP_TOKENS
    picked = parse_layers(str(text or ""), None, "token range", repeats="drop", allow_empty=True)
    start = min(min(picked), max(n_tokens - 1, 0)) if picked else 0
    stop = min(n_tokens, (max(picked) + 1) if len(picked) > 1 else start + size, start + size)
    return start, max(stop, start + 1)


def token_window(ex: Any, start: int, stop: int) -> Any:
    """The same exploration restricted to tokens [start, stop), so dense heatmaps stay readable."""
    from types import SimpleNamespace

    proj = getattr(ex, "projections", None)
    return SimpleNamespace(
        tokens=list(ex.tokens)[start:stop], norms=np.asarray(ex.norms)[:, start:stop],
        lens_top=[row[start:stop] for row in ex.lens_top],
        projections=None if proj is None else np.asarray(proj)[:, start:stop],
        typical_norms=getattr(ex, "typical_norms", None), concept=getattr(ex, "concept", ""),
        extra=getattr(ex, "extra", None) or {}, token_offset=start)


def window_note(start: int, stop: int, n_tokens: int) -> str:
    if start == 0 and stop >= n_tokens:
        return ""
    return (f"The token × layer charts show tokens **{start}–{stop - 1} of {n_tokens}** (at most "
            f"{limits.HEATMAP_TOKENS} at once, so labels stay readable): type another range under “Tokens shown”.")


def norm_heatmap_figure(ex: Any) -> go.Figure:
    """Tokens x layers heatmap of residual norms with a log colour scale."""
    norms = _norms(ex)
    L, T = norms.shape
    with np.errstate(divide="ignore", invalid="ignore"):
        logn = np.where(norms > 0, np.log10(norms), np.nan)
    labels = token_axis_labels(ex.tokens, getattr(ex, "token_offset", 0))
    finite_vals = logn[np.isfinite(logn)]
    lo, hi = (float(finite_vals.min()), float(finite_vals.max())) if finite_vals.size else (0.0, 1.0)
    ticks = _log_ticks(lo, hi)
    fig = go.Figure(go.Heatmap(
        z=_none_if_nan(logn), x=labels, y=list(range(L)), customdata=_none_if_nan(norms),
        colorscale="Viridis", zmin=lo, zmax=hi if hi > lo else lo + 1,
        colorbar=dict(title=dict(text="norm"), tickvals=[np.log10(t) for t in ticks], ticktext=[fmt(t, 0) for t in ticks]),
        hovertemplate="layer %{y}<br>token %{x}<br>norm %{customdata:.1f}<extra></extra>",
    ))
    style_figure(fig, "Residual norm per token and layer (log colour scale)", TOKEN_AXIS, LAYER_AXIS,
                 height=_heatmap_height(L))
    fig.update_xaxes(tickangle=-60, type="category")
    return fig


def _log_ticks(lo: float, hi: float) -> list[float]:
    """Round values (1, 2, 5 x 10^k) inside [10^lo, 10^hi] for a log colour bar."""
    ticks = []
    for k in range(int(np.floor(lo)), int(np.ceil(hi)) + 1):
        for m in (1, 2, 5):
            v = m * 10.0**k
            if 10**lo <= v <= 10**hi:
                ticks.append(v)
    return ticks or [10**lo]


def _heatmap_height(num_layers: int) -> int:
    return int(min(760, max(300, 170 + 14 * num_layers)))


def lens_figure(ex: Any) -> go.Figure:
    """Logit lens: top-1 next token per (token, layer), coloured by its probability."""
    lens = ex.lens_top
    L = len(lens)
    T = len(lens[0]) if L else 0
    if L == 0 or T == 0:
        return empty_figure("Logit lens", "nothing to show: the exploration has no layers or tokens")
    probs = np.full((L, T), np.nan)
    top_tok = [["" for _ in range(T)] for _ in range(L)]
    hover = [["" for _ in range(T)] for _ in range(L)]
    for l in range(L):
        for t in range(T):
            cands = lens[l][t]
            if not cands:
                continue
            tok, p = cands[0]
            probs[l, t] = p if finite(p) is not None else np.nan
            top_tok[l][t] = show_token(tok)
            hover[l][t] = "<br>".join(f"{md_escape(show_token(c))}: {pct(q)}" for c, q in cands)
    labels = (token_axis_labels(ex.tokens, getattr(ex, "token_offset", 0))[:T] if len(ex.tokens) >= T
              else [str(i) for i in range(T)])
    show_text = T <= TEXT_IN_CELLS_MAX_TOKENS
    fig = go.Figure(go.Heatmap(
        z=_none_if_nan(probs), x=labels, y=list(range(L)), text=top_tok, customdata=hover,
        texttemplate="%{text}" if show_text else None, textfont=dict(size=9),
        colorscale="Blues", zmin=0.0, zmax=1.0, colorbar=dict(title=dict(text="p(top-1)"), tickformat=".0%"),
        hovertemplate="layer %{y}, after token %{x}<br><b>top next tokens</b><br>%{customdata}<extra></extra>",
    ))
    style_figure(fig, "Logit lens: what each layer would predict next", TOKEN_AXIS, LAYER_AXIS,
                 height=_heatmap_height(L))
    fig.update_xaxes(tickangle=-60, type="category")
    return fig


LENS_TABLE_HEADERS = ["layer", "top 1", "top 2", "top 3", "top 4", "top 5"]


def lens_last_rows(ex: Any, k: int = 5) -> list[list[Any]]:
    """Rows [layer, 'tok (p%)' x k] for the last prompt position, deepest layer first."""
    rows = []
    for l in reversed(range(len(ex.lens_top))):
        per_pos = ex.lens_top[l]
        cands = per_pos[-1] if per_pos else []
        cells = [f"{show_token(tok)}  ({pct(p)})" for tok, p in cands[:k]]
        rows.append([l] + cells + [""] * (k - len(cells)))
    return rows


def relative_projections(ex: Any) -> tuple[np.ndarray, bool]:
    """(projections, relative?): divided by the layer's typical token norm when it is known.

    Raw projections grow with depth like the residual norm does, so the last layers would
    dominate the colours; relative ones are comparable across layers (0.1 = a tenth of a
    typical token's length along the concept).
    """
    proj = np.asarray(ex.projections, dtype=np.float64)
    typical = getattr(ex, "typical_norms", None)
    if typical is not None and len(typical) == proj.shape[0]:
        t = np.asarray(typical, dtype=np.float64)[:, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(t > 0, proj / t, np.nan), True
    return proj, False


def projection_figure(ex: Any) -> go.Figure:
    """Per-token projection on the concept's unit vector, diverging colours centred on 0."""
    if getattr(ex, "projections", None) is None:
        return empty_figure("Projection on a concept",
                            "Choose a concept above and press Explore to see how each token lines up with it.")
    raw = np.asarray(ex.projections, dtype=np.float64)
    proj, relative = relative_projections(ex)
    L, T = proj.shape
    scale_part = proj[:, 1:] if T > 1 and not getattr(ex, "token_offset", 0) else proj
    vals = np.abs(scale_part[np.isfinite(scale_part)])
    m = float(np.percentile(vals, 99)) if vals.size else 1.0
    m = m if m > 0 else 1.0
    labels = token_axis_labels(ex.tokens, getattr(ex, "token_offset", 0))[:T]
    rec = (getattr(ex, "extra", None) or {}).get("recommended_layers")
    unit = "projection ÷ typical norm" if relative else "projection"
    fig = go.Figure(go.Heatmap(
        z=_none_if_nan(proj), x=labels, y=list(range(L)), customdata=_none_if_nan(raw), colorscale="RdBu",
        reversescale=True, zmid=0.0, zmin=-m, zmax=m, colorbar=dict(title=dict(text=unit.replace(" ÷ ", "<br>÷ "))),
        hovertemplate=("layer %{y}<br>token %{x}<br>" + unit + " %{z:.3f}<br>raw projection %{customdata:.1f}"
                       "<extra></extra>"),
    ))
    name = ex.concept or "concept"
    style_figure(fig, f"Projection of each token on “{name}” per layer", TOKEN_AXIS, LAYER_AXIS,
                 height=_heatmap_height(L))
    fig.update_xaxes(tickangle=-60, type="category")
    if rec and len(rec) == 2 and T > 0:
        a, b = int(rec[0]), int(rec[1])
        fig.add_shape(type="rect", xref="paper", x0=0, x1=1, y0=a - 0.5, y1=b + 0.5,
                      line=dict(color="#111827", width=1.5, dash="dot"), fillcolor="rgba(0,0,0,0)")
        fig.add_annotation(xref="paper", x=1.0, y=b + 0.5, yanchor="bottom", xanchor="right", showarrow=False,
                           text=f"recommended layers {a}–{b}", font=dict(size=11))
    return fig


def sink_ratio(ex: Any) -> Optional[tuple[int, float, float, float]]:
    """(layer, ratio, sink norm, average norm) at the middle layer: how much longer position 0 is."""
    norms = _norms(ex)
    L, T = norms.shape
    mean_rest, pos0 = norm_profile(ex)
    mid = L // 2
    if T > 1 and finite(mean_rest[mid]) and finite(pos0[mid]) and mean_rest[mid] > 0:
        return mid, float(pos0[mid] / mean_rest[mid]), float(pos0[mid]), float(mean_rest[mid])
    return None


def _first_top_layers(lens_top: Any, final_tok: str) -> tuple[int, Optional[int]]:
    """First layer whose last-position top token is ``final_tok``, and the first (if earlier) whose top token is
    the same word with other leading/trailing spaces (`·The` for `The`), which the tutorial counts as found."""
    tops = [row[-1][0][0] if row and row[-1] else None for row in lens_top]
    first = next((l for l, t in enumerate(tops) if t == final_tok), len(tops) - 1)
    word = final_tok.strip()
    word_at = next((l for l, t in enumerate(tops) if word and t is not None and t.strip() == word), None)
    return first, (word_at if word_at is not None and word_at < first else None)


def explore_summary_md(ex: Any) -> str:
    """Three or four facts a beginner can check against the charts."""
    norms = _norms(ex)
    L, T = norms.shape
    lines = [f"**{T} tokens × {L} layers.**"]
    sink = sink_ratio(ex)
    if sink is not None:
        mid, ratio, s0, avg = sink
        lines.append(f"At layer {mid} the attention sink (position 0) is **{fmt(ratio, 0)}×** longer than an "
                     f"average token ({fmt(s0, 0)} vs {fmt(avg, 0)}).")
    if L and T and ex.lens_top and ex.lens_top[-1] and ex.lens_top[-1][-1]:
        final_tok, final_p = ex.lens_top[-1][-1][0]
        first, word_at = _first_top_layers(ex.lens_top, final_tok)
        same_word = "" if word_at is None else (
            f", and the same word with other spacing, **`{show_token(ex.lens_top[word_at][-1][0][0])}`**, "
            f"already at **layer {word_at}**")
        lines.append(f"The model's next token after the prompt is **`{show_token(final_tok)}`** ({pct(final_p)}); "
                     f"the logit lens first ranks it top at **layer {first}**{same_word}." + (
                         " (`<0x..>` are raw bytes: the start of a character, such as an emoji, that is split over "
                         "several tokens.)" if "<0x" in str(final_tok) else ""))
    if getattr(ex, "projections", None) is not None:
        proj, relative = relative_projections(ex)
        rest = proj[:, 1:] if T > 1 else proj
        per_layer = _nanmean_rows(rest) if rest.size else np.full(L, np.nan)
        if np.any(np.isfinite(per_layer)):
            best = int(np.nanargmax(per_layer))
            what = "mean projection ÷ typical norm" if relative else "mean projection"
            lines.append(f"Tokens point most toward **{md_escape(ex.concept or 'the concept')}** at layer {best} "
                         f"({what} {fmt(per_layer[best], 3)}).")
        rec = (getattr(ex, "extra", None) or {}).get("recommended_layers")
        if rec:
            lines.append(f"Recommended steering layers for this concept: **{rec[0]}–{rec[1]}**.")
    return "  \n".join(lines)


def cosine_by_layer(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of two [L, H] vector stacks per layer; NaN where either is zero."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise InputError(f"the two concepts' vectors differ in shape ({a.shape} vs {b.shape}); "
                         "were they extracted for different models?")
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    dots = np.einsum("lh,lh->l", a, b)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where((na > 0) & (nb > 0), dots / (na * nb), np.nan)


def cosine_figure(cos: Sequence[float], name_a: str, name_b: str,
                  recommended: Optional[tuple[int, int]] = None) -> go.Figure:
    """Line chart of the per-layer cosine between two concepts."""
    cos = np.asarray(cos, dtype=np.float64)
    layers = list(range(len(cos)))
    fig = go.Figure(go.Scatter(
        x=layers, y=_none_if_nan(cos), mode="lines+markers", name=f"cos({name_a}, {name_b})",
        line=dict(color=MAIN_COLOR, width=2), marker=dict(size=6),
        hovertemplate="layer %{x}<br>cosine %{y:.2f}<extra></extra>",
    ))
    fig.add_hline(y=0, line=dict(color="#94a3b8", width=1))
    if recommended:
        a, b = recommended
        fig.add_vrect(x0=a - 0.5, x1=b + 0.5, fillcolor="#fde68a", opacity=0.35, line_width=0,
                      annotation_text="recommended layers", annotation_position="top left")
    style_figure(fig, f"Cosine similarity of “{name_a}” and “{name_b}” per layer", LAYER_AXIS,
                 "cosine similarity", height=340)
    fig.update_yaxes(range=[-1.05, 1.05])
    return fig


def cosine_summary_md(cos: Sequence[float], name_a: str, name_b: str) -> str:
    cos = np.asarray(cos, dtype=np.float64)
    if not np.any(np.isfinite(cos)):
        return f"No cosine could be computed for {md_escape(name_a)} and {md_escape(name_b)} (zero vectors)."
    L = len(cos)
    lo, hi = L // 4, max(L // 4 + 1, (3 * L) // 4)
    mid = cos[lo:hi]
    mid_mean = np.nanmean(mid) if np.any(np.isfinite(mid)) else np.nan
    best = int(np.nanargmax(cos))
    return (f"Mean cosine over the middle layers ({lo}–{hi - 1}): **{fmt(mid_mean)}**; highest **{fmt(cos[best])}** "
            f"at layer {best}. Above ~0.5 the two concepts push the model in a largely shared direction.")
