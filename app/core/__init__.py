"""Pure MLX + numpy engine of the lab (no Gradio). Loads a fast BLAS before MLX."""

from app.core.blas import ensure_fast_blas

ensure_fast_blas()
