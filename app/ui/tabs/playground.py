"""Steering playground: one concept, one layer, one strength; baseline and steered answers stream side by side.

The streaming handler and the per-browser-session Stop live in ``app.ui.streaming``, shared with the
concept mixer and the sweeps, so the tabs show and stop results the same way.
"""

from __future__ import annotations

from typing import Any, Iterator

import gradio as gr

from app.domain import limits
from app.domain.requests import POSITIONS, SCHEDULES, SteerRequest
from app.ui import model_follow, urlstate, widgets
from app.ui.widgets import (ABS_RANGE, DEFAULT_MAX_TOKENS, DEFAULT_REL_STRENGTH, MAX_TOKENS_UI, REL_RANGE,
                            check_concept, check_layer, check_number, check_prompt, concept_choices, default_concept,
                            default_layer, gen_params, num_layers, strength_info)
from app.ui.context import MODEL_CONCURRENCY
from app.ui.errors import guarded
from app.ui.present import generation as present
from app.ui.present import insight as fx
from app.ui.streaming import arm_session, stop_session, stream_comparison
from app.ui.tabs.operations import op_fields, op_param_update, operation_widgets

LABEL = "Steering playground"  # this module is a tab (app.ui.tabs): its title ...
ORDER = 40  # ... and its place on the page

DEFAULT_PROMPT = "Tell me about your weekend."

HOWTO = (
    "Pick a concept, a layer and a strength and press **Generate**: the unsteered baseline and the steered answer "
    "come from one batch with the same sampling noise, so every difference is the steering's doing. Strength is "
    "*relative* (1.0 = a step as long as a typical token's residual vector at that layer); start around 0.2-0.4 at a "
    "middle layer — too strong and the text loops."
)


def build_request(service: Any, prompt, system, concept, layer, strength, absolute, positions, schedule,
                  schedule_length, mode, guidance, extra_layers, max_tokens, temperature, top_p, seed,
                  op="add", op_param=None, op_layers="", condition="", threshold=1.0, repetition_penalty=1.0):
    prompt = check_prompt(prompt)
    concept = check_concept(concept)
    layer = check_layer(service, layer)
    limit = ABS_RANGE if absolute else REL_RANGE
    strength = check_number(strength, "strength", -limit, limit)
    plan = [(layer, strength)]
    for l, s in present.parse_layer_plan(extra_layers or ""):
        plan.append((check_layer(service, l, "extra layer"), float(check_number(s, f"strength for layer {l}", -limit, limit))))
    if len({l for l, _ in plan}) != len(plan):
        raise gr.Error("Each layer may appear only once (the main layer is also listed under extra layers).",
                       print_exception=False)
    return SteerRequest(  # checks positions, schedule, mechanism and the operation's fields
        prompt=prompt, concept=concept, layers=plan, relative=not bool(absolute), mode=mode, schedule=schedule,
        schedule_length=int(check_number(schedule_length, "schedule length", 1, limits.SCHEDULE_LENGTH_MAX, integer=True)),
        positions=positions, guidance=float(check_number(guidance, "guidance scale", -limits.GUIDANCE_LIMIT, limits.GUIDANCE_LIMIT)),
        system=(system or None) if (system or "").strip() else None,
        params=gen_params(max_tokens, temperature, top_p, seed, repetition_penalty), prompted=True,
        effects=True, **op_fields(service, op, op_param, op_layers, condition, threshold),
    )


# ---- the handlers: widget values in, page updates out ------------------------------------------
class PlaygroundHandlers:
    """The playground's events as plain methods over the lab, so tests call them without a server."""

    def __init__(self, service: Any) -> None:
        self.service = service

    def generate(self, prompt, system, concept, layer, strength, absolute, positions, schedule, schedule_length, mode,
                 guidance, extra_layers, max_tokens, temperature, top_p, seed, op, op_param, op_layers, condition,
                 threshold, repetition_penalty=1.0, request: gr.Request = None) -> Iterator[tuple]:
        """Stream (baseline, steered, status, effects, applied, md, json) while both answers grow."""
        req = build_request(self.service, prompt, system, concept, layer, strength, absolute, positions, schedule,
                            schedule_length, mode, guidance, extra_layers, max_tokens, temperature, top_p, seed,
                            op, op_param, op_layers, condition, threshold, repetition_penalty)
        yield from stream_comparison(self.service, req, request, insight=True)

    @staticmethod
    def toggle_absolute(is_abs) -> Any:
        return widgets.strength_slider(bool(is_abs))

    def op_picked(self, name) -> Any:
        return op_param_update(self.service, name)

    def concept_picked(self, concept) -> tuple[Any, Any, Any]:
        """Move layer/strength to the concept's recommended setting and say so in the slider's info."""
        return widgets.recommended_updates(self.service, concept)

    def band_picked(self, concept) -> Any:
        """The concept's recommended band (more layers at the same strength) into the extra-layers box."""
        return widgets.band_text(self.service, concept)


