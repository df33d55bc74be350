"""Many steering cells of one prompt in one batch, each cell with its own vector.

A calibration tries several concepts, extraction methods, layers and strengths on the same
prompt. Each cell is one row of ``run_batch`` with one ``Add`` intervention (rows with the
same vector and layer share a hook), so ANY mix of cells shares one batch with one unsteered
baseline row (batching is nearly free on CPU up to dozens of rows). Greedy decoding; a row
stops at EOS or when it loops (the same rule as the playground).
Coherence uses the unsteered model's perplexity of each text, read with a gather on the
device so only [B, T] numbers are copied out (not the full-vocabulary log-probabilities).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Optional, Sequence

import mlx.core as mx
import numpy as np

from app.core.chat import eos_ids, pad_id
from app.core.generation import run_batch
from app.core.interventions import Add
from app.core.repetition_penalty import RepetitionPenalty
from app.core.scoring import TextScores, is_coherent, score_continuations
from app.core.style import allowance_of
from app.types import ConceptVectors, GenerationParams, steered_layers

MAX_ROWS = 192  # rows per batch: per-row cost keeps falling with batch size on CPU


@dataclass(frozen=True)
class Cell:
    """One steered row: the vectors under ``key`` at ``layer``, relative ``strength``.

    ``band`` adds more layers steered with the same relative strength (each at its own typical
    norm): a small push spread over several layers, as repeng applies its control vectors.
    """

    key: str
    layer: int
    strength: float
    band: tuple[int, ...] = ()

    @property
    def layers(self) -> tuple[int, ...]:
        return steered_layers(self.layer, self.band)


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
                   repetition_penalty: float = 1.0) -> tuple[CellText, list[CellText]]:
    """The baseline and every cell's greedy continuation of ``prompt``, scored."""
    rows: list[Optional[Cell]] = [None] + list(cells)
    out: list[tuple[list[int], str]] = []
    for start in range(0, len(rows), MAX_ROWS):
        chunk = rows[start:start + MAX_ROWS]
        if start and chunk[0] is not None:
            chunk = [None] + chunk  # every batch carries a baseline row (cheap, keeps rows comparable)
            out.extend(_generate(lm, prompt, vectors, chunk, max_tokens, should_stop, repetition_penalty)[1:])
        else:
            out.extend(_generate(lm, prompt, vectors, chunk, max_tokens, should_stop, repetition_penalty))
    texts = score_rows(lm, prompt, out, allowances(vectors, rows))
    return texts[0], texts[1:]


def allowances(vectors: Mapping[str, ConceptVectors], rows: Sequence[Optional[Cell]]) -> list[float]:
    """Each row's style allowance (app.core.style): the one stored with its cell's vectors, 1.0 for the baseline."""
    return [1.0 if c is None else allowance_of(vectors[c.key]) for c in rows]


def _rows(vectors: Mapping[str, ConceptVectors], rows: Sequence[Optional[Cell]]) -> list[list[Add]]:
    """Per-row interventions: rows with the same (vector, layer) share one fused hook."""
    plan: list[list[Add]] = []
    for cell in rows:
        if cell is None or cell.strength == 0:
            plan.append([])
            continue
        cv = vectors[cell.key]
        plan.append([Add(l, cv.unit(l).astype(np.float32), cell.strength * float(cv.typical_norms[l]))
                     for l in cell.layers])
    return plan


def _generate(lm, prompt, vectors, rows, max_tokens, should_stop, repetition_penalty=1.0) -> list[tuple[list[int], str]]:
    last = None
    params = GenerationParams(max_tokens=max_tokens, repetition_penalty=repetition_penalty)
    for step in run_batch(lm, prompt, _rows(vectors, rows), params,
                          should_stop=should_stop):
        last = step
    assert last is not None
    return [(list(r.tokens), r.finish) for r in last.rows]


def score_rows(lm, prompt, generated: list[tuple[list[int], str]],
               allowance: Optional[Sequence[float]] = None) -> list[CellText]:
    """Texts, coherence (row 0 is the baseline) and cleanliness of generated rows of one prompt;
    ``allowance[r]`` is row r's style allowance (default 1.0 everywhere)."""
    eos = eos_ids(lm.tokenizer)
    visible = [[t for t in toks if t not in eos] for toks, _ in generated]
    # the sweep's scorer: the prompt runs once, only generated positions are unembedded
    scores = score_continuations(lm.model, prompt, visible, None, None, pad_id(lm.tokenizer))
    base = scores[0]
    out = []
    allowance = list(allowance) if allowance is not None else [1.0] * len(generated)
    for (toks, fin), v, sc, a in zip(generated, visible, scores, allowance):
        degenerate = fin in ("loop", "nan")
        out.append(CellText(text=lm.tokenizer.decode(v), tokens=toks, finish=fin, scores=sc,
                            coherent=is_coherent(sc, base, degenerate, v, visible[0], allowance=a),
                            clean=(not degenerate) and bool(v) and sc.distinct2 >= 0.5))
    return out


