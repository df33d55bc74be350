"""The prompted row on the bundled model: same batch, and the other rows keep their tokens."""

from __future__ import annotations

import app.core  # noqa: F401  (fast BLAS before mlx)

import numpy as np
import pytest

from app.core.chat import encode, format_chat
from app.core.generation import run_batch
from app.core.interventions import additive_rows
from app.core.prompted import joinable
from app.types import GenerationParams

pytestmark = pytest.mark.real_model


def _rows(lm, prompt, vectors, rows, params, prompted=None):
    last = None
    for last in run_batch(lm, prompt, additive_rows(vectors, rows), params, prompted=prompted):
        pass
    return last.rows


def test_prompted_row_in_the_same_batch_changes_no_other_row(default_service):
    lm = default_service.loaded
    tok = lm.tokenizer
    assert joinable(lm.model)
    shared = encode(tok, format_chat(tok, "Tell me about your morning."))
    prompted = encode(tok, format_chat(tok, "Tell me about your morning.", "Act as if you are deeply sad."))
    assert len(prompted) != len(shared)
    L = 12
    v = (np.random.default_rng(0).standard_normal(lm.hidden_size) * 6.0).astype(np.float32)
    p = GenerationParams(max_tokens=32)
    two = _rows(lm, shared, {L: v}, [{}, {L: 1.0}], p)
    three = _rows(lm, shared, {L: v}, [{}, {L: 0.0}, {L: 1.0}], p, prompted=prompted)
    assert three[0].tokens == two[0].tokens and three[1].tokens == three[0].tokens
    assert three[2].tokens == two[1].tokens != two[0].tokens
    assert three[3].tokens == _rows(lm, prompted, {}, [{}], p)[0].tokens
