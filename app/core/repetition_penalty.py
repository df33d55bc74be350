"""A repetition penalty for batched generation, per row, without reading tokens back to Python.

The rule is mlx-lm's ``make_repetition_penalty`` (the CTRL paper's): for every token among a row's
last ``context`` tokens (the prompt's tail, then its answer), a positive logit is divided by the
penalty and a negative one multiplied by it. mlx-lm's processor takes one row and a Python token
list; here each row keeps its own window as an MLX array that grows lazily from the sampled
tokens, so the pipelined decode loop (step t+1 queued before step t is read back) stays pipelined.
A penalty of 1.0 is off: ``apply`` returns the logits untouched.
"""

from __future__ import annotations

from typing import Optional, Sequence

import mlx.core as mx

from app.domain import limits


class RepetitionPenalty:
    """Row r's window: its last ``context`` tokens; ``apply`` penalises them, ``push`` appends a step's tokens."""

    def __init__(self, penalty: float, prompts: Sequence[Sequence[int]], context: int = limits.REPETITION_CONTEXT):
        self.penalty, self.context = float(penalty), int(context)
        self.window: Optional[mx.array] = None
        if not self.active or not prompts:
            return
        tails = [list(p)[-self.context:] for p in prompts]
        if not all(tails):
            raise ValueError("every row needs at least one prompt token")
        width = max(len(t) for t in tails)
        # a shorter tail is left-filled with its own first token: penalising a token twice is penalising it once
        self.window = mx.array([[t[0]] * (width - len(t)) + t for t in tails], dtype=mx.int32)

    @property
    def active(self) -> bool:
        return self.penalty != 1.0

    def apply(self, logits: mx.array) -> mx.array:
        """[B, V] logits with every row's window penalised (lazy; nothing is evaluated here)."""
        if not self.active or self.window is None:
            return logits
        sel = mx.take_along_axis(logits, self.window, axis=-1)
        new = mx.where(sel < 0, sel * self.penalty, sel / self.penalty)
        return mx.put_along_axis(logits, self.window, new.astype(logits.dtype), axis=-1)

    def push(self, tokens: mx.array) -> None:
        """Append one step's sampled tokens [B] (lazy) and keep the last ``context``."""
        if not self.active:
            return
        col = tokens.astype(mx.int32)[:, None]
        self.window = col if self.window is None else mx.concatenate([self.window, col], axis=1)[:, -self.context:]
