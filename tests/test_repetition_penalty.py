"""The repetition penalty: mlx-lm's rule, per row, in the pipelined batch and in the left-padded batch.

A row generated with a penalty must equal mlx-lm's own loop (``generate_step`` with
``make_logits_processors(repetition_penalty=..., repetition_context_size=...)``) on the same
model, a batch row must equal that row alone (each row penalises only its own window), 1.0 must
change nothing, and out-of-range values are refused naming the field.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import app.core  # noqa: F401
import mlx.core as mx
import tiny_models
from app.core.cellbatch import generate_plain
from app.core.generation import run_batch
from app.core.interventions import additive_rows
from app.core.models import from_memory
from app.core.repetition_penalty import RepetitionPenalty
from app.domain import limits
from app.domain.checks import validate_params
from app.errors import InputError
from app.types import GenerationParams

PROMPT = tiny_models.prompt_tokens(9)
TOKENS = 24


def make_lm(family="llama"):
    from mlx_lm.tokenizer_utils import TokenizerWrapper

    model, config = tiny_models.build(family)
    return from_memory(model, TokenizerWrapper(tiny_models.tiny_tokenizer(config["vocab_size"])), config, family)


def lab_rows(lm, rows, penalty, prompt=PROMPT, vectors=None):
    last = None
    params = GenerationParams(max_tokens=TOKENS, repetition_penalty=penalty)
    for step in run_batch(lm, prompt, additive_rows(vectors or {}, rows), params, stop_on_loop=False):
        last = step
    return [list(r.tokens) for r in last.rows]


def mlx_lm_tokens(lm, penalty, prompt=PROMPT):
    from mlx_lm.generate import generate_step
    from mlx_lm.sample_utils import make_logits_processors

    procs = make_logits_processors(repetition_penalty=penalty, repetition_context_size=limits.REPETITION_CONTEXT)
    out = []
    for tok, _ in generate_step(mx.array(prompt), lm.model, max_tokens=TOKENS, sampler=lambda x: mx.argmax(x, axis=-1),
                                logits_processors=procs):
        out.append(int(tok))
    return out


def test_the_rule_on_hand_made_logits():
    pen = RepetitionPenalty(2.0, [[1, 3], [2]])
    logits = mx.array([[1.0, 4.0, -2.0, 6.0], [1.0, 4.0, -2.0, 6.0]])
    got = np.array(pen.apply(logits))
    np.testing.assert_allclose(got, [[1.0, 2.0, -2.0, 3.0], [1.0, 4.0, -4.0, 6.0]])
    pen.push(mx.array([0, 0]))
    got = np.array(pen.apply(logits))
    np.testing.assert_allclose(got, [[0.5, 2.0, -2.0, 3.0], [0.5, 4.0, -4.0, 6.0]])


def test_the_window_keeps_the_last_context_tokens():
    pen = RepetitionPenalty(1.5, [[1, 2, 3]], context=3)
    pen.push(mx.array([4]))
    assert np.array(pen.window).tolist() == [[2, 3, 4]]


@pytest.mark.parametrize("family", ["llama", "gemma3_text"])
def test_one_row_equals_mlx_lm_with_its_processor(family):
    lm = make_lm(family)
    plain = lab_rows(lm, [{}], 1.0)[0]
    penalised = lab_rows(lm, [{}], 1.8)[0]
    assert penalised == mlx_lm_tokens(lm, 1.8)
    assert plain == mlx_lm_tokens(lm, 1.0)
    assert penalised != plain, "the penalty changed nothing on this model: the test cannot tell"


def test_batch_rows_penalise_only_their_own_window():
    lm = make_lm()
    L = 2
    v = {L: (6.0 * np.random.default_rng(1).standard_normal(lm.hidden_size)).astype(np.float32)}
    both = lab_rows(lm, [{}, {L: 1.0}], 1.8, vectors=v)
    assert both[0] == lab_rows(lm, [{}], 1.8)[0]
    assert both[1] == lab_rows(lm, [{L: 1.0}], 1.8, vectors=v)[0]
    assert both[0] != both[1]


def test_off_changes_nothing_bit_for_bit():
    lm = make_lm()
    runs = []
    for params in (GenerationParams(max_tokens=TOKENS), GenerationParams(max_tokens=TOKENS, repetition_penalty=1.0)):
        steps = list(run_batch(lm, PROMPT, additive_rows({}, [{}]), params, stop_on_loop=False))
        runs.append(([list(r.tokens) for r in steps[-1].rows], [np.array(s.logits) for s in steps]))
    assert runs[0][0] == runs[1][0]
    assert all(np.array_equal(a, b) for a, b in zip(runs[0][1], runs[1][1]))


def test_left_padded_rows_equal_their_own_runs():
    lm = make_lm()
    other = tiny_models.prompt_tokens(5)
    rows = generate_plain(lm, [PROMPT, other], TOKENS, repetition_penalty=1.8)
    assert rows[0][0][:TOKENS] == lab_rows(lm, [{}], 1.8)[0][:len(rows[0][0])]
    assert rows[1][0][:TOKENS] == lab_rows(lm, [{}], 1.8, prompt=other)[0][:len(rows[1][0])]


@pytest.mark.parametrize("bad", [0.9, 0.0, limits.REPETITION_PENALTY_MAX + 0.1, math.nan, math.inf, True, "1.2"])
def test_out_of_range_is_refused_naming_the_field(bad):
    with pytest.raises(InputError, match="repetition penalty"):
        validate_params(GenerationParams(repetition_penalty=bad))
