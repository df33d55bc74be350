"""Every control that depends on the loaded model follows it after a switch.

The page is built once, with the depth of the model loaded then (SmolLM2: 30 layers, Gemma 3
270M: 18), but a switch (from this page, or another user's, announced through the header's
poll) changes the depth and whether prompts are wrapped in a chat template. So whenever the
header's model line changes, one handler moves every layer slider's range (values only when
they fall outside it, so a value a URL just set is kept), replaces layer lists that no longer
fit (and gives their placeholders examples of this depth), says how prompts are read, and points the picker at
the loaded model. Handlers here are
plain functions (values in, updates out), unit-tested without a server.
"""

from __future__ import annotations

from typing import Any, Optional

import gradio as gr

from app.domain.parse import parse_layers
from app.errors import InputError
from app.ui.errors import guarded

LAYER_SLIDERS = ("playground.layer", "mixer.layer", "mixer.cos_layer")
HINTS = {"playground.layer": "; picking a concept moves this to its recommended layer"}
PROMPTS = ("playground.prompt", "mixer.prompt", "sweeps.prompt", "explorer.prompt")
CHAT_LABEL = "Wrap the prompt in the chat template (what the model sees in a chat)"
NO_CHAT_LABEL = "This model has no chat template (a base model): the prompt is read as plain text, as typed"
PLAIN_PROMPT = "Plain text: this base model has no chat template, so it continues what you write"
CHAT_PROMPT = "Sent as a user message in the model's chat template"


def model_facts(service: Any) -> tuple[int, bool, Optional[str]]:
    """(number of layers, has a chat template, model id); a page without a model keeps 30 layers, chat on."""
    if not getattr(service, "is_loaded", False):
        return 30, True, None
    info = service.info()
    return int(info.num_layers), bool(info.has_chat_template), info.model_id


def layer_slider_update(n: int, value: Any, model_id: Optional[str], hint: str = "") -> Any:
    """The slider's range 0..n-1; the value moves only when it falls outside."""
    where = f" on {model_id}" if model_id else ""
    kwargs: dict[str, Any] = dict(minimum=0, maximum=n - 1, info=f"Layers 0–{n - 1}{where}{hint}")
    try:
        v = int(float(value))
    except (TypeError, ValueError):
        v = None
    if v is None or not 0 <= v <= n - 1:
        kwargs["value"] = min(max(v or 0, 0), n - 1)
    return gr.Slider(**kwargs)


def in_range(value: Any, n: int) -> bool:
    try:
        return 0 <= int(float(value)) <= n - 1
    except (TypeError, ValueError):
        return False


def fits(text: Any, n: int, allow_all: bool = False) -> bool:
    """Whether a layer list (``4-8, 12``; ``all`` where allowed; empty) names only layers 0..n-1."""
    t = str(text or "").strip()
    if not t or (allow_all and t.lower() == "all"):
        return True
    try:
        parse_layers(t, n, repeats="drop")
    except InputError:
        return False
    return True


def sweep_layers_update(text: Any, kind: Any, n: int, info: Optional[str] = None) -> Any:
    """A sweep's layer list that no longer fits is replaced by the kind's defaults for this depth.

    One that fits is kept, with its usual ``info`` back (an earlier switch may have left a note)."""
    if fits(text, n):
        return gr.update() if info is None else gr.Textbox(info=info)
    from app.ui.tabs.sweeps import KINDS, kind_defaults

    layers, _ = kind_defaults(kind if kind in KINDS else "grid", n)
    return gr.Textbox(value=layers, info=f"{str(text).strip()} does not fit this model (layers 0–{n - 1}): set to {layers}")


EXAMPLE_DEPTH = 30  # the placeholders' examples are written for the default model's 30 layers


def fit_layer(layer: int, n: int) -> int:
    """An example layer of the 30-layer default model at the same relative depth of an n-layer model."""
    return 0 if n < 2 else min(n - 1, round(layer * (n - 1) / (EXAMPLE_DEPTH - 1)))


