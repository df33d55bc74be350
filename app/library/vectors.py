"""One safetensors file per (concept, model): vectors, typical norms, quality, metadata.

safetensors holds raw little-endian arrays plus a string->string header, so loading an
untrusted file can never run code (unlike pickle / .npy with objects). Every load is
validated (dtype, shape, finite values, format tag) before anything uses the arrays.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import safetensors
import safetensors.numpy

from app.types import ConceptVectors, LayerQuality

from .atomic import atomic_write_bytes
from .errors import LibraryError, VectorMismatch

FORMAT = "steering-lab-vectors/1"
QUALITY_FIELDS = ("d_prime", "loo_accuracy", "pc1_share", "vector_norm", "typical_norm")
MAX_HEADER_BYTES = 16 * 1024 * 1024
MAX_ABS_VALUE = 1e6  # residual streams of the supported models stay far below (outliers ~1e4)
_FLOAT_DTYPES = ("F32", "F16", "BF16")
_REQUIRED_META = ("format", "model_id", "model_fingerprint", "method")


def _check_arrays(vectors: np.ndarray, norms: np.ndarray, label: str) -> None:
    """Shapes and values every stored vector set must satisfy (checked on save and load)."""
    if vectors.ndim != 2 or vectors.shape[0] < 1 or vectors.shape[1] < 1:
        raise LibraryError(f"{label}: 'vectors' must be 2-D [layers, hidden], got shape {list(vectors.shape)}")
    if norms.shape != (vectors.shape[0],):
        raise LibraryError(
            f"{label}: 'typical_norms' must have one value per layer ({vectors.shape[0]}), "
            f"got shape {list(norms.shape)}"
        )
    for name, arr in (("vectors", vectors), ("typical_norms", norms)):
        if not np.all(np.isfinite(arr)):
            raise LibraryError(f"{label}: '{name}' contains NaN or infinite values; re-extract the concept")
        biggest = float(np.max(np.abs(arr))) if arr.size else 0.0
        if biggest > MAX_ABS_VALUE:
            raise LibraryError(
                f"{label}: '{name}' holds a value of {biggest:.3g}, far beyond any residual stream "
                f"(at most {MAX_ABS_VALUE:g}); steering with it cannot work, so it was refused")
    if np.any(norms < 0):
        raise LibraryError(f"{label}: 'typical_norms' must not be negative")


def _float32(arr: Any, name: str, label: str) -> np.ndarray:
    arr = np.asarray(arr)
    if not np.issubdtype(arr.dtype, np.floating):
        raise LibraryError(f"{label}: '{name}' must be a float array, got dtype {arr.dtype}")
    return np.ascontiguousarray(arr, dtype=np.float32)


def vectors_to_arrays(cv: ConceptVectors, label: str = "vectors") -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Split ``ConceptVectors`` into float32 tensors and string metadata (shared by file and bundle)."""
    vectors = _float32(cv.vectors, "vectors", label)
    norms = _float32(cv.typical_norms, "typical_norms", label)
    _check_arrays(vectors, norms, label)
    tensors = {"vectors": vectors, "typical_norms": norms}
    quality = sorted(cv.quality, key=lambda q: q.layer)
    if quality and [q.layer for q in quality] != list(range(vectors.shape[0])):
        raise LibraryError(f"{label}: quality must have exactly one entry per layer 0..{vectors.shape[0] - 1}")
    for f in QUALITY_FIELDS if quality else ():
        tensors[f"q_{f}"] = np.array([getattr(q, f) for q in quality], dtype=np.float32)
    lo, hi = cv.recommended_layers
    try:
        meta = {
            "format": FORMAT,
            "model_id": str(cv.model_id),
            "model_fingerprint": str(cv.model_fingerprint),
            "method": str(cv.method),
            "concept_fingerprint": str(cv.concept_fingerprint),
            "created_at": str(cv.created_at),
            "lab_version": str(cv.lab_version),
            "recommended_layers": f"{int(lo)},{int(hi)}",
            "extra": json.dumps(cv.extra, sort_keys=True),
            "cosine_to_others": json.dumps([q.cosine_to_others for q in quality]),
        }
    except (TypeError, ValueError) as e:
        raise LibraryError(f"{label}: metadata is not JSON-serialisable plain data ({e})") from None
    return tensors, meta


