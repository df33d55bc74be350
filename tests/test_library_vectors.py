"""Vectors files: bit-exact safetensors round trips and clear refusals of bad files."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import safetensors.numpy

from app.library import LibraryError, VectorMismatch, load_vectors, save_vectors
from app.library.vectors import FORMAT, encode_vectors, vectors_to_arrays
from app.types import ConceptVectors, LayerQuality


def make_vectors(layers=4, hidden=8, seed=0, model_id="org/tiny", fingerprint="fp-tiny", quality=True):
    rng = np.random.default_rng(seed)
    q = [
        LayerQuality(i, float(i + 1), 2.0, 0.5 * i, 0.75, 0.25, {"sad": -0.5 + i / 10, "calm": 0.125})
        for i in range(layers)
    ] if quality else []
    return ConceptVectors(
        model_id=model_id, model_fingerprint=fingerprint, method="mean_diff",
        vectors=rng.standard_normal((layers, hidden)).astype(np.float32),
        typical_norms=(rng.random(layers) * 10 + 1).astype(np.float32),
        concept_fingerprint="abc123", quality=q, recommended_layers=(1, 2),
        created_at="2026-11-23T10:00:00Z", lab_version="0.1.0", extra={"n_pairs": 30, "tokens": "last"},
    )


def test_round_trip_bit_exact(tmp_path):
    cv = make_vectors()
    path = tmp_path / "v" / "happy.safetensors"
    save_vectors(path, cv)
    back = load_vectors(path, expect_model_fingerprint="fp-tiny", expect_hidden_size=8, expect_num_layers=4)
    assert back.vectors.dtype == np.float32 and back.typical_norms.dtype == np.float32
    assert back.vectors.tobytes() == cv.vectors.tobytes()
    assert back.typical_norms.tobytes() == cv.typical_norms.tobytes()
    for field in ("model_id", "model_fingerprint", "method", "concept_fingerprint", "recommended_layers",
                  "created_at", "lab_version", "extra"):
        assert getattr(back, field) == getattr(cv, field), field
    assert [q.layer for q in back.quality] == [0, 1, 2, 3]
    for a, b in zip(back.quality, cv.quality):
        assert a.d_prime == pytest.approx(b.d_prime) and a.loo_accuracy == pytest.approx(b.loo_accuracy)
        assert a.cosine_to_others == b.cosine_to_others
    assert back.vectors.flags.writeable


def test_file_is_plain_safetensors_with_documented_layout(tmp_path):
    path = tmp_path / "happy.safetensors"
    save_vectors(path, make_vectors())
    raw = path.read_bytes()
    header = json.loads(raw[8 : 8 + struct.unpack("<Q", raw[:8])[0]])
    assert header["__metadata__"]["format"] == FORMAT
    assert header["__metadata__"]["recommended_layers"] == "1,2"
    assert header["vectors"]["dtype"] == "F32" and header["vectors"]["shape"] == [4, 8]
    assert {"typical_norms", "q_d_prime", "q_loo_accuracy", "q_pc1_share", "q_vector_norm", "q_typical_norm"} <= set(header)
    assert set(safetensors.numpy.load(raw)) >= {"vectors", "typical_norms"}


def test_without_quality(tmp_path):
    path = tmp_path / "x.safetensors"
    save_vectors(path, make_vectors(quality=False))
    assert load_vectors(path).quality == []


@pytest.mark.parametrize(
    "kwargs, fragments",
    [
        ({"expect_hidden_size": 896}, ["hidden 8", "hidden 896", "re-extract"]),
        ({"expect_num_layers": 24}, ["4 layers", "24 layers"]),
        ({"expect_model_fingerprint": "fp-other"}, ["fp-tiny", "fp-other"]),
    ],
)
def test_mismatched_model_refused(tmp_path, kwargs, fragments):
    path = tmp_path / "happy.safetensors"
    save_vectors(path, make_vectors())
    with pytest.raises(VectorMismatch) as err:
        load_vectors(path, expect_model_id="org/other", **kwargs)
    msg = str(err.value)
    assert "vectors for 'happy' were made for model org/tiny" in msg and "org/other" in msg
    for fragment in fragments:
        assert fragment in msg


def _write(path, tensors, meta=None):
    base = {k: v for k, v in vectors_to_arrays(make_vectors(quality=False))[1].items()}
    path.write_bytes(safetensors.numpy.save(tensors, metadata=base if meta is None else meta))
    return path


@pytest.mark.parametrize("cut", [0, 5, 8, 40, -1, -17])
def test_truncated_file_refused(tmp_path, cut):
    path = tmp_path / "happy.safetensors"
    save_vectors(path, make_vectors())
    data = path.read_bytes()
    path.write_bytes(data[:cut])
    with pytest.raises(LibraryError, match="truncated or corrupt"):
        load_vectors(path)


def test_garbage_header_refused(tmp_path):
    path = tmp_path / "x.safetensors"
    path.write_bytes(struct.pack("<Q", 10) + b"not json!!" + b"\0" * 16)
    with pytest.raises(LibraryError, match="unreadable header"):
        load_vectors(path)


def test_int32_refused(tmp_path):
    path = _write(tmp_path / "x.safetensors", {"vectors": np.ones((4, 8), np.int32), "typical_norms": np.ones(4, np.float32)})
    with pytest.raises(LibraryError, match=r"'vectors' has dtype I32; steering vectors must be float32"):
        load_vectors(path)


def test_float16_upcast(tmp_path):
    v = np.arange(32, dtype=np.float16).reshape(4, 8) / 8
    path = _write(tmp_path / "x.safetensors", {"vectors": v, "typical_norms": np.ones(4, np.float16)})
    back = load_vectors(path)
    assert back.vectors.dtype == np.float32 and np.array_equal(back.vectors, v.astype(np.float32))


def test_bfloat16_upcast(tmp_path):
    want = np.array([[1.0, -2.5, 0.15625], [3.0, 0.0, -0.0078125]], dtype=np.float32)
    bf16 = (want.view(np.uint32) >> 16).astype("<u2").tobytes()
    norms = (np.ones(2, np.float32).view(np.uint32) >> 16).astype("<u2").tobytes()
    meta = vectors_to_arrays(make_vectors(quality=False))[1]
    header = {
        "__metadata__": meta,
        "vectors": {"dtype": "BF16", "shape": [2, 3], "data_offsets": [0, len(bf16)]},
        "typical_norms": {"dtype": "BF16", "shape": [2], "data_offsets": [len(bf16), len(bf16) + len(norms)]},
    }
    hb = json.dumps(header).encode()
    hb += b" " * (-len(hb) % 8)
    path = tmp_path / "bf.safetensors"
    path.write_bytes(struct.pack("<Q", len(hb)) + hb + bf16 + norms)
    back = load_vectors(path, expect_hidden_size=3, expect_num_layers=2)
    assert back.vectors.dtype == np.float32 and np.array_equal(back.vectors, want)


@pytest.mark.parametrize(
    "tensors, fragment",
    [
        ({"vectors": np.ones((4, 8), np.float32), "typical_norms": np.ones(5, np.float32)}, "one value per layer (4)"),
        ({"vectors": np.ones(8, np.float32), "typical_norms": np.ones(1, np.float32)}, "must be 2-D"),
        ({"vectors": np.ones((4, 8), np.float32)}, "tensor 'typical_norms' is missing"),
        ({"vectors": np.full((4, 8), np.nan, np.float32), "typical_norms": np.ones(4, np.float32)}, "NaN or infinite"),
        ({"vectors": np.ones((4, 8), np.float32), "typical_norms": np.array([1, np.inf, 1, 1], np.float32)}, "NaN or infinite"),
    ],
)
def test_bad_shapes_and_values_refused(tmp_path, tensors, fragment):
    path = _write(tmp_path / "x.safetensors", tensors)
    with pytest.raises(LibraryError) as err:
        load_vectors(path)
    assert fragment in str(err.value) and str(path) in str(err.value)


def test_missing_format_tag_refused(tmp_path):
    path = _write(tmp_path / "x.safetensors", {"vectors": np.ones((2, 2), np.float32), "typical_norms": np.ones(2, np.float32)}, meta={})
    with pytest.raises(LibraryError, match="no format tag"):
        load_vectors(path)


def test_save_refuses_bad_vectors(tmp_path):
    bad = make_vectors()
    bad.vectors[0, 0] = np.nan
    with pytest.raises(LibraryError, match="NaN"):
        save_vectors(tmp_path / "x.safetensors", bad)
    ints = make_vectors()
    ints.vectors = np.ones((4, 8), np.int32)
    with pytest.raises(LibraryError, match="float array"):
        encode_vectors(ints)
    assert not list(tmp_path.iterdir())
