"""Activation Steering Lab: learn activation steering by doing it, locally."""

import os as _os

# transformers (loaded by mlx-lm for tokenizers only) advises at import that "PyTorch was not found. Models
# won't be available": true, and irrelevant here (MLX runs the models), but it reads like an error.
_os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

__version__ = "0.1.0"
