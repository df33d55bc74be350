"""Side-by-side results as HTML, badges and downloads (pure: no Gradio, no model).

Everything here takes plain values or duck-typed result objects (``ComparisonChunk``-like:
``baseline_pieces``, ``steered_pieces``, ``*_scores``, ``divergence``, ``done``, ``stats``), so it
is unit-tested without a server and shared by the playground and the concept mixer.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

from app.domain.parse import parse_layer_plan  # noqa: F401  (the one layer:strength parser)
from app.domain.parse import parse_mix as parse_mix_text  # noqa: F401  (the one mix parser)
from app.domain.repetition import blame_steering, find_repetition, repeating_tail  # noqa: F401
from app.ui.present.common import finite as _finite  # one rule: a finite float or None
from app.ui.present.common import judge_room_note

# Diverging colours: blue = less of the concept than the baseline's average, amber = more.
NEG_RGB = (59, 130, 246)
POS_RGB = (245, 158, 11)
MAX_ALPHA = 0.75

FINISH_BADGES: dict[str, tuple[str, str]] = {
    # finish reason -> (css level, text)
    "eos": ("ok", "OK — finished its answer"),
    "length": ("ok", "OK — reached max tokens"),
    "loop": ("bad", "repetition loop — strength too high?"),
    "nan": ("bad", "NaN — the numbers blew up; lower the strength"),
    "cancelled": ("warn", "stopped — partial answer"),
}


# ---- colours -----------------------------------------------------------------------------
@dataclass(frozen=True)
class ColorScale:
    """Where a score is neutral (centre) and how far from it is full colour (span)."""

    center: float = 0.0
    span: float = 1.0

    def intensity(self, value: Any) -> float:
        """Signed intensity in [-1, 1]; 0 for missing or non-finite scores."""
        v = _finite(value)
        if v is None or self.span <= 0:
            return 0.0
        return max(-1.0, min(1.0, (v - self.center) / self.span))


def color_scale(baseline_scores: Sequence[Any], steered_scores: Sequence[Any]) -> ColorScale:
    """Centre on the baseline's mean projection, span = the largest deviation seen (robustly)."""
    base = [v for v in (_finite(x) for x in baseline_scores) if v is not None]
    both = base + [v for v in (_finite(x) for x in steered_scores) if v is not None]
    if not both:
        return ColorScale()
    center = sum(base) / len(base) if base else 0.0
    devs = sorted(abs(v - center) for v in both)
    span = devs[min(len(devs) - 1, int(0.95 * len(devs)))]  # 95th percentile: one outlier does not wash out the rest
    return ColorScale(center, span if span > 1e-6 else 1.0)


def score_rgba(value: Any, scale: ColorScale) -> tuple[int, int, int, float]:
    """Background colour for a token: amber for more concept, blue for less, clear at the centre."""
    t = scale.intensity(value)
    rgb = POS_RGB if t >= 0 else NEG_RGB
    return rgb[0], rgb[1], rgb[2], round(abs(t) * MAX_ALPHA, 3)


def _css_rgba(rgba: tuple[int, int, int, float]) -> str:
    r, g, b, a = rgba
    return f"rgba({r},{g},{b},{a})"


