"""The generation engine on tiny random models: batching, shared noise, schedules, guards."""

from __future__ import annotations

import numpy as np
import pytest

import app.core  # noqa: F401
import mlx.core as mx
import tiny_models
from app.core.interventions import additive_rows
from app.core.comparison import compare_stream, first_divergence
from app.core.generation import run_batch, shared_sample, validate_params
from app.core.models import from_memory
from app.core.patching import is_patched
from app.core.scoring import detect_loop, distinct_n, longest_repeat
from app.core.steering import Schedule, SteeringEntry, SteeringPlan
from app.errors import Cancelled, InputError
from app.types import GenerationParams

FAMILIES = ["llama", "qwen2", "gemma3_text"]


def make_lm(family="llama", seed=0):
    model, config = tiny_models.build(family, seed)
    from mlx_lm.tokenizer_utils import TokenizerWrapper

    return from_memory(model, TokenizerWrapper(tiny_models.tiny_tokenizer(config["vocab_size"])), config, family)


def vec(lm, layer, seed=3, scale=1.0):
    rng = np.random.default_rng(seed)
    return (scale * rng.standard_normal(lm.hidden_size)).astype(np.float32)


def final_rows(lm, prompt, vectors, rows, params, **kw):
    last = None
    for step in run_batch(lm, prompt, additive_rows(vectors, rows), params, **kw):
        last = step
    return last.rows


PROMPT = tiny_models.prompt_tokens(9)


@pytest.mark.parametrize("family", FAMILIES)
def test_same_seed_reproduces_and_other_seed_differs(family):
    lm = make_lm(family)
    p = GenerationParams(max_tokens=16, temperature=1.0, seed=7)
    a = final_rows(lm, PROMPT, {}, [{}], p, stop_on_loop=False)[0].tokens
    b = final_rows(lm, PROMPT, {}, [{}], p, stop_on_loop=False)[0].tokens
    c = final_rows(lm, PROMPT, {}, [{}], GenerationParams(max_tokens=16, temperature=1.0, seed=8), stop_on_loop=False)[0].tokens
    assert a == b
    assert a != c  # the seed matters: sampling is really random


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("temperature", [0.0, 0.9])
def test_strength_zero_equals_baseline_token_for_token(family, temperature):
    lm = make_lm(family)
    L = lm.num_layers // 2
    v = vec(lm, L, scale=5.0)
    plan = SteeringPlan([SteeringEntry(L, v, 0.0, 10.0)])
    params = GenerationParams(max_tokens=20, temperature=temperature, top_p=0.9, seed=3)
    chunks = list(compare_stream(lm, PROMPT, plan, params))
    final = chunks[-1]
    assert final.done
    assert final.baseline_pieces == final.steered_pieces
    assert final.divergence is None
    assert final.stats["baseline_tokens"] > 0


@pytest.mark.parametrize("family", FAMILIES)
def test_baseline_row_of_batch_equals_single_unsteered_run(family):
    lm = make_lm(family)
    L = 1
    v = vec(lm, L, scale=20.0)
    params = GenerationParams(max_tokens=16, temperature=0.8, seed=11)
    single = final_rows(lm, PROMPT, {}, [{}], params, stop_on_loop=False)[0].tokens
    batch = final_rows(lm, PROMPT, {L: v}, [{}, {L: 1.0}], params, stop_on_loop=False)
    assert batch[0].tokens == single
    assert batch[1].tokens != single  # the steered row really was steered


@pytest.mark.parametrize("family", FAMILIES)
def test_steered_row_of_batch_equals_single_steered_run(family):
    lm = make_lm(family)
    L = 1
    v = vec(lm, L, scale=20.0)
    params = GenerationParams(max_tokens=16, temperature=0.8, seed=5)
    single = final_rows(lm, PROMPT, {L: v}, [{L: 1.0}], params, stop_on_loop=False)[0].tokens
    batch = final_rows(lm, PROMPT, {L: v}, [{}, {L: 1.0}, {L: 0.5}], params, stop_on_loop=False)
    assert batch[1].tokens == single


