"""The second real model, Gemma 3 270M base (gemma3_text), end to end through the service.

The folder comes from ``steering-lab prepare --extra gemma3-270m`` (``setup_local_cache.sh --dev``
runs it, so CI has it). The checks that need the real weights: the conversion conventions (norms,
tokenizer), English greedy text, and every lab feature on a base model without a chat template.
Tests run in file order; the last one switches to SmolLM2 and back.
"""

from __future__ import annotations

import json
import re

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten, tree_unflatten

from app import paths
from app.core import registry
from app.domain.requests import SteerRequest
from app.types import GenerationParams

pytestmark = pytest.mark.real_model

EXTRA = registry.EXTRAS["gemma3-270m"]
SENTENCES = [
    "The capital of France is Paris.",
    "Once upon a time, there was a little fox who lived in the forest.",
    "Hello, world! It's a   sunny day.\nNew line\ttab 12345 café naïve 🙂",
    " A leading space, and trailing spaces  ",
]
EIFFEL = ("The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France. "
          "It is named after the engineer Gustave Eiffel, whose company designed and built the tower.")


@pytest.fixture(scope="module")
def svc():
    if not (EXTRA.folder / "config.json").exists():
        pytest.skip(f"GEMMA NOT PREPARED: {EXTRA.folder} is missing; run `steering-lab prepare --extra "
                    f"gemma3-270m` (./setup_local_cache.sh --dev does it). These tests did NOT run.")
    from app.service.model_service import ModelService

    s = ModelService()
    s.load(EXTRA.model_id)
    return s


def _words(text: str) -> list[str]:
    return re.findall(r"[A-Za-z']+", text)


def test_folder_is_a_gemma3_text_model(svc):
    cfg = json.loads((EXTRA.folder / "config.json").read_text())
    from mlx_lm.models.gemma3_text import ModelArgs

    args = ModelArgs.from_dict(cfg)
    assert (args.num_hidden_layers, args.hidden_size, args.num_attention_heads, args.num_key_value_heads,
            args.head_dim, args.sliding_window, args.sliding_window_pattern) == (18, 640, 4, 1, 256, 512, 6)
    assert args.query_pre_attn_scalar == 256 and args.rope_local_base_freq == 10_000 and args.rope_theta == 1e6
    assert cfg["tie_word_embeddings"] and cfg["bos_token_id"] == 2 and cfg["eos_token_id"] == 1
    info = svc.info()
    assert (info.family, info.num_layers, info.hidden_size, info.dtype) == ("gemma3_text", 18, 640, "float32")
    caches = svc.loaded.model.make_cache()
    globals_ = [i for i, c in enumerate(caches) if type(c).__name__ == "KVCache"]
    assert globals_ == [5, 11, 17]


def test_tokenizer_round_trips_with_bos_and_whole_word_pieces(svc):
    tok = svc.loaded.tokenizer
    for s in SENTENCES:
        ids = tok.encode(s)
        assert ids[0] == 2 and ids.count(2) == 1, s
        assert tok.decode(ids[1:]) == s
    pieces = tok.convert_ids_to_tokens(tok.encode("The capital of France is"))
    assert pieces == ["<bos>", "The", "▁capital", "▁of", "▁France", "▁is"]  # merges rebuilt, not bytes
    assert tok.eos_token_id == 1 and 1 in tok.eos_token_ids
    assert not svc.info().has_chat_template


def _nll(model, ids) -> float:
    x = mx.array([ids])
    logits = model(x[:, :-1]).astype(mx.float32)
    return nn.losses.cross_entropy(logits, x[:, 1:], reduction="mean").item()


def test_norm_convention_is_the_one_that_models_english(svc):
    """llama.cpp stores Gemma's RMSNorm weights as 1 + w; keeping that +1 ruins the model."""
    model, ids = svc.loaded.model, svc.loaded.tokenizer.encode(EIFFEL)
    original = tree_flatten(model.parameters())
    converted = _nll(model, ids)
    try:
        model.update(tree_unflatten([(k, v + 1.0) if k.endswith("layernorm.weight") else (k, v)
                                     for k, v in original]))
        doubled = _nll(model, ids)
    finally:
        model.update(tree_unflatten(original))
    assert converted < 3.0 and doubled > 3 * converted, (converted, doubled)
    assert _nll(model, ids) == converted  # restored exactly


def test_greedy_continuations_read_as_english(svc):
    params = GenerationParams(max_tokens=20)
    for prompt in ("The capital of France is", "Once upon a time, there was a"):
        chunk, _ = svc.compare(SteerRequest(prompt=prompt, concept="happy", layers=[(6, 0.0)], params=params))
        words = _words(chunk.baseline_text)
        assert len(words) >= 10, chunk.baseline_text
        assert len(set(w.lower() for w in words)) >= 0.5 * len(words), chunk.baseline_text
        assert chunk.steered_text == chunk.baseline_text  # strength 0 changes nothing


def test_explorer_norms_lens_and_projections(svc):
    ex = svc.explore("The capital of France is", concept="happy", chat=False)
    T = len(svc.loaded.tokenizer.encode("The capital of France is"))
    assert ex.norms.shape == (18, T) and np.isfinite(ex.norms).all()
    assert ex.projections.shape == (18, T)
    # The lens of the last layer goes through Gemma's final norm and tied embedding: it must be
    # the model's own next-token distribution.
    logits = svc.loaded.model(mx.array([svc.loaded.tokenizer.encode("The capital of France is")]))[0, -1]
    top = [svc.loaded.tokenizer.decode([t]) for t in np.argsort(-np.array(logits))[:5]]
    assert [t for t, _ in ex.lens_top[-1][-1]] == top
    assert " Paris" in top
    assert ex.lens_top[0][-1][0][1] < ex.lens_top[-1][-1][0][1] or ex.lens_top[0][-1][0][0] != top[0]


