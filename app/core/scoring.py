"""How good and how broken a generated text is: repetition, perplexity, concept score.

- distinct-2: unique token bigrams / bigrams (1.0 = no bigram repeats).
- longest repeat: the longest token n-gram that occurs at least twice.
- loop detection and the coherence verdict: one rule each, in app.domain.repetition and
  app.domain.coherence (the generator's early stop uses `detect_loop` = `tail_cycle`).
- perplexity: exp(mean negative log-likelihood) of the generated tokens under the UNSTEERED
  model, so a steered text that the plain model finds implausible scores high.
- concept score: mean projection of the generated tokens' residual stream (unsteered model,
  at a fixed read layer) on the concept's unit vector, minus the same for the baseline text,
  divided by the vector's norm there. 1.0 means the text moved as far along the concept as
  the positive prompts are from the negative ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import mlx.core as mx
import numpy as np

from mlx_lm.models.cache import KVCache, RotatingKVCache, make_prompt_cache

from app.core.models import layers_of
from app.core.patching import ForwardState, Recorder, last_position_only, patch_layers
from app.domain.repetition import tail_cycle as detect_loop  # noqa: F401  (the engine's early stop)


def distinct_n(tokens: Sequence[int], n: int = 2) -> float:
    grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 1.0


def longest_repeat(tokens: Sequence[int], max_n: int = 64) -> int:
    """Length of the longest n-gram that occurs at least twice (overlaps allowed)."""
    best = 0
    t = list(tokens)
    for n in range(1, min(max_n, len(t)) + 1):
        seen = set()
        found = False
        for i in range(len(t) - n + 1):
            g = tuple(t[i : i + n])
            if g in seen:
                found = True
                break
            seen.add(g)
        if not found:
            break
        best = n
    return best


@dataclass
class TextScores:
    n_tokens: int
    distinct2: float
    longest_repeat: int
    perplexity: float
    projection: float  # mean projection on the unit concept vector (generated tokens)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


SCORE_LOGIT_BYTES = 256 * 2**20  # logits held at once while scoring: rows x generated x vocab x 4 bytes


def score_continuations(
    model,
    prompt: Sequence[int],
    continuations: Sequence[Sequence[int]],
    read_layer: Optional[int],
    unit: Optional[np.ndarray],
    pad: int = 0,
    batch_size: Optional[int] = None,
) -> list[TextScores]:
    """Score each continuation under the unsteered model in batched forward passes.

    Only the values needed leave MLX: the final norm and the unembedding run at the positions
    that predict a generated token (a hook on the last block drops the prompt positions), the
    log-probability of each generated token is gathered along the vocabulary axis, and the
    read-layer projection is taken there too, so [rows, G] numbers are copied, not [rows, T, V].
    ``batch_size`` None: as many rows per pass as ``SCORE_LOGIT_BYTES`` allows.
    """
    out: list[TextScores] = []
    P = len(prompt)
    G = max((len(c) for c in continuations), default=0)
    if batch_size is None:
        vocab = _vocab_size(model)
        batch_size = max(1, SCORE_LOGIT_BYTES // max(1, G * vocab * 4))
    u = mx.array(np.asarray(unit, dtype=np.float32)) if unit is not None else None
    for start in range(0, len(continuations), batch_size):
        chunk = continuations[start : start + batch_size]
        lp, proj = _score_chunk(model, prompt, chunk, read_layer, u, pad, P, G)
        for b, c in enumerate(chunk):
            n = len(c)
            if n == 0:
                out.append(TextScores(0, 1.0, 0, float("nan"), float("nan")))
                continue
            nll = -lp[b, :n].astype(np.float64)
            ppl = float(np.exp(np.clip(nll.mean(), 0, 50)))
            p = float(proj[b, :n].astype(np.float64).mean()) if proj is not None else float("nan")
            out.append(TextScores(n, distinct_n(c, 2), longest_repeat(c), ppl, p))
    return out


def _score_chunk(model, prompt, chunk, read_layer, unit, pad, P, G):
    """([rows, G] log-probabilities of the generated tokens, [rows, G] projections or None)."""
    if G == 0:
        return np.zeros((len(chunk), 0), np.float32), None
    conts = mx.array([list(c) + [pad] * (G - len(c)) for c in chunk])  # [rows, G]
    cache = make_prompt_cache(model)
    if not all(type(c) in (KVCache, RotatingKVCache) for c in cache):
        return _score_chunk_whole(model, prompt, chunk, read_layer, unit, pad, P, G, conts)
    last = len(layers_of(model)) - 1
    rec = Recorder()
    hooks: dict[int, list] = {read_layer: [rec]} if read_layer is not None else {}
    hooks.setdefault(last, []).append(last_position_only)
    state = ForwardState(phase="prompt")
    with patch_layers(model, hooks, state):
        # The model is unsteered, so every row shares the prompt: run it once, copy its KV cache
        # to all rows, then run the continuations on top (causal attention: the same numbers).
        first = model(mx.array([list(prompt)]), cache=cache)[0, -1, :].astype(mx.float32)  # predicts token 0
        rec.outputs.clear()
        for c in cache:
            c.keys = mx.repeat(c.keys, len(chunk), axis=0)
            c.values = mx.repeat(c.values, len(chunk), axis=0)
        state.phase = "generated"
        logits = model(conts, cache=cache)[:, : G - 1, :].astype(mx.float32)  # position i predicts token i + 1
        lp = (first[conts[:, 0]] - mx.logsumexp(first))[:, None]
        if G > 1:
            rest = mx.take_along_axis(logits, conts[:, 1:, None], axis=-1)[..., 0] - mx.logsumexp(logits, axis=-1)
            lp = mx.concatenate([lp, rest], axis=1)
        proj = None
        if read_layer is not None and unit is not None:
            proj = rec.outputs[0].astype(mx.float32) @ unit  # [rows, G]: the continuation's own positions
        mx.eval(lp, *([proj] if proj is not None else []))
    return np.array(lp), (np.array(proj) if proj is not None else None)


def _score_chunk_whole(model, prompt, chunk, read_layer, unit, pad, P, G, conts):
    """Other cache types: prompt + continuation in one pass per row, unembedding only where it predicts."""
    seqs = [list(prompt) + list(c) + [pad] * (G - len(c)) for c in chunk]
    last = len(layers_of(model)) - 1

    def predicting_positions(h, _state):
        return h[:, P - 1 : P - 1 + G, :]  # logits at position t predict token t + 1

    rec = Recorder()
    hooks: dict[int, list] = {read_layer: [rec]} if read_layer is not None else {}
    hooks.setdefault(last, []).append(predicting_positions)
    with patch_layers(model, hooks):
        logits = model(mx.array(seqs)).astype(mx.float32)  # [rows, G, V]
        lp = mx.take_along_axis(logits, conts[..., None], axis=-1)[..., 0] - mx.logsumexp(logits, axis=-1)
        proj = None
        if read_layer is not None and unit is not None:
            proj = rec.outputs[0][:, P : P + G, :].astype(mx.float32) @ unit
        mx.eval(lp, *([proj] if proj is not None else []))
    return np.array(lp), (np.array(proj) if proj is not None else None)


def _vocab_size(model) -> int:
    args = getattr(model, "args", None)
    v = getattr(args, "vocab_size", None) if args is not None else None
    return int(v) if v else 262_144  # unknown: assume a large vocabulary (smaller batches)


def is_coherent(cell: TextScores, baseline: TextScores, degenerate: bool = False, tokens: Sequence[int] = (),
                baseline_tokens: Sequence[int] = (), allowance: float = 1.0) -> bool:
    """The lab's one coherence verdict (app.domain.coherence) on two scored texts; pass the tokens for its
    repetition rule and the concept's style allowance."""
    from app.domain.coherence import coherence_verdict

    return coherence_verdict(cell.n_tokens, cell.perplexity, cell.distinct2, "loop" if degenerate else "",
                             baseline.perplexity, baseline.distinct2, tokens, baseline_tokens,
                             allowance=allowance).coherent

