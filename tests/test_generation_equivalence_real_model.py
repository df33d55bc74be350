"""On the real default model (OpenBLAS): shared prefill + pipelining give the plain loop's tokens, scores and logits.

Bit for bit where OpenBLAS computes a matmul row the same whatever the other rows are (as on the machines
this was written on); OpenBLAS on AMD EPYC (AVX2) gives the rows of differently sized batches last-bit
differences, so tokens must be equal and numbers equal to float tolerance (see test_generation_equivalence.py,
which also re-runs with the row-independent reference BLAS, bit for bit).
"""

from __future__ import annotations

import numpy as np
import pytest

from app.core.generation import run_batch
from app.core.interventions import additive_rows
from app.core.steering import Schedule
from app.types import GenerationParams
from reference_generation import reference_run_batch

pytestmark = pytest.mark.real_model


def _cases(hidden: int):
    rng = np.random.default_rng(0)
    v = {l: (3.0 * rng.standard_normal(hidden)).astype(np.float32) for l in (6, 12, 14, 20)}
    unit = v[12] / np.linalg.norm(v[12])
    return [
        ("side by side, read layer", {12: v[12]}, [{}, {12: 1.0}], dict(read_layer=12, read_unit=unit)),
        ("two layers, prompt positions", {6: v[6], 20: v[20]}, [{}, {6: 1.0, 20: 1.0}], dict(positions="prompt")),
        ("generated positions, decay", {12: v[12]}, [{}, {12: 2.0}],
         dict(positions="generated", schedule=Schedule("linear_decay", 4))),
        ("logits mode", {12: v[12]}, [{}, {}, {12: 2.0}], dict(guided_pairs=((1, 2, 2.0),), read_layer=12, read_unit=unit)),
        ("sweep of 8 cells", {l: v[l] for l in (12, 14)}, [{}] + [{l: s} for l in (12, 14) for s in (0.5, 1, 2, 3)], {}),
    ]


@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_real_model_bit_identical(default_service, temperature):
    lm = default_service.loaded
    prompt = default_service.tokenize_chat("Tell me about your weekend.")
    params = GenerationParams(max_tokens=6, temperature=temperature, seed=3)
    for name, vec, rows, kw in _cases(lm.hidden_size):
        plan = additive_rows(vec, rows)
        ref = list(reference_run_batch(lm, prompt, plan, params, stop_on_loop=False, **kw))
        new = [([(list(r.tokens), list(r.scores)) for r in s.rows], np.array(s.logits))
               for s in run_batch(lm, prompt, plan, params, stop_on_loop=False, **kw)]
        assert len(new) == len(ref), name
        for (got_rows, got_logits), (_, ref_rows, ref_logits, _) in zip(new, ref):
            assert [t for t, _ in got_rows] == [r.tokens for r in ref_rows], name
            for (_, got_scores), r in zip(got_rows, ref_rows):
                np.testing.assert_allclose(got_scores, r.scores, rtol=1e-5, atol=1e-4, err_msg=name)
            # 30 blocks of float32 (and a guidance scale of 2 in logits mode) carry last-bit row noise to ~1e-4
            np.testing.assert_allclose(got_logits, np.array(ref_logits), rtol=1e-4, atol=1e-3, err_msg=name)
