"""app.core.family on one tiny random model of every family in tests/tiny_models.py.

Each check compares the adapter's answer with what the model itself does: the blocks are the
list its forward pass runs, the lens head reproduces the model's own logits from the last
block's output (Gemma 2's soft-cap included), the KV geometry matches the caches the model
makes, and prompts follow the template rules (base models read plain text).
"""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest
import tiny_models
from mlx_lm.models.cache import RotatingKVCache

from app.core import family
from app.core.capture import capture
from app.core.patching import Recorder, patch_layers


def test_blocks_are_the_list_the_forward_pass_runs(tiny):
    name, model, config = tiny
    layers = family.blocks(model)
    assert layers is family.blocks(model) and len(layers) == config["num_hidden_layers"]
    rec = Recorder()
    with patch_layers(model, {1: [rec]}):  # replaces blocks(model)[1] for the duration
        model(mx.array([tiny_models.prompt_tokens(5)]))
    assert len(rec.outputs) == 1, f"{name}: wrapping blocks(model)[1] did not change the forward pass"


def test_residual_width_from_config_and_blocks(tiny):
    name, model, config = tiny
    assert family.residual_width(model, config) == tiny_models.HIDDEN
    assert family.residual_width(model, {"text_config": config}) == tiny_models.HIDDEN
    assert all(family.block_width(b) == tiny_models.HIDDEN for b in family.blocks(model)), name


def test_lens_head_reproduces_the_models_logits(tiny):
    name, model, config = tiny
    tokens = tiny_models.prompt_tokens(7)
    last = capture(model, [tokens]).hidden[-1, 0]  # output of the last block [T, H]
    want = np.array(model(mx.array([tokens]))[0].astype(mx.float32))
    got = np.array(family.lens_head(model, config)(mx.array(last)).astype(mx.float32))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4, err_msg=name)


def test_gemma2_lens_applies_the_soft_cap():
    model, config = tiny_models.build("gemma2")
    h = mx.array(np.random.default_rng(0).normal(size=(3, tiny_models.HIDDEN)).astype(np.float32) * 50)
    cap = config["final_logit_softcapping"]
    capped = np.array(family.lens_head(model, config)(h))
    raw = np.array(model.model.embed_tokens.as_linear(model.model.norm(h)))
    assert np.abs(raw).max() > cap  # the cap really bites on these inputs
    np.testing.assert_allclose(capped, np.tanh(raw / cap) * cap, rtol=1e-5, atol=1e-5)


def test_kv_geometry_matches_the_models_caches(tiny):
    name, model, config = tiny
    geo = family.kv_geometry(config, config["num_hidden_layers"], tiny_models.HIDDEN)
    caches = model.make_cache() if hasattr(model, "make_cache") else []
    if not caches:  # families without make_cache use one KVCache per layer
        from mlx_lm.models.cache import make_prompt_cache

        caches = make_prompt_cache(model)
    model(mx.array([tiny_models.prompt_tokens(3)]), cache=caches)
    rotating = [c for c in caches if isinstance(c, RotatingKVCache)]
    assert geo.sliding_layers == len(rotating) and geo.full_layers == len(caches) - len(rotating), name
    if rotating:
        assert {c.max_size for c in rotating} == {geo.sliding_window}
    _, kv_heads, _, head_dim = caches[0].keys.shape
    assert (geo.kv_heads, geo.head_dim) == (kv_heads, head_dim), name


def test_kv_bytes_stop_growing_past_the_window_on_sliding_layers():
    config = tiny_models.CONFIGS["gemma3_text"]  # 6 layers, pattern 3: 4 sliding, 2 full
    geo = family.kv_geometry(config, 6, tiny_models.HIDDEN)
    per_pos = 2 * geo.kv_heads * geo.head_dim * 4
    assert geo.cache_bytes(100) == per_pos * (2 * 100 + 4 * config["sliding_window"])
    llama = family.kv_geometry({"num_attention_heads": 4, "num_key_value_heads": 2}, 3, 64)
    assert llama.sliding_layers == 0 and llama.cache_bytes(10) == 2 * 2 * 16 * 4 * 3 * 10


class _Tok:
    def __init__(self, template, reject_system=False):
        self.chat_template = template
        self.reject_system = reject_system

    def apply_chat_template(self, messages, add_generation_prompt, tokenize):
        if self.reject_system and any(m["role"] == "system" for m in messages):
            raise ValueError("System role not supported")
        return "".join(f"<{m['role']}>{m['content']}" for m in messages) + "<assistant>"


def test_prompt_formats_base_chat_and_no_system_role():
    assert family.format_prompt(_Tok(None), "Describe the sea.") == "Describe the sea."
    assert family.format_prompt(_Tok(""), "Hi", "Be brief.") == "Be brief.\n\nHi"
    assert family.is_base_model(_Tok(None)) and not family.is_base_model(_Tok("x"))
    chat = _Tok("x")
    assert family.format_prompt(chat, "Hi", "Be brief.") == "<system>Be brief.<user>Hi<assistant>"
    gemma_like = _Tok("x", reject_system=True)
    assert family.format_prompt(gemma_like, "Hi", "Be brief.") == "<user>Be brief.\n\nHi<assistant>"


@pytest.mark.parametrize("family_name", tiny_models.FAMILIES)
def test_tiny_tokenizer_template_is_used(family_name):
    tok = tiny_models.tiny_tokenizer()
    text = family.format_prompt(tok, "hello world")
    assert text.startswith("user: hello world") and text.endswith("assistant: ")
