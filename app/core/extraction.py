"""Concept vectors for every layer from one batched pass over a concept's contrast pairs.

Each pair's texts are wrapped in the model's chat template as the user message (with the
concept's positive / negative system prompt, if it has one), all 2N prompts go through the
model together, and the residual stream after every ``model.layers[i]`` is pooled per prompt:

* **mean feature** - mean over the prompt's tokens, EXCLUDING position 0 and padding. The
  first position is an attention sink whose activations are huge (on SmolLM2 they inflate
  mean-difference norms ~10x); it carries no information about the prompt's content.
* **last feature** - the residual at the prompt's last real token.

Methods are registered in ``app.domain.methods`` (mean_diff, last_token, pca, bipolar,
no_shared, system_prompt, unit_mean, response); this module captures the features a method needs.

**Relative strength.** Residual norms differ by an order of magnitude across layers, so a
raw multiple of the vector means something different at every layer. A relative strength s
adds ``s * typical_norms[layer] * unit(vectors[layer])``: s = 1.0 is a step as long as a
typical token's whole residual vector at that layer (``typical_norms`` = mean L2 norm of a
token's residual, position 0 and padding excluded, over all the concept's prompts). On
SmolLM2, s ~ 0.15-0.35 in the middle layers steers clearly; s >= 0.5 tends to loop.
"""

from __future__ import annotations

import copy
import datetime as _dt
import time
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

from app import __version__
from app.core.capture import CaptureResult, capture
from app.domain.methods import METHODS, Features, get_method, pca_direction, run_method  # noqa: F401 (re-exported)
from app.core.chat import encode, format_chat, format_reply_prefix, pad_id
from app.core.quality import layer_quality, recommend_layers
from app.core.steering import mean_projection
from app.errors import Cancelled, InputError
from app.types import Concept, ConceptVectors

BATCH_SIZE = 16  # rows per forward pass inside ``capture``
SYSTEM_CONTRAST_TEXTS = 8  # user texts the system-prompt contrast averages over
CAPTURE_BUDGET_BYTES = 512 * 1024 * 1024  # residual-stream floats held at once (prompts are captured in blocks)

# Neutral prompts whose typical residual norms give imported vectors a relative scale.
NEUTRAL_PROMPTS = (
    "Describe the weather today.",
    "What is the capital of France?",
    "List three common kitchen tools.",
    "Explain how a bicycle works.",
    "Write a short note about a library.",
    "What time does the train usually leave?",
    "Summarize the plot of a simple story.",
    "How many days are there in a week?",
)

# The user turns that the ``response`` method's replies answer: generic, so the reply carries the
# concept, and disjoint from every calibration / validation prompt.
REPLY_TURNS = ("Say something.", "Tell me what is on your mind.", "Share a thought with me.",
               "What would you like to say?")

Progress = Optional[Callable[[int, int], None]]
ShouldStop = Optional[Callable[[], bool]]


def pooled_features(cr: CaptureResult) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(mean_feats [L, B, H], last_feats [L, B, H], typical_norms [L])`` of a capture.

    Position 0 and padding never count. A prompt of a single token has nothing else, so its
    mean feature falls back to that token (chat-formatted prompts are always longer).
    """
    sums, last, norm_sum, count = _pool(cr)
    weights = _token_weights(cr).sum(axis=1)  # [B]
    mean = sums / weights[None, :, None]
    typical = norm_sum / max(count, 1)
    return mean.astype(np.float32), last, typical.astype(np.float32)


def _token_weights(cr: CaptureResult, starts: Optional[Sequence[int]] = None) -> np.ndarray:
    """float32 [B, T]: 1 at the positions that count (real tokens except position 0, and
    before ``starts[b]`` where given: a reply is pooled without the turn it answers)."""
    w = cr.mask.astype(np.float32)
    single = cr.lengths <= 1
    w[~single, 0] = 0.0
    if starts is not None:
        for b, s in enumerate(starts):
            w[b, :min(int(s), int(cr.lengths[b]) - 1)] = 0.0  # at least the last token counts
    return w


def _pool(cr: CaptureResult, starts: Optional[Sequence[int]] = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Token sums [L, B, H], last features [L, B, H], summed token norms [L], token count."""
    h = cr.hidden  # [L, B, T, H]
    w = _token_weights(cr, starts)  # [B, T]
    sums = np.matmul(w[None, :, None, :], h)[:, :, 0, :]  # [L, B, H], one batched matmul
    B = h.shape[1]
    last = h[:, np.arange(B), np.asarray(cr.lengths) - 1, :].astype(np.float32)
    sq = np.einsum("lbth,lbth->lbt", h, h)
    norms = np.sqrt(np.maximum(sq, 0.0, dtype=np.float32))
    norm_sum = np.einsum("lbt,bt->l", norms, w, dtype=np.float64)
    return sums.astype(np.float64), last, norm_sum, int(w.sum())