def generate_plain(lm, prompts: Sequence[Sequence[int]], max_tokens: int,
                   repetition_penalty: float = 1.0) -> list[tuple[list[int], str]]:
    """Greedy, unsteered continuations of DIFFERENT prompts in one left-padded batch.

    For reference rows such as "prompted" (the concept's system prompt, no steering): each row
    has its own prompt, so rows are left-padded and mlx-lm's ``BatchKVCache`` masks the padding
    and offsets the rotary positions per row.
    """
    return generate_padded(lm, prompts, {}, [None] * len(prompts), max_tokens, repetition_penalty)


class _PaddedAdd:
    """``h + sum_g coefs[r, g] * units[g]`` at every position from row r's SECOND real token on:
    all of one layer's vectors in one hook (a row uses at most one of them).

    With left padding a row's first real token (the attention sink, never steered, like
    ``skip_first``) sits at index ``left[r]``, not 0; pads before it are masked anyway.
    """

    def __init__(self, units: np.ndarray, coefs: np.ndarray, left: Sequence[int]):
        self.add = mx.array(np.asarray(coefs, np.float32) @ np.asarray(units, np.float32))  # [B, D]
        self.start = mx.array(np.asarray(left, np.int32) + 1)

    def __call__(self, h, state):
        add = self.add.astype(h.dtype)[:, None, :]
        if state.phase == "prompt":
            add = add * (mx.arange(h.shape[1])[None, :] >= self.start[:, None]).astype(h.dtype)[..., None]
        return h + add


def generate_padded(lm, prompts: Sequence[Sequence[int]], vectors: Mapping[str, ConceptVectors],
                    cells: Sequence[Optional[Cell]], max_tokens: int,
                    repetition_penalty: float = 1.0) -> list[tuple[list[int], str]]:
    """Greedy rows that differ in prompt AND steering, in one left-padded batch (row r: prompts[r], cells[r]);
    ``repetition_penalty`` as in ``GenerationParams`` (each row penalises its own prompt tail and answer)."""
    from mlx_lm.models.cache import BatchKVCache

    from app.core.models import layers_of
    from app.core.patching import ForwardState, last_position_only, patch_layers
    from app.core.scoring import detect_loop

    model, eos, pad = lm.model, eos_ids(lm.tokenizer), pad_id(lm.tokenizer)
    T = max(len(p) for p in prompts)
    left = [T - len(p) for p in prompts]
    groups: dict[tuple[str, int], np.ndarray] = {}
    for r, c in enumerate(cells):
        if c is not None and c.strength != 0:
            cv = vectors[c.key]
            for l in c.layers:
                groups.setdefault((c.key, l), np.zeros(len(cells), np.float32))[r] = c.strength * float(cv.typical_norms[l])
    by_layer: dict[int, list[tuple[str, np.ndarray]]] = {}
    for (key, layer), coefs in groups.items():
        by_layer.setdefault(layer, []).append((key, coefs))
    hooks: dict[int, list] = {layer: [_PaddedAdd(np.stack([vectors[k].unit(layer) for k, _ in g]),
                                                 np.stack([c for _, c in g], axis=1), left)]
                              for layer, g in by_layer.items()}
    hooks.setdefault(len(layers_of(model)) - 1, []).append(last_position_only)
    state = ForwardState(phase="prompt", step=0)
    toks: list[list[int]] = [[] for _ in prompts]
    finish = [""] * len(prompts)
    with patch_layers(model, hooks, state):
        cache = [BatchKVCache(left) for _ in layers_of(model)]
        logits = model(mx.array([[pad] * l + list(p) for l, p in zip(left, prompts)]), cache=cache)[:, -1, :]
        penalty = RepetitionPenalty(repetition_penalty, prompts)
        for step in range(max_tokens):
            nxt = mx.argmax(penalty.apply(logits), axis=-1)
            penalty.push(nxt)
            mx.eval(nxt)
            for r, t in enumerate(nxt.tolist()):
                if not finish[r]:
                    toks[r].append(int(t))
                    finish[r] = "eos" if t in eos else ("loop" if detect_loop(toks[r]) is not None else "")
            if all(finish):
                break
            state.phase, state.step = "generated", step
            feed = [toks[r][-1] if not finish[r] else pad for r in range(len(prompts))]
            logits = model(mx.array(feed)[:, None], cache=cache)[:, -1, :]
    return [(t, f or "length") for t, f in zip(toks, finish)]
