"""Many steering cells of one prompt in one batch, each cell with its own vector.

A calibration tries several concepts, extraction methods, layers and strengths on the same
prompt. ``run_batch`` adds one vector per layer; here every (vector, layer) pair gets its own
hook whose per-row coefficients are zero outside its cells, so ANY mix of cells shares one
batch with one unsteered baseline row (batching is nearly free on CPU up to ~32 rows).
Greedy decoding; a row stops at EOS or when it loops (the same rule as the playground).
Coherence uses the unsteered model's perplexity of each text, read with a gather on the
device so only [B, T] numbers are copied out (not the full-vocabulary log-probabilities).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Optional, Sequence

import mlx.core as mx
import numpy as np
from mlx_lm.models.cache import make_prompt_cache

from app.core.capture import pad_right
from app.core.chat import eos_ids, pad_id
from app.core.patching import ForwardState, SteeringHook, patch_layers
from app.core.scoring import TextScores, detect_loop, distinct_n, is_coherent, longest_repeat
from app.errors import Cancelled
from app.types import ConceptVectors

MAX_ROWS = 64


@dataclass(frozen=True)
class Cell:
    """One steered row: the vectors under ``key`` at ``layer``, relative ``strength``."""

    key: str
    layer: int
    strength: float


@dataclass
class CellText:
    text: str
    tokens: list[int]
    finish: str  # "eos" | "length" | "loop"
    scores: TextScores
    coherent: bool  # the existing rules of app.core.scoring (perplexity, distinct-2, repeats)
    clean: bool  # distinct-2 >= 0.5 and no loop (the efficacy targets' measure)


def generate_cells(lm, prompt: Sequence[int], vectors: Mapping[str, ConceptVectors], cells: Sequence[Cell],
                   max_tokens: int, should_stop: Optional[Callable[[], bool]] = None,
                   ) -> tuple[CellText, list[CellText]]:
    """The baseline and every cell's greedy continuation of ``prompt``, scored."""
    rows: list[Optional[Cell]] = [None] + list(cells)
    out: list[tuple[list[int], str]] = []
    for start in range(0, len(rows), MAX_ROWS):
        chunk = rows[start:start + MAX_ROWS]
        if start and chunk[0] is not None:
            chunk = [None] + chunk  # every batch carries a baseline row (cheap, keeps rows comparable)
            out.extend(_generate(lm, prompt, vectors, chunk, max_tokens, should_stop)[1:])
        else:
            out.extend(_generate(lm, prompt, vectors, chunk, max_tokens, should_stop))
    texts = _score(lm, prompt, out)
    return texts[0], texts[1:]


def _hooks(vectors: Mapping[str, ConceptVectors], rows: Sequence[Optional[Cell]]) -> dict[int, list[SteeringHook]]:
    groups: dict[tuple[str, int], np.ndarray] = {}
    for r, cell in enumerate(rows):
        if cell is None or cell.strength == 0:
            continue
        coefs = groups.setdefault((cell.key, cell.layer), np.zeros(len(rows), np.float32))
        cv = vectors[cell.key]
        coefs[r] = cell.strength * float(cv.typical_norms[cell.layer])
    hooks: dict[int, list[SteeringHook]] = {}
    for (key, layer), coefs in groups.items():
        unit = vectors[key].unit(layer).astype(np.float32)
        hooks.setdefault(layer, []).append(SteeringHook(vector=mx.array(unit), row_coefs=mx.array(coefs)))
    return hooks


def _generate(lm, prompt, vectors, rows, max_tokens, should_stop) -> list[tuple[list[int], str]]:
    model, eos, pad = lm.model, eos_ids(lm.tokenizer), pad_id(lm.tokenizer)
    B = len(rows)
    toks: list[list[int]] = [[] for _ in range(B)]
    finish = [""] * B
    state = ForwardState(phase="prompt", step=0)
    with patch_layers(model, _hooks(vectors, rows), state):
        cache = make_prompt_cache(model)
        logits = model(mx.array([list(prompt)] * B), cache=cache)[:, -1, :]
        for step in range(max_tokens):
            if should_stop is not None and should_stop():
                raise Cancelled("calibration cancelled")
            nxt = mx.argmax(logits, axis=-1)
            mx.eval(nxt)
            for r, t in enumerate(nxt.tolist()):
                if finish[r]:
                    continue
                toks[r].append(int(t))
                if t in eos:
                    finish[r] = "eos"
                elif detect_loop(toks[r]) is not None:
                    finish[r] = "loop"
            if all(finish):
                break
            feed = [toks[r][-1] if not finish[r] else pad for r in range(B)]
            state.phase, state.step = "generated", step
            logits = model(mx.array(feed)[:, None], cache=cache)[:, -1, :]
    return [(t, f or "length") for t, f in zip(toks, finish)]


def token_nll(model, prompt: Sequence[int], conts: Sequence[Sequence[int]], pad: int, batch: int = 16) -> list[np.ndarray]:
    """Negative log-likelihood of each continuation's tokens under the (unpatched) model."""
    P, out = len(prompt), []
    for s in range(0, len(conts), batch):
        chunk = [list(c) for c in conts[s:s + batch]]
        tokens, _ = pad_right([list(prompt) + c for c in chunk], pad)
        logits = model(tokens)[:, P - 1:-1, :].astype(mx.float32)
        T = logits.shape[1]
        target = np.full((len(chunk), T), pad, dtype=np.int32)
        for b, c in enumerate(chunk):
            target[b, :len(c)] = c[:T]
        picked = mx.take_along_axis(logits, mx.array(target)[..., None], axis=-1)[..., 0]
        nll = mx.logsumexp(logits, axis=-1) - picked
        arr = np.array(nll)
        out.extend(arr[b, :len(c)].astype(np.float64) for b, c in enumerate(chunk))
    return out


def _score(lm, prompt, generated: list[tuple[list[int], str]]) -> list[CellText]:
    eos = eos_ids(lm.tokenizer)
    visible = [[t for t in toks if t not in eos] for toks, _ in generated]
    nlls = token_nll(lm.model, prompt, [v or [pad_id(lm.tokenizer)] for v in visible], pad_id(lm.tokenizer))
    scores = []
    for v, nll in zip(visible, nlls):
        ppl = float(np.exp(np.clip(nll.mean(), 0, 50))) if v else float("nan")
        scores.append(TextScores(len(v), distinct_n(v, 2), longest_repeat(v), ppl, float("nan")))
    base = scores[0]
    out = []
    for (toks, fin), v, sc in zip(generated, visible, scores):
        degenerate = fin == "loop"
        out.append(CellText(text=lm.tokenizer.decode(v), tokens=toks, finish=fin, scores=sc,
                            coherent=is_coherent(sc, base, degenerate),
                            clean=(not degenerate) and bool(v) and sc.distinct2 >= 0.5))
    return out
