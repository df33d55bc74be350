"""Batched generation where rows differ only in their steering.

All rows start from the same prompt and run as ONE batch; each layer's vector is added with a
per-row coefficient (0 for the baseline row). Sampling draws ONE Gumbel-noise vector per
step and shares it across rows, so rows with identical logits pick identical tokens at any
temperature: strength 0 reproduces the baseline exactly, and the first differing token is a
real effect of steering, not of the dice.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional, Sequence

import mlx.core as mx
import numpy as np
from mlx_lm.models.cache import KVCache, RotatingKVCache, make_prompt_cache
from mlx_lm.sample_utils import apply_top_p

from app.core.chat import eos_ids, pad_id
from app.core.models import LoadedModel, layers_of
from app.core.interventions import Intervention
from app.core.prompted import join, joinable, prefill_alone
from app.core.repetition_penalty import RepetitionPenalty
from app.core.patching import ForwardState, Hook, Recorder, build_hooks, last_position_only, patch_layers
from app.core.scoring import detect_loop
from app.core.steering import Schedule
from app.domain.checks import validate_params
from app.errors import Cancelled, InputError
from app.types import GenerationParams



@dataclass
class RowState:
    tokens: list[int] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)  # projection at the read layer per token
    gates: list[float] = field(default_factory=list)  # conditional steering: 1.0 where the gate was open
    done: bool = False
    finish: str = ""  # "eos" | "length" | "loop" | "nan" | "cancelled"


@dataclass
class BatchStep:
    step: int
    rows: list[RowState]
    elapsed: float
    prefill_seconds: float
    hooks: dict = field(default_factory=dict)  # layer -> InterventionHooks (their traces: where steering applied)
    logits: Optional[mx.array] = None  # [B, V] the logits this step's tokens were sampled from


def shared_sample(logits: mx.array, temperature: float, top_p: float, key: mx.array) -> mx.array:
    """Sample one token per row with the SAME Gumbel noise for every row."""
    logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
    if temperature == 0:
        return mx.argmax(logprobs, axis=-1)
    if top_p < 1.0:
        logprobs = apply_top_p(logprobs, top_p)
    noise = mx.random.gumbel(shape=(logits.shape[-1],), key=key)
    return mx.argmax(logprobs * (1.0 / temperature) + noise[None, :], axis=-1)


def run_batch(
    lm: LoadedModel,
    prompt: Sequence[int],
    rows_plan: Sequence[Sequence[Intervention]],
    params: GenerationParams,
    schedule: Schedule = Schedule(),
    positions: str = "all",
    skip_first: bool = True,
    read_layer: Optional[int] = None,
    read_unit: Optional[np.ndarray] = None,
    guided_pairs: Sequence[tuple[int, int, float]] = (),
    should_stop: Optional[Callable[[], bool]] = None,
    stop_on_loop: bool = True,
    prompted: Optional[Sequence[int]] = None,
) -> Iterator[BatchStep]:
    """Generate all rows together, yielding after every step.

    ``rows_plan[r]`` lists row r's interventions (each knows its layer; an empty list is a
    baseline row); rows using the same operation and vector share one hook. ``guided_pairs`` holds
    (base_row, cond_row, scale) for logits-mode rows: both rows then sample from
    ``base + scale * (cond - base)`` and so share their tokens. ``prompted`` adds one more,
    unsteered row LAST with its own prompt (see app.core.prompted; needs ``joinable``).

    Two things make it cheaper than B separate runs without changing the result: the prompt
    runs once for the blocks that see identical input in every row (``_SharedPrefill``), and
    step t+1 is built and queued (``mx.async_eval``) before step t's tokens are read back, as
    mlx-lm's ``generate_step`` does.
    """
    validate_params(params)
    rows_plan, alone = _with_prompted_row(lm, prompt, rows_plan, prompted)
    run = _BatchRun(lm, rows_plan, positions, skip_first, schedule, read_layer, read_unit, guided_pairs,
                    stop_on_loop)
    try:
        with patch_layers(lm.model, run.hooks, run.state):
            logits = run.prefill(prompt, alone, prompted)
            yield from run.decode(logits, params, should_stop)
    finally:
        run.close()


def _with_prompted_row(lm: LoadedModel, prompt: Sequence[int], rows_plan: Sequence[Sequence[Intervention]],
                       prompted: Optional[Sequence[int]]) -> tuple[list, Optional[tuple]]:
    """The rows' plan, with the unsteered prompted row last, and that row's own prefill (None without one)."""
    if not prompt or (prompted is not None and not prompted):
        raise InputError("the prompt is empty")
    if prompted is None:
        return list(rows_plan), None
    if not joinable(lm.model):
        raise InputError("this model's cache cannot hold rows of different prompts in one batch")
    return list(rows_plan) + [[]], prefill_alone(lm.model, prompted)  # before any hook: never steered


class _BatchRun:
    """One batch's hooks, cache and row bookkeeping, and its two phases: the prompt, then step by step."""

    def __init__(self, lm: LoadedModel, rows_plan: list, positions: str, skip_first: bool, schedule: Schedule,
                 read_layer: Optional[int], read_unit: Optional[np.ndarray], guided_pairs, stop_on_loop: bool):
        self.lm, self.model, self.B = lm, lm.model, len(rows_plan)
        self.guided_pairs = guided_pairs
        self.hooks: dict[int, list[Hook]] = {}
        self.recorder = Recorder(last_only=True) if read_layer is not None else None
        if self.recorder is not None:
            self.hooks[read_layer] = [self.recorder]
        self.op_hooks = build_hooks(rows_plan, positions, skip_first, schedule.value)
        for layer, hs in self.op_hooks.items():
            self.hooks.setdefault(layer, []).extend(hs)
        gate_hook = next((h for layer in sorted(self.op_hooks) for h in self.op_hooks[layer]
                          if h.condition is not None), None)
        self.reads = _Reads(self.recorder, read_unit, gate_hook, self.B)
        self.rows = [RowState() for _ in range(self.B)]
        self.book = _Bookkeeper(self.rows, eos_ids(lm.tokenizer), guided_pairs, stop_on_loop)
        self.t0 = time.perf_counter()
        self.state = ForwardState(phase="prompt", step=0)
        self.cache = make_prompt_cache(self.model)
        self.share = _SharedPrefill.plan(self.model, self.cache, self.B, sorted(self.op_hooks), positions)
        if self.share is not None:
            self.hooks.setdefault(self.share.layer, []).insert(0, self.share)
        self.hooks.setdefault(len(layers_of(self.model)) - 1, []).append(last_position_only)
        self.pad = mx.array(pad_id(lm.tokenizer), dtype=mx.int32)
        self.pending: Optional[_Pending] = None

    def prefill(self, prompt: Sequence[int], alone: Optional[tuple], prompted: Optional[Sequence[int]]) -> mx.array:
        """The last position's logits of every row after the prompt (shared blocks run it once)."""
        tokens = mx.array([list(prompt)] * (1 if self.share is not None else self.B))  # a prompted row: stand-in
        logits = self.model(tokens, cache=self.cache)[:, -1, :].astype(mx.float32)
        if self.share is not None:
            self.share.expand(self.cache)
        self.row_prompts = [prompt] * self.B
        if alone is not None:
            self.cache = join(self.cache, len(prompt), alone[0], len(prompted))
            logits = mx.concatenate([logits[:-1], alone[1]], axis=0)
            self.row_prompts[-1] = prompted
        return logits

    def decode(self, logits: mx.array, params: GenerationParams,
               should_stop: Optional[Callable[[], bool]]) -> Iterator[BatchStep]:
        """Sample step by step; step t+1 is queued before step t's tokens are read back."""
        book, state = self.book, self.state
        penalty = RepetitionPenalty(params.repetition_penalty, self.row_prompts)
        self.pending, key = _dispatch(logits, self.reads.take(), self.guided_pairs, params, mx.random.key(params.seed),
                                      penalty)
        prefill = None
        for step in range(params.max_tokens):
            if should_stop is not None and should_stop():
                book.cancel()
                raise Cancelled("generation cancelled")
            current = self.pending
            if step + 1 < params.max_tokens:
                # queue step t+1 before reading step t back; rows already finished feed the pad token
                feed = mx.where(book.done_mask(), self.pad, current.tokens.astype(mx.int32))
                state.phase, state.step = "generated", step
                logits = self.model(feed[:, None], cache=self.cache)[:, -1, :].astype(mx.float32)
                self.pending, key = _dispatch(logits, self.reads.take(), self.guided_pairs, params, key, penalty)
            book.record(current)
            if prefill is None:
                prefill = time.perf_counter() - self.t0
            yield BatchStep(step, self.rows, time.perf_counter() - self.t0, prefill, self.op_hooks, current.logits)
            if book.all_done():
                if self.pending is not current:
                    _forget_step(self.op_hooks, step)  # queued, never used: keep the traces truthful
                break
        book.finish_rest()

    def close(self) -> None:
        if self.pending is not None:
            mx.synchronize()  # nothing of this run is left computing once it returns or raises
        if self.recorder is not None:
            self.recorder.outputs.clear()


