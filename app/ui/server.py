"""Assemble the lab page from one module per tab and launch it."""

from __future__ import annotations

import logging
from typing import Any, Optional

import gradio as gr

from app.ui.feedback import CLAMP_JS, FEEDBACK_CSS
from app.ui.context import UIContext
from app.ui.progress_targets import keep_progress_off_containers
from app.ui.theme import CSS, THEME

log = logging.getLogger("steering_lab.ui")


def build_app(service: Any) -> gr.Blocks:
    """The whole page: header, then one tab per module in app/ui/tabs (tutorial first)."""
    from app.ui import header

    from app.service.lab import Lab

    service = Lab.of(service)  # the page talks to the lab's facade only
    ctx = UIContext(service=service)
    from app.ui.tabs import tab_modules

    modules = tab_modules()
    # delete_cache: Gradio's copies of uploads and downloads older than an hour are removed hourly.
    with gr.Blocks(title="Activation Steering Lab", delete_cache=(3600, 3600)) as demo:
        header.build(service, ctx)
        with gr.Tabs(selected="tutorial") as tabs:
            ctx.tabs = tabs
            for tab_id, mod in modules.items():
                with gr.Tab(mod.LABEL, id=tab_id, elem_id=f"tab-{tab_id}"):
                    mod.build(service, ctx)
        # Cross-tab wiring (tutorial "try it", "use this setting") once every tab exists.
        for mod in [header, *modules.values()]:
            wire = getattr(mod, "wire", None)
            if wire is not None:
                wire(service, ctx)
        run_on_load(demo, ctx.on_load)
    keep_progress_off_containers(demo)  # else every streamed message re-snapshots the whole page (see module)
    return demo


def on_load_chains(entries: list[tuple[Any, list, list]]) -> list[Optional[int]]:
    """For each page-load handler, the earlier one it must wait for (None: it starts on load).

    Handlers that update the same component run one after the other, in the order they were added, so the
    last one's value is what the page shows (e.g. a link's recommended layer note after the depth fix for
    a switched model); handlers that share nothing run side by side."""
    after: list[Optional[int]] = []
    owners: dict[int, int] = {}  # id(component) -> index of the last handler that writes it
    for i, (_fn, _inputs, outputs) in enumerate(entries):
        earlier = [owners[id(c)] for c in outputs if id(c) in owners]
        after.append(max(earlier) if earlier else None)
        for c in outputs:
            owners[id(c)] = i
    return after


def run_on_load(demo: Any, entries: list[tuple[Any, list, list]]) -> None:
    events: list[Any] = []
    for (fn, inputs, outputs), prev in zip(entries, on_load_chains(entries)):
        start = demo.load if prev is None else events[prev].then
        events.append(start(fn, inputs=inputs, outputs=outputs))


def serve(host: str = "127.0.0.1", port: int = 7860, share: bool = False, model: Optional[str] = None,
          open_browser: bool = False, block: bool = True, service: Any = None, allow_model_paths: bool = False):
    """Launch the lab; browser tabs may load arbitrary server folders only with ``allow_model_paths``."""
    from app.service.lab import Lab

    if service is not None:
        service = Lab.of(service)
        service.allow_model_paths = allow_model_paths
    else:
        service = Lab(allow_model_paths=allow_model_paths)
        try:
            info = service.load(model or "")
            log.info("model ready: %s (%d layers, hidden %d, %s, %s, BLAS: %s)", info.model_id, info.num_layers,
                     info.hidden_size, info.dtype, info.device, info.blas)
        except Exception as exc:  # the lab still starts; the header says what to do
            log.error("could not load the model: %s", exc)
    if host not in ("127.0.0.1", "localhost", "::1") or share:
        log.warning("the lab is exposed beyond this machine (host=%s, share=%s): anyone who can reach it can use it", host, share)
    demo = build_app(service)
    demo.queue(default_concurrency_limit=4, max_size=64)
    if block:  # Gradio's own banner (quiet=False) ends with a "set share=True" hint a newcomer reads as a to-do
        print(f"* The lab is running at http://{'127.0.0.1' if host in ('127.0.0.1', 'localhost') else host}:{port}"
              "  (Ctrl+C stops it)", flush=True)
    demo.launch(server_name=host, server_port=port, share=share, inbrowser=open_browser, theme=THEME, css=CSS + FEEDBACK_CSS, js=CLAMP_JS,
                prevent_thread_lock=not block, show_error=True, quiet=True)
    return demo if not block else 0
