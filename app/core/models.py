"""Load any mlx-lm model (bundled folder, local folder or hub id) and describe it.

The device rule (dequantize to float32 on CPU, keep quantized weights on a GPU) is
``app.core.device.weight_plan``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn

from app.core import device, family
from app.core.blas import active_blas
from app.errors import ModelLoadError
from app.types import ModelInfo


@dataclass
class LoadedModel:
    model: nn.Module
    tokenizer: Any  # mlx_lm TokenizerWrapper
    config: dict[str, Any]
    model_id: str
    path: str

    @property
    def layers(self) -> list:
        return layers_of(self.model)

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def hidden_size(self) -> int:
        return hidden_size_of(self.model, self.config)

    @property
    def dtype(self) -> mx.Dtype:
        return activation_dtype(self.model)

    def info(self) -> ModelInfo:
        return ModelInfo(
            model_id=self.model_id,
            family=str(self.config.get("model_type", "unknown")),
            num_layers=self.num_layers,
            hidden_size=self.hidden_size,
            dtype=str(self.dtype).replace("mlx.core.", ""),
            has_chat_template=bool(getattr(self.tokenizer, "chat_template", None)),
            blas=active_blas(),
            device=device_name(),
            fingerprint=model_fingerprint(self.config),
            vocab_size=int(self.config.get("vocab_size", 0) or 0),
            path=self.path,
        )


def device_name() -> str:
    return device.device_label()


def on_cpu() -> bool:
    return device.current_device() == "cpu"


def layers_of(model: nn.Module) -> list:
    """The list of decoder blocks (``model.layers`` in every mlx-lm family)."""
    return family.blocks(model)


def hidden_size_of(model: nn.Module, config: dict[str, Any] | None = None) -> int:
    return family.residual_width(model, config)


def activation_dtype(model: nn.Module) -> mx.Dtype:
    """The dtype the residual stream runs in (that of the embedding scales or weights)."""
    from mlx.utils import tree_flatten

    for name, p in tree_flatten(model.parameters()):
        if name.endswith("norm.weight") or "layernorm" in name:
            return p.dtype
    for _, p in tree_flatten(model.parameters()):
        if mx.issubdtype(p.dtype, mx.floating):
            return p.dtype
    return mx.float32


def model_fingerprint(config: dict[str, Any]) -> str:
    """Hash of the config fields that decide whether a vector fits this model."""
    keys = ("model_type", "hidden_size", "num_hidden_layers", "intermediate_size", "vocab_size",
            "num_attention_heads", "num_key_value_heads", "rope_theta")
    src = config.get("text_config", config) if "hidden_size" not in config else config
    blob = json.dumps({k: src.get(k) for k in keys}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def prepare_for_device(model: nn.Module, on: str | None = None) -> nn.Module:
    """Apply the device rule of ``app.core.device`` (float32 on CPU, as-is on a GPU)."""
    return device.apply_plan(model, device.weight_plan(on or device.current_device()))


def load_model(model_id: str, path: str | Path) -> LoadedModel:
    """Load a model folder (or hub id already resolved to ``path``) with mlx-lm."""
    from mlx_lm import load as mlx_load

    path = str(path)
    folder = Path(path)
    if folder.exists():
        if not (folder / "config.json").exists():
            raise ModelLoadError(f"{path} has no config.json: it is not an MLX/Hugging Face model folder")
        if not list(folder.glob("*.safetensors")):
            raise ModelLoadError(f"{path} has no *.safetensors weights; convert it with mlx_lm.convert first")
    elif folder.is_absolute() or path.startswith((".", "~")):
        raise ModelLoadError(f"{model_id}: no model folder at {path}")  # not a hub id: don't ask the hub
    try:
        model, tokenizer, config = mlx_load(path, return_config=True)
    except ModelLoadError:
        raise
    except ValueError as exc:
        text = " ".join(str(exc).split())  # one line: hub errors span several
        if "not supported" in text.lower() or "model type" in text.lower():
            raise ModelLoadError(f"{model_id}: architecture not supported by mlx-lm ({text})") from exc
        raise ModelLoadError(f"{model_id}: could not load from {path} ({text})") from exc
    except Exception as exc:  # corrupt safetensors, missing tensors, network errors
        text = " ".join(str(exc).split())
        raise ModelLoadError(f"{model_id}: could not load from {path} ({type(exc).__name__}: {text})") from exc
    model = prepare_for_device(model)
    return LoadedModel(model=model, tokenizer=tokenizer, config=config, model_id=model_id, path=path)


def from_memory(model: nn.Module, tokenizer: Any, config: dict[str, Any], model_id: str = "in-memory") -> LoadedModel:
    """Wrap a model built in memory (tests use tiny random models)."""
    return LoadedModel(model=model, tokenizer=tokenizer, config=config, model_id=model_id, path="")