def _forget_step(op_hooks: dict, step: int) -> None:
    """Drop the trace (and gate) of the decode call for ``step`` that ran ahead and was not used."""
    for hs in op_hooks.values():
        for h in hs:
            if h.trace and h.trace[-1][0] == "generated" and h.trace[-1][1] == step:
                h.trace.pop()
                if h.condition is not None and h.gates:
                    h.gates.pop()


class _SharedPrefill:
    """Run the prompt once through the blocks whose input is the same in every row.

    Rows differ only by steering, so up to and including the lowest block that steers in the
    prompt (all blocks when only generated tokens are steered) they compute the same thing.
    The prompt goes in as ONE row; this hook, first on that block, broadcasts its output to
    all B rows, and ``expand`` then copies the lower blocks' KV caches to B rows. Only for the
    plain mlx-lm KV caches (arrays with a batch axis and nothing else per row); any other
    cache type, or a cache list that does not map one-to-one to the blocks, runs as before.
    """

    SUPPORTED = (KVCache, RotatingKVCache)

    def __init__(self, layer: int, rows: int):
        self.layer, self.rows = layer, rows

    @classmethod
    def plan(cls, model, cache, rows: int, steered: Sequence[int], positions: str) -> Optional["_SharedPrefill"]:
        n = len(layers_of(model))
        if rows < 2 or len(cache) != n:
            return None
        layer = min(steered) if (steered and positions != "generated") else n - 1
        if not all(type(c) in cls.SUPPORTED for c in cache[: layer + 1]):
            return None
        return cls(layer, rows)

    def __call__(self, h: mx.array, state: ForwardState) -> Optional[mx.array]:
        if state.phase == "prompt" and h.shape[0] == 1:
            return mx.broadcast_to(h, (self.rows, *h.shape[1:]))
        return None

    def expand(self, cache) -> None:
        for c in cache[: self.layer + 1]:
            c.keys = mx.repeat(c.keys, self.rows, axis=0)
            c.values = mx.repeat(c.values, self.rows, axis=0)