# ---- the tab --------------------------------------------------------------------------------
def _controls(service: Any, n: int) -> dict:
    """Left: what to steer with (prompt, concept, layer, strength, and the Advanced box)."""
    with gr.Column(scale=2, min_width=340, elem_id="pg-controls"):
        prompt = gr.Textbox(label="Prompt", value=DEFAULT_PROMPT, lines=2, max_lines=12,
                            placeholder="Ask the model something…", elem_id="pg-prompt")
        concept = gr.Dropdown(choices=concept_choices(service), value=default_concept(service), label="Concept",
                              allow_custom_value=True, filterable=True, elem_id="pg-concept",
                              info="From the library, a mix (happy:0.7, excited:0.3) or random:happy")
        layer = gr.Slider(0, n - 1, value=default_layer(n), step=1, label="Layer", elem_id="pg-layer",
                          info="Picking a concept moves this to its recommended layer")
        # Built with the absolute range so API calls may use it too (the server checks values against the
        # slider's range); the page narrows it to the relative range on load (see urlstate).
        strength = gr.Slider(-ABS_RANGE, ABS_RANGE, value=DEFAULT_REL_STRENGTH, step=0.01, label="Strength",
                             elem_id="pg-strength", info=strength_info(False))
        absolute = gr.Checkbox(value=False, label=f"Absolute strength (multiplies the raw vector; range -{ABS_RANGE:g}..{ABS_RANGE:g})",
                               elem_id="pg-absolute")
        with gr.Row():
            max_tokens = gr.Slider(1, MAX_TOKENS_UI, value=DEFAULT_MAX_TOKENS, step=1, label="Max tokens",
                                   elem_id="pg-max-tokens", min_width=140)
            temperature = gr.Slider(0.0, limits.TEMPERATURE_MAX, value=0.0, step=0.05, label="Temperature", info="0 = greedy",
                                    elem_id="pg-temperature", min_width=140)
        with gr.Accordion("Advanced: where, when and how to steer", open=False, elem_id="pg-advanced") as advanced:
            system = gr.Textbox(value="", label="System prompt (optional)", lines=1, max_lines=6,
                                placeholder="(none)", elem_id="pg-system")
            positions = gr.Radio(list(POSITIONS), value="all", label="Positions",
                                 info="Which tokens get the vector")
            with gr.Row():
                schedule = gr.Dropdown(list(SCHEDULES), value="constant",
                                       label="Schedule over generated tokens", min_width=140)
                schedule_length = gr.Number(value=16, precision=0, minimum=1, maximum=limits.SCHEDULE_LENGTH_MAX, label="Schedule length",
                                            info="Decay/ramp length, or K for a pulse", min_width=120)
            mode = gr.Radio([("add to the residual stream", "add"), ("contrast in logit space", "logits")],
                            value="add", label="Mechanism")
            guidance = gr.Slider(-limits.GUIDANCE_LIMIT, limits.GUIDANCE_LIMIT, value=1.0, step=0.1, label="Guidance scale (logits mode)",
                                 info="base + scale × (steered − base)")
            op, op_param, op_layers, condition, threshold = operation_widgets(service)
            extra_layers = gr.Textbox(value="", label="Extra layers (multi-layer plan)", elem_id="pg-extra-layers",
                                      placeholder=model_follow.plan_placeholder(n),
                                      info="layer:strength pairs steered together with the main layer")
            with gr.Row():
                seed = gr.Number(value=0, precision=0, minimum=0, maximum=limits.SEED_MAX, label="Seed", elem_id="pg-seed", min_width=100)
                top_p = gr.Slider(limits.TOP_P_MIN, 1.0, value=1.0, step=0.05, label="Top-p", min_width=140)
            repetition_penalty = gr.Slider(1.0, limits.REPETITION_PENALTY_MAX, value=1.0, step=0.05,
                                           label="Repetition penalty", elem_id="pg-repetition-penalty",
                                           info="1 = off; about 1.15 stops a base model repeating its lines "
                                                "(applies to every answer of the run)")
            applied = gr.HTML(fx.applied_html([]), elem_id="pg-applied")
    return dict(prompt=prompt, concept=concept, layer=layer, strength=strength, absolute=absolute,
                max_tokens=max_tokens, temperature=temperature, advanced=advanced, system=system, positions=positions,
                schedule=schedule, schedule_length=schedule_length, mode=mode, guidance=guidance, op=op,
                op_param=op_param, op_layers=op_layers, condition=condition, threshold=threshold,
                extra_layers=extra_layers, seed=seed, top_p=top_p, repetition_penalty=repetition_penalty, applied=applied)