def op_layers_placeholder(n: int) -> str:
    return f"all, {fit_layer(8, n)}-{fit_layer(20, n)} or {fit_layer(4, n)}, {fit_layer(12, n)}"


def plan_placeholder(n: int) -> str:
    return f"e.g. {fit_layer(16, n)}:0.2, {fit_layer(20, n)}:0.1"


def gguf_layers_placeholder(n: int) -> str:
    return f"all, or e.g. {fit_layer(8, n)}-{fit_layer(20, n)}"


def op_layers_update(text: Any, n: int, info: Optional[str] = None, placeholder: Optional[str] = None) -> Any:
    ph = placeholder or op_layers_placeholder(n)
    if fits(text, n, allow_all=True):
        return gr.update(placeholder=ph) if info is None else gr.update(placeholder=ph, info=info)
    return gr.Textbox(value="", placeholder=ph,
                      info=f"{str(text).strip()} does not fit this model (layers 0–{n - 1}): cleared")


def plan_fits(text: Any, n: int) -> bool:
    """Whether every layer of a layer:strength plan exists; a malformed plan is left to the run to refuse."""
    from app.domain.parse import parse_layer_plan

    try:
        plan = parse_layer_plan(str(text or ""))
    except InputError:
        return True
    return all(0 <= layer < n for layer, _ in plan)


def extra_layers_update(text: Any, n: int, info: Optional[str] = None) -> Any:
    """The playground's extra layers (multi-layer plan): an example for this depth; a plan naming layers the
    model lacks is cleared with a note (it would only be refused at the next run)."""
    ph = plan_placeholder(n)
    if plan_fits(text, n):
        return gr.update(placeholder=ph) if info is None else gr.update(placeholder=ph, info=info)
    return gr.Textbox(value="", placeholder=ph,
                      info=f"{str(text).strip()} does not fit this model (layers 0–{n - 1}): cleared")


def chat_checkbox_update(has_template: bool) -> Any:
    if has_template:
        return gr.Checkbox(value=True, interactive=True, label=CHAT_LABEL)
    return gr.Checkbox(value=False, interactive=False, label=NO_CHAT_LABEL)


def prompt_update(has_template: bool) -> Any:
    return gr.Textbox(info=CHAT_PROMPT if has_template else PLAIN_PROMPT)


def follow_updates(service: Any, keys: list[str], values: list[Any],
                   built_max: Optional[dict[str, Any]] = None, infos: Optional[dict[str, str]] = None) -> list[Any]:
    """One update per component key (``"mixer.layer"``), given their current values.

    ``built_max`` (on page load): the sliders' maximum as built; a slider built for this depth is left alone.
    ``infos``: the layer lists' usual help text, put back when a list fits again."""
    infos = infos or {}
    from app.ui.header import current_model, model_choices

    n, chat, model_id = model_facts(service)
    current = dict(zip(keys, values))
    out = []
    for key in keys:
        if key in LAYER_SLIDERS:
            if built_max is not None and built_max.get(key) == n - 1 and in_range(current[key], n):
                out.append(gr.update())
            else:
                out.append(layer_slider_update(n, current[key], model_id, HINTS.get(key, "")))
        elif key == "sweeps.layers":
            out.append(sweep_layers_update(current[key], current.get("sweeps.kind"), n, infos.get(key)))
        elif key == "playground.op_layers":
            out.append(op_layers_update(current[key], n, infos.get(key)))
        elif key == "playground.extra_layers":
            out.append(extra_layers_update(current[key], n, infos.get(key)))
        elif key == "library.gguf_layers":  # an export's layer range (layer 0 is llama.cpp's to refuse)
            out.append(op_layers_update(current[key], n, infos.get(key), gguf_layers_placeholder(n)))
        elif key == "explorer.chat":
            out.append(chat_checkbox_update(chat))
        elif key in PROMPTS:
            out.append(prompt_update(chat))
        elif key == "header.picker":
            out.append(gr.Dropdown(choices=model_choices(service), value=current_model(service)))
        else:  # inputs only (sweeps.kind)
            out.append(gr.update())
    return out