@dataclass
class _Pending:
    """One step's lazily computed results (queued with ``mx.async_eval``)."""

    tokens: mx.array  # [B]
    bad: mx.array  # [B] non-finite logits
    proj: Optional[mx.array]  # [B] projection at the read layer
    gate: Optional[mx.array]  # [B] conditional steering: was the gate open at the last position
    logits: mx.array  # [B, V]


class _Reads:
    """What one forward call left in the read-layer recorder and the conditional gate, taken right after it."""

    def __init__(self, recorder: Optional[Recorder], unit: Optional[np.ndarray], gate_hook, rows: int):
        self.recorder, self.gate_hook, self.rows = recorder, gate_hook, rows
        self.unit = mx.array(unit.astype(np.float32)) if unit is not None else None

    def take(self) -> tuple[Optional[mx.array], Optional[mx.array]]:
        proj = gate = None
        if self.recorder is not None and self.recorder.outputs:
            h = self.recorder.outputs[-1]
            self.recorder.outputs.clear()
            if self.unit is not None:
                proj = h.astype(mx.float32) @ self.unit
                if proj.shape[0] != self.rows:  # read below the shared prefill's broadcast
                    proj = mx.broadcast_to(proj, (self.rows,))
        if self.gate_hook is not None:
            last = self.gate_hook.last_gate
            gate = last[:, -1] if last is not None else mx.zeros((self.rows,))
        return proj, gate


