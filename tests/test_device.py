"""The device rule (app.core.device): dequantize to float32 only on the CPU.

No GPU here, so the GPU branch is checked by applying its plan to a model on this machine:
the plan decides what happens to the weights, MLX decides where they run.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
import tiny_models
from mlx.utils import tree_flatten

from app.core import device
from app.core.models import prepare_for_device


def _quantized_tiny():
    model, _ = tiny_models.build("llama")
    nn.quantize(model, group_size=32, bits=4)
    mx.eval(model.parameters())
    return model


def test_the_rule():
    assert device.weight_plan("cpu") == device.WeightPlan("cpu", dequantize=True, dtype="float32")
    assert device.weight_plan("gpu") == device.WeightPlan("gpu", dequantize=False, dtype=None)
    assert not device.weight_plan("gpu").changes_weights
    with pytest.raises(ValueError, match="device"):
        device.weight_plan("tpu")


def test_this_machine_runs_on_the_cpu_and_says_so():
    assert device.current_device() == "cpu" and device.device_label() == "cpu"


def test_cpu_plan_dequantizes_to_float32_with_the_same_outputs():
    model = _quantized_tiny()
    tokens = mx.array([tiny_models.prompt_tokens(6)])
    before = np.array(model(tokens))
    assert device.is_quantized(model)
    model = prepare_for_device(model, on="cpu")
    assert not device.is_quantized(model)
    assert {p.dtype for _, p in tree_flatten(model.parameters())} == {mx.float32}
    np.testing.assert_allclose(np.array(model(tokens)), before, rtol=1e-4, atol=1e-4)


def test_gpu_plan_keeps_quantized_and_half_precision_weights():
    model = _quantized_tiny()
    kept = prepare_for_device(model, on="gpu")
    assert device.is_quantized(kept)
    assert any(p.dtype == mx.uint32 for _, p in tree_flatten(kept.parameters()))  # packed 4-bit
    half, _ = tiny_models.build("qwen2")
    half.set_dtype(mx.bfloat16)
    assert {p.dtype for _, p in tree_flatten(prepare_for_device(half, on="gpu").parameters())} == {mx.bfloat16}
    assert {p.dtype for _, p in tree_flatten(prepare_for_device(half, on="cpu").parameters())} == {mx.float32}


def test_default_follows_the_device_mlx_chose():
    model = prepare_for_device(_quantized_tiny())  # this machine: the CPU plan
    assert not device.is_quantized(model)
