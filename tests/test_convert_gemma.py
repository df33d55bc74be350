"""The Gemma GGUF converter's pure parts (names, config) without the 230 MB download."""

from __future__ import annotations

import pytest
import tiny_models

from app.core.convert import ConversionError
from app.core.convert_gemma import BLOCK_NAMES, gemma_config, map_gemma_name

META = {
    "general.architecture": "gemma3",
    "gemma3.embedding_length": 640, "gemma3.feed_forward_length": 2048, "gemma3.block_count": 18,
    "gemma3.attention.head_count": 4, "gemma3.attention.head_count_kv": 1, "gemma3.attention.key_length": 256,
    "gemma3.attention.layer_norm_rms_epsilon": 1e-6, "gemma3.rope.freq_base": 1e6,
    "gemma3.attention.sliding_window": 512, "gemma3.context_length": 32768,
    "tokenizer.ggml.tokens": ["<pad>", "<eos>", "<bos>"] + ["x"] * 97,
    "tokenizer.ggml.bos_token_id": 2, "tokenizer.ggml.eos_token_id": 1, "tokenizer.ggml.padding_token_id": 0,
}


def test_every_gemma3_text_parameter_has_a_gguf_name():
    """The mapped names are exactly the parameters mlx-lm's gemma3_text block has."""
    from mlx.utils import tree_flatten

    model, _ = tiny_models.build("gemma3_text")
    want = {k for k, _ in tree_flatten(model.parameters())} - {"lm_head.weight"}  # tied: sanitize drops it
    got = {map_gemma_name(f"blk.{i}.{g}.weight") for i in range(6) for g in BLOCK_NAMES}
    got |= {map_gemma_name("token_embd.weight"), map_gemma_name("output_norm.weight")}
    assert got == want


def test_unknown_tensor_is_refused_by_name():
    with pytest.raises(ConversionError, match="blk.0.attn_qkv.weight"):
        map_gemma_name("blk.0.attn_qkv.weight")


def test_config_for_mlx_lm():
    from mlx_lm.models.gemma3_text import ModelArgs

    cfg = gemma_config(META)
    args = ModelArgs.from_dict(cfg)
    assert (args.hidden_size, args.num_hidden_layers, args.head_dim, args.query_pre_attn_scalar) == (640, 18, 256, 256)
    assert (args.sliding_window_pattern, args.rope_local_base_freq, args.rope_theta) == (6, 10_000.0, 1e6)
    assert cfg["vocab_size"] == 100 and cfg["tie_word_embeddings"] and cfg["eos_token_id"] == 1
    with pytest.raises(ConversionError, match="llama"):
        gemma_config(dict(META, **{"general.architecture": "llama"}))