def concept_prompts(tokenizer: Any, concept: Concept) -> tuple[list[list[int]], int]:
    """Token lists for all positives, then all negatives, and the number of pairs."""
    sp = concept.system_prompts
    pos_sys, neg_sys = (sp.positive, sp.negative) if sp else (None, None)
    pos = [encode(tokenizer, format_chat(tokenizer, p.positive, pos_sys)) for p in concept.pairs]
    neg = [encode(tokenizer, format_chat(tokenizer, p.negative, neg_sys)) for p in concept.pairs]
    return pos + neg, len(concept.pairs)


def capture_pooled(
    lm: Any,
    token_lists: Sequence[Sequence[int]],
    progress: Progress = None,
    should_stop: ShouldStop = None,
    batch_size: int = BATCH_SIZE,
    starts: Optional[Sequence[int]] = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pooled features of ``token_lists`` (in their order) from batched forward passes;
    ``starts[i]``: pool prompt i only from that position on (default: from position 1).

    Prompts are sorted by length so batches carry little padding, and captured in blocks
    that keep the full residual stream under ``CAPTURE_BUDGET_BYTES`` (one block for any
    ordinary concept); only pooled features are kept between blocks.
    """
    if not token_lists:
        raise InputError("no prompts to capture")
    n = len(token_lists)
    L, H = lm.num_layers, lm.hidden_size
    order = sorted(range(n), key=lambda i: (len(token_lists[i]), i))
    mean = np.zeros((L, n, H), dtype=np.float32)
    last = np.zeros((L, n, H), dtype=np.float32)
    norm_sum = np.zeros(L, dtype=np.float64)
    count = 0
    pad = pad_id(lm.tokenizer)
    start = 0
    while start < n:
        if should_stop is not None and should_stop():
            raise Cancelled("extraction cancelled")
        stop = start
        while stop < n:  # grow the block while the residual stream of it fits the budget
            t_max = len(token_lists[order[stop]])
            if stop > start and 4 * L * H * t_max * (stop + 1 - start) > CAPTURE_BUDGET_BYTES:
                break
            stop += 1
        idx = order[start:stop]

        def block_progress(done: int, _total: int, base: int = start) -> None:
            if progress is not None:
                progress(base + done, n)

        cr = capture(lm.model, [token_lists[i] for i in idx], pad=pad, batch_size=batch_size,
                     progress=block_progress, should_stop=should_stop)
        blk_starts = None if starts is None else [starts[i] for i in idx]
        sums, blk_last, blk_norms, blk_count = _pool(cr, blk_starts)
        weights = _token_weights(cr, blk_starts).sum(axis=1)
        mean[:, idx, :] = (sums / weights[None, :, None]).astype(np.float32)
        last[:, idx, :] = blk_last
        norm_sum += blk_norms
        count += blk_count
        start = stop
    return mean, last, (norm_sum / max(count, 1)).astype(np.float32)


def typical_norms_for(lm: Any, prompts: Sequence[str] = NEUTRAL_PROMPTS, should_stop: ShouldStop = None) -> np.ndarray:
    """Typical residual norms [L] over chat-formatted ``prompts`` (gives imported vectors a scale)."""
    token_lists = [encode(lm.tokenizer, format_chat(lm.tokenizer, p)) for p in prompts]
    return capture_pooled(lm, token_lists, should_stop=should_stop)[2]


def method_vectors(pos: np.ndarray, neg: np.ndarray, method: str) -> np.ndarray:
    """Vectors [L, H] from paired features [L, N, H] (the method's features already chosen)."""
    if method == "last_token":
        return run_method(method, Features(pos=pos, neg=neg, pos_last=pos, neg_last=neg))
    return run_method(method, Features(pos=pos, neg=neg))


def reply_prompts(tokenizer: Any, concept: Concept) -> tuple[list[list[int]], list[int]]:
    """Each pair's texts as the ASSISTANT's reply to a short generic user turn (positives, then
    negatives; pair i's two sides answer the same turn), and where each reply starts."""
    rows, starts = [], []
    for side in ("positive", "negative"):
        for i, p in enumerate(concept.pairs):
            turn = encode(tokenizer, format_reply_prefix(tokenizer, REPLY_TURNS[i % len(REPLY_TURNS)]))
            rows.append(turn + list(tokenizer.encode(getattr(p, side).strip(), add_special_tokens=False)))
            starts.append(len(turn))
    return rows, starts


def reply_features(lm: Any, concept: Concept, should_stop: ShouldStop = None) -> tuple[np.ndarray, np.ndarray]:
    """Mean residual [L, N, H] over the reply tokens only, for the positives and the negatives
    written as the model's own answers (the state it is in when it WRITES such text)."""
    rows, starts = reply_prompts(lm.tokenizer, concept)
    mean, _, _ = capture_pooled(lm, rows, should_stop=should_stop, starts=starts)
    n = len(concept.pairs)
    return mean[:, :n], mean[:, n:]


def concept_features(lm: Any, concept: Concept, progress: Progress = None, should_stop: ShouldStop = None,
                     ) -> tuple[Features, np.ndarray, int]:
    """(mean + last-token features of the pairs, typical norms [L], token count): one batched pass."""
    token_lists, n_pairs = concept_prompts(lm.tokenizer, concept)
    mean, last, typical = capture_pooled(lm, token_lists, progress, should_stop)
    feats = Features(pos=mean[:, :n_pairs], neg=mean[:, n_pairs:], pos_last=last[:, :n_pairs], neg_last=last[:, n_pairs:])
    return feats, typical, int(sum(len(t) for t in token_lists))


def system_prompt_diffs(lm: Any, concept: Concept, max_texts: int = SYSTEM_CONTRAST_TEXTS,
                        should_stop: ShouldStop = None) -> np.ndarray:
    """[L, U, H]: per user text, positive-system minus negative-system residuals, averaged over
    every position after the system prompt (position 0 never counts).

    The two prompts share the whole user turn; aligning them from the end lines up each token
    of it with itself, which is what padding the shorter system prompt achieves (rotary
    attention depends on relative positions only).
    """
    sp = concept.system_prompts
    if sp is None:
        raise InputError(f"the system_prompt method needs the concept's system_prompts; {concept.slug!r} has none")
    texts = list(dict.fromkeys([p.negative for p in concept.pairs] + [p.positive for p in concept.pairs]))[:max_texts]
    tok = lm.tokenizer
    pos = [encode(tok, format_chat(tok, t, sp.positive)) for t in texts]
    neg = [encode(tok, format_chat(tok, t, sp.negative)) for t in texts]
    cr = capture(lm.model, pos + neg, pad=pad_id(tok), batch_size=BATCH_SIZE, should_stop=should_stop)
    h, n = cr.hidden, len(texts)
    out = np.zeros((h.shape[0], n, h.shape[3]), dtype=np.float64)
    for i in range(n):
        a, b = pos[i], neg[i]
        shared = 0
        while shared < min(len(a), len(b)) - 1 and a[len(a) - 1 - shared] == b[len(b) - 1 - shared]:
            shared += 1
        la, lb = len(a), len(b)
        out[:, i] = (h[:, i, la - shared:la].astype(np.float64) - h[:, n + i, lb - shared:lb]).mean(axis=1)
    return out.astype(np.float32)


def method_inputs(lm: Any, concept: Concept, method: str, feats: Features, *,
                  opposite_pos: Optional[np.ndarray] = None, category_units: Optional[np.ndarray] = None,
                  should_stop: ShouldStop = None) -> Features:
    """A copy of the pairs' ``feats`` with everything else ``method`` reads (its ``needs`` in
    app.domain.methods), captured here: the one place a method's extra input is provided.

    The caller holds the other concepts, so it passes the opposite's positive features (bipolar)
    and the category's other unit vectors [L, K, H] (no_shared). An InputError names what this
    concept lacks for the method (calibration then skips the method for it).
    """
    needs = get_method(method).needs
    f = copy.copy(feats)
    if "opposite_pos" in needs:
        if opposite_pos is None:
            raise InputError(f"the bipolar method needs an opposite concept; set `opposite:` in {concept.slug}.yaml")
        f.opposite_pos = opposite_pos
    if "category_units" in needs:
        f.category_units = category_with_self(feats, category_units)
    if "system_diffs" in needs:
        f.system_diffs = system_prompt_diffs(lm, concept, should_stop=should_stop)
    if "reply_pos" in needs:
        f.reply_pos, f.reply_neg = reply_features(lm, concept, should_stop=should_stop)
    return f


def extract(
    lm: Any,
    concept: Concept,
    method: str = "mean_diff",
    progress: Progress = None,
    should_stop: ShouldStop = None,
    others: Optional[Mapping[str, ConceptVectors]] = None,
    opposite: Optional[Concept] = None,
    category_units: Optional[np.ndarray] = None,
) -> ConceptVectors:
    """Concept vectors for every layer of ``lm`` (a ``LoadedModel``) from ``concept``'s pairs.

    ``opposite`` (bipolar) and ``category_units`` ([L, K, H], no_shared) feed the methods
    that need them; see ``app.domain.methods``.
    """
    get_method(method)
    if len(concept.pairs) < 2:
        raise InputError(f"concept {concept.slug!r} has {len(concept.pairs)} pair(s); extraction needs at least 2")
    t0 = time.perf_counter()
    feats, typical, n_tokens = concept_features(lm, concept, progress, should_stop)
    opposite_pos = None
    if opposite is not None and "opposite_pos" in get_method(method).needs:
        opposite_pos = concept_features(lm, opposite, should_stop=should_stop)[0].pos
    feats = method_inputs(lm, concept, method, feats, opposite_pos=opposite_pos, category_units=category_units,
                          should_stop=should_stop)
    if should_stop is not None and should_stop():
        raise Cancelled("extraction cancelled")
    from app.core.style import measure_style  # style imports cellbatch, which imports generation

    extra = {"n_pairs": len(concept.pairs), "num_prompts": 2 * len(concept.pairs), "num_tokens": n_tokens,
             **measure_style(lm, concept), "seconds": round(time.perf_counter() - t0, 3)}
    return vectors_from_features(lm, concept, method, feats, typical, others, extra)


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Each layer's vector scaled to length 1 (zero rows stay zero)."""
    v = np.asarray(vectors, np.float64)
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    return np.divide(v, n, out=np.zeros_like(v), where=n > 0)


def category_with_self(feats: Features, others: Optional[np.ndarray]) -> np.ndarray:
    """[L, K+1, H]: unit vectors of the category's other concepts plus this concept's mean_diff."""
    if others is None or np.asarray(others).size == 0:
        raise InputError("the no_shared method needs the vectors of at least one other concept of the same category")
    own = unit_rows(run_method("mean_diff", feats))[:, None, :]
    return np.concatenate([np.asarray(others, np.float64), own], axis=1)


def vectors_from_features(lm: Any, concept: Concept, method: str, feats: Features, typical: np.ndarray,
                          others: Optional[Mapping[str, ConceptVectors]] = None,
                          extra: Optional[dict] = None) -> ConceptVectors:
    """Run ``method`` on already-captured features and wrap the result with its quality card."""
    vectors = run_method(method, feats)
    pos, neg = (feats.pos_last, feats.neg_last) if method == "last_token" else (feats.pos, feats.neg)
    quality = layer_quality(pos, neg, vectors, typical, others)
    info = lm.info()
    return ConceptVectors(
        model_id=info.model_id,
        model_fingerprint=info.fingerprint,
        method=method,
        vectors=vectors,
        typical_norms=typical,
        concept_fingerprint=concept.pairs_fingerprint(),
        quality=quality,
        recommended_layers=recommend_layers(quality, lm.num_layers),
        created_at=utc_now(),
        lab_version=__version__,
        extra={
            **(extra or {}),
            # cap/clamp targets and condition thresholds are given in units of these
            "typical_projection": [round(float(x), 5) for x in mean_projection(feats.pos, vectors)],
            "typical_projection_negative": [round(float(x), 5) for x in mean_projection(feats.neg, vectors)],
        },
    )


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def absolute_vector(cv: ConceptVectors, layer: int, strength: float, relative: bool = True) -> np.ndarray:
    """The vector actually added at ``layer`` (float32 [H]) for a strength.

    relative: ``strength * typical_norms[layer] * unit(vectors[layer])``; absolute:
    ``strength * vectors[layer]``.
    """
    if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)) or not 0 <= int(layer) < cv.num_layers:
        raise InputError(f"layer {layer!r} does not exist: these vectors have layers 0-{cv.num_layers - 1}")
    try:
        s = float(strength)
    except (TypeError, ValueError):
        raise InputError(f"strength must be a number, got {strength!r}") from None
    if not np.isfinite(s):
        raise InputError(f"strength must be a finite number, got {strength!r}")
    layer = int(layer)
    if relative:
        out = s * float(cv.typical_norms[layer]) * cv.unit(layer).astype(np.float64)
    else:
        out = s * cv.vectors[layer].astype(np.float64)
    return out.astype(np.float32)


def random_control(like: ConceptVectors, seed: int = 0) -> ConceptVectors:
    """A random direction per layer with the same norm as ``like``'s vector there.

    Steering with it at the same strength shows what an arbitrary push of that size does,
    so a change caused by the concept can be told apart from a change caused by noise.
    """
    rng = np.random.default_rng(seed)
    raw = rng.standard_normal((like.num_layers, like.hidden_size))
    unit = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    vectors = (unit * like.norms.astype(np.float64)[:, None]).astype(np.float32)
    return ConceptVectors(
        model_id=like.model_id,
        model_fingerprint=like.model_fingerprint,
        method="random",
        vectors=vectors,
        typical_norms=np.array(like.typical_norms, dtype=np.float32, copy=True),
        concept_fingerprint=like.concept_fingerprint,
        quality=[],
        recommended_layers=tuple(like.recommended_layers),
        created_at=utc_now(),
        lab_version=__version__,
        extra={"control_for": like.method, "seed": int(seed)},
    )
