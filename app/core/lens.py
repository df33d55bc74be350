"""Look inside: residual norms per layer and token, the logit lens, concept projections.

The logit lens applies the model's final norm and unembedding to the residual stream after
each layer, showing which next token each layer "would predict" if the network stopped there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import mlx.core as mx
import numpy as np

from app.core import family
from app.domain.tokens import readable_piece
from app.core.capture import capture
from app.core.models import LoadedModel


@dataclass
class Exploration:
    tokens: list[str]  # decoded pieces of the prompt tokens
    norms: np.ndarray  # [L, T] residual norm after each layer
    lens_top: list[list[list[tuple[str, float]]]]  # [L][T] -> top-k (token, prob)
    projections: Optional[np.ndarray] = None  # [L, T] on the concept's unit vector per layer
    concept: str = ""
    typical_norms: Optional[np.ndarray] = None
    extra: dict = field(default_factory=dict)


def token_piece(tok, t: int) -> str:
    """One token as text; a partial UTF-8 byte token as its bytes in hex (``<0xE2>``) instead of '�'."""
    text = tok.decode([t])
    if "\ufffd" not in text:
        return text
    try:
        raw = tok.convert_ids_to_tokens(int(t))
    except Exception:  # a tokenizer without the method: keep the decoded text
        raw = None
    return readable_piece(text, raw if isinstance(raw, str) else None)


def explore(lm: LoadedModel, token_ids: Sequence[int], unit_vectors: Optional[np.ndarray] = None,
            top_k: int = 5, lens_positions: Optional[Sequence[int]] = None) -> Exploration:
    """One forward pass; everything the layer explorer shows for one prompt."""
    res = capture(lm.model, [list(token_ids)])
    hidden = res.hidden[:, 0]  # [L, T, H]
    L, T, _ = hidden.shape
    norms = np.linalg.norm(hidden, axis=-1)
    head = family.lens_head(lm.model, lm.config)
    positions = list(range(T)) if lens_positions is None else list(lens_positions)
    h = mx.array(hidden[:, positions, :])  # [L, P, H]
    logits = head(h.astype(lm.dtype)).astype(mx.float32)
    probs = mx.softmax(logits, axis=-1)
    part = mx.argpartition(-probs, kth=top_k - 1, axis=-1)[..., :top_k]
    part_p = mx.take_along_axis(probs, part, axis=-1)
    order = mx.argsort(-part_p, axis=-1)
    top_idx = mx.take_along_axis(part, order, axis=-1)
    top_p = mx.take_along_axis(part_p, order, axis=-1)
    mx.eval(top_idx, top_p)
    idx_np, p_np = np.array(top_idx), np.array(top_p)
    tok = lm.tokenizer
    cache: dict[int, str] = {}

    def piece(t: int) -> str:
        if t not in cache:
            cache[t] = token_piece(tok, t)
        return cache[t]

    lens = [[[(piece(int(idx_np[l, j, k])), float(p_np[l, j, k])) for k in range(top_k)] for j in range(len(positions))]
            for l in range(L)]
    projections = None
    if unit_vectors is not None:
        projections = np.einsum("lth,lh->lt", hidden, unit_vectors)
    return Exploration(tokens=[piece(int(t)) for t in token_ids], norms=norms, lens_top=lens, projections=projections)


@dataclass
class VectorLens:
    """What a concept vector says in token space at each layer (the logit lens of the direction)."""

    layers: list[int]
    top: list[list[tuple[str, float]]]  # per layer: tokens the direction promotes most (token, logit)
    bottom: list[list[tuple[str, float]]]  # ... and suppresses most


def vector_lens(lm: LoadedModel, vectors: np.ndarray, layers: Optional[Sequence[int]] = None,
                k: int = 8) -> VectorLens:
    """Top/bottom ``k`` tokens of unembed(final_norm(unit(vectors[l]))) for each chosen layer.

    The direction is normed like a final residual (so its scale does not matter) and read by
    the output head: tokens it promotes are what adding it pushes the next-token guess towards.
    """
    layers = list(range(vectors.shape[0])) if layers is None else [int(l) for l in layers]
    head = family.lens_head(lm.model, lm.config)
    v = np.asarray(vectors, dtype=np.float32)[layers]
    n = np.linalg.norm(v, axis=1, keepdims=True)
    u = mx.array(np.where(n > 0, v / np.where(n > 0, n, 1.0), 0.0).astype(np.float32))
    logits = head(u[:, None, :].astype(lm.dtype))[:, 0, :].astype(mx.float32)  # [L, V]
    k = max(1, min(int(k), logits.shape[-1] // 2))
    order = mx.argsort(logits, axis=-1)
    top_i, bot_i = order[:, ::-1][:, :k], order[:, :k]
    top_v, bot_v = mx.take_along_axis(logits, top_i, axis=-1), mx.take_along_axis(logits, bot_i, axis=-1)
    mx.eval(top_i, bot_i, top_v, bot_v)
    tok = lm.tokenizer
    dec = lambda t: tok.decode([int(t)])
    top = [[(dec(t), float(x)) for t, x in zip(ti, tv)] for ti, tv in zip(np.array(top_i), np.array(top_v))]
    bottom = [[(dec(t), float(x)) for t, x in zip(bi, bv)] for bi, bv in zip(np.array(bot_i), np.array(bot_v))]
    return VectorLens(layers=layers, top=top, bottom=bottom)
