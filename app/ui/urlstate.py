"""Playground and sweep settings in the page URL, so a setting can be bookmarked and shared.

Writing: the main controls' ``.change`` runs a small JS function (no server round trip) that puts
their values into the query string with ``history.replaceState``. Reading: on page load a handler
reads ``request.query_params``, validates every value (bad ones are ignored, never an error) and
returns updates for the controls of the tab named by ``tab``.

Keys: tab, concept, layer, strength, abs, prompt, seed, temp, max_tokens, op, op_param, op_layers, condition,
threshold (playground);
tab, concept, prompt, layers, strengths, max_tokens (sweeps).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Optional

import gradio as gr

from app.domain import limits
from app.domain.parse import parse_floats, parse_layers, parse_ref
from app.errors import InputError

MAX_PROMPT_CHARS = limits.URL_PROMPT_CHARS

PLAYGROUND_KEYS = ("concept", "layer", "strength", "abs", "prompt", "seed", "temp", "max_tokens",
                   "op", "op_param", "op_layers", "condition", "threshold")
OP_KEYS = ("op", "op_param", "op_layers", "condition", "threshold")
THRESHOLD_LIMIT = 10.0  # the request's own bound (|threshold| <= 10 x the typical projection)
SWEEP_KEYS = ("concept", "prompt", "layers", "strengths", "max_tokens")


# ---- validation (pure) ---------------------------------------------------------------------
def _number(text: Any, lo: float, hi: float, integer: bool = False) -> Optional[float]:
    if text is None or len(str(text)) > 40:
        return None
    try:
        v = float(str(text).strip())
    except ValueError:
        return None
    if not math.isfinite(v) or not lo <= v <= hi:
        return None
    if integer:
        if v != int(v):
            return None
        return int(v)
    return v


def _flag(text: Any) -> Optional[bool]:
    t = str(text or "").strip().lower()
    if t in ("1", "true", "yes", "on"):
        return True
    if t in ("0", "false", "no", "off"):
        return False
    return None


def _concept(text: Any, known: Optional[set[str]]) -> Optional[str]:
    t = str(text or "").strip()
    if not t or len(t) > limits.MIX_TEXT_CHARS:
        return None
    return t if _valid(lambda: parse_ref(t, known)) else None


def _valid(check: Callable[[], Any]) -> bool:
    try:
        check()
    except InputError:
        return False
    return True


def _prompt(text: Any) -> Optional[str]:
    if text is None:
        return None
    t = str(text)
    if not t.strip() or len(t) > MAX_PROMPT_CHARS or "\x00" in t:
        return None
    return t


def _op_layers(text: Any, num_layers: int) -> Optional[str]:
    t = str(text or "").strip()
    if not t or len(t) > limits.LIST_TEXT_CHARS:
        return None
    if t.lower() == "all" or _valid(lambda: parse_layers(t, num_layers, repeats="drop")):
        return t
    return None


def read_operation(q: Mapping[str, Any], num_layers: int, known: Optional[set[str]],
                   ops: Optional[Mapping[str, tuple[float, float]]]) -> dict[str, Any]:
    """The playground's operation fields: op (a known one), its parameter (in its range), its layers, the condition."""
    out: dict[str, Any] = {}
    op = str(q.get("op") or "").strip()
    if ops and op in ops:
        out["op"] = op
        lo, hi = ops[op]
        param = _number(q.get("op_param"), lo, hi)
        if param is not None and op != "add":
            out["op_param"] = param
        layers = _op_layers(q.get("op_layers"), num_layers)
        if layers is not None and op != "add":
            out["op_layers"] = layers
    condition = _concept(q.get("condition"), known)
    if condition is not None:
        out["condition"] = condition
        threshold = _number(q.get("threshold"), -THRESHOLD_LIMIT, THRESHOLD_LIMIT)
        if threshold is not None:
            out["threshold"] = threshold
    return out


