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

from app.core.capture import pad_right
from app.core.patching import Recorder, patch_layers
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


def score_continuations(
    model,
    prompt: Sequence[int],
    continuations: Sequence[Sequence[int]],
    read_layer: Optional[int],
    unit: Optional[np.ndarray],
    pad: int = 0,
    batch_size: int = 8,
) -> list[TextScores]:
    """Score each continuation under the unsteered model in batched forward passes."""
    out: list[TextScores] = []
    P = len(prompt)
    for start in range(0, len(continuations), batch_size):
        chunk = continuations[start : start + batch_size]
        seqs = [list(prompt) + list(c) for c in chunk]
        tokens, lengths = pad_right(seqs, pad)
        hooks = {}
        rec = Recorder()
        if read_layer is not None:
            hooks[read_layer] = [rec]
        with patch_layers(model, hooks):
            logits = model(tokens)
            hidden = rec.outputs[0] if read_layer is not None else None
            logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
            mx.eval(logprobs, *( [hidden] if hidden is not None else []))
        lp = np.array(logprobs.astype(mx.float32))
        hid = np.array(hidden.astype(mx.float32)) if hidden is not None else None
        for b, c in enumerate(chunk):
            G = len(c)
            if G == 0:
                out.append(TextScores(0, 1.0, 0, float("nan"), float("nan")))
                continue
            # logits at position t predict token t+1
            nll = -np.array([lp[b, P - 1 + i, c[i]] for i in range(G)], dtype=np.float64)
            ppl = float(np.exp(np.clip(nll.mean(), 0, 50)))
            proj = float("nan")
            if hid is not None and unit is not None:
                proj = float((hid[b, P : P + G] @ unit).mean())
            out.append(TextScores(G, distinct_n(c, 2), longest_repeat(c), ppl, proj))
    return out


def is_coherent(cell: TextScores, baseline: TextScores, degenerate: bool = False, tokens: Sequence[int] = (),
                baseline_tokens: Sequence[int] = ()) -> bool:
    """The lab's one coherence verdict (app.domain.coherence) on two scored texts; pass the tokens for its
    repetition rule."""
    from app.domain.coherence import coherence_verdict

    return coherence_verdict(cell.n_tokens, cell.perplexity, cell.distinct2, "loop" if degenerate else "",
                             baseline.perplexity, baseline.distinct2, tokens, baseline_tokens).coherent

