"""The generation loop as it was before shared prefill and pipelining, kept as the reference.

Every step runs the whole batch on the whole prompt and reads its tokens back before building
the next step. Tests compare the engine against it bit for bit. It yields
``(step, copies of the row states, the logits sampled from, the hooks)``.
"""

from __future__ import annotations

import time
from typing import Callable, Optional, Sequence

import mlx.core as mx
import numpy as np
from mlx_lm.models.cache import make_prompt_cache

from app.core.chat import eos_ids, pad_id
from app.core.generation import RowState, shared_sample, validate_params
from app.core.interventions import Intervention
from app.core.patching import ForwardState, Hook, Recorder, build_hooks, patch_layers
from app.core.scoring import detect_loop
from app.core.steering import Schedule
from app.errors import Cancelled, InputError
from app.types import GenerationParams


def reference_run_batch(
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
) -> Iterator[BatchStep]:
    """Generate all rows together, yielding after every step.

    ``rows_plan[r]`` lists row r's interventions (each knows its layer; an empty list is a
    baseline row); rows using the same operation and vector share one hook. ``guided_pairs`` holds
    (base_row, cond_row, scale) for logits-mode rows: both rows then sample from
    ``base + scale * (cond - base)`` and so share their tokens.
    """
    validate_params(params)
    if not prompt:
        raise InputError("the prompt is empty")
    B = len(rows_plan)
    model = lm.model
    eos = eos_ids(lm.tokenizer)
    pad = pad_id(lm.tokenizer)
    hooks: dict[int, list[Hook]] = {}
    recorder: Optional[Recorder] = None
    if read_layer is not None:
        recorder = Recorder(last_only=True)
        hooks[read_layer] = [recorder]
    op_hooks = build_hooks(rows_plan, positions, skip_first, schedule.value)
    for layer, hs in op_hooks.items():
        hooks.setdefault(layer, []).extend(hs)
    gate_hook = next((h for layer in sorted(op_hooks) for h in op_hooks[layer] if h.condition is not None), None)
    unit = mx.array(read_unit.astype(np.float32)) if read_unit is not None else None
    rows = [RowState() for _ in range(B)]
    partner = {}
    for base, cond, _ in guided_pairs:
        partner[cond] = base
    key = mx.random.key(params.seed)
    t0 = time.perf_counter()
    state = ForwardState(phase="prompt", step=0)
    with patch_layers(model, hooks, state):
        cache = make_prompt_cache(model)
        tokens = mx.array([list(prompt)] * B)
        logits = model(tokens, cache=cache)[:, -1, :].astype(mx.float32)
        prefill = None
        for step in range(params.max_tokens):
            if should_stop is not None and should_stop():
                for r in rows:
                    if not r.done:
                        r.done, r.finish = True, "cancelled"
                raise Cancelled("generation cancelled")
            for base, cond, scale in guided_pairs:
                guided = logits[base] + scale * (logits[cond] - logits[base])
                logits = _set_rows(logits, [base, cond], guided)
            key, sub = mx.random.split(key)
            nxt = shared_sample(logits, params.temperature, params.top_p, sub)
            bad = mx.any(~mx.isfinite(logits), axis=-1)
            proj = (recorder.outputs[-1].astype(mx.float32) @ unit) if (recorder is not None and unit is not None) else None
            gate = None
            if gate_hook is not None:
                gate = gate_hook.last_gate[:, -1] if gate_hook.last_gate is not None else mx.zeros((B,))
            mx.eval(nxt, bad, *([proj] if proj is not None else []), *([gate] if gate is not None else []))
            if prefill is None:
                prefill = time.perf_counter() - t0
            nxt_l = nxt.tolist()
            bad_l = bad.tolist()
            proj_l = proj.tolist() if proj is not None else None
            gate_l = gate.tolist() if gate is not None else None
            for r, row in enumerate(rows):
                if row.done:
                    continue
                if bad_l[r]:
                    row.done, row.finish = True, "nan"
                    continue
                tok = int(nxt_l[r])
                row.tokens.append(tok)
                if proj_l is not None:
                    # the projection of the position that produced this token
                    row.scores.append(float(proj_l[r]))
                if gate_l is not None:
                    row.gates.append(float(gate_l[r]))  # was the condition open where this token came from
                if tok in eos:
                    row.done, row.finish = True, "eos"
                elif stop_on_loop and detect_loop(row.tokens) is not None:
                    row.done, row.finish = True, "loop"
            # logits-mode partners finish together
            for cond, base in partner.items():
                if rows[base].done and not rows[cond].done:
                    rows[cond].done, rows[cond].finish = True, rows[base].finish
                elif rows[cond].done and not rows[base].done:
                    rows[base].done, rows[base].finish = True, rows[cond].finish
            yield step, [RowState(list(r.tokens), list(r.scores), list(r.gates), r.done, r.finish) for r in rows], logits, op_hooks
            if all(r.done for r in rows):
                break
            feed = [r.tokens[-1] if (r.tokens and not r.done) else pad for r in rows]
            state.phase, state.step = "generated", step
            logits = model(mx.array(feed)[:, None], cache=cache)[:, -1, :].astype(mx.float32)
        for row in rows:
            if not row.done:
                row.done, row.finish = True, "length"
    if recorder is not None:
        recorder.outputs.clear()


def _set_rows(logits: mx.array, idx: list[int], value: mx.array) -> mx.array:
    mask = np.zeros((logits.shape[0], 1), dtype=bool)
    mask[idx] = True
    return mx.where(mx.array(mask), value[None, :], logits)