# What each tab shows from a run, and the button whose next run replaces it (the mark goes then).
RESULTS = {
    "playground.generate": ("pg-baseline", "pg-steered", "pg-effects"),
    "mixer.generate": ("mx-baseline", "mx-steered", "mx-alone-out"),
    "explorer.run": ("ex-summary", "ex-norms", "ex-norm-heatmap", "ex-lens", "ex-lens-table", "ex-projection"),
    "sweeps.run": ("sw-summary", "sw-heatmap", "sw-lines", "sw-table", "sw-cell-text"),
}
# A result is shown: answer tokens, a drawn trace, a filled table cell, or a summary's own words (not a placeholder).
_SHOWN_JS = ("e => !e.querySelector('.pane-empty') && (e.querySelector('.tok, .js-plotly-plot .trace, "
             ".js-plotly-plot .hm') || [...e.querySelectorAll('tbody td')].some(td => td.textContent.trim()) "
             "|| /tokens × \\d+ layers|alone:|Verdict:|\\d+ cells/.test(e.innerText || ''))")


def stale_results_js(model_id: Optional[str], ids: tuple[str, ...] = tuple(i for g in RESULTS.values() for i in g)) -> str:
    """Browser-side, on each change of the header's model line: when the model in it is another one than before
    (not when only its notice changes), grey out every result shown (the CSS says why)."""
    import json

    sel = ", ".join(f"#{i}" for i in ids)
    return (f"(line) => {{ const m = ((line || '').match(/`([^`]+)`/) || [])[1] || null; "
            f"if (window.__labModel === undefined) window.__labModel = {json.dumps(model_id)}; "
            "if (m === window.__labModel) return; window.__labModel = m; "
            f"const shown = {_SHOWN_JS}; document.querySelectorAll('{sel}').forEach(e => {{ "
            "if (shown(e)) e.classList.add('stale', 'stale-model'); }); }")


def unmark_js(ids: tuple[str, ...]) -> str:
    sel = ", ".join(f"#{i}" for i in ids)
    return f"(...a) => {{ document.querySelectorAll('{sel}').forEach(e => e.classList.remove('stale', 'stale-model')); }}"


def mark_results_on_switch(service: Any, ctx: Any, model_info: Any) -> None:
    """Results of the previous model stay readable but greyed out until their tab runs again."""
    model_info.change(None, [model_info], None, js=stale_results_js(model_facts(service)[2]), queue=False,
                      show_progress="hidden")
    for key, ids in RESULTS.items():
        btn = ctx.components.get(key)
        if btn is not None:
            btn.click(None, None, None, js=unmark_js(ids), queue=False, show_progress="hidden")


def install(service: Any, ctx: Any) -> None:
    """After every change of the header's model line, update what depends on the model."""
    model_info = ctx.components.get("header.model_info")
    wanted = (*LAYER_SLIDERS, "sweeps.layers", "sweeps.kind", "playground.op_layers", "playground.extra_layers",
              "library.gguf_layers", "explorer.chat", *PROMPTS, "header.picker")
    keys = [k for k in wanted if k in ctx.components]
    if model_info is None or not keys:
        return
    mark_results_on_switch(service, ctx, model_info)
    comps = [ctx.components[k] for k in keys]

    built_max = {k: getattr(ctx.components[k], "maximum", None) for k in keys if k in LAYER_SLIDERS}
    infos = {k: getattr(ctx.components[k], "info", None)
             for k in ("sweeps.layers", "playground.op_layers", "playground.extra_layers", "library.gguf_layers")
             if k in keys}

    @guarded
    def follow(*values):
        return follow_updates(service, keys, list(values), infos=infos)

    @guarded
    def follow_on_load(*values):  # a page built for another model's depth, opened after a switch
        return follow_updates(service, keys, list(values), built_max)

    model_info.change(follow, comps, comps, api_visibility="private", queue=False, show_progress="hidden")
    ctx.on_load.append((follow_on_load, comps, comps))
