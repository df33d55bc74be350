"""What steering did in one run, as HTML: the per-token effect map and "where it applies" (pure)."""

from __future__ import annotations

import html
import math
from typing import Any, Mapping, Optional, Sequence

from app.ui.present.common import finite as _num  # one rule: a finite float or None

FX_RGB = (220, 38, 38)
# The colour scale's top: a token whose KL is this many nats or more is full red. On a fixed scale, a run whose
# largest KL is tiny stays pale (scaled to its own maximum it would have looked as strong as any other).
FX_FULL_KL = 1.0


def _shown_token(token: Any) -> str:
    """A special token such as ``<|im_end|>`` as a readable mark ("[end: im_end]"), other text as it is."""
    text = str(token)
    if text.startswith("<|") and text.endswith("|>") and len(text) > 4:
        return f"[end: {text[2:-2]}]" if "end" in text else f"[{text[2:-2]}]"
    return text


def effect_map_html(effects: Sequence[Mapping[str, Any]], note: str = "", guidance: Optional[float] = None) -> str:
    """Steered tokens shaded by KL(steered || unsteered) of the distribution that produced each one.

    ``guidance`` (logits mode): that distribution is the guided mix base + g (steered - base)."""
    if not effects:
        msg = note or "The effect map appears here after a run."
        return f'<div class="fx-map howto">{html.escape(msg)}</div>'
    kls = [max(0.0, _num(e.get("kl")) or 0.0) for e in effects]
    top = max(kls) or 1.0
    scale = max(top, FX_FULL_KL)
    spans = []
    for e, kl in zip(effects, kls):
        promoted = ", ".join(f"{p[0]!r} +{float(p[1]):.2f}" for p in (e.get("promoted") or [])[:3])
        title = f"token {e.get('index')} · KL {kl:.3f} nats" + (f" · promoted: {promoted}" if promoted else "")
        alpha = round(0.75 * math.sqrt(kl / scale), 3)
        r, g, b = FX_RGB
        spans.append(f'<span class="tok" title="{html.escape(title, quote=True)}" '
                     f'style="background:rgba({r},{g},{b},{alpha})">{html.escape(_shown_token(e.get("token", "")))}</span>')
    first = next((i for i, kl in enumerate(kls) if kl > 0.05 * top), None)
    biggest = sorted(range(len(kls)), key=lambda i: -kls[i])[:3]
    lines = [f"token {i} ({_shown_token(effects[i].get('token', ''))!r}, KL {kls[i]:.2f})" for i in biggest]
    which = ("the steered model's next-token distribution" if guidance is None else
             f"the distribution the text was sampled from in logits mode (base + {float(guidance):g} × (steered − base))")
    head = (f"<b>Where steering acts</b>: red = how much {html.escape(which)} differs from the "
            f"unsteered one on the same text (KL, nats; hover for the tokens it promoted). Largest at "
            f"{html.escape('; '.join(lines))}." + (f" Noticeable from token {first} on." if first is not None else "")
            + (f" Full red = {FX_FULL_KL:g} nat or more; the largest here is {top:.2f}, so steering barely changed "
               "what the model would say next." if top < 0.1 * FX_FULL_KL else ""))
    return f'<div class="fx-map"><div class="howto">{head}</div><div class="pane">{"".join(spans)}</div></div>'


def _ranges(steps: Sequence[int]) -> str:
    out, start, prev = [], None, None
    for s in steps:
        if start is None:
            start = prev = s
        elif s == prev + 1:
            prev = s
        else:
            out.append(f"{start}" if start == prev else f"{start}-{prev}")
            start = prev = s
    if start is not None:
        out.append(f"{start}" if start == prev else f"{start}-{prev}")
    return ", ".join(out)


def applied_rows(applied: Sequence[Mapping[str, Any]]) -> list[dict]:
    """Compress per-call records: one row per (layer, op, phase, coefficient) run of decode steps."""
    rows: list[dict] = []
    for a in applied:
        gate = f"{a['gate_open']}/{a['gate_of']} open" if "gate_open" in a else ""
        key = (a.get("layer"), a.get("op"), a.get("phase"), a.get("coefficient"))
        if a.get("phase") == "decode" and rows and rows[-1]["key"] == key and not gate:
            rows[-1]["steps"].append(a.get("step"))
            rows[-1]["last"] = a["positions"][1]
            continue
        rows.append({"key": key, "steps": [a.get("step")] if a.get("phase") == "decode" else [],
                     "first": a["positions"][0], "last": a["positions"][1], "gate": gate})
    return rows


def applied_html(applied: Sequence[Mapping[str, Any]], settings: Optional[Mapping[str, Any]] = None) -> str:
    """A table: at which layers, phases, positions and with what coefficient the operation acted."""
    if not applied:
        return ('<div class="howto">Where it applies: after a run, this lists every layer, phase (prompt prefill, '
                'each generated token) and position the intervention touched, with its coefficient.</div>')
    rows = applied_rows(applied)
    if len(rows) > 60:
        rows = rows[:60]
    body = []
    for r in rows:
        layer, op, phase, coef = r["key"]
        what = "prompt (prefill)" if phase == "prefill" else f"generated token(s) {_ranges(r['steps'])}"
        body.append(f"<tr><td>L{layer}</td><td>{html.escape(str(op))}</td><td>{html.escape(what)}</td>"
                    f"<td>{r['first']}–{r['last']}</td><td>{coef:g}</td><td>{html.escape(r['gate'])}</td></tr>")
    note = ""
    if settings and settings.get("positions") == "generated":
        note = ("<div class='howto'>Positions = generated: the first generated token comes from the unsteered prompt "
                "pass, so steering starts to show from the second token.</div>")
    return ("<div class='applied'><b>Where it applied</b> (position 0 = first prompt token; coefficient = the "
            "operation's parameter × schedule; for add it multiplies the raw vector, so a relative strength shows "
            "here converted: strength × typical token norm ÷ vector length)<table class='applied-table'><tr><th>layer</th><th>op</th><th>phase</th>"
            "<th>positions</th><th>coefficient</th><th>gate</th></tr>" + "".join(body) + "</table>" + note + "</div>")


def vector_lens_md(lens: Any, recommended: Optional[Sequence[int]] = None, title: str = "Vector lens") -> str:
    """A table: per layer, the tokens the concept direction promotes and suppresses (★ = recommended)."""
    if lens is None or not getattr(lens, "layers", None):
        return ""
    lo, hi = (tuple(recommended) + (None, None))[:2] if recommended else (None, None)
    esc = lambda t: html.escape(repr(t)[1:-1]).replace("|", "\\|")
    rows = [f"**{title}** — what each layer's direction says in token space (the output head applied to the "
            "final-normed direction). A layer whose tokens read like the concept tends to steer well; compare it "
            "with the recommended layers (★).", "", "| layer | promotes | suppresses |", "|---|---|---|"]
    for layer, top, bottom in zip(lens.layers, lens.top, lens.bottom):
        star = " ★" if lo is not None and hi is not None and lo <= layer <= hi and (lo, hi) != (0, 0) else ""
        rows.append(f"| {layer}{star} | {', '.join(esc(t) for t, _ in top)} | {', '.join(esc(t) for t, _ in bottom)} |")
    return "\n".join(rows)
