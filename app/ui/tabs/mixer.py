"""Placeholder: this tab is being built."""

import gradio as gr


def build(service, ctx) -> None:
    gr.Markdown("This tab is under construction.")