def _dispatch(logits, reads, guided_pairs, params: GenerationParams, key,
              penalty: RepetitionPenalty) -> tuple[_Pending, mx.array]:
    """Guidance, the repetition penalty, shared-noise sampling and the NaN check for one step, queued."""
    for base, cond, scale in guided_pairs:
        guided = logits[base] + scale * (logits[cond] - logits[base])
        logits = _set_rows(logits, [base, cond], guided)
    logits = penalty.apply(logits)
    key, sub = mx.random.split(key)
    nxt = shared_sample(logits, params.temperature, params.top_p, sub)
    penalty.push(nxt)
    bad = mx.any(~mx.isfinite(logits), axis=-1)
    proj, gate = reads
    pending = _Pending(nxt, bad, proj, gate, logits)
    mx.async_eval(nxt, bad, *[a for a in (proj, gate) if a is not None])
    return pending, key


class _Bookkeeper:
    """Per-row tokens, scores, gates and finish reasons, updated from each step's evaluated results."""

    def __init__(self, rows: list[RowState], eos: set[int], guided_pairs, stop_on_loop: bool):
        self.rows, self.eos, self.stop_on_loop = rows, eos, stop_on_loop
        self.partner = {cond: base for base, cond, _ in guided_pairs}

    def done_mask(self) -> mx.array:
        return mx.array([r.done for r in self.rows])

    def all_done(self) -> bool:
        return all(r.done for r in self.rows)

    def record(self, p: _Pending) -> None:
        toks, bad = p.tokens.tolist(), p.bad.tolist()
        proj = p.proj.tolist() if p.proj is not None else None
        gate = p.gate.tolist() if p.gate is not None else None
        for r, row in enumerate(self.rows):
            if row.done:
                continue
            if bad[r]:
                row.done, row.finish = True, "nan"
                continue
            tok = int(toks[r])
            row.tokens.append(tok)
            if proj is not None:
                row.scores.append(float(proj[r]))  # the projection of the position that produced this token
            if gate is not None:
                row.gates.append(float(gate[r]))  # was the condition open where this token came from
            if tok in self.eos:
                row.done, row.finish = True, "eos"
            elif self.stop_on_loop and detect_loop(row.tokens) is not None:
                row.done, row.finish = True, "loop"
        for cond, base in self.partner.items():  # logits-mode partners finish together
            a, b = self.rows[base], self.rows[cond]
            if a.done and not b.done:
                b.done, b.finish = True, a.finish
            elif b.done and not a.done:
                a.done, a.finish = True, b.finish

    def cancel(self) -> None:
        for r in self.rows:
            if not r.done:
                r.done, r.finish = True, "cancelled"

    def finish_rest(self) -> None:
        for r in self.rows:
            if not r.done:
                r.done, r.finish = True, "length"


def _set_rows(logits: mx.array, idx: list[int], value: mx.array) -> mx.array:
    mask = np.zeros((logits.shape[0], 1), dtype=bool)
    mask[idx] = True
    return mx.where(mx.array(mask), value[None, :], logits)
