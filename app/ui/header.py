"""The page header: what the lab is, which model is loaded, and a picker to load another."""

from __future__ import annotations

import logging
from typing import Any

import gradio as gr

from app.ui.context import MODEL_CONCURRENCY
from app.ui.errors import guarded
from app.ui.present.common import md_escape

log = logging.getLogger("steering_lab.ui")

TAGLINE = ("Look inside a small language model layer by layer, build a *concept vector* from contrasting "
           "prompts, and add it to the model's residual stream to change how it writes. "
           "New here? Start with the **Tutorial** tab.")


BASE_MODEL_NOTE = (" · **base model**: no chat template, so every prompt (and every contrast pair) is "
                   "plain text that the model continues; write the start of the text you want, "
                   "e.g. *My weekend was* rather than a question.")


def short_blas(blas: str) -> str:
    """'OpenBLAS (/usr/lib/.../libopenblas.so.0)' -> 'OpenBLAS'."""
    return (blas or "unknown").split(" (", 1)[0]


def model_line(service: Any) -> str:
    """One compact line about the loaded model (or what to do when none is loaded)."""
    if not getattr(service, "is_loaded", False):
        return ("**No model loaded.** Pick or type a model on the right and press **Load** "
                "(or run `./setup_local_cache.sh` to prepare the bundled one).")
    info = service.info()
    line = (f"**Model:** `{info.model_id.replace('`', '')}` · {info.num_layers} layers (0–{info.num_layers - 1}) · "
            f"hidden size {info.hidden_size} · {info.dtype} · {info.device} · BLAS: {md_escape(short_blas(info.blas))}"
            + ("" if info.has_chat_template else BASE_MODEL_NOTE))
    notice = getattr(service, "switch_notice", None)
    return f"{line}\n\n⚠️ {md_escape(notice)}" if notice else line


NOTICE_POLL_S = 10  # every open tab re-reads the model line, so a switch is announced to all users


def picker_info(service: Any) -> str:
    """Loading a model changes it for every user of the server: the picker says so."""
    where = ("a prepared model, a hub id or a local MLX folder" if getattr(service, "allow_model_paths", True)
             else "one of the prepared models")
    return f"Pick {where}; loading switches the model for everyone using this lab"


def model_choices(service: Any) -> list[str]:
    try:
        ids = [e.model_id for e in service.list_models()]
    except Exception:  # a broken cache folder must not break the page
        log.exception("listing models failed")
        ids = []
    if getattr(service, "is_loaded", False):
        current = service.info().model_id
        if current not in ids:
            ids.insert(0, current)
    return ids


def current_model(service: Any) -> str | None:
    return service.info().model_id if getattr(service, "is_loaded", False) else None


def build(service: Any, ctx: Any) -> None:
    with gr.Row(elem_classes=["lab-header"], equal_height=False, elem_id="lab-header"):
        with gr.Column(scale=3, min_width=320):
            gr.Markdown("# Activation Steering Lab", elem_id="lab-title")
            gr.Markdown(TAGLINE, elem_classes=["lab-tagline"])
            info_md = gr.Markdown(model_line(service), elem_id="model-info", elem_classes=["model-info"])
        with gr.Column(scale=2, min_width=300):
            with gr.Row(equal_height=False, elem_classes=["picker-row"]):
                picker = gr.Dropdown(
                    choices=model_choices(service), value=current_model(service), allow_custom_value=True,
                    label="Model", info=picker_info(service),
                    scale=4, min_width=200, elem_id="model-picker",
                )
                load = gr.Button("Load for everyone", variant="primary", scale=1, min_width=80, elem_id="model-load",
                                 elem_classes=["btn-end"])

    @guarded
    def load_model(model_text: str, progress=gr.Progress()):
        text = (model_text or "").strip()
        if not text:
            raise gr.Error("Pick a model from the list or type a hub id / local folder first.", print_exception=False)
        progress(0.05, desc=f"Loading {text} for every user of this lab (this can take a while for big models)…")
        switch = getattr(service, "switch_model", None) or service.load
        info = switch(text)
        gr.Info(f"Loaded {info.model_id}: {info.num_layers} layers, hidden size {info.hidden_size}. Every user of "
                "this lab now uses it.")
        return model_line(service), gr.Dropdown(choices=model_choices(service), value=info.model_id)

    ctx.library_events.append(
        load.click(load_model, [picker], [info_md, picker], api_name="load_model", **MODEL_CONCURRENCY))

    @guarded
    def refresh_header():
        return model_line(service), gr.Dropdown(choices=model_choices(service), value=current_model(service))

    ctx.on_load.append((refresh_header, [], [info_md, picker]))
    timer = gr.Timer(NOTICE_POLL_S)
    timer.tick(guarded(lambda: model_line(service)), None, [info_md], queue=False, show_progress="hidden",
               api_visibility="private")
    ctx.register("header", model_info=info_md, picker=picker, load=load)


def wire(service: Any, ctx: Any) -> None:
    """Once every tab exists: the controls that depend on the model follow each switch."""
    from app.ui import model_follow

    model_follow.install(service, ctx)