# ---- tokens ------------------------------------------------------------------------------
def tokens_html(
    pieces: Sequence[str],
    scores: Sequence[Any] = (),
    divergence: Optional[int] = None,
    scale: Optional[ColorScale] = None,
    colored: bool = True,
    gates: Sequence[Any] = (),
) -> str:
    """One pane's tokens as escaped spans; tokens from ``divergence`` on are marked, the first outlined.

    ``gates`` (conditional steering): 1 where the condition was open at the position that produced
    the token (marked with a green bar), 0 where it was shut (a grey one)."""
    out: list[str] = []
    for i, piece in enumerate(pieces):
        classes = ["tok"]
        gate = _finite(gates[i]) if i < len(gates) else None
        if gate is not None:
            classes.append("tok-gate-open" if gate > 0 else "tok-gate-shut")
        if divergence is not None and i >= divergence:
            classes.append("tok-diverge" if i == divergence else "tok-after")
        score = _finite(scores[i]) if i < len(scores) else None
        title = f"token {i}"
        if score is not None:
            title += f" · projection {score:+.3f}"
        if divergence is not None and i == divergence:
            title += " · first token that differs from the baseline"
        if gate is not None:
            title += " · condition open: steered here" if gate > 0 else " · condition shut: not steered here"
        style = ""
        if colored and scale is not None and score is not None:
            style = f' style="background:{_css_rgba(score_rgba(score, scale))}"'
        text = html.escape(piece, quote=True) if piece else ""
        out.append(f'<span class="{" ".join(classes)}" title="{html.escape(title, quote=True)}"{style}>{text}</span>')
    return "".join(out)


def pane_html(title: str, pieces: Sequence[str], scores: Sequence[Any] = (), divergence: Optional[int] = None,
              scale: Optional[ColorScale] = None, colored: bool = True, placeholder: str = "", pane_id: str = "",
              gates: Sequence[Any] = ()) -> str:
    body = tokens_html(pieces, scores, divergence, scale, colored, gates) if pieces else \
        f'<span class="pane-empty">{html.escape(placeholder)}</span>'
    ident = f' id="{html.escape(pane_id, quote=True)}"' if pane_id else ""
    return (f'<div class="pane-wrap"{ident}><div class="pane-title">{html.escape(title)}</div>'
            f'<div class="pane">{body}</div></div>')


def empty_panes(message: str = "Press Generate to see the answers here.") -> tuple[str, str]:
    return (pane_html("Baseline (no steering)", [], placeholder=message),
            pane_html("Steered", [], placeholder=message))


# ---- badges and summaries ----------------------------------------------------------------
def looks_repetitive(pieces: Sequence[str]) -> bool:
    """The lab's one repetition rule (app.domain.repetition) on a pane's token pieces."""
    return find_repetition(pieces) is not None


def finish_badge(stats: Mapping[str, Any], done: bool = True, steered_pieces: Sequence[str] = (),
                 baseline_pieces: Sequence[str] = ()) -> tuple[str, str]:
    """(level, text) for the steered answer: ok / warn / bad."""
    finish = str(stats.get("steered_finish") or "")
    if not done and finish in ("", "length"):
        return "warn", "generating…"
    if finish in ("eos", "length"):
        rep = find_repetition(steered_pieces)
        if blame_steering(rep, find_repetition(baseline_pieces)):
            assert rep is not None
            return "warn", f"repetitive — {rep.reason()}; strength too high?"
    if finish in FINISH_BADGES:
        return FINISH_BADGES[finish]
    if stats.get("steered_degenerate"):
        return "bad", "degenerate output — strength too high?"
    return ("ok", "OK") if done else ("warn", "generating…")


def badge_html(level: str, text: str) -> str:
    return f'<span class="badge badge-{html.escape(level)}">{html.escape(text)}</span>'


def _fmt(x: Any) -> str:
    v = _finite(x)
    return f"{v:g}" if v is not None else str(x)


