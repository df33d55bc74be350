"""Side by side: the baseline and the steered continuation of one prompt, as text growing token by token.

A view over ``generation.run_batch`` (which does the batched decoding): the rows' tokens become
text pieces, the first differing token, finish reasons and speed, and at the end where the
intervention acted and (optionally) the per-token effect map.
"""

from __future__ import annotations

from typing import Callable, Iterator, Optional, Sequence

import numpy as np

from app.core.chat import eos_ids
from app.core.effects import effect_map, where_applied
from app.core.generation import BatchStep, RowState, run_batch
from app.core.models import LoadedModel
from app.core.prompted import add_prompted, joinable, run_alone
from app.core.steering import SteeringPlan
from app.types import ComparisonChunk, GenerationParams


class _Pieces:
    """Incremental detokenisation into per-token text pieces (UTF-8 safe)."""

    def __init__(self, tokenizer, eos: set[int]):
        self.tok = tokenizer
        self.eos = eos
        self.text = ""
        self.pieces: list[str] = []
        self.count = 0

    def update(self, tokens: list[int]) -> None:
        visible = [t for t in tokens if t not in self.eos]
        while self.count < len(visible):
            self.count += 1
            text = self.tok.decode(visible[: self.count])
            if text.endswith("\ufffd") and self.count < len(visible):
                self.pieces.append("")  # partial UTF-8: the next token completes it
                continue
            self.pieces.append(text[len(self.text):] if text.startswith(self.text) else text)
            self.text = text


def first_divergence(a: Sequence[int], b: Sequence[int]) -> Optional[int]:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    if len(a) != len(b):
        return min(len(a), len(b))
    return None


def compare_stream(
    lm: LoadedModel,
    prompt: Sequence[int],
    plan: SteeringPlan,
    params: GenerationParams,
    should_stop: Optional[Callable[[], bool]] = None,
    effects: bool = False,
    prompted: Optional[Sequence[int]] = None,
) -> Iterator[ComparisonChunk]:
    """Baseline and steered continuations of one prompt, side by side, token by token.

    The final chunk also says where the intervention acted (from the hooks' traces) and, with
    ``effects``, the per-token effect map of the steered text (in logits mode: of the guided mix).
    ``prompted`` (another prompt, e.g. under the concept's system prompt) adds an unsteered
    row to the same batch, or, where the model's cache cannot join it, a batch of its own after."""
    vectors = {e.layer: e.vector for e in plan.entries}
    steered = plan.interventions()
    if plan.mode == "add":
        rows = [[], steered]
        steered_row = 1
        guided = ()
    else:
        rows = [[], [], steered]
        steered_row = 1
        guided = ((1, 2, plan.guidance),)
    read = plan.read_layer
    unit = None
    if read is not None:
        v = vectors[read]
        n = float(np.linalg.norm(v))
        unit = v / n if n > 0 else None
    eos = eos_ids(lm.tokenizer)
    base_pieces, steer_pieces, p_pieces = (_Pieces(lm.tokenizer, eos) for _ in range(3))
    joint = prompted is not None and joinable(lm.model)
    last: Optional[BatchStep] = None
    for step in run_batch(lm, prompt, rows, params, plan.schedule, plan.positions, plan.skip_first,
                          read, unit, guided, should_stop, prompted=prompted if joint else None):
        last = step
        b, s = step.rows[0], step.rows[steered_row]
        base_pieces.update(b.tokens)
        steer_pieces.update(s.tokens)
        chunk = _chunk(step, b, s, base_pieces, steer_pieces, done=False, n_prompt=len(prompt), rows=len(step.rows))
        if joint:
            add_prompted(chunk, step.rows[-1], p_pieces, len(prompted), "same batch")
        yield chunk
    if last is not None:
        b, s = last.rows[0], last.rows[steered_row]
        final = _chunk(last, b, s, base_pieces, steer_pieces, done=True, n_prompt=len(prompt), rows=len(last.rows))
        if prompted is not None:
            p_row = last.rows[-1] if joint else run_alone(lm, prompted, params, should_stop)
            add_prompted(final, p_row, p_pieces, len(prompted), "same batch" if joint else "own batch")
        final.applied = where_applied(last.hooks, len(rows) - 1, len(prompt))
        if effects and s.tokens:
            fx = effect_map(lm, prompt, s.tokens, steered, plan.positions, plan.skip_first, plan.schedule.value,
                            guidance=None if plan.mode == "add" else plan.guidance)
            final.effects = [{"index": e.index, "token": e.token, "kl": e.kl, "promoted": e.promoted} for e in fx]
        yield final


def _chunk(step: BatchStep, b: RowState, s: RowState, bp: _Pieces, sp: _Pieces, done: bool, n_prompt: int, rows: int) -> ComparisonChunk:
    n = max(len(b.tokens), len(s.tokens))
    decode_time = max(step.elapsed - step.prefill_seconds, 1e-9)
    return ComparisonChunk(
        baseline_text=bp.text,
        steered_text=sp.text,
        baseline_pieces=list(bp.pieces),
        steered_pieces=list(sp.pieces),
        baseline_scores=list(b.scores),
        steered_scores=list(s.scores),
        divergence=first_divergence(b.tokens, s.tokens),
        done=done,
        steered_gates=list(s.gates),
        stats={
            "step": step.step + 1,
            "prompt_tokens": n_prompt,
            "baseline_tokens": len(b.tokens),
            "steered_tokens": len(s.tokens),
            "baseline_finish": b.finish,
            "steered_finish": s.finish,
            "steered_degenerate": s.finish in ("loop", "nan"),
            "baseline_degenerate": b.finish in ("loop", "nan"),
            "seconds": round(step.elapsed, 3),
            "prefill_seconds": round(step.prefill_seconds, 3),
            "decode_tok_per_s": round((n - 1) / decode_time, 2) if n > 1 else None,
            "batch_rows": rows,
        },
    )
