"""score_continuations: the gathered, positions-only scoring gives the numbers the full-vocabulary version gave."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import pytest

import app.core  # noqa: F401
import mlx.core as mx
import tiny_models
from app.core.capture import pad_right
from app.core.patching import Recorder, is_patched, patch_layers
from app.core.scoring import TextScores, distinct_n, longest_repeat, score_continuations


def reference_scores(model, prompt: Sequence[int], continuations, read_layer: Optional[int], unit, pad=0, batch_size=8):
    """The implementation before scoring moved into MLX: full log-softmax at every position, copied to numpy."""
    out = []
    P = len(prompt)
    for start in range(0, len(continuations), batch_size):
        chunk = continuations[start : start + batch_size]
        tokens, _ = pad_right([list(prompt) + list(c) for c in chunk], pad)
        rec = Recorder()
        hooks = {read_layer: [rec]} if read_layer is not None else {}
        with patch_layers(model, hooks):
            logits = model(tokens)
            hidden = rec.outputs[0] if read_layer is not None else None
            logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
            mx.eval(logprobs, *([hidden] if hidden is not None else []))
        lp = np.array(logprobs.astype(mx.float32))
        hid = np.array(hidden.astype(mx.float32)) if hidden is not None else None
        for b, c in enumerate(chunk):
            G = len(c)
            if G == 0:
                out.append(TextScores(0, 1.0, 0, float("nan"), float("nan")))
                continue
            nll = -np.array([lp[b, P - 1 + i, c[i]] for i in range(G)], dtype=np.float64)
            ppl = float(np.exp(np.clip(nll.mean(), 0, 50)))
            proj = float((hid[b, P : P + G] @ unit).mean()) if hid is not None and unit is not None else float("nan")
            out.append(TextScores(G, distinct_n(c, 2), longest_repeat(c), ppl, proj))
    return out


def _close(a: TextScores, b: TextScores) -> bool:
    if (a.n_tokens, a.distinct2, a.longest_repeat) != (b.n_tokens, b.distinct2, b.longest_repeat):
        return False
    for x, y in ((a.perplexity, b.perplexity), (a.projection, b.projection)):
        if np.isnan(x) and np.isnan(y):
            continue
        if not np.isclose(x, y, rtol=1e-4, atol=1e-5):
            return False
    return True


@pytest.mark.parametrize("family", ["llama", "qwen2", "gemma2", "gemma3_text", "phi3", "olmo2"])
def test_matches_the_full_vocabulary_reference(family):
    model, config = tiny_models.build(family)
    prompt = tiny_models.prompt_tokens(7)
    rng = np.random.default_rng(5)
    conts = [[int(t) for t in rng.integers(3, 256, size=n)] for n in (12, 5, 0, 12, 1, 9, 3, 12, 7, 11)]
    n_layers = config["num_hidden_layers"]
    unit = rng.standard_normal(config["hidden_size"]).astype(np.float32)
    unit /= np.linalg.norm(unit)
    for read in (n_layers // 2, n_layers - 1, None):
        ref = reference_scores(model, prompt, conts, read, unit)
        for bs in (None, 3):
            got = score_continuations(model, prompt, conts, read, unit, batch_size=bs)
            assert len(got) == len(ref)
            assert all(_close(g, r) for g, r in zip(got, ref)), (read, bs, got, ref)
    assert not is_patched(model)


def test_a_wrong_token_changes_the_perplexity():
    """The gather must read the generated token's own log-probability (not a neighbour's)."""
    model, _ = tiny_models.build("llama")
    prompt = tiny_models.prompt_tokens(6)
    cont = [5, 9, 17, 33, 65]
    a = score_continuations(model, prompt, [cont], None, None)[0]
    shifted = score_continuations(model, prompt, [cont[1:] + [cont[0]]], None, None)[0]
    ref = reference_scores(model, prompt, [cont], None, None)[0]
    assert np.isclose(a.perplexity, ref.perplexity, rtol=1e-4)
    assert not np.isclose(a.perplexity, shifted.perplexity, rtol=1e-3)


def test_one_token_continuations_and_the_path_for_other_caches(monkeypatch):
    from app.core import scoring

    model, config = tiny_models.build("gemma3_text")
    prompt = tiny_models.prompt_tokens(8)
    unit = np.ones(config["hidden_size"], np.float32) / np.sqrt(config["hidden_size"])
    conts = [[7], [9], []]
    ref = reference_scores(model, prompt, conts, 2, unit)
    assert all(_close(g, r) for g, r in zip(score_continuations(model, prompt, conts, 2, unit), ref))
    # a cache type the shared prompt pass does not know: one whole pass per row, same numbers
    monkeypatch.setattr(scoring, "KVCache", type("Other", (), {}))
    monkeypatch.setattr(scoring, "RotatingKVCache", type("Other2", (), {}))
    conts = [[5, 6, 7, 8], [9, 10]]
    ref = reference_scores(model, prompt, conts, 5, unit)
    assert all(_close(g, r) for g, r in zip(score_continuations(model, prompt, conts, 5, unit), ref))


def test_calibration_rows_are_scored_like_the_reference():
    """cellbatch.score_rows (calibration, style allowance) reads perplexity through score_continuations:
    the same numbers as a full pass over prompt + text; EOS is not scored, an empty text has none."""
    from test_extraction import tiny_lm

    from app.core.cellbatch import score_rows
    from app.core.chat import eos_ids

    lm = tiny_lm()
    eos = min(eos_ids(lm.tokenizer))
    prompt = [5, 9, 17, 3, 44]
    texts = [[7, 8, 9, 10, 11, 12], [30, 31, 30, 31, 30, 31, 30], [60, 61, eos], [eos]]
    rows = score_rows(lm, prompt, [(t, "length") for t in texts])
    visible = [[x for x in t if x != eos] for t in texts]
    ref = reference_scores(lm.model, prompt, visible, None, None)
    for got, want in zip(rows, ref):
        assert _close(got.scores, want), (got.scores, want)
    assert rows[3].scores.n_tokens == 0 and np.isnan(rows[3].scores.perplexity) and not rows[3].clean
    assert rows[0].coherent  # the baseline row is coherent with itself