def settings_text(settings: Mapping[str, Any]) -> str:
    """One line that says exactly what was steered, e.g. 'happy · L12 @ 0.3 (relative, added to the residual)'."""
    if not settings:
        return ""
    layers = ", ".join(f"L{e.get('layer')} @ {_fmt(e.get('strength'))}" for e in settings.get("layers") or [])
    op = settings.get("op") or "add"
    if op != "add":
        ls = [e.get("layer") for e in settings.get("layers") or []]
        layers = ", ".join(f"L{l}" for l in ls) if len(ls) <= 4 else f"L{min(ls)}–L{max(ls)} ({len(ls)} layers)"
        layers += f" {op} {settings.get('op_param_name', 'param')}={_fmt(settings.get('op_param'))}"
    if op == "add":  # strength units and mechanism only mean something for addition
        mech = "logits mix" if settings.get("mode") == "logits" else "added to the residual"
        layers += f" ({settings.get('strength_mode', 'relative')}, {mech})"
    parts = [str(settings.get("label") or settings.get("concept") or "?"), layers]
    if settings.get("condition"):
        parts.append(f"only where {settings['condition']} > {_fmt(settings.get('threshold'))} x typical")
    if settings.get("mode") == "logits":
        parts.append(f"guidance {_fmt(settings.get('guidance'))}")
    if settings.get("schedule") and settings.get("schedule") != "constant":
        parts.append(f"{settings['schedule']} over {settings.get('schedule_length')} tokens")
    if settings.get("positions") and settings.get("positions") != "all":
        parts.append(f"{settings['positions']} positions only")
    temp = _finite(settings.get("temperature"))
    parts.append("greedy" if not temp else f"temperature {temp:g}, top-p {_fmt(settings.get('top_p'))}, seed {settings.get('seed')}")
    penalty = _finite(settings.get("repetition_penalty"))
    if penalty and penalty != 1.0:
        parts.append(f"repetition penalty {penalty:g}")
    if settings.get("source") and settings.get("source") != "request":
        parts.append(f"setting: {settings['source']}")
    return " · ".join(parts)


def status_html(stats: Mapping[str, Any], settings: Mapping[str, Any], done: bool, max_tokens: Optional[int] = None,
                steered_pieces: Sequence[str] = (), baseline_pieces: Sequence[str] = ()) -> str:
    level, text = finish_badge(stats, done, steered_pieces, baseline_pieces)
    bits = [badge_html(level, text)]
    base_finish = stats.get("baseline_finish")
    if done and base_finish in ("loop", "nan"):
        bits.append(badge_html("warn", f"the baseline itself ended in a {base_finish}"))
    step = stats.get("step")
    if step is not None:
        bits.append(f'<span class="stat">token {int(step)}{f"/{max_tokens}" if max_tokens else ""}</span>')
    tps = _finite(stats.get("decode_tok_per_s"))
    if tps is not None:
        rows = stats.get("batch_rows")
        bits.append(f'<span class="stat">{tps:.1f} tok/s{f" ({rows} rows in one batch)" if rows else ""}</span>')
    line = settings_text(settings)
    settings_part = f'<div class="settings-line">{html.escape(line)}</div>' if line else ""
    return f'<div class="run-status">{" ".join(bits)}</div>{settings_part}'


def judge_html(judge: Optional[Mapping[str, Any]]) -> str:
    """The concept's independent judge on each row (higher = more concept) and what steering did."""
    if not judge:
        return ""
    rows = [f"{name} <b>{float(judge[name]):+.3f}</b>" for name in ("baseline", "prompted", "steered")
            if _finite(judge.get(name)) is not None]
    change = _finite(judge.get("steered_change"))
    bits = []
    if change is not None:
        if change > 0:
            bits.append(badge_html("ok", f"judge: steered moved it the right way ({change:+.3f})"))
        elif change < 0:
            bits.append(badge_html("bad", f"judge: steered moved it the WRONG way ({change:+.3f})"))
        else:
            bits.append(badge_html("warn", "judge: steering did not change it"))
    pc = _finite(judge.get("prompted_change"))
    if pc is not None and change is not None:
        if change <= 0 and pc <= 0:  # e.g. an ablation that changed nothing next to a prompt that moved it back
            better = "neither steering nor prompting moved it the right way"
        else:
            better = "steering beat prompting" if change > pc else "prompting did at least as well as steering"
        bits.append(f'<span class="stat">{html.escape(better)} (prompted {pc:+.3f})</span>')
    acc = _finite(judge.get("accuracy"))
    label = str(judge.get("label") or judge.get("kind") or "judge")
    acc_txt = f"; held-out accuracy {acc:.2f}" if acc is not None and "accuracy" not in label else ""
    room = judge_room_note(judge.get("kind"), judge.get("baseline"))
    room_html = f'<div class="judge-detail judge-room">{html.escape(room)}</div>' if room else ""
    return (f'<div class="judge-line">{" ".join(bits)}<div class="judge-detail">{html.escape(label + acc_txt)}: '
            f'{" · ".join(rows)}</div>{room_html}</div>')


