"""Extraction methods: one registered function each, from pooled features to a vector per layer.

Numpy only (no MLX), so the CLI can list the choices and the library's schema can check a concept's
``method:`` without loading the model runtime; the UI reads them through the service. A new method is
one entry in ``_ALL`` here (and its test). ``app.core.extraction`` captures what a method's
``needs`` names and calls ``fn``. Why several methods: concept-vs-neutral vectors of
different emotions share most of their direction ("emotional vs neutral"), so a vector that
is only "concept minus neutral" can steer towards the wrong emotion. The cleaner variants
remove that shared part in different ways; ``calibrate`` compares them on held-out prompts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from app.errors import InputError


@dataclass
class Features:
    """Pooled residual features, [L, N, H] per side (position 0 and padding excluded)."""

    pos: np.ndarray  # mean features of the positives
    neg: np.ndarray
    pos_last: Optional[np.ndarray] = None  # last-token features
    neg_last: Optional[np.ndarray] = None
    opposite_pos: Optional[np.ndarray] = None  # mean features of the opposite concept's positives
    category_units: Optional[np.ndarray] = None  # [L, K, H] unit vectors of the category's concepts
    system_diffs: Optional[np.ndarray] = None  # [L, U, H] per-user-text system-prompt contrasts
    reply_pos: Optional[np.ndarray] = None  # [L, N, H] the positives as the model's reply, reply tokens only
    reply_neg: Optional[np.ndarray] = None


@dataclass(frozen=True)
class Method:
    name: str
    needs: tuple[str, ...]  # Features fields the function reads
    help: str
    fn: Callable[[Features], np.ndarray]


def _diffs(f: Features) -> np.ndarray:
    return np.asarray(f.pos, np.float64) - np.asarray(f.neg, np.float64)


def mean_diff(f: Features) -> np.ndarray:
    return _diffs(f).mean(axis=1)


def last_token(f: Features) -> np.ndarray:
    return (np.asarray(f.pos_last, np.float64) - np.asarray(f.neg_last, np.float64)).mean(axis=1)


def pca(f: Features) -> np.ndarray:
    return pca_direction(_diffs(f))


def bipolar(f: Features) -> np.ndarray:
    """Concept positives against the opposite concept's positives (sad vs happy, not vs neutral)."""
    return np.asarray(f.pos, np.float64).mean(axis=1) - np.asarray(f.opposite_pos, np.float64).mean(axis=1)


def no_shared(f: Features) -> np.ndarray:
    """mean_diff with the category's mean direction projected out, layer by layer."""
    v = mean_diff(f)
    shared = np.asarray(f.category_units, np.float64).mean(axis=1)  # [L, H]
    n = np.linalg.norm(shared, axis=1, keepdims=True)
    u = np.divide(shared, n, out=np.zeros_like(shared), where=n > 0)
    return v - np.einsum("lh,lh->l", v, u)[:, None] * u


def system_prompt(f: Features) -> np.ndarray:
    return np.asarray(f.system_diffs, np.float64).mean(axis=1)


def response(f: Features) -> np.ndarray:
    """mean_diff of the pairs written as the assistant's reply, pooled over the reply's tokens."""
    return (np.asarray(f.reply_pos, np.float64) - np.asarray(f.reply_neg, np.float64)).mean(axis=1)


def unit_mean(f: Features) -> np.ndarray:
    """Average of unit-length pair differences, rescaled to their mean length (each pair votes once)."""
    d = _diffs(f)
    n = np.linalg.norm(d, axis=2, keepdims=True)
    units = np.divide(d, n, out=np.zeros_like(d), where=n > 0)
    return units.mean(axis=1) * n.mean(axis=1)


def pca_direction(diffs: np.ndarray) -> np.ndarray:
    """First PC of the uncentered differences [L, N, H], sign- and length-fixed.

    Uncentered SVD = PCA of the symmetric set {d_i, -d_i}; the sign makes positives project
    above negatives and the length is the mean projection of the differences on it.
    """
    diffs = np.asarray(diffs, dtype=np.float64)
    _, _, vt = np.linalg.svd(diffs, full_matrices=False)
    u = vt[:, 0, :]  # [L, H], unit rows
    proj = np.einsum("lnh,lh->ln", diffs, u).mean(axis=1)
    tie_sign = np.sign(u[np.arange(u.shape[0]), np.argmax(np.abs(u), axis=1)])
    sign = np.where(proj > 0, 1.0, np.where(proj < 0, -1.0, tie_sign))
    return u * (sign * np.abs(proj))[:, None]


_ALL = (
    Method("mean_diff", ("pos", "neg"), "mean_diff — average of (positive − negative) activations over all tokens "
           "except position 0. Robust; the default.", mean_diff),
    Method("last_token", ("pos_last", "neg_last"), "last_token — the same, but only at each prompt's last token "
           "(CAA-style). Sharper, noisier with few pairs.", last_token),
    Method("pca", ("pos", "neg"), "pca — the main shared direction of the pair differences (first principal "
           "component). Ignores pair-specific quirks; needs several varied pairs.", pca),
    Method("bipolar", ("pos", "opposite_pos"), "bipolar — the concept's positives against its opposite's "
           "positives (sad vs happy, formal vs casual); needs `opposite:` in the concept.", bipolar),
    Method("no_shared", ("pos", "neg", "category_units"), "no_shared — mean_diff minus the direction all concepts "
           "of its category share (e.g. \"emotional vs neutral\"); needs other concepts of the category.", no_shared),
    Method("system_prompt", ("system_diffs",), "system_prompt — the same user texts under the positive vs the "
           "negative system prompt, compared at every position after it; needs `system_prompts`.", system_prompt),
    Method("response", ("reply_pos", "reply_neg"), "response — the pairs' texts as the assistant's own REPLY to a "
           "short generic question, averaged over the reply's tokens only: the state the model is in while it "
           "writes such text (as persona vectors are read). Compare it with mean_diff on your concept.", response),
    Method("unit_mean", ("pos", "neg"), "unit_mean — average of unit-length pair differences, so no single "
           "long pair dominates.", unit_mean),
)
METHODS: dict[str, Method] = {m.name: m for m in _ALL}
# the methods a calibration compares by default (last_token and pca are noisier with ~30 pairs)
COMPARED_METHODS = ("mean_diff", "bipolar", "no_shared", "system_prompt", "unit_mean", "response")
METHOD_NAMES = tuple(METHODS)  # what a concept's YAML may name as its ``method:`` (app.library.fields)


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise InputError(f"unknown extraction method {name!r}; choose one of {', '.join(METHODS)}")
    return METHODS[name]


def method_choices() -> list[tuple[str, str]]:
    """(name, one-line help) for every method, in registry order (UI radio, CLI choices)."""
    return [(m.name, m.help) for m in _ALL]


def run_method(name: str, f: Features) -> np.ndarray:
    """Vectors float32 [L, H]; a missing input is a clear error naming what the method needs."""
    m = get_method(name)
    missing = [k for k in m.needs if getattr(f, k) is None]
    if missing:
        raise InputError(f"extraction method {name!r} needs {', '.join(missing)}, which this concept does not provide")
    return np.asarray(m.fn(f), dtype=np.float32)