def read_params(query: Mapping[str, Any], num_layers: int, known_concepts: Optional[set[str]] = None,
                max_tokens_limit: int = limits.MAX_TOKENS,
                sweep_max_tokens_limit: int = limits.SWEEP_MAX_TOKENS,
                ops: Optional[Mapping[str, tuple[float, float]]] = None) -> dict[str, Any]:
    """Validated settings from query parameters: {"tab": ..., "playground": {...}, "sweeps": {...}}.

    ``ops``: the residual operations' names -> their parameter's (lo, hi), for the op fields."""
    q = {str(k): query.get(k) for k in list(query.keys())[:50]}
    tab = str(q.get("tab") or "").strip()
    out: dict[str, Any] = {"tab": tab if tab in _tab_ids() else None, "playground": {}, "sweeps": {}}
    pg: dict[str, Any] = {}
    absolute = _flag(q.get("abs"))
    if absolute is not None:
        pg["abs"] = absolute
    val = {
        "concept": _concept(q.get("concept"), known_concepts),
        "layer": _number(q.get("layer"), 0, num_layers - 1, integer=True),
        "strength": _number(q.get("strength"), -limits.strength_limit(not absolute), limits.strength_limit(not absolute)),
        "prompt": _prompt(q.get("prompt")),
        "seed": _number(q.get("seed"), 0, limits.SEED_MAX, integer=True),
        "temp": _number(q.get("temp"), 0.0, limits.TEMPERATURE_MAX),
        "max_tokens": _number(q.get("max_tokens"), 1, max_tokens_limit, integer=True),
    }
    pg.update({k: v for k, v in val.items() if v is not None})
    pg.update(read_operation(q, num_layers, known_concepts, ops))
    out["playground"] = pg
    sw: dict[str, Any] = {}
    if val["concept"] is not None:
        sw["concept"] = val["concept"]
    if val["prompt"] is not None:
        sw["prompt"] = val["prompt"]
    layers = str(q.get("layers") or "")
    if layers and _valid(lambda: parse_layers(layers, num_layers)):
        sw["layers"] = layers.strip()
    strengths = str(q.get("strengths") or "")
    if strengths and _valid(lambda: parse_floats(strengths)):
        sw["strengths"] = strengths.strip()
    mt = _number(q.get("max_tokens"), 1, sweep_max_tokens_limit, integer=True)
    if mt is not None:
        sw["max_tokens"] = mt
    out["sweeps"] = sw
    return out


Recommendation = tuple[int, float, bool, str]  # (layer, strength, relative, what the slider's info says)


def fill_recommended(p: Mapping[str, Any], recommend: Callable[[str], Optional[Recommendation]]) -> dict[str, Any]:
    """A link with a concept but no layer or strength opens at the concept's recommended setting, as picking the
    concept in the playground does; a layer, strength or ``abs`` the link names itself always wins."""
    out = dict(p)
    if "concept" not in p or ("layer" in p and "strength" in p):
        return out
    rec = recommend(p["concept"])
    if rec is None:
        return out
    layer, strength, relative, info = rec
    if "layer" not in p:
        out["layer"], out["_layer_info"] = int(layer), info
    if "strength" not in p and ("abs" not in p or p["abs"] == (not relative)):
        out["strength"], out["abs"] = float(strength), not relative
        out["_strength_info"] = f"★ recommended strength {float(strength):g} ({'relative' if relative else 'absolute'})"
    return out


# ---- JS writers (run in the browser on .change) ---------------------------------------------
_JS_SET = """
const u = new URL(window.location.href); const p = u.searchParams;
const put = (k, v) => { if (v === null || v === undefined || v === "" || (typeof v === "number" && !isFinite(v))) p.delete(k); else p.set(k, String(v).slice(0, %d)); };
""" % MAX_PROMPT_CHARS

PLAYGROUND_JS = (
    "(concept, layer, strength, abs, prompt, seed, temp, max_tokens, op, op_param, op_layers, condition, threshold)"
    " => { try {"
    + _JS_SET
    + """
p.set("tab", "playground"); p.delete("layers"); p.delete("strengths");
put("concept", concept); put("layer", layer); put("strength", strength); put("abs", abs ? "1" : null);
put("prompt", prompt); put("seed", seed); put("temp", temp); put("max_tokens", max_tokens);
const other = op && op !== "add";
put("op", other ? op : null); put("op_param", other ? op_param : null); put("op_layers", other ? op_layers : null);
put("condition", condition); put("threshold", condition ? threshold : null);
history.replaceState(history.state, "", u.pathname + "?" + p.toString() + u.hash);
} catch (e) { console.warn("url state", e); } }"""
)

SWEEPS_JS = (
    "(concept, prompt, layers, strengths, max_tokens) => { try {"
    + _JS_SET
    + """
p.set("tab", "sweeps"); ["layer", "strength", "abs", "seed", "temp", "op", "op_param", "op_layers", "condition",
 "threshold"].forEach(k => p.delete(k));
put("concept", concept); put("prompt", prompt); put("layers", layers); put("strengths", strengths);
put("max_tokens", max_tokens);
history.replaceState(history.state, "", u.pathname + "?" + p.toString() + u.hash);
} catch (e) { console.warn("url state", e); } }"""
)

_PG_ORDER = ("concept", "layer", "strength", "absolute", "prompt", "seed", "temperature", "max_tokens",
             "op", "op_param", "op_layers", "condition", "threshold")
_SW_ORDER = ("concept", "prompt", "layers", "strengths", "max_tokens")


