"""Small helpers shared by the pure presentation modules (plotly + numpy, no Gradio).

Everything here is deterministic and side-effect free so it can be unit-tested without a
server or a model.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Optional, Sequence

import plotly.graph_objects as go

from app.domain.parse import parse_layers

FIG_FONT = dict(family="Inter, system-ui, sans-serif", size=12)
POS0_COLOR = "#b45309"  # amber: the attention sink, shown apart from everything else
MAIN_COLOR = "#4f46e5"  # indigo: the theme's primary hue
SECOND_COLOR = "#0d9488"  # teal
THIRD_COLOR = "#db2777"  # pink


def finite(x: Any) -> Optional[float]:
    """``float(x)`` or None for NaN / inf / non-numbers (plotly draws None as a gap)."""
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def fmt(x: Any, digits: int = 2) -> str:
    """A number for prose and tables; 'n/a' for NaN or missing values."""
    v = finite(x)
    if v is None:
        return "n/a"
    if v != 0 and (abs(v) >= 10_000 or abs(v) < 10 ** (-digits)):
        return f"{v:.{digits}g}" if abs(v) < 10_000 else f"{v:,.0f}"
    return f"{v:.{digits}f}"


def pct(x: Any) -> str:
    v = finite(x)
    return "n/a" if v is None else f"{100 * v:.0f}%"


def show_token(tok: str) -> str:
    """Make whitespace in a token piece visible: ' the' -> '·the', '\\n' -> '↵'."""
    s = str(tok)
    s = s.replace("\r", "").replace("\n", "↵").replace("\t", "⇥")
    if s.startswith(" "):
        s = "·" + s[1:]
    if s == "":
        s = "∅"
    return s


def token_axis_labels(tokens: Sequence[str], offset: int = 0) -> list[str]:
    """Unique x-axis labels for token positions (plotly merges equal category labels).

    Each label is ``"<position> <token>"`` so repeated tokens stay separate columns; ``offset`` is the
    position of the first token shown (a window of a long prompt).
    """
    return [f"{i + offset} {show_token(t)}" for i, t in enumerate(tokens)]


def md_escape(text: str) -> str:
    """Escape characters that Markdown would interpret (for user text inside cards)."""
    out = str(text)
    for ch in "\\`*_{}[]<>#|":
        out = out.replace(ch, "\\" + ch)
    return out


def shorten(text: str, limit: int = 80) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def style_figure(fig: go.Figure, title: str, x_title: str, y_title: str, height: int = 380) -> go.Figure:
    """Common look: a title, axis labels, readable margins, a legend that does not cover data."""
    fig.update_layout(
        title=dict(text=title, x=0.01, xanchor="left", font=dict(size=15)),
        height=height,
        margin=dict(l=60, r=20, t=60, b=55),
        font=FIG_FONT,
        template="plotly_white",
        legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="right", x=1.0),
        hoverlabel=dict(namelength=-1),
    )
    fig.update_xaxes(title_text=x_title)
    fig.update_yaxes(title_text=y_title)
    return fig


def empty_figure(title: str, message: str, height: int = 260) -> go.Figure:
    """A titled figure with a centred note instead of data (e.g. 'choose a concept')."""
    fig = go.Figure()
    fig.add_annotation(text=message, x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False,
                       font=dict(size=14, color="#64748b"))
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    fig.update_layout(title=dict(text=title, x=0.01, xanchor="left", font=dict(size=15)), height=height,
                      margin=dict(l=20, r=20, t=60, b=20), template="plotly_white", font=FIG_FONT)
    return fig


def parse_layer_spec(text: str, num_layers: Optional[int] = None, what: str = "layers") -> list[int]:
    """'8-20, 24' -> [8, ..., 20, 24]; empty text -> []; repeats dropped (the lab's one layer parser)."""
    return parse_layers(text, num_layers, what, repeats="drop", allow_empty=True)


def rows_or_placeholder(rows: Iterable[Sequence[Any]], width: int, note: str = "") -> list[list[Any]]:
    """Gradio tables cannot be empty in a pleasant way: show one row that says why."""
    rows = [list(r) for r in rows]
    if rows:
        return rows
    return [[note] + [""] * (width - 1)]


SENTIMENT_ROOM = 0.9  # VADER's compound score ends at ±1: above this the judge can hardly move further


def judge_room_note(kind: Any, signed_baseline: Any) -> str:
    """A warning when the unsteered answer already sits at the concept's end of a bounded judge (VADER's ±1),
    so "did not change it" means "could not show it", not "steering did nothing"."""
    try:
        value = float(signed_baseline)
    except (TypeError, ValueError):
        return ""
    if kind != "sentiment" or not value >= SENTIMENT_ROOM:
        return ""
    return (f"The unsteered answer already scores {value:+.2f} on this judge (at most +1), so it has little room "
            "to show more: read the texts, or use a prompt whose unsteered answer is more neutral.")
