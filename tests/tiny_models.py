"""Tiny random mlx-lm models of several families, built in memory in well under a second.

Each builder returns ``(model, config)`` where ``config`` is the plain dict an MLX model
folder's config.json would hold, so the same model can also be written to disk. Shapes are
tiny (hidden 64, 4-6 layers, vocab 256) but every family keeps what makes it different:
llama with sliding-window layers (``use_sliding`` read by ``make_cache``), qwen2 with q/k/v
biases, gemma2 with logit softcapping, gemma3_text with a sliding-window pattern and
RotatingKVCache layers, phi3 with a fused qkv projection, olmo2 with post-norms only.
"""

from __future__ import annotations

import importlib
from typing import Any

import app.core  # noqa: F401  (fast BLAS before mlx)
import mlx.core as mx
import mlx.nn as nn

VOCAB = 256
HIDDEN = 64

_COMMON: dict[str, Any] = {
    "hidden_size": HIDDEN,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "rms_norm_eps": 1e-5,
    "vocab_size": VOCAB,
}

CONFIGS: dict[str, dict[str, Any]] = {
    "llama": {
        **_COMMON,
        "model_type": "llama",
        "num_hidden_layers": 5,
        "head_dim": 16,
        "rope_theta": 10000.0,
        "tie_word_embeddings": True,
        # Alternate full and sliding-window attention so make_cache must read use_sliding.
        "layer_types": ["full_attention", "sliding_attention"] * 2 + ["full_attention"],
        "sliding_window": 4,
    },
    "qwen2": {
        **_COMMON,
        "model_type": "qwen2",
        "num_hidden_layers": 4,
        "rope_theta": 1000000.0,
        "max_position_embeddings": 512,
        "tie_word_embeddings": False,
    },
    "gemma2": {
        **_COMMON,
        "model_type": "gemma2",
        "num_hidden_layers": 4,
        "head_dim": 16,
        "query_pre_attn_scalar": 16,
        "attn_logit_softcapping": 2.0,  # small so the tanh caps actually bite
        "final_logit_softcapping": 3.0,
    },
    "gemma3_text": {
        **_COMMON,
        "model_type": "gemma3_text",
        "num_hidden_layers": 6,
        "num_key_value_heads": 1,
        "head_dim": 16,
        "query_pre_attn_scalar": 16,
        "sliding_window": 4,
        "sliding_window_pattern": 3,  # layers 2 and 5 global, the others sliding
        "max_position_embeddings": 512,
    },
    "phi3": {
        **_COMMON,
        "model_type": "phi3",
        "num_hidden_layers": 4,
        "max_position_embeddings": 512,
        "original_max_position_embeddings": 512,
        "tie_word_embeddings": False,
    },
    "olmo2": {
        **_COMMON,
        "model_type": "olmo2",
        "num_hidden_layers": 4,
        "head_dim": 16,
        "tie_word_embeddings": False,
    },
}

FAMILIES = tuple(CONFIGS)


def build(family: str, seed: int = 0) -> tuple[nn.Module, dict[str, Any]]:
    """A tiny random ``family`` model (float32, evaluated) and its config dict."""
    config = {k: (list(v) if isinstance(v, list) else v) for k, v in CONFIGS[family].items()}
    module = importlib.import_module(f"mlx_lm.models.{family}")
    args = module.ModelArgs.from_dict(config)
    mx.random.seed(seed)
    model = module.Model(args)
    # Norm weights start at constants; randomise them a little so every parameter matters.
    from mlx.utils import tree_flatten, tree_unflatten

    params = tree_flatten(model.parameters())
    bumped = [(k, v + 0.1 * mx.random.normal(v.shape)) if "norm" in k else (k, v) for k, v in params]
    model.update(tree_unflatten(bumped))
    model.set_dtype(mx.float32)
    mx.eval(model.parameters())
    model.eval()
    return model, config


def prompt_tokens(length: int, seed: int = 1) -> list[int]:
    """Deterministic token ids in [3, VOCAB) (0-2 are left for pad/eos/bos)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    return [int(t) for t in rng.integers(3, VOCAB, size=length)]


# ---- on disk: a normal MLX model folder (config.json, model.safetensors, tokenizer) ----------
TINY_WORDS = (
    "the a an is are was of to and in on at it this that what who where capital city country "
    "France Paris happy sad neutral good bad day night sun rain cat dog model layer vector steer "
    "hello world yes no I you we they he she ? . , !"
).split()


def tiny_tokenizer(vocab_size: int = VOCAB):
    """A word-level tokenizer with exactly ``vocab_size`` ids (0 pad, 1 eos, 2 bos, 3 unk)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<eos>", "<bos>", "<unk>"]
    words = specials + list(TINY_WORDS)
    words += [f"w{i}" for i in range(vocab_size - len(words))]
    tok = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        eos_token="<eos>",
        bos_token="<bos>",
        unk_token="<unk>",
        chat_template=(
            "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }} {% endfor %}"
            "{% if add_generation_prompt %}assistant: {% endif %}"
        ),
    )


def write_model_folder(model, config: dict[str, Any], folder, quantization: dict[str, int] | None = None):
    """Write ``model`` as an MLX model folder; quantize it in place first if asked."""
    import json
    from pathlib import Path

    from mlx.utils import tree_flatten

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = dict(config, eos_token_id=1, bos_token_id=2)
    if quantization:
        nn.quantize(model, group_size=quantization["group_size"], bits=quantization["bits"])
        config["quantization"] = dict(quantization)
    weights = dict(tree_flatten(model.parameters()))
    mx.save_safetensors(str(folder / "model.safetensors"), weights, metadata={"format": "mlx"})
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    tok = tiny_tokenizer(int(config["vocab_size"]))
    tok.save_pretrained(str(folder))
    cfg_path = folder / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"  # loadable by transformers 4 and 5
    cfg_path.write_text(json.dumps(cfg, indent=2))
    return folder