def install(service: Any, ctx: Any) -> None:
    """Bind URL writers to the playground and sweep controls and add the on-load reader."""
    from app.ui.errors import guarded
    from app.ui.widgets import band_text, concept_slugs, num_layers

    pg = {k: ctx.components.get(f"playground.{k}") for k in _PG_ORDER}
    sw = {k: ctx.components.get(f"sweeps.{k}") for k in _SW_ORDER}
    have_pg = all(v is not None for v in pg.values())
    have_sw = all(v is not None for v in sw.values())
    if have_pg:
        pg_inputs = [pg[k] for k in _PG_ORDER]
        for comp in pg_inputs:
            comp.change(None, pg_inputs, None, js=PLAYGROUND_JS, queue=False, show_progress="hidden")
    if have_sw:
        sw_inputs = [sw[k] for k in _SW_ORDER]
        for comp in sw_inputs:
            comp.change(None, sw_inputs, None, js=SWEEPS_JS, queue=False, show_progress="hidden")

    advanced = ctx.components.get("playground.advanced")
    extra = ctx.components.get("playground.extra_layers")
    outputs = [ctx.tabs] if ctx.tabs is not None else []
    outputs += [pg[k] for k in _PG_ORDER] if have_pg else []
    outputs += [advanced] if have_pg and advanced is not None else []
    outputs += [extra] if have_pg and extra is not None else []
    outputs += [sw[k] for k in _SW_ORDER] if have_sw else []
    if not outputs:
        return

    def load_from_url(request: gr.Request):
        n_out = len(outputs)
        try:
            query = dict(request.query_params) if request is not None else {}
            known = set(concept_slugs(service)) or None
            ops = {o.name: (float(o.lo), float(o.hi)) for o in service.operations() if o.hook_point == "residual"}
            s = read_params(query, num_layers(service), known, ops=ops)
        except Exception:  # a URL can never break the page
            s = read_params({}, num_layers(service))
        ups: list[Any] = []
        if ctx.tabs is not None:
            ups.append(gr.Tabs(selected=s["tab"]) if s["tab"] else gr.update())
        if have_pg:
            p = s["playground"] if s["tab"] in (None, "playground") else {}
            filled = fill_recommended(p, lambda c: _recommendation(service, c))
            ups += playground_updates(service, filled)
            if advanced is not None:  # the operation fields live in the advanced section: open it when a link sets them
                ups.append(gr.Accordion(open=True) if any(k in p for k in OP_KEYS) else gr.update())
            if extra is not None:  # opened at the recommended layer: its band too, as picking the concept does
                ups.append(gr.update(value=band_text(service, p["concept"])) if "_layer_info" in filled
                           else gr.update())
        if have_sw:
            w = s["sweeps"] if s["tab"] == "sweeps" else {}
            ups += [gr.update(value=w[k]) if k in w else gr.update() for k in _SW_ORDER]
        assert len(ups) == n_out
        return ups

    ctx.on_load.append((guarded(load_from_url), [], outputs))


def playground_updates(service: Any, p: Mapping[str, Any]) -> list[Any]:
    """Updates for the playground's controls in ``_PG_ORDER`` from a link's validated settings ``p``."""
    from app.ui.widgets import ABS_RANGE, REL_RANGE, strength_info

    absolute = bool(p.get("abs", False))
    lim = ABS_RANGE if absolute else REL_RANGE
    # always: the strength slider is built wide for the API and narrowed here for people
    strength_update: dict[str, Any] = dict(minimum=-lim, maximum=lim,
                                           info=p.get("_strength_info") or strength_info(absolute))
    if "strength" in p:
        strength_update["value"] = p["strength"]
    layer_update = gr.update()
    if "layer" in p:
        layer_update = gr.update(value=p["layer"], **({"info": p["_layer_info"]} if "_layer_info" in p else {}))
    return [
        gr.update(value=p["concept"]) if "concept" in p else gr.update(),
        layer_update,
        gr.update(**strength_update),
        gr.update(value=absolute) if "abs" in p else gr.update(),
        gr.update(value=p["prompt"]) if "prompt" in p else gr.update(),
        gr.update(value=p["seed"]) if "seed" in p else gr.update(),
        gr.update(value=p["temp"]) if "temp" in p else gr.update(),
        gr.update(value=p["max_tokens"]) if "max_tokens" in p else gr.update(),
        *_operation_updates(service, p),
    ]


def _recommendation(service: Any, concept: str) -> Optional[Recommendation]:
    """The concept's recommended setting for the loaded model, or None (a link never breaks the page)."""
    from app.errors import LabError
    from app.ui.widgets import recommended

    try:
        return recommended(service, concept)
    except (LabError, ValueError):
        return None


def _operation_updates(service: Any, p: Mapping[str, Any]) -> list[Any]:
    """(op, op_param, op_layers, condition, threshold) updates; the parameter box shows the op's name and range."""
    from app.ui.tabs.operations import op_param_props

    if "op" in p:
        props = op_param_props(service, p["op"])
        if "op_param" in p:
            props["value"] = f"{p['op_param']:g}"
        op_ups = [gr.update(value=p["op"]), gr.Textbox(**props)]
    else:
        op_ups = [gr.update(), gr.update()]
    return [*op_ups,
            gr.update(value=p["op_layers"]) if "op_layers" in p else gr.update(),
            gr.update(value=p["condition"]) if "condition" in p else gr.update(),
            gr.update(value=p["threshold"]) if "threshold" in p else gr.update()]


def _tab_ids() -> dict[str, str]:
    from app.ui.tabs import tab_ids  # at call time: the tab modules import this one

    return tab_ids()
