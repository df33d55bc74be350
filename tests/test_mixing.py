"""Concept algebra: parsing mixes, blending, projecting out, cosines (pure numpy)."""

from __future__ import annotations

import numpy as np
import pytest

from app.core.mixing import blend, cosine_matrix, mix_concept, parse_mix
from app.errors import InputError
from app.types import ConceptVectors

KNOWN = ["happy", "excited", "formal", "sad", "calm", "pirate", "brief", "verbose", "poetic", "angry"]



def cosine_across_layers(a, b) -> np.ndarray:
    """Cosine between two concepts' vectors at every layer (float64), computed here, not by the code under test."""
    va, vb = a.vectors.astype(np.float64), b.vectors.astype(np.float64)
    return np.einsum("lh,lh->l", va, vb) / (np.linalg.norm(va, axis=1) * np.linalg.norm(vb, axis=1))

def cv(seed: int, L: int = 4, H: int = 16, fp: str = "fp", rec=(1, 2)) -> ConceptVectors:
    rng = np.random.default_rng(seed)
    return ConceptVectors(model_id="m", model_fingerprint=fp, method="mean_diff",
                          vectors=rng.standard_normal((L, H)).astype(np.float32),
                          typical_norms=rng.uniform(5, 10, L).astype(np.float32), recommended_layers=rec)


# ---- parse_mix -------------------------------------------------------------------------------------
def test_parse_mix_accepts_weights_and_bare_slugs():
    assert parse_mix("happy:0.7, excited:0.3, formal:-0.5", KNOWN) == [("happy", 0.7), ("excited", 0.3),
                                                                        ("formal", -0.5)]
    assert parse_mix("happy", KNOWN) == [("happy", 1.0)]
    assert parse_mix(" Happy : 2 ,sad:-1e-1 ", KNOWN) == [("happy", 2.0), ("sad", -0.1)]


@pytest.mark.parametrize("text, message", [
    ("", "empty"),
    ("   ", "empty"),
    ("hapy:0.5", "did you mean happy"),
    ("unicorn:1", "unknown concept 'unicorn'"),
    ("happy:", "no weight"),
    (":0.5", "no concept name"),
    ("happy:0.5:1", "more than one ':'"),
    ("happy:abc", "not a number"),
    ("happy:nan", "finite"),
    ("happy:inf", "finite"),
    ("happy:-inf", "finite"),
    ("happy:1,happy:2", "twice"),
    ("happy:1,,sad:1", "empty"),
    ("happy:1,", "empty"),
    ("happy:11", "too large"),
    ("happy:-10.5", "too large"),
    ("happy:0, sad:0", "every weight"),
    (",".join(f"{s}:0.1" for s in KNOWN[:9]), "at most 8"),
])
def test_parse_mix_errors(text, message):
    with pytest.raises(InputError, match=message):
        parse_mix(text, KNOWN)


def test_parse_mix_limits_are_inclusive():
    assert len(parse_mix(",".join(f"{s}:0.1" for s in KNOWN[:8]), KNOWN)) == 8
    assert parse_mix("happy:10, sad:-10", KNOWN) == [("happy", 10.0), ("sad", -10.0)]


# ---- blend ---------------------------------------------------------------------------------------
def test_blend_is_the_weighted_sum():
    a, b = cv(1), cv(2)
    out = blend({"a": a, "b": b}, [("a", 0.7), ("b", -0.3)])
    np.testing.assert_allclose(out.vectors, 0.7 * a.vectors - 0.3 * b.vectors, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out.typical_norms, (a.typical_norms + b.typical_norms) / 2, rtol=1e-6)
    assert out.method == "mix" and out.model_fingerprint == "fp"
    assert out.extra["recipe"] == [["a", 0.7], ["b", -0.3]]
    single = blend({"a": a}, {"a": 2.0})
    np.testing.assert_allclose(single.vectors, 2 * a.vectors, rtol=1e-6)


def test_blend_normalize_gives_the_weighted_mean_norm():
    a, b = cv(1), cv(2)
    out = blend({"a": a, "b": b}, [("a", 0.7), ("b", -0.3)], normalize=True)
    target = (0.7 * a.norms + 0.3 * b.norms) / 1.0
    np.testing.assert_allclose(out.norms, target, rtol=1e-5)
    raw = blend({"a": a, "b": b}, [("a", 0.7), ("b", -0.3)])
    cos = cosine_across_layers(out, raw)
    np.testing.assert_allclose(cos, 1.0, atol=1e-6)  # direction unchanged