def test_schedule_values():
    assert [Schedule("constant").value(s) for s in (0, 5, 100)] == [1.0, 1.0, 1.0]
    dec = Schedule("linear_decay", 4)
    assert [dec.value(s) for s in range(6)] == [1.0, 0.75, 0.5, 0.25, 0.0, 0.0]
    ramp = Schedule("ramp_up", 4)
    assert [ramp.value(s) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    pulse = Schedule("pulse", 2)
    assert [pulse.value(s) for s in range(4)] == [1.0, 1.0, 0.0, 0.0]
    with pytest.raises(InputError):
        Schedule("sometimes")
    with pytest.raises(InputError):
        Schedule("pulse", 0)


def test_pulse_schedule_acts_only_on_first_tokens():
    """With steering on generated tokens only, a pulse of K=0-ish equals baseline afterwards."""
    lm = make_lm("llama")
    L = 2
    v = vec(lm, L, scale=30.0)
    params = GenerationParams(max_tokens=12, seed=1)
    plan_gen = dict(positions="generated")
    # pulse over 1 token on generated positions: step 0 (the prompt's logits) is unsteered, so
    # the first token equals the baseline's; a constant schedule changes later tokens.
    rows = final_rows(lm, PROMPT, {L: v}, [{}, {L: 1.0}], params, schedule=Schedule("constant"), stop_on_loop=False, **plan_gen)
    assert rows[0].tokens[0] == rows[1].tokens[0]
    assert rows[0].tokens != rows[1].tokens


def test_positions_prompt_only_changes_first_token():
    lm = make_lm("llama")
    L = 2
    v = vec(lm, L, scale=30.0)
    params = GenerationParams(max_tokens=6, seed=1)
    rows = final_rows(lm, PROMPT, {L: v}, [{}, {L: 1.0}], params, positions="prompt", stop_on_loop=False)
    assert rows[0].tokens[0] != rows[1].tokens[0] or rows[0].tokens != rows[1].tokens


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_logits_mode_with_zero_guidance_equals_base(temperature):
    lm = make_lm("qwen2")
    L = 1
    v = vec(lm, L, scale=20.0)
    params = GenerationParams(max_tokens=16, temperature=temperature, seed=2)
    plan0 = SteeringPlan([SteeringEntry(L, v, 1.0, 1.0, relative=False)], mode="logits", guidance=0.0)
    final = list(compare_stream(lm, PROMPT, plan0, params))[-1]
    assert final.steered_pieces == final.baseline_pieces
    plan2 = SteeringPlan([SteeringEntry(L, v, 1.0, 1.0, relative=False)], mode="logits", guidance=3.0)
    final2 = list(compare_stream(lm, PROMPT, plan2, params))[-1]
    assert final2.divergence is not None
    assert final2.stats["batch_rows"] == 3


def test_eos_ends_one_row_while_the_other_continues():
    lm = make_lm("llama")
    params = GenerationParams(max_tokens=12, seed=0)
    L = 2
    v = vec(lm, L, scale=30.0)
    free = final_rows(lm, PROMPT, {L: v}, [{}, {L: 1.0}], params, stop_on_loop=False)
    base, steer = free[0].tokens, free[1].tokens
    # Make the baseline's 3rd token the EOS token (and absent from the steered row's output).
    candidates = [t for t in base[1:6] if t not in steer and t not in base[: base.index(t)]]
    assert candidates, "need a baseline token the steered row never produces"
    eos_tok = candidates[0]

    class Tok:
        def __init__(self, inner):
            self.inner = inner
            self.eos_token_ids = {eos_tok}
            self.eos_token_id = eos_tok
            self.pad_token_id = 0

        def decode(self, ids):
            return self.inner.decode(ids)

    lm2 = from_memory(lm.model, Tok(lm.tokenizer), lm.config, "llama")
    rows = final_rows(lm2, PROMPT, {L: v}, [{}, {L: 1.0}], params, stop_on_loop=False)
    cut = base.index(eos_tok)
    assert rows[0].tokens == base[: cut + 1]
    assert rows[0].finish == "eos"
    assert rows[1].tokens == steer and rows[1].finish == "length"


def test_cancel_stops_and_unpatches():
    lm = make_lm("llama")
    L = 2
    v = vec(lm, L, scale=5.0)
    x = mx.array([PROMPT])
    before = lm.model(x)
    mx.eval(before)
    calls = {"n": 0}

    def stop():
        calls["n"] += 1
        return calls["n"] > 3

    plan = SteeringPlan([SteeringEntry(L, v, 1.0, 1.0, relative=False)])
    seen = []
    with pytest.raises(Cancelled):
        for chunk in compare_stream(lm, PROMPT, plan, GenerationParams(max_tokens=50), should_stop=stop):
            seen.append(chunk)
    assert len(seen) == 3  # stopped within one step of the request
    assert not is_patched(lm.model)
    assert mx.array_equal(lm.model(x), before).item()


def test_detect_loop_and_repetition_measures():
    assert detect_loop([5] * 30) == 1
    assert detect_loop([1, 2, 3] * 10) == 3
    assert detect_loop(list(range(40))) is None
    assert detect_loop([1, 2] * 5) is None  # too short to call it a loop
    assert distinct_n([1, 2, 3, 4]) == 1.0
    assert distinct_n([1, 1, 1, 1]) == pytest.approx(1 / 3)
    assert longest_repeat([1, 2, 3, 9, 1, 2, 3]) == 3
    assert longest_repeat([1, 2, 3]) == 0


def test_a_forced_loop_is_flagged_and_stops_the_row_early():
    lm = make_lm("llama")
    last = lm.num_layers - 1
    v = vec(lm, last, scale=1e4)  # dominates the last residual: the same token every step
    rows = final_rows(lm, PROMPT, {last: v}, [{}, {last: 1.0}], GenerationParams(max_tokens=80))
    assert rows[1].finish == "loop"
    assert len(rows[1].tokens) < 80


def test_nan_logits_are_flagged():
    lm = make_lm("llama")
    v = np.full(lm.hidden_size, np.nan, dtype=np.float32)
    rows = final_rows(lm, PROMPT, {1: v}, [{}, {1: 1.0}], GenerationParams(max_tokens=8))
    assert rows[1].finish == "nan"
    assert rows[0].finish == "length"


def test_shared_sample_uses_the_same_noise_for_all_rows():
    logits = mx.array(np.random.default_rng(0).standard_normal((1, 50)).astype(np.float32))
    both = mx.concatenate([logits, logits], axis=0)
    for seed in range(20):
        key = mx.random.key(seed)
        toks = shared_sample(both, 1.0, 1.0, key).tolist()
        assert toks[0] == toks[1]


def test_params_validation():
    for bad in [GenerationParams(max_tokens=0), GenerationParams(max_tokens=10**9), GenerationParams(temperature=float("nan")),
                GenerationParams(top_p=0.0), GenerationParams(seed=-1)]:
        with pytest.raises(InputError):
            validate_params(bad)


def test_first_divergence():
    assert first_divergence([1, 2, 3], [1, 2, 3]) is None
    assert first_divergence([1, 2, 3], [1, 5, 3]) == 1
    assert first_divergence([1, 2], [1, 2, 3]) == 2