def prompted_html(text: Optional[str], system: Optional[str]) -> str:
    """The unsteered answer under the concept's own system prompt (steering vs prompting)."""
    if text is None:
        return ""
    sp = f" — system prompt: “{html.escape(system)}”" if system else ""
    body = html.escape(text) if text else "(no tokens yet)"
    return (f'<details class="prompted-pane" open><summary>Prompted instead of steered (no steering){sp}</summary>'
            f'<div class="pane-body">{body}</div></details>')


def divergence_text(divergence: Optional[int], done: bool) -> str:
    if divergence is None:
        return "identical so far" if not done else "the answers are identical (no token differs)"
    return f"the answers differ from token {divergence} on (outlined)"


def legend_html(read_layer: Optional[int] = None) -> str:
    where = f" at layer {read_layer}" if read_layer is not None else ""
    return (
        '<div class="tok-legend">'
        f'Colour = each token\'s projection on the concept direction{where}, relative to the baseline\'s average: '
        f'<span class="sw" style="background:{_css_rgba((*POS_RGB, MAX_ALPHA))}">more concept</span> '
        f'<span class="sw" style="background:{_css_rgba((*NEG_RGB, MAX_ALPHA))}">less concept</span>. '
        '<span class="tok-diverge">Outlined</span>: the first token that differs; '
        '<span class="tok-after">underlined</span>: everything after it. Hover a token for its value.'
        "</div>"
    )


# ---- one streaming update -> both panes + status ----------------------------------------------
@dataclass(frozen=True)
class ComparisonView:
    baseline_html: str
    steered_html: str
    status_html: str


def render_comparison(chunk: Any, settings: Mapping[str, Any], max_tokens: Optional[int] = None,
                      colored: bool = True) -> ComparisonView:
    """Both panes coloured on one shared scale, with the divergence marked in each."""
    scale = color_scale(chunk.baseline_scores, chunk.steered_scores)
    div = chunk.divergence
    read = None
    for e in (settings or {}).get("layers") or []:
        read = e.get("layer") if read is None else min(read, e.get("layer"))
    done = bool(chunk.done)
    base = pane_html("Baseline (no steering)", chunk.baseline_pieces, chunk.baseline_scores, div, scale, colored,
                     placeholder="(no tokens yet)")
    steer = pane_html("Steered", chunk.steered_pieces, chunk.steered_scores, div, scale, colored,
                      placeholder="(no tokens yet)", gates=getattr(chunk, "steered_gates", None) or ())
    status = status_html(chunk.stats or {}, settings or {}, done, max_tokens, chunk.steered_pieces,
                         chunk.baseline_pieces)
    status += f'<div class="diverge-line">{html.escape(divergence_text(div, done))}</div>{legend_html(read)}'
    status += judge_html((chunk.stats or {}).get("judge"))
    status += prompted_html(getattr(chunk, "prompted_text", None), (settings or {}).get("prompted_system"))
    return ComparisonView(base, steer, status)


def streaming_pane_html(title: str, pieces: Sequence[str], pane_id: str = "") -> str:
    """A pane as plain escaped text that only ever grows at its end (closing tags left to the
    browser's parser), so each streaming update sends just the new text; see app.ui.streaming."""
    ident = f' id="{html.escape(pane_id, quote=True)}"' if pane_id else ""
    body = "".join(html.escape(p, quote=True) for p in pieces) if pieces else ""
    return (f'<div class="pane-wrap"{ident}><div class="pane-title">{html.escape(title)}</div>'
            f'<div class="pane pane-streaming">{body}')


