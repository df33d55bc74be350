"""The playground's "Operation" controls: add / ablate / cap / clamp / rotate, its parameter and layers,
and an optional condition concept (conditional steering). Choices come from the interventions registry
through the service, so a new operation shows up here without editing this file."""

from __future__ import annotations

from typing import Any

import gradio as gr

from app.ui.model_follow import op_layers_placeholder
from app.ui.widgets import concept_choices, num_layers


def operation_widgets(service: Any) -> tuple:
    """Operation choice (from the interventions registry), its parameter, its layers, an optional condition."""
    ops = [o for o in service.operations() if o.hook_point == "residual"]
    with gr.Row():
        op = gr.Dropdown([(f"{o.name}: {o.help}", o.name) for o in ops], value="add", label="Operation",
                         elem_id="pg-op", min_width=200, info="What is done with the concept direction at the layer")
        op_param = gr.Textbox(value="", label="Operation parameter", elem_id="pg-op-param", min_width=120,
                              placeholder="(the operation's default)", info="add uses the strength slider")
    op_layers = gr.Textbox(value="", label="Operation layers (besides the main layer)", elem_id="pg-op-layers",
                           placeholder=op_layers_placeholder(num_layers(service)), info="e.g. ablate at every layer: all")
    with gr.Row():
        condition = gr.Dropdown([("(none)", "")] + concept_choices(service), value="", label="Only where (condition)",
                                allow_custom_value=True, elem_id="pg-condition", min_width=160,
                                info="Steer only at tokens whose residual projects high on this concept")
        threshold = gr.Number(value=1.0, label="Condition threshold", elem_id="pg-threshold", min_width=120,
                              info="× the condition's typical positive projection")
    return op, op_param, op_layers, condition, threshold


def op_param_props(service: Any, name: str) -> dict:
    """The parameter box's value, label and info for operation ``name`` (add keeps using the strength slider)."""
    info = {o.name: o for o in service.operations()}.get(name)
    if info is None or name == "add":
        return dict(value="", label="Operation parameter", info="add uses the strength slider")
    return dict(value=f"{info.default:g}", label=f"Operation parameter: {info.param}",
                info=f"{info.lo:g} to {info.hi:g}, {info.unit}")


def op_param_update(service: Any, name: str):
    """Show the chosen operation's parameter, its range and unit; add keeps using the strength slider."""
    return gr.Textbox(**op_param_props(service, name))


def op_fields(service: Any, op, op_param, op_layers, condition, threshold) -> dict:
    """The operation's request fields from the advanced section's widgets (checked once by SteerRequest)."""
    from app.domain.parse import op_layers_from_text

    op = op or "add"
    names = [o.name for o in service.operations() if o.hook_point == "residual"]
    if op not in names:
        raise gr.Error(f"operation must be one of {', '.join(names)}, got {op!r}.", print_exception=False)
    condition = (condition or "").strip() or None
    text = "" if op_param is None else str(op_param).strip()
    if op == "add" or not text:
        value = None
    else:
        try:
            value = float(text)
        except ValueError:
            raise gr.Error(f"op_param (the {op} parameter) must be a number, got {text!r}.", print_exception=False) from None
    return dict(op=op, op_param=value,
                op_layers=op_layers_from_text(op_layers if op != "add" else "", num_layers(service)),
                condition=condition, threshold=1.0 if threshold in (None, "") else threshold)
