"""Everything that depends on the model family, in one place.

mlx-lm gives every family the same outer contract (``model.layers``, ``model(tokens, cache)``),
but the lab also needs a few things that differ per family: where the decoder blocks live, how
wide the residual stream is, the final norm and unembedding for the logit lens (Gemma 2's logit
soft-capping), how much KV cache a row needs (Gemma 3's sliding-window layers keep at most
``sliding_window`` positions), and how a prompt is formatted (Gemma templates reject a system
turn; a base model has no template, so its prompts are plain text). A fix for a new family is a
change here plus a test in ``tests/test_family.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import mlx.core as mx
import mlx.nn as nn

from app.errors import ModelLoadError

# Block attribute names that hold the first RMSNorm/LayerNorm (olmo2 blocks have post-norms only).
_BLOCK_NORMS = ("input_layernorm", "ln_1", "attention_norm", "norm1", "pre_attention_norm",
                "post_attention_layernorm")
_FINAL_NORMS = ("norm", "final_layernorm", "ln_f", "final_norm")
_EMBEDDINGS = ("embed_tokens", "wte")


def text_config(config: dict[str, Any]) -> dict[str, Any]:
    """The text model's config (multimodal configs nest it under ``text_config``)."""
    if "hidden_size" not in config and isinstance(config.get("text_config"), dict):
        return config["text_config"]
    return config


def blocks(model: nn.Module) -> list:
    """The list of decoder blocks the forward pass iterates (``model.layers`` in every family)."""
    layers = getattr(model, "layers", None)
    if layers is None and hasattr(model, "model"):
        layers = getattr(model.model, "layers", None)
    elif isinstance(layers, list) and getattr(model, "layers", None) is not layers:
        # A property that returns a new list each time (mlx-lm's PipelineMixin families, e.g.
        # qwen2, return a slice of model.model.layers): patch the list the forward pass uses.
        inner = getattr(model, "model", None)
        stored = getattr(inner, "layers", None) if inner is not None else None
        if isinstance(stored, list) and getattr(inner, "layers", None) is stored:
            layers = stored
    if not isinstance(layers, list):
        raise ModelLoadError(f"{type(model).__name__} exposes no list of decoder layers")
    return layers


def residual_width(model: nn.Module, config: Optional[dict[str, Any]] = None) -> int:
    """Width of the residual stream (hidden size) from the config, else from the model args."""
    cfg = text_config(config or {})
    for key in ("hidden_size", "d_model", "n_embd"):
        if key in cfg:
            return int(cfg[key])
    args = getattr(model, "args", None)
    if args is not None and hasattr(args, "hidden_size"):
        return int(args.hidden_size)
    raise ModelLoadError("cannot tell the model's hidden size")


def block_width(block: nn.Module) -> Optional[int]:
    """Width of the residual stream read off a block's first norm weight (None if unknown)."""
    for name in _BLOCK_NORMS:
        norm = getattr(block, name, None) if name in block else None
        w = getattr(norm, "weight", None) if norm is not None else None
        if w is not None and w.ndim == 1:
            return int(w.shape[0])
    return None


def lens_head(model: nn.Module, config: Optional[dict[str, Any]] = None) -> Callable[[mx.array], mx.array]:
    """residual -> logits as the model's own head computes them (final norm, unembedding, caps).

    Gemma's final norm is its ``1 + weight`` RMSNorm module and its unembedding is the tied
    embedding; calling the model's own modules keeps those conventions right.
    """
    inner = getattr(model, "model", None) or getattr(model, "language_model", None)
    norm = next((inner[n] for n in _FINAL_NORMS if inner is not None and n in inner), None)
    if "lm_head" in model:
        unembed = model["lm_head"]
    else:
        emb = next((inner[n] for n in _EMBEDDINGS if inner is not None and n in inner), None)
        if emb is None:
            raise ValueError(f"{type(model).__name__}: cannot find the unembedding for the logit lens")
        unembed = emb.as_linear
    cap = float(text_config(config or {}).get("final_logit_softcapping") or 0.0)
    if not cap:
        args = getattr(model, "args", None)
        cap = float(getattr(args, "final_logit_softcapping", 0.0) or 0.0)

    def head(h: mx.array) -> mx.array:
        logits = unembed(norm(h) if norm is not None else h)
        return mx.tanh(logits / cap) * cap if cap else logits

    return head


@dataclass(frozen=True)
class KVGeometry:
    """How many KV values one row keeps per cached position, split by full / sliding layers."""
    kv_heads: int
    head_dim: int
    full_layers: int
    sliding_layers: int
    sliding_window: int  # 0: no sliding layers

    def cache_bytes(self, tokens: int, bytes_per: int = 4) -> int:
        """Bytes of K and V for one row holding ``tokens`` positions."""
        per_pos = 2 * self.kv_heads * self.head_dim * bytes_per
        window = min(tokens, self.sliding_window) if self.sliding_window else tokens
        return per_pos * (self.full_layers * tokens + self.sliding_layers * window)


def kv_geometry(config: dict[str, Any], num_layers: int, hidden: int) -> KVGeometry:
    """KV geometry from the config; Gemma 3 has 1 global layer per ``sliding_window_pattern``."""
    cfg = text_config(config)
    heads = int(cfg.get("num_attention_heads", 1) or 1)
    kv_heads = int(cfg.get("num_key_value_heads") or heads)
    head_dim = int(cfg.get("head_dim") or hidden // max(heads, 1))
    window = int(cfg.get("sliding_window") or 0)
    sliding = 0
    if window:
        if cfg.get("model_type") == "gemma3_text":
            pattern = int(cfg.get("sliding_window_pattern", 6) or 1)
            sliding = sum(1 for i in range(num_layers) if (i + 1) % pattern != 0)
        elif isinstance(cfg.get("layer_types"), list):
            sliding = sum(1 for t in cfg["layer_types"] if t == "sliding_attention")
    if sliding == 0:
        window = 0
    return KVGeometry(kv_heads, head_dim, num_layers - sliding, sliding, window)


def is_base_model(tokenizer: Any) -> bool:
    """No chat template: a base model, whose prompts are plain text."""
    return not getattr(tokenizer, "chat_template", None)


def format_reply_prefix(tokenizer: Any, user: str) -> str:
    """What precedes the model's own reply to ``user``: the chat template's generation prompt,
    or for a base model the plain text and a line break (the reply continues it)."""
    return f"{user}\n" if is_base_model(tokenizer) else format_prompt(tokenizer, user)


def format_prompt(tokenizer: Any, user: str, system: Optional[str] = None) -> str:
    """The text the model reads for a user message (and optional system text).

    A base model reads the plain text (the system text, if any, as a preceding paragraph). A
    chat model reads its own template; where the template rejects a system turn (Gemma and
    Gemma 2 templates raise) the system text is folded into the user turn.
    """
    if is_base_model(tokenizer):
        return f"{system}\n\n{user}" if system else user
    messages = [{"role": "user", "content": user}]
    if system:
        messages.insert(0, {"role": "system", "content": system})
        try:
            return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        except Exception:  # templates that raise on a system turn (jinja raise_exception)
            pass
    if system:
        messages = [{"role": "user", "content": f"{system}\n\n{user}"}]
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