def streaming_view(chunk: Any, settings: Mapping[str, Any], max_tokens: Optional[int] = None) -> ComparisonView:
    """While tokens arrive: both answers as plain text and the status line (colours come at the end)."""
    done = bool(chunk.done)
    status = status_html(chunk.stats or {}, settings or {}, done, max_tokens, chunk.steered_pieces,
                         chunk.baseline_pieces)
    status += f'<div class="diverge-line">{html.escape(divergence_text(chunk.divergence, done))}</div>'
    return ComparisonView(streaming_pane_html("Baseline (no steering)", chunk.baseline_pieces),
                          streaming_pane_html("Steered", chunk.steered_pieces), status)


# ---- downloads ---------------------------------------------------------------------------
def comparison_record(chunk: Any, settings: Mapping[str, Any], prompt: str, system: Optional[str] = None) -> dict:
    """Everything needed to reproduce and read a run, as plain JSON-able data."""
    return {
        "prompt": prompt,
        "system": system or None,
        "settings": dict(settings or {}),
        "baseline": chunk.baseline_text,
        "steered": chunk.steered_text,
        "prompted": getattr(chunk, "prompted_text", None),
        "divergence": chunk.divergence,
        "baseline_tokens": list(chunk.baseline_pieces),
        "steered_tokens": list(chunk.steered_pieces),
        "baseline_scores": [_finite(x) for x in chunk.baseline_scores],
        "steered_scores": [_finite(x) for x in chunk.steered_scores],
        "stats": dict(chunk.stats or {}),
        "steered_gates": list(getattr(chunk, "steered_gates", None) or []),
        "applied": list(getattr(chunk, "applied", None) or []),
        "effects": list(getattr(chunk, "effects", None) or []),
    }


def comparison_json(record: Mapping[str, Any]) -> str:
    return json.dumps(record, indent=2, ensure_ascii=False, default=str)


def _quote_block(text: str) -> str:
    return "\n".join("> " + line for line in (text or "(empty)").splitlines()) or "> (empty)"


def comparison_markdown(record: Mapping[str, Any]) -> str:
    settings = record.get("settings") or {}
    stats = record.get("stats") or {}
    level, badge = finish_badge(stats, True, record.get("steered_tokens") or (), record.get("baseline_tokens") or ())
    lines = [
        "# Steering comparison",
        "",
        f"**Settings:** {settings_text(settings)}",
        f"**Model:** {settings.get('model', '?')}  ",
        f"**Max tokens:** {settings.get('max_tokens', '?')} · **steered finish:** {stats.get('steered_finish', '?')} "
        f"({badge}) · **baseline finish:** {stats.get('baseline_finish', '?')}",
        f"**Divergence:** {divergence_text(record.get('divergence'), True)}",
        "",
        "## Prompt",
        "",
    ]
    if record.get("system"):
        lines += ["*System:*", "", _quote_block(record["system"]), ""]
    lines += [_quote_block(record.get("prompt", "")), "", "## Baseline (no steering)", "",
              _quote_block(record.get("baseline", "")), "", "## Steered", "", _quote_block(record.get("steered", "")), ""]
    if record.get("prompted") is not None:
        lines += ["## Prompted (no steering, the concept's system prompt)", "", _quote_block(record["prompted"]), ""]
    judge = stats.get("judge") or {}
    if judge:
        scores = ", ".join(f"{k} {judge[k]:+.3f}" for k in ("baseline", "prompted", "steered") if k in judge)
        lines += ["## Judge", "", f"{judge.get('label', '')}: {scores}", ""]
    return "\n".join(lines)


# ---- concept mixes as text ---------------------------------------------------------------------
def format_mix_text(terms: Sequence[tuple[str, Any]]) -> str:
    """[('happy', 0.7), ('', 0.5), ('excited', 0.3)] -> 'happy:0.7, excited:0.3' (blank slugs dropped)."""
    parts = []
    for slug, weight in terms:
        slug = (slug or "").strip()
        w = _finite(weight)
        if not slug or w is None:
            continue
        parts.append(f"{slug}:{round(w, 3):g}")
    return ", ".join(parts)
