"""Extraction methods on constructed features: each one does what its help says."""

from __future__ import annotations

import numpy as np
import pytest

from app.domain.methods import METHODS, Features, method_choices, run_method
from app.errors import InputError

rng = np.random.default_rng(0)
L, N, H = 3, 6, 16


def _feats(**kw) -> Features:
    pos, neg = rng.standard_normal((L, N, H)), rng.standard_normal((L, N, H))
    return Features(pos=pos, neg=neg, pos_last=pos[:, ::-1], neg_last=neg, **kw)


def test_the_schema_accepts_exactly_the_registry_s_methods():
    from app.errors import LabError
    from app.library.schema import parse_concept

    assert all(name in help_ and len(help_) > 30 for name, help_ in method_choices())
    base = "name: X\npairs:\n  - positive: a b\n    negative: c d\nmethod: {}\n"
    for name in METHODS:
        assert parse_concept(base.format(name), "x").method == name
    with pytest.raises(LabError, match="method"):
        parse_concept(base.format("mean_difference"), "x")


def test_bipolar_is_concept_positives_minus_opposite_positives():
    f = _feats(opposite_pos=rng.standard_normal((L, N + 2, H)))
    np.testing.assert_allclose(run_method("bipolar", f), f.pos.mean(1) - f.opposite_pos.mean(1), rtol=1e-5)


def test_no_shared_removes_the_category_direction():
    shared = rng.standard_normal((L, H))
    f = _feats()
    f.pos = f.pos + 5 * shared[:, None, :]  # every concept of the category carries `shared`
    units = np.stack([shared / np.linalg.norm(shared, axis=1, keepdims=True)] * 2, axis=1)
    f.category_units = units
    v = run_method("no_shared", f)
    assert np.allclose(np.einsum("lh,lh->l", v, units[:, 0]), 0, atol=1e-4)
    md = run_method("mean_diff", f)
    assert np.all(np.abs(np.einsum("lh,lh->l", md, units[:, 0])) > 1)  # mean_diff keeps it


def test_unit_mean_lets_every_pair_vote_once():
    f = _feats()
    d = f.pos - f.neg
    d[:, 0] *= 1000  # one very long pair dominates the plain mean
    f.pos = f.neg + d
    u = run_method("unit_mean", f)
    md = run_method("mean_diff", f)
    first = d[:, 0] / np.linalg.norm(d[:, 0], axis=1, keepdims=True)
    cos = lambda a, b: np.einsum("lh,lh->l", a, b) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert np.all(cos(md, first) > 0.99) and np.all(cos(u, first) < 0.8)


def test_methods_refuse_missing_inputs_by_name():
    for name, needs in (("bipolar", "opposite_pos"), ("no_shared", "category_units"), ("system_prompt", "system_diffs"),
                        ("response", "reply_pos")):
        with pytest.raises(InputError, match=needs):
            run_method(name, _feats())
    with pytest.raises(InputError, match="unknown extraction method"):
        run_method("magic", _feats())


def test_system_prompt_contrast_on_a_tiny_model():
    from test_extraction import tiny_concept, tiny_lm

    from app.core.extraction import extract, system_prompt_diffs

    lm = tiny_lm()
    d = system_prompt_diffs(lm, tiny_concept(), max_texts=4)
    assert d.shape == (4, 4, 64) and np.all(np.isfinite(d)) and np.any(d != 0)
    cv = extract(lm, tiny_concept(), "system_prompt")
    assert cv.method == "system_prompt" and not np.allclose(cv.vectors, extract(lm, tiny_concept()).vectors)
    with pytest.raises(InputError, match="system_prompts"):
        extract(lm, tiny_concept(system=False), "system_prompt")


def test_response_is_the_mean_difference_of_the_replies():
    f = _feats(reply_pos=rng.standard_normal((L, N, H)), reply_neg=rng.standard_normal((L, N, H)))
    np.testing.assert_allclose(run_method("response", f), (f.reply_pos - f.reply_neg).mean(1), rtol=1e-5, atol=1e-6)
    assert not np.allclose(run_method("response", f), run_method("mean_diff", f))  # it reads the replies, not the pairs


def test_response_pools_only_the_reply_on_a_tiny_model():
    """Each side as the assistant's reply; only the reply's own tokens are averaged (checked by a loop)."""
    from test_extraction import tiny_concept, tiny_lm

    from app.core.capture import capture
    from app.core.extraction import extract, reply_features, reply_prompts

    lm = tiny_lm()
    concept = tiny_concept()
    rows, starts = reply_prompts(lm.tokenizer, concept)
    n = len(concept.pairs)
    assert len(rows) == 2 * n and all(0 < s < len(r) for r, s in zip(rows, starts))
    assert rows[0][:starts[0]] == rows[n][:starts[n]]  # both sides of a pair answer the same turn
    ref = np.stack([capture(lm.model, [r]).hidden[:, 0, s:].astype(np.float64).mean(axis=1)
                    for r, s in zip(rows, starts)], axis=1)  # [L, 2N, H], one prompt at a time
    pos, neg = reply_features(lm, concept)
    np.testing.assert_allclose(pos, ref[:, :n], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(neg, ref[:, n:], rtol=1e-4, atol=1e-5)
    cv = extract(lm, concept, "response")
    np.testing.assert_allclose(cv.vectors, (ref[:, :n] - ref[:, n:]).mean(1), rtol=1e-4, atol=1e-5)
    assert cv.method == "response" and not np.allclose(cv.vectors, extract(lm, concept).vectors)
