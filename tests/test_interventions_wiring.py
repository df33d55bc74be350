"""The operations wired through: request validation naming the field, sweeps over an operation's
parameter (tiny model), and the refusal to export anything but addition as a control vector."""

from __future__ import annotations

import numpy as np
import pytest

from app.core.interventions import check_exportable
from app.core.sweeps import run_sweep
from app.errors import InputError
from app.domain.requests import SteerRequest
from app.types import ConceptVectors, GenerationParams
from test_interventions import PROMPT, make_lm


@pytest.mark.parametrize("kw,field", [
    (dict(op="shear"), "op must be one of"),
    (dict(op="ablate", op_param=1.5), "op_param"),
    (dict(op="rotate", op_param="x"), "op_param"),
    (dict(op="cap", op_layers=(3, -1)), "op_layers"),
    (dict(op="add", threshold=float("nan")), "threshold"),
    (dict(condition="   "), "condition"),
])
def test_steer_request_names_the_bad_operation_field(kw, field):
    with pytest.raises(InputError, match=field):
        SteerRequest(prompt="hi", concept="happy", **kw)
    ok = SteerRequest(prompt="hi", concept="happy", op="rotate", op_param=10, op_layers=[2, 3])
    assert ok.op_param == 10.0 and ok.op_layers == (2, 3)


def test_only_addition_exports_as_a_control_vector():
    check_exportable("add")
    for op in ("ablate", "cap", "clamp", "rotate"):
        with pytest.raises(InputError, match="only the add operation"):
            check_exportable(op)


def _cv(lm) -> ConceptVectors:
    rng = np.random.default_rng(0)
    vec = rng.standard_normal((lm.num_layers, lm.hidden_size)).astype(np.float32) * 3
    return ConceptVectors("tiny", "fp", "mean_diff", vec, np.full(lm.num_layers, 5.0, np.float32),
                          recommended_layers=(1, 2))


def test_sweep_over_an_operations_parameter():
    lm = make_lm("llama")
    cv = _cv(lm)
    p = GenerationParams(max_tokens=6)
    res = run_sweep(lm, PROMPT, cv, [1, 2], [0.0, 90.0], p, op="rotate")
    assert res.op == "rotate" and len(res.cells) == 4
    zero = [c for c in res.cells if c.strength == 0.0]
    assert all(c.text == res.baseline_text for c in zero)  # theta 0 is the baseline exactly
    assert any(c.text != res.baseline_text for c in res.cells if c.strength == 90.0)
    with pytest.raises(InputError, match="theta"):
        run_sweep(lm, PROMPT, cv, [1], [400.0], p, op="rotate")
    with pytest.raises(InputError, match="typical projection"):
        run_sweep(lm, PROMPT, cv, [1], [0.5], p, op="cap")
    capped = run_sweep(lm, PROMPT, cv, [1], [0.5], p, op="cap", typical_projection=np.ones(lm.num_layers))
    assert capped.op == "cap" and len(capped.cells) == 1
