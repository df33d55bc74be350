"""Concept extraction and layer quality on tiny random models and constructed features."""

from __future__ import annotations

import app.core  # noqa: F401  (fast BLAS before mlx)

import mlx.core as mx
import numpy as np
import pytest

from app.core.capture import CaptureResult, capture
from app.core.extraction import (
    METHODS,
    absolute_vector,
    concept_prompts,
    extract,
    method_vectors,
    pooled_features,
    random_control,
    typical_norms_for,
)
from app.core.models import from_memory
from app.core.quality import d_prime, layer_quality, layer_scores, loo_accuracy, pc1_share, recommend_layers
from app.errors import Cancelled, InputError
from app.types import Concept, ContrastPair, LayerQuality, SystemPromptPair

CONFIG = dict(model_type="llama", hidden_size=64, num_hidden_layers=4, intermediate_size=128, num_attention_heads=4,
              num_key_value_heads=2, rms_norm_eps=1e-5, vocab_size=256, tie_word_embeddings=True)


def tiny_lm(seed: int = 0):
    from mlx_lm.models import llama

    from tiny_models import tiny_tokenizer

    mx.random.seed(seed)
    model = llama.Model(llama.ModelArgs(**CONFIG))
    mx.eval(model.parameters())
    return from_memory(model, tiny_tokenizer(256), dict(CONFIG), model_id="tiny-llama")


def tiny_concept(n: int = 6, system: bool = True) -> Concept:
    pos_words = "happy good day sun yes cat".split()
    neg_words = "sad bad night rain no dog".split()
    pairs = []
    for i in range(n):
        filler = " ".join(f"w{10 + (7 * i + k) % 150}" for k in range(2 + i % 4))  # varied lengths
        pairs.append(ContrastPair(f"the {pos_words[i % 6]} {filler} {pos_words[(i + 1) % 6]} !",
                                  f"the {neg_words[i % 6]} {filler} {neg_words[(i + 1) % 6]} ."))
    sp = SystemPromptPair("you are happy", "you are neutral") if system else None
    return Concept(slug="tiny", name="Tiny", pairs=pairs, system_prompts=sp)


@pytest.fixture(scope="module")
def lm():
    return tiny_lm()


def method_inputs(method: str) -> dict:
    """What the methods that read more than the pairs need: an opposite, other category vectors."""
    if method == "bipolar":
        c = tiny_concept()
        return {"opposite": Concept(slug="anti", name="Anti", pairs=[ContrastPair(p.negative, p.positive) for p in c.pairs])}
    if method == "no_shared":
        rng = np.random.default_rng(0)
        u = rng.standard_normal((4, 2, 64))
        return {"category_units": u / np.linalg.norm(u, axis=-1, keepdims=True)}
    return {}


# ---- extraction on a tiny model ------------------------------------------------------------------
@pytest.mark.parametrize("method", METHODS)
def test_extraction_is_deterministic(lm, method):
    a = extract(lm, tiny_concept(), method, **method_inputs(method))
    b = extract(lm, tiny_concept(), method, **method_inputs(method))
    assert a.vectors.dtype == np.float32 and a.vectors.shape == (4, 64)
    assert np.array_equal(a.vectors, b.vectors)
    assert np.array_equal(a.typical_norms, b.typical_norms)
    assert [q.d_prime for q in a.quality] == [q.d_prime for q in b.quality]
    assert a.recommended_layers == b.recommended_layers
    assert a.method == method and a.concept_fingerprint == tiny_concept().pairs_fingerprint()
    assert a.model_fingerprint == lm.info().fingerprint and a.extra["n_pairs"] == 6 and a.extra["num_prompts"] == 12
    assert len(a.quality) == 4 and np.all(np.isfinite(a.vectors)) and np.any(a.vectors != 0)


def test_methods_give_different_vectors(lm):
    vecs = {m: extract(lm, tiny_concept(), m, **method_inputs(m)).vectors for m in METHODS}
    assert not np.allclose(vecs["mean_diff"], vecs["last_token"])
    assert not np.allclose(vecs["mean_diff"], vecs["pca"])


def _reference_features(lm, concept):
    """Each prompt alone (no batching, no padding), pooled by an explicit loop."""
    token_lists, n = concept_prompts(lm.tokenizer, concept)
    means, lasts, norms = [], [], []
    for toks in token_lists:
        h = capture(lm.model, [toks]).hidden[:, 0].astype(np.float64)  # [L, T, H]
        means.append(h[:, 1:, :].mean(axis=1))
        lasts.append(h[:, -1, :])
        norms.append(np.linalg.norm(h[:, 1:, :], axis=-1))  # [L, T-1]
    typical = np.concatenate(norms, axis=1).mean(axis=1)
    return np.stack(means, 1), np.stack(lasts, 1), typical, n