def _json(meta: dict[str, str], key: str, kind: type, label: str) -> Any:
    raw = meta.get(key)
    if raw in (None, ""):
        return kind()
    try:
        value = json.loads(raw)
    except ValueError:
        value = None
    if not isinstance(value, kind):
        raise LibraryError(f"{label}: metadata '{key}' is not a valid JSON {kind.__name__}")
    return value


def vectors_from_arrays(tensors: dict[str, np.ndarray], meta: dict[str, str], label: str) -> ConceptVectors:
    """Validate tensors + metadata (from a file or a bundle) and build ``ConceptVectors``."""
    fmt = meta.get("format")
    if fmt != FORMAT:
        what = "has no format tag" if fmt is None else f"has format {fmt!r}"
        raise LibraryError(f"{label}: {what}; expected {FORMAT!r} (not a steering-lab vectors file?)")
    for key in _REQUIRED_META:
        if not isinstance(meta.get(key), str):
            raise LibraryError(f"{label}: metadata '{key}' is missing")
    for name in ("vectors", "typical_norms"):
        if name not in tensors:
            raise LibraryError(f"{label}: tensor '{name}' is missing; the file is incomplete, re-extract the concept")
    vectors, norms = tensors["vectors"], tensors["typical_norms"]
    _check_arrays(vectors, norms, label)
    try:
        lo, hi = (int(x) for x in meta.get("recommended_layers", "0,0").split(","))
    except ValueError:
        raise LibraryError(f"{label}: metadata 'recommended_layers' must look like '3,7'") from None
    extra = _json(meta, "extra", dict, label)
    cosines = _json(meta, "cosine_to_others", list, label)
    quality = _quality(tensors, cosines, vectors.shape[0], label)
    return ConceptVectors(
        model_id=meta["model_id"], model_fingerprint=meta["model_fingerprint"], method=meta["method"],
        vectors=vectors, typical_norms=norms, concept_fingerprint=meta.get("concept_fingerprint", ""),
        quality=quality, recommended_layers=(lo, hi), created_at=meta.get("created_at", ""),
        lab_version=meta.get("lab_version", ""), extra=extra,
    )


def _quality(tensors: dict[str, np.ndarray], cosines: list, n_layers: int, label: str) -> list[LayerQuality]:
    present = [f for f in QUALITY_FIELDS if f"q_{f}" in tensors]
    if not present:
        return []
    if len(present) != len(QUALITY_FIELDS):
        raise LibraryError(f"{label}: quality tensors are incomplete (found {present})")
    arrays = {f: tensors[f"q_{f}"] for f in QUALITY_FIELDS}
    for f, arr in arrays.items():
        if arr.shape != (n_layers,):
            raise LibraryError(f"{label}: tensor 'q_{f}' must have {n_layers} values, got shape {list(arr.shape)}")
    ok = all(isinstance(c, dict) and all(_is_number(v) for v in c.values()) for c in cosines)
    if cosines and (len(cosines) != n_layers or not ok):
        raise LibraryError(f"{label}: metadata 'cosine_to_others' must hold one {{slug: number}} mapping per layer")
    return [
        LayerQuality(
            layer=i, **{f: float(arrays[f][i]) for f in QUALITY_FIELDS},
            cosine_to_others={str(k): float(v) for k, v in (cosines[i] if cosines else {}).items()},
        )
        for i in range(n_layers)
    ]


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def check_compatible(
    cv: ConceptVectors,
    label: str,
    expect_model_fingerprint: str | None = None,
    expect_hidden_size: int | None = None,
    expect_num_layers: int | None = None,
    expect_model_id: str | None = None,
) -> None:
    """Raise ``VectorMismatch`` unless ``cv`` fits the loaded model (fingerprint and shape)."""
    wrong_fp = expect_model_fingerprint is not None and cv.model_fingerprint != expect_model_fingerprint
    wrong_h = expect_hidden_size is not None and cv.hidden_size != expect_hidden_size
    wrong_l = expect_num_layers is not None and cv.num_layers != expect_num_layers
    if not (wrong_fp or wrong_h or wrong_l):
        return

    def describe(model, hidden, layers, fp):
        bits = [f"hidden {hidden}" if hidden is not None else None,
                f"{layers} layers" if layers is not None else None,
                f"fingerprint {fp}" if wrong_fp else None]
        return f"{model} ({', '.join(b for b in bits if b)})"

    made = describe(cv.model_id or "an unknown model", cv.hidden_size, cv.num_layers, cv.model_fingerprint)
    loaded = describe(expect_model_id or "a different model", expect_hidden_size, expect_num_layers,
                      expect_model_fingerprint)
    raise VectorMismatch(
        f"vectors for {label!r} were made for model {made}, the loaded model is {loaded}; "
        "re-extract the concept for this model"
    )


