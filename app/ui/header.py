"""Placeholder header: replaced by the full model picker."""

import gradio as gr


def build(service, ctx) -> None:
    gr.Markdown("# Activation Steering Lab")
