"""Which device runs the model and what happens to its weights there: one rule.

MLX picks the device itself: ``mx.default_device()`` is the GPU on Apple Silicon (Metal) and on
Linux with the ``cuda`` extra (``mlx[cuda]``) and an NVIDIA GPU, else the CPU. The lab only
decides what to do with the weights:
- on a GPU, quantized weights stay quantized (MLX's GPU kernels for them are fast and they take
  4-8x less memory) and half-precision weights keep their dtype;
- on the CPU, everything is dequantized and cast to float32, because MLX's quantized and
  half-precision CPU kernels are several times slower than float32 with OpenBLAS.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import mlx.core as mx
import mlx.nn as nn


@dataclass(frozen=True)
class WeightPlan:
    device: str  # "cpu" | "gpu"
    dequantize: bool  # replace quantized layers by float ones
    dtype: Optional[str]  # cast every float parameter to this ("float32"), None keeps it

    @property
    def changes_weights(self) -> bool:
        return self.dequantize or self.dtype is not None


def weight_plan(device: str) -> WeightPlan:
    """The rule: dequantize to float32 only on the CPU; keep the weights as they are on a GPU."""
    if device not in ("cpu", "gpu"):
        raise ValueError(f"device must be 'cpu' or 'gpu', not {device!r}")
    if device == "cpu":
        return WeightPlan("cpu", dequantize=True, dtype="float32")
    return WeightPlan("gpu", dequantize=False, dtype=None)


def current_device() -> str:
    """'gpu' or 'cpu': the device MLX chose (its default device)."""
    return "gpu" if mx.default_device().type == mx.DeviceType.gpu else "cpu"


def device_label() -> str:
    """For people: 'gpu (Metal)', 'gpu (CUDA)' or 'cpu'."""
    if current_device() == "cpu":
        return "cpu"
    for backend, name in (("metal", "Metal"), ("cuda", "CUDA")):
        mod = getattr(mx, backend, None)
        try:
            if mod is not None and mod.is_available():
                return f"gpu ({name})"
        except Exception:  # pragma: no cover - a backend module without is_available
            continue
    return "gpu"


def is_quantized(model: nn.Module) -> bool:
    return any(isinstance(m, (nn.QuantizedLinear, nn.QuantizedEmbedding)) for _, m in model.named_modules())


def apply_plan(model: nn.Module, plan: WeightPlan) -> nn.Module:
    """Apply ``plan`` to a loaded model (in place where MLX allows) and return it."""
    if plan.dequantize:
        from mlx_lm.utils import dequantize_model

        model = dequantize_model(model)
    if plan.dtype is not None:
        model.set_dtype(getattr(mx, plan.dtype))
    if plan.changes_weights:
        mx.eval(model.parameters())
    return model
