"""Shared vocabulary of the lab: limits, parsers and rules (numpy only; no MLX, no Gradio)."""
