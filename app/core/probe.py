"""Discriminative probe judge: logistic regression on the unsteered model's residual stream.

Trained one vs rest: the concept's positives against its own negatives AND the other library
concepts' positives, so a "sad" probe must tell sad from happy, not only from neutral (the
concept's own mean-difference direction cannot). Features are the residual after one middle
layer, averaged over the text's tokens with position 0 (the attention sink) left out, read
from the plain text (no chat template) so training texts and judged answers are alike.
Held-out accuracy comes from k-fold cross-validation with each pair kept in one fold.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import numpy as np

from app.core.capture import capture
from app.core.chat import encode, pad_id
from app.errors import InputError
from app.types import PROBE_MIN_PAIRS, Concept

MAX_OTHER_PER_CONCEPT = 12  # other concepts' positives used as negatives, each
FOLDS = 5
L2 = 1.0  # ridge penalty on standardized features (a 576-wide probe on ~300 texts overfits without)


@dataclass
class ProbeJudge:
    """Raw score = the probe's logit for the concept (log-odds; 0 = undecided)."""

    concept_name: str
    layer: int
    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    bias: float
    accuracy: float  # held-out balanced accuracy (k-fold)
    pair_accuracy: float  # held-out pairs whose positive scores above its negative
    n_train: int
    sign: int = 1
    kind: str = "probe"
    _lm: Any = field(default=None, repr=False)

    @property
    def label(self) -> str:
        way = "higher" if self.sign > 0 else "lower"
        return (f"probe logit for {self.concept_name} at layer {self.layer} ({way} = more; "
                f"held-out accuracy {self.accuracy:.2f})")

    def raw(self, texts: Sequence[str]) -> np.ndarray:
        if not len(texts):
            return np.zeros(0)
        feats = text_features(self._lm, list(texts), self.layer)
        return ((feats - self.mean) / self.scale) @ self.weights + self.bias


def text_features(lm: Any, texts: Sequence[str], layer: int, should_stop: Optional[Callable[[], bool]] = None) -> np.ndarray:
    """[N, H] mean residual after ``model.layers[layer]`` over each text's tokens but the first."""
    tok = lm.tokenizer
    lists = [encode(tok, t) or encode(tok, " ") for t in texts]
    lists = [t if t else [pad_id(tok)] for t in lists]
    order = sorted(range(len(lists)), key=lambda i: len(lists[i]))
    out = np.zeros((len(lists), lm.hidden_size), dtype=np.float64)
    for start in range(0, len(order), 64):  # blocks of similar length: little padding
        idx = order[start:start + 64]
        cr = capture(lm.model, [lists[i] for i in idx], pad=pad_id(tok), layers=[layer], should_stop=should_stop)
        w = cr.mask.astype(np.float64)
        w[cr.lengths > 1, 0] = 0.0
        h = cr.hidden[0].astype(np.float64)  # [B, T, H]
        out[idx] = np.einsum("bt,bth->bh", w, h) / w.sum(axis=1, keepdims=True)
    return out


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = L2, iters: int = 25) -> tuple[np.ndarray, float]:
    """Class-balanced L2 logistic regression by Newton steps (weights, bias) on given features."""
    n, d = x.shape
    cw = np.where(y > 0, 0.5 / max(y.sum(), 1), 0.5 / max((1 - y).sum(), 1)) * n
    xb = np.hstack([x, np.ones((n, 1))])
    theta = np.zeros(d + 1)
    reg = np.full(d + 1, l2)
    reg[-1] = 0.0
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-np.clip(xb @ theta, -30, 30)))
        grad = xb.T @ (cw * (p - y)) + reg * theta
        hess = (xb * (cw * p * (1 - p))[:, None]).T @ xb + np.diag(reg + 1e-9)
        step = np.linalg.solve(hess, grad)
        theta -= step
        if np.max(np.abs(step)) < 1e-6:
            break
    return theta[:-1], float(theta[-1])


def _standardize(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    return mean, np.where(scale > 1e-8, scale, 1.0)


def cross_validate(x: np.ndarray, y: np.ndarray, folds: np.ndarray, pair_of: np.ndarray) -> tuple[float, float]:
    """(balanced accuracy, pair accuracy) of probes scored only on texts they never saw."""
    logits = np.zeros(len(y))
    for f in np.unique(folds):
        tr = folds != f
        mean, scale = _standardize(x[tr])
        w, b = fit_logistic((x[tr] - mean) / scale, y[tr])
        logits[~tr] = ((x[~tr] - mean) / scale) @ w + b
    pred = logits > 0
    balanced = 0.5 * (pred[y == 1].mean() + (~pred[y == 0]).mean())
    pairs = [i for i in np.unique(pair_of) if i >= 0]
    wins = [logits[(pair_of == i) & (y == 1)][0] > logits[(pair_of == i) & (y == 0)][0] for i in pairs]
    return float(balanced), float(np.mean(wins))


def training_set(concept: Concept, others: Sequence[Concept]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Texts, labels (1 = concept) and pair index (-1 for other concepts' positives)."""
    n = len(concept.pairs)
    if n < PROBE_MIN_PAIRS:
        raise InputError(f"judge.kind: a probe judge needs at least {PROBE_MIN_PAIRS} pairs; "
                         f"concept {concept.slug!r} has {n}")
    texts = [p.positive for p in concept.pairs] + [p.negative for p in concept.pairs]
    labels = [1] * n + [0] * n
    pair_of = list(range(n)) * 2
    for other in others:
        if other.slug == concept.slug:
            continue
        for p in other.pairs[:MAX_OTHER_PER_CONCEPT]:
            texts.append(p.positive)
            labels.append(0)
            pair_of.append(-1)
    return texts, np.array(labels, dtype=np.float64), np.array(pair_of)


def train_probe(
    lm: Any, concept: Concept, others: Sequence[Concept], layer: Optional[int] = None, sign: int = 1,
    should_stop: Optional[Callable[[], bool]] = None,
) -> ProbeJudge:
    """Train the one-vs-rest probe for ``concept`` on ``lm`` (default layer: the middle one)."""
    layer = lm.num_layers // 2 if layer is None else int(layer)
    if not 0 <= layer < lm.num_layers:
        raise InputError(f"judge.layer: layer {layer} does not exist: this model has layers 0-{lm.num_layers - 1}")
    texts, y, pair_of = training_set(concept, others)
    x = text_features(lm, texts, layer, should_stop)
    rng = np.random.default_rng(0)
    folds = np.where(pair_of >= 0, pair_of % FOLDS, rng.integers(0, FOLDS, len(y)))
    accuracy, pair_accuracy = cross_validate(x, y, folds, pair_of)
    mean, scale = _standardize(x)
    w, b = fit_logistic((x - mean) / scale, y)
    return ProbeJudge(concept_name=concept.name, layer=layer, mean=mean, scale=scale, weights=w, bias=b,
                      accuracy=accuracy, pair_accuracy=pair_accuracy, n_train=len(y), sign=sign, _lm=lm)
