"""Single-file concept bundles for sharing: the concept plus its vectors, as YAML text.

Arrays travel as base64 of float32 little-endian bytes, so a bundle is plain data that
opens in any editor, and importing one can never execute code. Decoding validates the
whole bundle first; callers write nothing until it succeeds.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import numpy as np

from app.types import Concept, ConceptVectors

from .errors import ConceptValidationError, InvalidSlug, LibraryError, StaleVectors
from .schema import concept_from_data, concept_to_dict
from .slugs import slugify, validate_model_key, validate_slug
from .vectors import QUALITY_FIELDS, vectors_from_arrays, vectors_to_arrays
from .yamlsafe import FlowList, LineMap, dump_yaml, load_yaml

BUNDLE_FORMAT = "steering-lab-concept/1"
MAX_BUNDLE_BYTES = 64 * 1024 * 1024
_TOP_KEYS = ("format", "slug", "concept", "vectors")
_ARRAY_KEYS = ("shape", "vectors_b64", "typical_norms_b64", "quality_b64")


def _b64(arr: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(arr, dtype="<f4").tobytes()).decode("ascii")


def _vector_entry(cv: ConceptVectors, key: str) -> dict[str, Any]:
    tensors, meta = vectors_to_arrays(cv, key)
    entry: dict[str, Any] = dict(meta)
    entry["shape"] = FlowList(tensors["vectors"].shape)
    entry["vectors_b64"] = _b64(tensors["vectors"])
    entry["typical_norms_b64"] = _b64(tensors["typical_norms"])
    if "q_d_prime" in tensors:
        entry["quality_b64"] = {f: _b64(tensors[f"q_{f}"]) for f in QUALITY_FIELDS}
    return entry


def encode_bundle(concept: Concept, vectors: dict[str, ConceptVectors]) -> str:
    """Bundle text for ``concept`` and its vectors keyed by model key."""
    doc = {
        "format": BUNDLE_FORMAT,
        "slug": concept.slug,
        "concept": concept_to_dict(concept),
        "vectors": {key: _vector_entry(cv, key) for key, cv in vectors.items()},
    }
    return dump_yaml(doc)


class _Where:
    """Prefix errors with the bundle source and the line of the offending field."""

    def __init__(self, source: str, lines: LineMap):
        self.source, self.lines = source, lines

    def error(self, path: tuple, msg: str) -> ConceptValidationError:
        line = self.lines.line(path)
        field = ".".join(str(p) for p in path) or "(top level)"
        return ConceptValidationError(f"{self.source}{f', line {line}' if line else ''}: {field}: {msg}")


def _decode_array(where: _Where, path: tuple, value: Any, shape: tuple[int, ...]) -> np.ndarray:
    if not isinstance(value, str):
        raise where.error(path, "must be base64 text")
    try:
        raw = base64.b64decode("".join(value.split()), validate=True)
    except (binascii.Error, ValueError) as e:
        raise where.error(path, f"is not valid base64 ({e})") from None
    expected = int(np.prod(shape)) * 4
    if len(raw) != expected:
        raise where.error(path, f"decodes to {len(raw)} bytes; shape {list(shape)} of float32 needs {expected}")
    return np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(shape)


def _decode_vectors(where: _Where, key: str, entry: Any) -> ConceptVectors:
    path = ("vectors", key)
    if not isinstance(entry, dict):
        raise where.error(path, "must be a mapping of metadata and base64 arrays")
    shape = entry.get("shape")
    if not (isinstance(shape, list) and len(shape) == 2
            and all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in shape)):
        raise where.error(path + ("shape",), f"must be [layers, hidden] with positive whole numbers, got {shape!r}")
    layers = shape[0]
    tensors = {
        "vectors": _decode_array(where, path + ("vectors_b64",), entry.get("vectors_b64"), tuple(shape)),
        "typical_norms": _decode_array(where, path + ("typical_norms_b64",), entry.get("typical_norms_b64"), (layers,)),
    }
    quality = entry.get("quality_b64")
    if quality is not None:
        if not isinstance(quality, dict) or set(quality) != set(QUALITY_FIELDS):
            raise where.error(path + ("quality_b64",), f"must map exactly {', '.join(QUALITY_FIELDS)} to base64")
        for f in QUALITY_FIELDS:
            tensors[f"q_{f}"] = _decode_array(where, path + ("quality_b64", f), quality[f], (layers,))
    meta = {k: v for k, v in entry.items() if k not in _ARRAY_KEYS}
    bad = [k for k, v in meta.items() if not isinstance(v, str)]
    if bad:
        raise where.error(path + (bad[0],), "metadata values must be text")
    try:
        return vectors_from_arrays(tensors, meta, f"{where.source}: vectors.{key}")
    except LibraryError as e:
        raise where.error(path, str(e)) from None


def decode_bundle(text: str | bytes, slug: str | None = None, source: str = "bundle") -> tuple[Concept, dict[str, ConceptVectors]]:
    """Validate a whole bundle; ``slug`` overrides the bundle's own slug."""
    data, node = load_yaml(text, source, MAX_BUNDLE_BYTES)
    where = _Where(source, LineMap(node))
    if not isinstance(data, dict):
        raise where.error((), f"a bundle must be a mapping with keys {', '.join(_TOP_KEYS)}")
    unknown = [k for k in data if k not in _TOP_KEYS]
    if unknown:
        raise where.error((unknown[0],), f"unknown key; allowed keys: {', '.join(_TOP_KEYS)}")
    if data.get("format") != BUNDLE_FORMAT:
        raise where.error(("format",), f"must be {BUNDLE_FORMAT!r}, got {data.get('format')!r} (not a concept bundle?)")
    concept_data = data.get("concept")
    if not isinstance(concept_data, dict):
        raise where.error(("concept",), "is missing or is not a mapping of concept fields")
    if slug is None:
        slug = data.get("slug")
        if slug is None:
            name = concept_data.get("name")
            slug = slugify(name if isinstance(name, str) else "")
    try:
        validate_slug(slug)
    except InvalidSlug as e:
        raise where.error(("slug",), str(e)) from None
    concept = concept_from_data(concept_data, slug, source, LineMap(node), prefix=("concept",))
    vectors: dict[str, ConceptVectors] = {}
    entries = data.get("vectors") or {}
    if not isinstance(entries, dict):
        raise where.error(("vectors",), "must be a mapping of model key -> vectors")
    for key, entry in entries.items():
        try:
            validate_model_key(key)
        except InvalidSlug as e:
            raise where.error(("vectors", key), str(e)) from None
        cv = _decode_vectors(where, key, entry)
        if cv.concept_fingerprint != concept.pairs_fingerprint():
            raise StaleVectors(
                f"{source}: vectors.{key} were extracted from different pairs than the bundle's concept; "
                "remove them from the bundle (and re-extract after importing) or restore the original pairs"
            )
        vectors[key] = cv
    return concept, vectors