def encode_vectors(cv: ConceptVectors, label: str = "vectors") -> bytes:
    """Serialise to safetensors bytes (``safetensors.numpy.save``)."""
    tensors, meta = vectors_to_arrays(cv, label)
    return safetensors.numpy.save(tensors, metadata=meta)


def _header(data: bytes, label: str) -> tuple[dict, dict]:
    """Read the JSON header ourselves: it holds the metadata and lets us check dtypes first."""
    corrupt = f"{label}: not a valid safetensors file ({{}}); it may be truncated or corrupt, re-extract it"
    if len(data) < 8:
        raise LibraryError(corrupt.format(f"only {len(data)} bytes"))
    size = int.from_bytes(data[:8], "little")
    if size > min(len(data) - 8, MAX_HEADER_BYTES):
        raise LibraryError(corrupt.format("header length runs past the end of the file"))
    try:
        header = json.loads(data[8 : 8 + size])
    except (ValueError, UnicodeDecodeError):
        header = None
    if not isinstance(header, dict):
        raise LibraryError(corrupt.format("unreadable header"))
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise LibraryError(corrupt.format("metadata must map strings to strings"))
    return header, meta


def _to_float32(dtype: str, raw: bytes, shape: list[int]) -> np.ndarray:
    if dtype == "BF16":  # numpy has no bfloat16: it is the top half of a float32
        bits = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
        return bits.view(np.float32).reshape(shape)
    arr = np.frombuffer(raw, dtype="<f4" if dtype == "F32" else "<f2").reshape(shape)
    return arr.astype(np.float32)  # always a fresh, writable, native float32 copy


def decode_vectors(data: bytes, label: str = "vectors") -> ConceptVectors:
    """Parse and validate safetensors bytes; float16/bfloat16 are upcast to float32."""
    header, meta = _header(data, label)
    for name, info in header.items():
        dtype = info.get("dtype") if isinstance(info, dict) else None
        if dtype not in _FLOAT_DTYPES:
            raise LibraryError(
                f"{label}: tensor {name!r} has dtype {dtype}; steering vectors must be float32 "
                "(float16/bfloat16 are accepted and upcast)"
            )
    try:  # the same parser safetensors.numpy.load uses, but it also knows bfloat16
        views = safetensors.deserialize(data)
    except Exception as e:  # SafetensorError: offsets/lengths do not match the data
        raise LibraryError(f"{label}: not a valid safetensors file ({e}); it may be truncated or corrupt") from None
    tensors = {name: _to_float32(v["dtype"], v["data"], v["shape"]) for name, v in views}
    return vectors_from_arrays(tensors, meta, label)


def save_vectors(path: str | Path, cv: ConceptVectors) -> None:
    """Validate and write one vectors file atomically."""
    atomic_write_bytes(path, encode_vectors(cv, label=Path(path).stem))


def load_vectors(
    path: str | Path,
    expect_model_fingerprint: str | None = None,
    expect_hidden_size: int | None = None,
    expect_num_layers: int | None = None,
    *,
    label: str | None = None,
    expect_model_id: str | None = None,
    source: str | None = None,
) -> ConceptVectors:
    """Read, validate and check a vectors file against the loaded model (``VectorMismatch``).

    ``source`` names the file in messages (the library passes a path relative to itself).
    """
    path = Path(path)
    label = label or path.stem
    source = source or str(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise LibraryError(f"{label}: cannot read vectors file {source} ({e.strerror or type(e).__name__})") from None
    cv = decode_vectors(data, source)
    check_compatible(cv, label, expect_model_fingerprint, expect_hidden_size, expect_num_layers, expect_model_id)
    return cv
