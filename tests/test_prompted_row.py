"""The prompted row (unsteered, its own prompt) in the same batch as baseline and steered rows.

It must not change the other rows (strength 0 still equals the baseline; the baseline's tokens
are the same with and without it), and it must see exactly its own tokens (the same tokens as
its prompt run alone), whether its prompt is longer or shorter than the shared one.
"""

from __future__ import annotations

import numpy as np
import pytest

import app.core  # noqa: F401
import tiny_models
from app.core.comparison import compare_stream
from app.core.generation import run_batch
from app.core.interventions import additive_rows
from app.core.models import from_memory
from app.core.prompted import joinable
from app.core.steering import SteeringEntry, SteeringPlan
from app.errors import InputError
from app.types import GenerationParams

JOINABLE = ["qwen2", "phi3", "olmo2"]
SHARED = tiny_models.prompt_tokens(9)
LONGER = tiny_models.prompt_tokens(15, seed=5)
SHORTER = tiny_models.prompt_tokens(4, seed=6)


def make_lm(family, seed=0):
    from mlx_lm.tokenizer_utils import TokenizerWrapper

    model, config = tiny_models.build(family, seed)
    return from_memory(model, TokenizerWrapper(tiny_models.tiny_tokenizer(config["vocab_size"])), config, family)


def rows_of(lm, prompt, vectors, rows, params, prompted=None):
    last = None
    for last in run_batch(lm, prompt, additive_rows(vectors, rows), params, stop_on_loop=False, prompted=prompted):
        pass
    return last.rows


def vector(lm, seed=3, scale=4.0):
    return (scale * np.random.default_rng(seed).standard_normal(lm.hidden_size)).astype(np.float32)


def test_which_tiny_families_join():
    assert all(joinable(make_lm(f).model) for f in JOINABLE)
    assert not joinable(make_lm("llama").model)  # sliding-window layers: RotatingKVCache
    assert not joinable(make_lm("gemma3_text").model)
    assert not joinable(make_lm("gemma2").model)  # its attention cannot take a per-row mask


@pytest.mark.parametrize("family", JOINABLE)
@pytest.mark.parametrize("other", [LONGER, SHORTER], ids=["longer", "shorter"])
@pytest.mark.parametrize("temperature", [0.0, 0.9])
def test_prompted_row_leaves_the_others_alone_and_sees_only_its_own_prompt(family, other, temperature):
    lm = make_lm(family)
    L = lm.num_layers // 2
    p = GenerationParams(max_tokens=20, temperature=temperature, seed=11)
    vecs = {L: vector(lm)}
    two = rows_of(lm, SHARED, vecs, [{}, {L: 1.0}], p)
    three = rows_of(lm, SHARED, vecs, [{}, {L: 0.0}, {L: 1.0}], p, prompted=other)
    assert len(three) == 4
    assert three[1].tokens == three[0].tokens  # strength 0 == baseline, in the batch with the prompted row
    assert three[0].tokens == two[0].tokens  # the baseline is unchanged by the prompted row
    assert three[2].tokens == two[1].tokens  # and so is the steered row
    assert two[1].tokens != two[0].tokens  # (the vector does steer: the test could fail)
    alone = rows_of(lm, other, {}, [{}], p)
    assert three[3].tokens == alone[0].tokens  # the padded row saw exactly its own prompt
    assert three[3].tokens != three[0].tokens


def test_a_broken_mask_would_be_caught():
    """Without left-padding the prompted row, its tokens differ from its solo run: the check bites."""
    from mlx_lm.models.cache import BatchKVCache

    lm = make_lm("qwen2")
    p = GenerationParams(max_tokens=12)
    good = rows_of(lm, SHARED, {}, [{}], p, prompted=LONGER)[-1].tokens
    original = BatchKVCache.make_mask
    try:
        BatchKVCache.make_mask = lambda self, N, return_array=False, **kw: None  # attend to padding too
        bad = rows_of(lm, SHARED, {}, [{}], p, prompted=SHORTER)[-1].tokens
    finally:
        BatchKVCache.make_mask = original
    alone = rows_of(lm, SHORTER, {}, [{}], p)[0].tokens
    assert good == rows_of(lm, LONGER, {}, [{}], p)[0].tokens
    assert bad != alone


@pytest.mark.parametrize("family", ["qwen2", "llama", "gemma3_text"])
def test_compare_stream_shows_the_prompted_text_in_one_batch_or_its_own(family):
    lm = make_lm(family)
    L = lm.num_layers // 2
    plan = SteeringPlan([SteeringEntry(L, vector(lm), 1.0, 1.0, False)])
    p = GenerationParams(max_tokens=10)
    chunks = list(compare_stream(lm, SHARED, plan, p, prompted=LONGER))
    plain = list(compare_stream(lm, SHARED, plan, p))
    final = chunks[-1]
    assert final.done and final.baseline_text == plain[-1].baseline_text
    assert final.steered_text == plain[-1].steered_text
    alone = rows_of(lm, LONGER, {}, [{}], p)[0].tokens
    assert final.stats["prompted_tokens"] == len(alone) and final.prompted_text is not None
    assert final.stats["prompted_run"] == ("same batch" if joinable(lm.model) else "own batch")
    assert final.stats["batch_rows"] == (3 if joinable(lm.model) else 2)
    assert plain[-1].prompted_text is None and "prompted_tokens" not in plain[-1].stats


def test_empty_prompted_prompt_refused():
    lm = make_lm("qwen2")
    with pytest.raises(InputError, match="empty"):
        rows_of(lm, SHARED, {}, [{}], GenerationParams(max_tokens=2), prompted=[])
