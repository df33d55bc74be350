"""Seeing what steering did: teacher-forced passes, the per-token effect map, where it applied.

``forced_logits`` runs prompt + continuation through the model in ONE uncached pass with the
same interventions, positions and schedule a cached generation used (``ForwardState`` phase
"full": position ``prompt_len + i`` gets generated token i's schedule weight), so it reproduces
what the steered row saw at every step. ``effect_map`` uses it twice in one batch (an
unsteered row and the steered row) and reports, per generated token, the KL divergence
between the two next-token distributions and the tokens steering promoted most there. In
logits mode (``guidance`` g) the steered text was sampled from ``base + g (steered - base)``,
so that mix is the distribution compared with the unsteered one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import mlx.core as mx
import numpy as np

from app.core.patching import ForwardState, build_hooks, patch_layers

MAX_PROMOTED = 3


def forced_logits(model: Any, tokens: Sequence[int], prompt_len: int, rows: Sequence[Sequence[Any]],
                  positions: str = "all", skip_first: bool = True,
                  schedule: Optional[Callable[[int], float]] = None) -> mx.array:
    """float32 logits [rows, T, V] of one uncached pass over ``tokens`` with per-row interventions."""
    hooks = build_hooks(rows, positions, skip_first, schedule)
    state = ForwardState(phase="full", prompt_len=int(prompt_len))
    x = mx.array([list(tokens)] * len(rows))
    with patch_layers(model, hooks, state):
        out = model(x).astype(mx.float32)
        mx.eval(out)
    return out


@dataclass
class TokenEffect:
    index: int  # generated token number
    token: str
    kl: float  # KL(steered || unsteered) of the distribution that produced this token
    promoted: list[tuple[str, float]] = field(default_factory=list)  # (token, log-prob gain)


def effect_map(lm: Any, prompt: Sequence[int], continuation: Sequence[int], steered: Sequence[Any],
               positions: str = "all", skip_first: bool = True,
               schedule: Optional[Callable[[int], float]] = None, top: int = MAX_PROMOTED,
               guidance: Optional[float] = None) -> list[TokenEffect]:
    """Per-token KL between unsteered and steered next-token distributions along ``continuation``.

    ``guidance`` (logits mode): compare the guided logits ``base + g (steered - base)`` instead."""
    cont = list(continuation)
    if not cont:
        return []
    tokens = list(prompt) + cont
    logits = forced_logits(lm.model, tokens, len(prompt), [[], list(steered)], positions, skip_first, schedule)
    P = len(prompt)
    lp = logits[:, P - 1:P - 1 + len(cont), :]  # the distributions that produced each generated token
    if guidance is not None:  # what the logits-mode sampler drew from (the same formula as generation's)
        lp = mx.stack([lp[0], lp[0] + float(guidance) * (lp[1] - lp[0])])
    lp = lp - mx.logsumexp(lp, axis=-1, keepdims=True)
    base, steer = lp[0], lp[1]
    kl = mx.sum(mx.exp(steer) * (steer - base), axis=-1)
    gain = steer - base
    # promoted: largest gain among the steered distribution's likely tokens (top 20 by probability)
    cand = mx.argpartition(-steer, kth=19, axis=-1)[:, :20] if steer.shape[-1] > 20 else mx.broadcast_to(
        mx.arange(steer.shape[-1])[None, :], steer.shape)
    cand_gain = mx.take_along_axis(gain, cand, axis=-1)
    order = mx.argsort(-cand_gain, axis=-1)[:, :top]
    best = mx.take_along_axis(cand, order, axis=-1)
    best_gain = mx.take_along_axis(cand_gain, order, axis=-1)
    mx.eval(kl, best, best_gain)
    kl_np, best_np, gain_np = np.array(kl), np.array(best), np.array(best_gain)
    tok = lm.tokenizer
    out = []
    for i, t in enumerate(cont):
        promoted = [(tok.decode([int(b)]), float(g)) for b, g in zip(best_np[i], gain_np[i]) if g > 0]
        out.append(TokenEffect(i, tok.decode([int(t)]), max(0.0, float(kl_np[i])), promoted))
    return out


def where_applied(hooks: dict, row: int, prompt_len: int, max_rows: int = 400) -> list[dict]:
    """What each hook did to ``row``: per layer and call, phase, positions and coefficient.

    Read from the hooks' own traces (what actually ran, not what was planned); a conditional
    hook adds how many of those positions its gate let through.
    """
    out: list[dict] = []
    for layer in sorted(hooks):
        for hook in hooks[layer]:
            if hook.row_active is None or float(np.array(hook.row_active)[row]) == 0:
                continue
            param = float(np.array(hook.row_params)[row])
            gates = iter(hook.gates)
            for phase, step, start, T, scale in hook.trace:
                gate = next(gates, None) if hook.condition is not None else None
                first = start + (1 if (phase == "prompt" and hook.skip_first) else 0)
                item = {"layer": layer, "op": getattr(hook.op, "inner", hook.op).name, "phase": "prefill" if phase == "prompt" else "decode",
                        "step": step if phase == "generated" else None, "positions": [first, start + T - 1],
                        "coefficient": round(param * scale, 6)}
                if gate is not None:
                    g = np.array(gate[row])
                    item["gate_open"] = int(g[first - start:].sum())
                    item["gate_of"] = int(len(g) - (first - start))
                out.append(item)
                if len(out) >= max_rows:
                    return out
    return out
