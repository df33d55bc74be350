"""Concept algebra: weighted blends of concept vectors, projecting concepts out, cosines.

A mix is written like ``happy:0.7, excited:0.3, formal:-0.5`` (a bare ``happy`` means weight
1.0). Per layer the blend is ``sum_i w_i * v_i``; ``normalize`` rescales it to the weighted
mean norm of its parts; ``project_out`` removes the span of other concepts' directions
(e.g. "happy without excited"). Pure numpy.
"""

from __future__ import annotations

import datetime as _dt
import math
from typing import Any, Mapping, Sequence

import numpy as np

from app import __version__
from app.domain.parse import MIX_EXAMPLE as EXAMPLE, parse_mix  # noqa: F401
from app.errors import InputError
from app.types import Concept, ConceptVectors

# The mix text itself is parsed by the lab's one parser (re-exported here for the core's callers).


def _check_same_model(vectors: Mapping[str, ConceptVectors], slugs: Sequence[str]) -> ConceptVectors:
    missing = [s for s in slugs if s not in vectors]
    if missing:
        raise InputError(f"no vectors given for {', '.join(missing)}")
    first = vectors[slugs[0]]
    for s in slugs[1:]:
        cv = vectors[s]
        if cv.model_fingerprint != first.model_fingerprint:
            raise InputError(f"{s!r} has vectors for model {cv.model_id} but {slugs[0]!r} for {first.model_id}; "
                             "mix only vectors of the same model")
        if cv.vectors.shape != first.vectors.shape:
            raise InputError(f"{s!r} vectors have shape {cv.vectors.shape}, {slugs[0]!r} {first.vectors.shape}")
    return first


def _project_out(result: np.ndarray, directions: np.ndarray) -> np.ndarray:
    """Remove from each row of ``result`` [L, H] its component in the span of ``directions`` [k, L, H]."""
    out = result.copy()
    for layer in range(result.shape[0]):
        basis = directions[:, layer, :].T  # [H, k]
        norms = np.linalg.norm(basis, axis=0)
        basis = basis[:, norms > 0]
        if basis.shape[1] == 0:
            continue
        u, s, _ = np.linalg.svd(basis, full_matrices=False)  # orthonormal basis of the span
        u = u[:, s > s[0] * 1e-10]
        out[layer] -= u @ (u.T @ out[layer])
    return out


def blend(
    vectors: Mapping[str, ConceptVectors],
    weights: Sequence[tuple[str, float]] | Mapping[str, float],
    normalize: bool = False,
    project_out: Sequence[str] = (),
) -> ConceptVectors:
    """Per layer ``sum w_i v_i``, then ``project_out``, then (optionally) ``normalize``.

    ``normalize`` rescales each layer to ``sum |w_i| |v_i| / sum |w_i|`` (the weighted mean
    norm of the parts). The recommended layers are those of the part with the largest |weight|.
    """
    items = list(weights.items()) if isinstance(weights, Mapping) else [(s, float(w)) for s, w in weights]
    if not items:
        raise InputError("a mix needs at least one concept")
    slugs = [s for s, _ in items]
    if len(set(slugs)) != len(slugs):
        raise InputError("a concept appears twice in the mix")
    for s, w in items:
        if not math.isfinite(w):
            raise InputError(f"weight of {s!r} must be a finite number")
    project_out = list(project_out)
    first = _check_same_model(vectors, slugs + [s for s in project_out if s not in slugs])
    w = np.array([w for _, w in items], dtype=np.float64)
    stack = np.stack([vectors[s].vectors.astype(np.float64) for s in slugs])  # [k, L, H]
    result = np.einsum("k,klh->lh", w, stack)
    if project_out:
        result = _project_out(result, np.stack([vectors[s].vectors.astype(np.float64) for s in project_out]))
    if normalize:
        if not np.any(w):
            raise InputError("every weight in the mix is 0; nothing to normalize")
        target = np.einsum("k,kl->l", np.abs(w), np.linalg.norm(stack, axis=2)) / np.abs(w).sum()
        norm = np.linalg.norm(result, axis=1)
        scale = np.divide(target, norm, out=np.zeros_like(norm), where=norm > 0)
        result = result * scale[:, None]
    main = slugs[int(np.argmax(np.abs(w)))]
    typical = np.mean([vectors[s].typical_norms.astype(np.float64) for s in slugs], axis=0)
    return ConceptVectors(
        model_id=first.model_id,
        model_fingerprint=first.model_fingerprint,
        method="mix",
        vectors=result.astype(np.float32),
        typical_norms=typical.astype(np.float32),
        concept_fingerprint="",
        quality=[],
        recommended_layers=tuple(vectors[main].recommended_layers),
        created_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        lab_version=__version__,
        extra={"recipe": [[s, float(x)] for s, x in items], "normalize": bool(normalize),
               "project_out": project_out},
    )


def _unit(rows: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(rows, axis=-1, keepdims=True)
    return np.divide(rows, n, out=np.zeros_like(rows), where=n > 0)


def cosine_matrix(vectors: Mapping[str, ConceptVectors], layer: int) -> tuple[list[str], np.ndarray]:
    """Slugs (in the given order) and their symmetric cosine matrix at ``layer`` (1 on the diagonal)."""
    slugs = list(vectors)
    if not slugs:
        raise InputError("choose at least one concept")
    first = _check_same_model(vectors, slugs)
    if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)) or not 0 <= layer < first.num_layers:
        raise InputError(f"layer {layer!r} does not exist: these vectors have layers 0-{first.num_layers - 1}")
    u = _unit(np.stack([vectors[s].vectors[layer].astype(np.float64) for s in slugs]))
    m = u @ u.T
    m = (m + m.T) / 2.0
    np.fill_diagonal(m, 1.0)
    return slugs, np.clip(m, -1.0, 1.0)


def mix_concept(slug: str, name: str, recipe: Sequence[tuple[str, float]], options: Mapping[str, Any] | None = None) -> Concept:
    """A concept saved from a mix: category "mix", the recipe kept, no pairs."""
    recipe = [(str(s), float(w)) for s, w in recipe]
    if not recipe:
        raise InputError("a mix needs at least one concept")
    if slug in {s for s, _ in recipe}:
        raise InputError(f"the mix {slug!r} cannot contain itself")
    opts = dict(options or {})
    if "project_out" in opts:
        opts["project_out"] = [str(s) for s in opts["project_out"]]
    if "normalize" in opts:
        opts["normalize"] = bool(opts["normalize"])
    desc = " + ".join(f"{w:g} x {s}" for s, w in recipe)
    if opts.get("project_out"):
        desc += f", without {', '.join(opts['project_out'])}"
    return Concept(slug=slug, name=name or slug, description=f"Mix: {desc}", category="mix", pairs=[],
                   tags=["mix"], recipe=recipe, recipe_options=opts)
