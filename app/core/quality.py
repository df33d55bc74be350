"""How good is a concept vector at each layer? Pure numpy, so the UI can explain every number.

Definitions (shown in the UI and README). For pair i at layer l, ``p_i`` / ``n_i`` are the
pooled features of its positive / negative prompt and ``d_i = p_i - n_i``; ``u`` is the unit
vector of the concept at that layer.

* **d_prime** - separation of the two classes along ``u`` in pooled-standard-deviation units:
  ``(mean(p.u) - mean(n.u)) / sqrt((var(p.u) + var(n.u)) / 2)`` (sample variances). It is
  measured on the same prompts the vector came from, so it is optimistic; ~1 is weak, >3 clean.
* **loo_accuracy** - leave-one-out sign accuracy: the share of pairs i for which
  ``d_i . v_(-i) > 0``, where ``v_(-i)`` is the mean difference of the OTHER N-1 pairs. It asks
  "would a vector built without this pair still rank its positive above its negative?", an
  honest held-out check (0.5 = chance, 1.0 = every pair).
* **pc1_share** - ``s_1^2 / sum_k s_k^2`` for the singular values of the (uncentered) matrix of
  paired differences ``[d_1 ... d_N]``: how much of the pairs' difference energy lies on one
  direction. Near 1: the concept is one clean direction; near 1/N: every pair differs in its
  own way.
* **cosine_to_others** - cosine between this layer's vector and another concept's vector at
  the same layer (e.g. happy vs excited share an "emotional vs neutral" part).
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

import numpy as np

from app.types import LayerQuality

MAX_D_PRIME = 100.0  # reported when the pooled spread is zero but the means differ
RANGE_FRACTION = 0.85  # a neighbour joins the recommended range if its score >= this * best
MIN_LOO = 0.9  # layers below this leave-one-out accuracy are avoided when any layer reaches it


def _unit_rows(v: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    return np.divide(v, n, out=np.zeros_like(v), where=n > 0)


def d_prime(pos_proj: np.ndarray, neg_proj: np.ndarray) -> np.ndarray:
    """``(mu_p - mu_n) / sqrt((var_p + var_n) / 2)`` along the last axis (sample variances)."""
    pos_proj = np.asarray(pos_proj, dtype=np.float64)
    neg_proj = np.asarray(neg_proj, dtype=np.float64)
    ddof = 1 if pos_proj.shape[-1] > 1 else 0
    diff = pos_proj.mean(-1) - neg_proj.mean(-1)
    pooled = np.sqrt((pos_proj.var(-1, ddof=ddof) + neg_proj.var(-1, ddof=ddof)) / 2.0)
    scale = np.maximum(np.abs(pos_proj).max(-1), np.abs(neg_proj).max(-1))
    tiny = pooled <= 1e-12 * np.maximum(scale, 1e-30)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(tiny, np.sign(diff) * MAX_D_PRIME * (np.abs(diff) > 0), diff / np.where(tiny, 1.0, pooled))
    return np.clip(out, -MAX_D_PRIME, MAX_D_PRIME)


def loo_accuracy(diffs: np.ndarray) -> np.ndarray:
    """Leave-one-out sign accuracy of the mean-difference direction; ``diffs`` is [L, N, H].

    ``d_i . mean(others) > 0``  <=>  ``d_i . S - |d_i|^2 > 0`` with ``S = sum_j d_j``, so all
    N held-out directions cost one pass instead of N means. Ties count as wrong.
    """
    diffs = np.asarray(diffs, dtype=np.float64)
    if diffs.shape[-2] < 2:
        raise ValueError("leave-one-out accuracy needs at least 2 pairs")
    total = diffs.sum(axis=-2)  # [L, H]
    dots = np.einsum("...nh,...h->...n", diffs, total) - np.einsum("...nh,...nh->...n", diffs, diffs)
    return (dots > 0).mean(axis=-1)


def pc1_share(diffs: np.ndarray) -> np.ndarray:
    """Share of the squared singular values of the uncentered difference matrix on the first."""
    s = np.linalg.svd(np.asarray(diffs, dtype=np.float64), compute_uv=False)  # [L, min(N, H)]
    energy = (s**2).sum(-1)
    return np.divide(s[..., 0] ** 2, energy, out=np.zeros_like(energy), where=energy > 0)


def _other_arrays(others: Optional[Mapping[str, Any]], shape: tuple[int, int]) -> dict[str, np.ndarray]:
    """Accept ``{slug: ConceptVectors}`` or ``{slug: [L, H] array}``; skip shapes that do not fit."""
    out = {}
    for slug, other in (others or {}).items():
        arr = np.asarray(getattr(other, "vectors", other), dtype=np.float64)
        if arr.shape == shape:
            out[str(slug)] = arr
    return out


def layer_quality(
    pos_feats: np.ndarray,
    neg_feats: np.ndarray,
    vectors: np.ndarray,
    typical_norms: np.ndarray,
    others: Optional[Mapping[str, Any]] = None,
) -> list[LayerQuality]:
    """Per-layer quality of ``vectors`` [L, H] for paired features [L, N, H] (see module doc)."""
    pos = np.asarray(pos_feats, dtype=np.float64)
    neg = np.asarray(neg_feats, dtype=np.float64)
    vec = np.asarray(vectors, dtype=np.float64)
    if pos.shape != neg.shape or pos.ndim != 3:
        raise ValueError(f"positive and negative features must both be [L, N, H], got {pos.shape} and {neg.shape}")
    L, N, H = pos.shape
    if vec.shape != (L, H):
        raise ValueError(f"vectors must be [{L}, {H}], got {vec.shape}")
    unit = _unit_rows(vec)
    pos_proj = np.einsum("lnh,lh->ln", pos, unit)
    neg_proj = np.einsum("lnh,lh->ln", neg, unit)
    dp = d_prime(pos_proj, neg_proj)
    diffs = pos - neg
    loo = loo_accuracy(diffs)
    pc1 = pc1_share(diffs)
    norms = np.linalg.norm(vec, axis=-1)
    cos = {slug: np.einsum("lh,lh->l", unit, _unit_rows(arr)) for slug, arr in _other_arrays(others, (L, H)).items()}
    typical = np.asarray(typical_norms, dtype=np.float64)
    return [
        LayerQuality(
            layer=l,
            vector_norm=float(norms[l]),
            typical_norm=float(typical[l]),
            d_prime=float(dp[l]),
            loo_accuracy=float(loo[l]),
            pc1_share=float(pc1[l]),
            cosine_to_others={slug: float(c[l]) for slug, c in cos.items()},
        )
        for l in range(L)
    ]


def depth_prior(num_layers: int) -> np.ndarray:
    """``4 x (1 - x)`` with ``x = layer / (L - 1)``: 1 in the middle of the network, 0 at its ends.

    Measured on SmolLM2 (PLATFORM.md): steering early layers is unreliable (layer 4 of 30
    pushed "sad" the wrong way) and late layers loop sooner, while layers ~10-20 steer
    cleanly. Early layers also separate the classes trivially by token identity (the
    positive and negative system prompts are different words), which inflates their d_prime.
    """
    if num_layers < 2:
        return np.ones(num_layers)
    x = np.arange(num_layers) / (num_layers - 1)
    return 4.0 * x * (1.0 - x)


def layer_scores(quality: list[LayerQuality]) -> np.ndarray:
    """``score = loo_accuracy * (d_prime / max d_prime) * sqrt(pc1_share) * depth_prior``.

    Each factor is in [0, 1] (negative d_prime counts as 0): a layer scores high when
    held-out pairs agree with the vector (loo_accuracy), when the classes are far apart
    along it relative to the best layer (d_prime), when the concept is one direction rather
    than many (pc1_share; the square root keeps it from dominating, since it shrinks
    naturally as pairs get more varied), and when it lies mid-network (``depth_prior``).
    """
    q = sorted(quality, key=lambda x: x.layer)
    dp = np.array([max(x.d_prime, 0.0) for x in q])
    best = dp.max() if len(dp) else 0.0
    dp = dp / best if best > 0 else dp
    loo = np.array([x.loo_accuracy for x in q])
    pc1 = np.sqrt(np.clip([x.pc1_share for x in q], 0.0, 1.0))
    return loo * dp * pc1 * depth_prior(len(q))


def recommend_layers(quality: list[LayerQuality], num_layers: int) -> tuple[int, int]:
    """An inclusive layer range to steer at, derived from the quality numbers.

    1. Score every layer with ``layer_scores``.
    2. Candidates: layers 1..L-2 (layer 0 cannot be exported to llama.cpp and the last layer
       feeds the unembedding directly, so it acts like a logit bias); among them, only layers
       with ``loo_accuracy >= 0.9`` when at least one reaches it (a direction that does not
       generalise to held-out pairs is not worth steering with, however well it separates).
    3. Take the best-scoring candidate and grow the range over contiguous neighbours that are
       candidates too and score at least 85% of the best.
    """
    if num_layers < 1:
        raise ValueError("a model has at least one layer")
    if len(quality) != num_layers:
        raise ValueError(f"quality has {len(quality)} layers, the model {num_layers}")
    if num_layers <= 2:
        return (num_layers - 1, num_layers - 1)
    q = sorted(quality, key=lambda x: x.layer)
    scores = layer_scores(q)
    loo = np.array([x.loo_accuracy for x in q])
    candidate = np.zeros(num_layers, dtype=bool)
    candidate[1 : num_layers - 1] = True
    if np.any(candidate & (loo >= MIN_LOO)):
        candidate &= loo >= MIN_LOO
    masked = np.where(candidate, scores, -np.inf)
    best = int(np.argmax(masked))  # first maximum: deterministic
    if not np.isfinite(masked[best]) or scores[best] <= 0:
        mid = num_layers // 2
        return (mid, mid)
    keep = candidate & (scores >= RANGE_FRACTION * scores[best])
    lo = hi = best
    while lo - 1 >= 0 and keep[lo - 1]:
        lo -= 1
    while hi + 1 < num_layers and keep[hi + 1]:
        hi += 1
    return (lo, hi)