def test_batched_extraction_matches_one_prompt_at_a_time(lm):
    concept = tiny_concept()
    means, lasts, typical, n = _reference_features(lm, concept)
    md = extract(lm, concept, "mean_diff")
    lt = extract(lm, concept, "last_token")
    np.testing.assert_allclose(md.vectors, (means[:, :n] - means[:, n:]).mean(1), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(lt.vectors, (lasts[:, :n] - lasts[:, n:]).mean(1), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(md.typical_norms, typical, rtol=1e-4)


def test_system_prompts_are_used(lm):
    with_sys = extract(lm, tiny_concept(system=True))
    without = extract(lm, tiny_concept(system=False))
    assert with_sys.concept_fingerprint != without.concept_fingerprint
    assert not np.allclose(with_sys.vectors, without.vectors)


def test_progress_and_cancel(lm):
    seen = []
    extract(lm, tiny_concept(), progress=lambda d, t: seen.append((d, t)))
    assert seen and seen[-1] == (12, 12)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    with pytest.raises(Cancelled):
        extract(lm, tiny_concept(), should_stop=lambda: True)


def test_extract_rejects_bad_requests(lm):
    with pytest.raises(InputError, match="at least 2"):
        extract(lm, tiny_concept(n=1))
    with pytest.raises(InputError, match="unknown extraction method"):
        extract(lm, tiny_concept(), method="magic")


def test_typical_norms_for_neutral_prompts(lm):
    t = typical_norms_for(lm)
    assert t.shape == (4,) and np.all(t > 0)
    assert np.array_equal(t, typical_norms_for(lm))


def test_cosine_to_others_is_filled(lm):
    a = extract(lm, tiny_concept())
    b = extract(lm, tiny_concept(), others={"same": a, "flipped": a.vectors * -2.0})
    for q in b.quality:
        assert q.cosine_to_others["same"] == pytest.approx(1.0, abs=1e-5)
        assert q.cosine_to_others["flipped"] == pytest.approx(-1.0, abs=1e-5)


# ---- pooling: sink and padding -----------------------------------------------------------------
def _constructed_capture(seed=0):
    rng = np.random.default_rng(seed)
    L, B, T, H = 3, 4, 7, 5
    lengths = np.array([7, 3, 5, 1])
    hidden = rng.standard_normal((L, B, T, H)).astype(np.float32)
    return CaptureResult(hidden=hidden, lengths=lengths, tokens=[[1] * n for n in lengths])


def test_pooled_features_match_a_loop():
    cr = _constructed_capture()
    mean, last, typical = pooled_features(cr)
    h = cr.hidden.astype(np.float64)
    norms = []
    for b, n in enumerate(cr.lengths):
        rows = h[:, b, 1:n, :] if n > 1 else h[:, b, :1, :]  # a 1-token prompt has only the sink
        np.testing.assert_allclose(mean[:, b], rows.mean(axis=1), rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(last[:, b], cr.hidden[:, b, n - 1])
        norms.append(np.linalg.norm(rows, axis=-1))
    np.testing.assert_allclose(typical, np.concatenate(norms, axis=1).mean(axis=1), rtol=1e-5)


def test_sink_and_padding_do_not_count():
    cr = _constructed_capture()
    mean, last, typical = pooled_features(cr)
    sink = cr.hidden.copy()
    sink[:, :3, 0, :] += 1000.0  # position 0 of the prompts longer than one token
    for b, n in enumerate(cr.lengths):
        sink[:, b, n:, :] = 77.0  # padding
    m2, l2, t2 = pooled_features(CaptureResult(sink, cr.lengths, cr.tokens))
    assert np.array_equal(m2, mean) and np.array_equal(l2, last) and np.array_equal(t2, typical)
    real = cr.hidden.copy()
    real[:, 0, 2, :] += 1000.0  # a real, non-sink token does count
    m3, _, t3 = pooled_features(CaptureResult(real, cr.lengths, cr.tokens))
    assert not np.allclose(m3[:, 0], mean[:, 0]) and np.all(t3 > typical)


def test_mean_diff_ignores_position_zero():
    rng = np.random.default_rng(3)
    L, N, T, H = 2, 5, 6, 8
    hidden = rng.standard_normal((L, 2 * N, T, H)).astype(np.float32)
    lengths = np.full(2 * N, T)
    base = pooled_features(CaptureResult(hidden, lengths, []))[0]
    hidden[:, :N, 0, :] += 500.0  # a huge sink on the positives only
    sunk = pooled_features(CaptureResult(hidden, lengths, []))[0]
    assert np.array_equal(method_vectors(base[:, :N], base[:, N:], "mean_diff"),
                          method_vectors(sunk[:, :N], sunk[:, N:], "mean_diff"))


# ---- PCA ---------------------------------------------------------------------------------------
def _pca_data(seed=0, L=3, N=20, H=16):
    rng = np.random.default_rng(seed)
    u = rng.standard_normal((L, H))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    a = rng.uniform(1.0, 3.0, size=(L, N))
    diffs = a[..., None] * u[:, None, :] + 0.05 * rng.standard_normal((L, N, H))
    neg = rng.standard_normal((L, N, H))
    return u, a, neg + diffs, neg


def test_pca_sign_scale_and_determinism():
    u, a, pos, neg = _pca_data()
    v = method_vectors(pos, neg, "pca")
    unit = v / np.linalg.norm(v, axis=1, keepdims=True)
    assert np.all(np.einsum("lh,lh->l", unit, u) > 0.99)  # the planted direction, positive side
    diffs = (pos - neg).astype(np.float64)
    mean_proj = np.einsum("lnh,lh->ln", diffs, unit).mean(1)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), mean_proj, rtol=1e-5)
    assert np.all(mean_proj > 0)
    assert np.array_equal(v, method_vectors(pos, neg, "pca"))
    np.testing.assert_allclose(method_vectors(neg, pos, "pca"), -v, rtol=1e-5, atol=1e-6)


def test_pca_sign_follows_the_data_not_the_svd():
    u, a, pos, neg = _pca_data(seed=5)
    # Flip the planted direction: the PCA vector must flip with it.
    diffs = pos - neg
    v1 = method_vectors(neg + diffs, neg, "pca")
    v2 = method_vectors(neg - diffs, neg, "pca")
    np.testing.assert_allclose(v1, -v2, rtol=1e-5, atol=1e-6)


# ---- quality -----------------------------------------------------------------------------------
def test_d_prime_formula():
    p = np.array([[1.0, 2.0, 3.0]])
    n = np.array([[-1.0, 0.0, 1.0]])
    assert d_prime(p, n)[0] == pytest.approx(2.0 / np.sqrt((1.0 + 1.0) / 2))
    assert d_prime(np.array([[1.0, 1.0]]), np.array([[1.0, 1.0]]))[0] == 0.0
    assert np.isfinite(d_prime(np.array([[2.0, 2.0]]), np.array([[1.0, 1.0]]))[0])


def test_quality_on_separable_and_random_data():
    rng = np.random.default_rng(0)
    L, N, H = 2, 40, 4
    mu = np.zeros(H)
    mu[0] = 3.0
    pos = mu + 0.3 * rng.standard_normal((L, N, H))
    neg = -mu + 0.3 * rng.standard_normal((L, N, H))
    vec = (pos - neg).mean(1)
    q = layer_quality(pos, neg, vec, np.ones(L))
    assert all(x.loo_accuracy == 1.0 for x in q)
    assert all(x.d_prime > 10 for x in q)
    assert all(x.pc1_share > 0.9 for x in q)

    N = 400
    pos = rng.standard_normal((L, N, H))
    neg = rng.standard_normal((L, N, H))
    q = layer_quality(pos, neg, (pos - neg).mean(1), np.ones(L))
    assert all(0.3 < x.loo_accuracy < 0.7 for x in q)
    assert all(abs(x.d_prime) < 0.5 for x in q)
    assert all(x.pc1_share < 0.5 for x in q)


def test_loo_accuracy_matches_explicit_loop():
    rng = np.random.default_rng(1)
    diffs = rng.standard_normal((3, 15, 6)) + np.array([0.4, 0, 0, 0, 0, 0])
    fast = loo_accuracy(diffs)
    for l in range(3):
        hits = [diffs[l, i] @ np.delete(diffs[l], i, axis=0).mean(0) > 0 for i in range(15)]
        assert fast[l] == pytest.approx(np.mean(hits))
    assert 0.0 < fast.min() and fast.max() < 1.0  # the data is noisy enough to test both outcomes


def test_loo_accuracy_catches_an_outlier_pair():
    diffs = np.tile(np.array([1.0, 0.0]), (1, 10, 1))
    diffs[0, 3] = [-1.0, 0.0]  # one pair points the other way
    assert loo_accuracy(diffs)[0] == pytest.approx(0.9)


def test_pc1_share():
    rng = np.random.default_rng(2)
    rank1 = rng.standard_normal((1, 30, 1)) * rng.standard_normal((1, 1, 12))
    assert pc1_share(rank1)[0] == pytest.approx(1.0)
    iso = rng.standard_normal((1, 400, 64))
    assert pc1_share(iso)[0] < 0.1


def _quality(dp, loo=None, pc1=None):
    L = len(dp)
    loo = loo or [1.0] * L
    pc1 = pc1 or [0.6] * L
    return [LayerQuality(layer=i, vector_norm=1.0, typical_norm=10.0, d_prime=dp[i], loo_accuracy=loo[i],
                         pc1_share=pc1[i]) for i in range(L)]


def test_recommend_layers_follows_the_numbers():
    dp = [1.0] * 12
    dp[5], dp[6], dp[7] = 9.0, 10.0, 9.5
    assert recommend_layers(_quality(dp), 12) == (5, 7)
    dp2 = [1.0] * 12
    dp2[3], dp2[4] = 10.0, 10.0
    lo, hi = recommend_layers(_quality(dp2), 12)
    assert lo <= 4 and hi >= 3 and hi <= 5
    # the best d_prime is useless if held-out pairs disagree with it
    loo = [1.0] * 12
    loo[6] = 0.6
    lo, hi = recommend_layers(_quality(dp, loo=loo), 12)
    assert not lo <= 6 <= hi


def test_recommend_layers_never_picks_the_ends():
    dp = [20.0, 1.0, 1.0, 1.0, 1.0, 20.0]
    lo, hi = recommend_layers(_quality(dp), 6)
    assert 1 <= lo <= hi <= 4


def test_layer_scores_reward_loo_pc1_and_d_prime():
    # layers 1 and 3 of 5 have the same depth weight, so only the quality numbers differ
    base = layer_scores(_quality([5.0] * 5))
    assert base[1] == pytest.approx(base[3])
    assert base[2] > base[1] > base[0] == 0.0  # the middle is preferred, the ends never
    s = layer_scores(_quality([5.0] * 5, loo=[1.0, 1.0, 1.0, 0.7, 1.0]))
    assert s[1] > s[3]
    s = layer_scores(_quality([5.0] * 5, pc1=[0.6, 0.6, 0.6, 0.2, 0.6]))
    assert s[1] > s[3]
    s = layer_scores(_quality([5.0, 5.0, 5.0, 2.0, 5.0]))
    assert s[1] > s[3]


# ---- strength and controls ---------------------------------------------------------------------
def test_absolute_vector_relative_and_absolute(lm):
    cv = extract(lm, tiny_concept())
    for layer in range(4):
        rel = absolute_vector(cv, layer, 0.5)
        assert np.linalg.norm(rel) == pytest.approx(0.5 * cv.typical_norms[layer], rel=1e-5)
        np.testing.assert_allclose(rel / np.linalg.norm(rel), cv.unit(layer), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(absolute_vector(cv, layer, -2.0, relative=False), -2.0 * cv.vectors[layer],
                                   rtol=1e-6)
    with pytest.raises(InputError):
        absolute_vector(cv, 4, 1.0)
    with pytest.raises(InputError):
        absolute_vector(cv, 1, float("nan"))


def test_random_control_has_matched_norms(lm):
    cv = extract(lm, tiny_concept())
    r = random_control(cv, seed=0)
    assert r.method == "random" and r.vectors.shape == cv.vectors.shape
    np.testing.assert_allclose(r.norms, cv.norms, rtol=1e-5)
    assert np.array_equal(r.vectors, random_control(cv, seed=0).vectors)
    assert not np.allclose(r.vectors, random_control(cv, seed=1).vectors)
    cos = np.einsum("lh,lh->l", r.vectors, cv.vectors) / (r.norms * cv.norms)
    assert np.all(np.abs(cos) < 0.6)
    assert np.array_equal(r.typical_norms, cv.typical_norms)


def test_capture_in_blocks_gives_the_same_features(lm, monkeypatch):
    """Concepts too big for one capture are read in blocks; the features must not depend on it."""
    import app.core.extraction as extraction

    one = extract(lm, tiny_concept())
    seen = []
    monkeypatch.setattr(extraction, "CAPTURE_BUDGET_BYTES", 4 * 4 * 64 * 16 * 3)  # 3 prompts of <= 16 tokens
    real_capture = extraction.capture
    monkeypatch.setattr(extraction, "capture", lambda model, toks, **kw: seen.append(len(toks)) or real_capture(model, toks, **kw))
    blocks = extract(lm, tiny_concept())
    assert len(seen) >= 3 and sum(seen) == 12
    np.testing.assert_allclose(blocks.vectors, one.vectors, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(blocks.typical_norms, one.typical_norms, rtol=1e-6)