def _results() -> dict:
    """Right: the two answers, visible without scrolling on a laptop screen."""
    with gr.Column(scale=3, min_width=360, elem_id="pg-results"):
        with gr.Row():
            generate = gr.Button("Generate", variant="primary", elem_id="pg-generate", scale=3)
            stop = gr.Button("Stop", variant="stop", elem_id="pg-stop", scale=1, min_width=80)
        status = gr.HTML(present.badge_html("ok", "ready"), elem_id="pg-status")
        base0, steer0 = present.empty_panes()
        with gr.Row(equal_height=True, elem_classes=["panes-row"]):
            baseline_pane = gr.HTML(base0, elem_id="pg-baseline")
            steered_pane = gr.HTML(steer0, elem_id="pg-steered")
        effects = gr.HTML(fx.effect_map_html([]), elem_id="pg-effects")
        with gr.Row():
            dl_md = gr.DownloadButton("Download Markdown", value=None, interactive=False, size="sm",
                                      elem_id="pg-dl-md")
            dl_json = gr.DownloadButton("Download JSON", value=None, interactive=False, size="sm",
                                        elem_id="pg-dl-json")

    return dict(generate=generate, stop=stop, status=status, baseline=baseline_pane, steered=steered_pane,
                effects=effects, dl_md=dl_md, dl_json=dl_json)


def _wire(service: Any, h: PlaygroundHandlers, w: dict) -> None:
    """The events; every handler is a PlaygroundHandlers method (tested without a server)."""
    inputs = [w[k] for k in ("prompt", "system", "concept", "layer", "strength", "absolute", "positions", "schedule",
                             "schedule_length", "mode", "guidance", "extra_layers", "max_tokens", "temperature",
                             "top_p", "seed", "op", "op_param", "op_layers", "condition", "threshold",
                             "repetition_penalty")]
    outputs = [w[k] for k in ("baseline", "steered", "status", "effects", "applied", "dl_md", "dl_json")]
    for trigger, api in ((w["generate"].click, dict(api_name="generate")),
                         (w["prompt"].submit, dict(api_visibility="private"))):
        trigger(guarded(arm_session(service)), None, None, queue=False, show_progress="hidden",
                api_visibility="private").then(
            guarded(h.generate), inputs, outputs, show_progress="minimal", **api, **MODEL_CONCURRENCY)
    w["stop"].click(guarded(stop_session(service)), None, None, api_name="stop_generate", queue=False)
    widgets.mark_stale_on([w[k] for k in ("prompt", "system", "concept", "layer", "strength", "absolute", "max_tokens",
                                          "temperature", "repetition_penalty")], ["pg-baseline", "pg-steered"],
                        [w["generate"]])
    w["absolute"].input(guarded(h.toggle_absolute), [w["absolute"]], [w["strength"]], api_visibility="private",
                        queue=False)
    w["op"].input(guarded(h.op_picked), [w["op"]], [w["op_param"]], api_visibility="private", queue=False)
    w["concept"].input(guarded(h.concept_picked), [w["concept"]], [w["layer"], w["strength"], w["absolute"]],
                       api_name="recommended_setting", show_progress="minimal", **MODEL_CONCURRENCY).then(
        guarded(h.band_picked), [w["concept"]], [w["extra_layers"]], api_visibility="private", queue=False)


def build(service: Any, ctx: Any) -> None:
    n = num_layers(service)
    gr.Markdown(HOWTO, elem_classes=["howto"])
    with gr.Row(equal_height=False):
        w = _controls(service, n)
        w.update(_results())
    _wire(service, PlaygroundHandlers(service), w)
    ctx.register("playground", **{k: w[k] for k in (
        "prompt", "concept", "layer", "strength", "max_tokens", "absolute", "generate", "system", "seed",
        "temperature", "top_p", "stop", "status", "baseline", "steered", "op", "op_param", "op_layers", "extra_layers",
        "condition", "threshold", "effects", "applied", "advanced")})


def wire(service: Any, ctx: Any) -> None:
    """Refresh every concept list after each library change and on tab switches; bind the URL state."""
    widgets.refresh_concept_lists_on(ctx, service, ctx.library_events)
    urlstate.install(service, ctx)