def test_prompts_are_plain_text_on_a_base_model(svc):
    assert svc.format_chat("Describe the sea.") == "Describe the sea."
    assert svc.format_chat("Describe the sea.", "You are happy.") == "You are happy.\n\nDescribe the sea."
    assert svc.tokenize_chat("Hi")[0] == 2 and svc.tokenize_chat("Hi").count(2) == 1


def test_shipped_concepts_extract_on_demand_and_are_stored(svc):
    for slug in ("happy", "sad"):
        cv = svc.concept_vectors(slug)
        assert cv.vectors.shape == (18, 640) and np.isfinite(cv.vectors).all()
        assert (np.linalg.norm(cv.vectors[1:], axis=1) > 0).all()
        assert svc.library.load_vectors(slug, EXTRA.model_id) is not None
    happy, sad = svc.concept_vectors("happy").vectors[9], svc.concept_vectors("sad").vectors[9]
    assert -0.99 < float(happy @ sad / np.linalg.norm(happy) / np.linalg.norm(sad)) < 0.99


def test_side_by_side_steering_changes_the_text(svc):
    req = SteerRequest(prompt="My weekend was", concept="happy", layers=[(6, 0.5)],
                       params=GenerationParams(max_tokens=16))
    chunk, _ = svc.compare(req)
    assert chunk.divergence is not None and chunk.steered_text != chunk.baseline_text
    judged = chunk.stats["judge"]  # happy's declared judge scores every row of the run
    assert {"baseline", "steered", "steered_change"} <= set(judged)
    assert len(chunk.steered_pieces) == len(chunk.baseline_pieces) or chunk.done


def test_sweep_and_mix(svc):
    res = svc.sweep("My weekend was", "happy", [4, 9], [0.2, 0.6], params=GenerationParams(max_tokens=10))
    assert res.grid("concept_score").shape == (2, 2) and np.isfinite(res.grid("concept_score")).all()
    cv, recipe = svc.mix_vectors("happy:0.5, sad:0.5")
    assert cv.vectors.shape == (18, 640) and dict(recipe) == {"happy": 0.5, "sad": 0.5}
    expect = 0.5 * svc.concept_vectors("happy").vectors + 0.5 * svc.concept_vectors("sad").vectors
    np.testing.assert_allclose(cv.vectors, expect, rtol=1e-5, atol=1e-5)


def test_gguf_export_import_round_trip(svc, tmp_path):
    out = tmp_path / "happy-gemma.gguf"
    svc.export_gguf("happy", out, layers=[4, 5, 6])
    slug = svc.import_gguf(out, "happy-gemma-imported", overwrite=True)
    back = svc.concept_vectors(slug).vectors
    want = svc.concept_vectors("happy").vectors
    np.testing.assert_allclose(back[[4, 5, 6]], want[[4, 5, 6]], rtol=1e-6, atol=1e-6)
    assert not back[[0, 1, 2, 3, 7]].any()


def test_tutorial_examples_run_on_the_base_model(svc):
    """Each "Try it" of the tutorial, fitted to 18 layers, runs (explorer, playground, sweeps, mixer)."""
    from app.ui.tabs.tutorial import STEPS, fit_example

    fills = [fit_example(s.fill, svc.info().num_layers) for s in STEPS]
    for f in fills:
        if "explorer.prompt" in f:
            ex = svc.explore(f["explorer.prompt"], concept=f.get("explorer.concept") or None)
            assert ex.norms.shape[0] == 18
        if "playground.layer" in f:
            chunk, _ = svc.compare(SteerRequest(prompt=f["playground.prompt"], concept=f["playground.concept"],
                                                layers=[(f["playground.layer"], f["playground.strength"])],
                                                params=GenerationParams(max_tokens=8)))
            assert chunk.baseline_text and chunk.steered_text
        if "sweeps.layers" in f:
            layers = [int(x) for x in f["sweeps.layers"].split(",")]
            strengths = [float(x) for x in f["sweeps.strengths"].split(",")]
            res = svc.sweep(f["sweeps.prompt"], f["sweeps.concept"], layers, strengths,
                            params=GenerationParams(max_tokens=6))
            assert res.grid("coherent").shape == (len(layers), len(strengths))
        if "mixer.text" in f:
            cv, recipe = svc.mix_vectors(f["mixer.text"])
            assert cv.vectors.shape == (18, 640) and len(recipe) == 2


def test_switch_to_smollm2_and_back_keeps_vectors_per_model(svc):
    gemma_happy = svc.concept_vectors("happy").vectors.copy()
    if not (paths.default_model_dir() / "config.json").exists():
        pytest.fail("the bundled default model is not prepared; run ./setup_local_cache.sh", pytrace=False)
    info = svc.load("")
    try:
        assert (info.family, info.hidden_size) == ("llama", 576)
        assert svc.concept_vectors("happy").vectors.shape == (30, 576)
    finally:
        info = svc.load(EXTRA.model_id)
    assert (info.family, info.hidden_size) == ("gemma3_text", 640)
    np.testing.assert_array_equal(svc.concept_vectors("happy").vectors, gemma_happy)
