"""Gradio front end: tabs over the model service. Never imports MLX or app.core."""