def test_project_out_makes_the_result_orthogonal():
    a, b, c = cv(1), cv(2), cv(3)
    out = blend({"a": a, "b": b}, [("a", 1.0)], project_out=["b"])
    np.testing.assert_allclose(cosine_across_layers(out, b), 0.0, atol=1e-6)
    # what is left is a minus its component along b
    ub = b.vectors / b.norms[:, None]
    expect = a.vectors - np.einsum("lh,lh->l", a.vectors, ub)[:, None] * ub
    np.testing.assert_allclose(out.vectors, expect, rtol=1e-4, atol=1e-5)
    # two removed concepts: orthogonal to both, also after normalize
    out2 = blend({"a": a, "b": b, "c": c}, [("a", 1.0), ("b", 0.5)], normalize=True, project_out=["b", "c"])
    np.testing.assert_allclose(cosine_across_layers(out2, b), 0.0, atol=1e-5)
    np.testing.assert_allclose(cosine_across_layers(out2, c), 0.0, atol=1e-5)


def test_blend_refuses_mismatched_inputs():
    with pytest.raises(InputError, match="same model"):
        blend({"a": cv(1), "b": cv(2, fp="other")}, [("a", 1), ("b", 1)])
    with pytest.raises(InputError, match="shape"):
        blend({"a": cv(1), "b": cv(2, H=8)}, [("a", 1), ("b", 1)])
    with pytest.raises(InputError, match="no vectors"):
        blend({"a": cv(1)}, [("a", 1), ("zzz", 1)])
    with pytest.raises(InputError, match="no vectors"):
        blend({"a": cv(1)}, [("a", 1)], project_out=["zzz"])
    with pytest.raises(InputError, match="finite"):
        blend({"a": cv(1)}, [("a", float("nan"))])


def test_blend_takes_recommended_layers_of_the_heaviest_part():
    out = blend({"a": cv(1, rec=(1, 1)), "b": cv(2, rec=(2, 3))}, [("a", 0.2), ("b", -0.9)])
    assert out.recommended_layers == (2, 3)


# ---- cosines --------------------------------------------------------------------------------------
def test_cosine_matrix_is_symmetric_with_unit_diagonal():
    vecs = {"a": cv(1), "b": cv(2), "c": cv(3)}
    vecs["neg_a"] = ConceptVectors(model_id="m", model_fingerprint="fp", method="x", vectors=-3 * vecs["a"].vectors,
                                   typical_norms=vecs["a"].typical_norms)
    slugs, m = cosine_matrix(vecs, 2)
    assert slugs == ["a", "b", "c", "neg_a"] and m.shape == (4, 4)
    assert np.array_equal(m, m.T)
    assert np.all(np.diag(m) == 1.0)
    assert m[0, 3] == pytest.approx(-1.0)
    a, b = vecs["a"].vectors[2], vecs["b"].vectors[2]
    assert m[0, 1] == pytest.approx(a @ b / np.linalg.norm(a) / np.linalg.norm(b), rel=1e-5)
    with pytest.raises(InputError, match="layer"):
        cosine_matrix(vecs, 4)


def test_cosine_across_layers():
    a, b = cv(1), cv(2)
    c = cosine_across_layers(a, b)
    assert c.shape == (4,)
    for l in range(4):
        assert c[l] == pytest.approx(a.unit(l) @ b.unit(l), rel=1e-5)
    np.testing.assert_allclose(cosine_across_layers(a, a), 1.0, atol=1e-6)


# ---- mix concepts ----------------------------------------------------------------------------------
def test_mix_concept():
    c = mix_concept("cheer", "Cheer", [("happy", 1), ("excited", 0.5)], {"normalize": True, "project_out": ["sad"]})
    assert c.category == "mix" and c.pairs == [] and c.recipe == [("happy", 1.0), ("excited", 0.5)]
    assert isinstance(c.recipe[0][1], float)
    assert c.recipe_options == {"normalize": True, "project_out": ["sad"]}
    other = mix_concept("cheer", "Cheer", [("happy", 1), ("excited", 0.6)], {"normalize": True, "project_out": ["sad"]})
    assert c.pairs_fingerprint() != other.pairs_fingerprint()
    with pytest.raises(InputError, match="itself"):
        mix_concept("happy", "Happy", [("happy", 1.0)])


def test_mix_concept_round_trips_through_the_library_schema():
    from app.library import concept_to_yaml, parse_concept

    c = mix_concept("cheer", "Cheer", [("happy", 1), ("excited", -0.5)], {"normalize": False, "project_out": []})
    back = parse_concept(concept_to_yaml(c), "cheer")
    assert back.recipe == c.recipe and back.category == "mix"
    assert back.pairs_fingerprint() == c.pairs_fingerprint()
