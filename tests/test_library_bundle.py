"""Concept bundles: export/import round trip, and corrupt bundles change nothing."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from app.library import ConceptExists, ConceptLibrary, ConceptValidationError, LibraryError, StaleVectors
from app.library.bundle import BUNDLE_FORMAT
from app.types import Concept, ConceptVectors, ContrastPair, LayerQuality, Recommendation, SystemPromptPair

MODELS = ["org/Tiny-Model", "/local/models/Other-Model"]


def make_concept(slug="joy") -> Concept:
    return Concept(
        slug=slug, name="Joy ✨", description="multi\nline", category="emotion",
        pairs=[ContrastPair("Yay!", "Ok."), ContrastPair("So glad\nreally", "Noted.")],
        system_prompts=SystemPromptPair("Be happy.", "Be neutral."), tags=["emotion"],
        provenance={"author": "tester"}, recommended={"org--tiny-model": Recommendation(1, 0.4)},
    )


def make_vectors(c: Concept, seed: int, layers=3, hidden=5) -> ConceptVectors:
    rng = np.random.default_rng(seed)
    return ConceptVectors(
        model_id=MODELS[seed % 2], model_fingerprint=f"fp{seed}", method="mean_diff",
        vectors=rng.standard_normal((layers, hidden)).astype(np.float32),
        typical_norms=(rng.random(layers) + 1).astype(np.float32), concept_fingerprint=c.pairs_fingerprint(),
        quality=[LayerQuality(i, 1.0, 2.0, 0.5, 0.75, 0.25, {"calm": 0.5}) for i in range(layers)],
        recommended_layers=(0, 1), extra={"k": "v"},
    )


@pytest.fixture()
def source(tmp_path):
    lib = ConceptLibrary(tmp_path / "src")
    c = lib.save(make_concept())
    for seed, model in enumerate(MODELS):
        lib.save_vectors("joy", model, make_vectors(c, seed))
    return lib


def test_export_import_round_trip(source, tmp_path):
    text = source.export_bundle("joy")
    assert text.startswith(f"format: {BUNDLE_FORMAT}\n")
    assert "!!" not in text and "vectors_b64:" in text
    dest = ConceptLibrary(tmp_path / "dest")
    assert dest.import_bundle(text) == "joy"
    assert dest.get("joy") == source.get("joy")
    for model in MODELS:
        a = source.load_vectors("joy", model)
        b = dest.load_vectors("joy", model)
        assert b.vectors.tobytes() == a.vectors.tobytes()
        assert b.typical_norms.tobytes() == a.typical_norms.tobytes()
        assert (b.model_id, b.model_fingerprint, b.extra, b.recommended_layers) == (
            a.model_id, a.model_fingerprint, a.extra, a.recommended_layers)
        assert [q.d_prime for q in b.quality] == [q.d_prime for q in a.quality]


def test_import_under_new_slug_and_clobber_rules(source, tmp_path):
    text = source.export_bundle("joy")
    assert source.import_bundle(text, slug="joy-2") == "joy-2"
    assert source.vector_status("joy-2", MODELS[0], "fp0", 5, 3) == "ready"
    with pytest.raises(ConceptExists):
        source.import_bundle(text)
    assert source.import_bundle(text, overwrite=True) == "joy"


def test_stale_vectors_not_exported(source):
    c = source.get("joy")
    c.pairs = c.pairs + [ContrastPair("Hooray", "Fine")]
    source.save(c, overwrite=True)
    text = source.export_bundle("joy")
    assert "vectors: {}" in text


def _snapshot(root):
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _corruptions(text: str):
    b64_line = next(line for line in text.splitlines() if "vectors_b64:" in line and "typical" not in line)
    head, value = b64_line.split(": ", 1)
    yield "bad base64", text.replace(b64_line, f"{head}: '{value[:-4]}@@@='"), "not valid base64"
    yield "short array", text.replace(b64_line, f"{head}: {value[:-8]}"), "bytes; shape"
    yield "bad shape", text.replace("shape: [3, 5]", "shape: [3, -5]", 1), "shape"
    yield "bad pair", text.replace("negative: Ok.", "negative: ''"), "must not be empty"
    yield "python tag", text.replace("author: tester", "author: !!python/object/apply:os.system [echo hi]"), "Python"
    yield "wrong format", text.replace(BUNDLE_FORMAT, "something/9"), "format"
    yield "truncated", text[: len(text) // 2], ""
    yield "edited pairs", text.replace("Yay!", "Yay!!"), "different pairs"
    yield "bad slug", text.replace("slug: joy", "slug: ../../x"), "path separator"
    yield "nan norms", text, "NaN"


def test_corrupt_bundles_leave_library_byte_identical(source, tmp_path):
    good = source.export_bundle("joy")
    root = tmp_path / "dest"
    dest = ConceptLibrary(root)
    dest.save(make_concept("keep"))
    before = _snapshot(root)
    import base64
    nan_b64 = base64.b64encode(np.array([1, np.nan, 1], "<f4").tobytes()).decode()
    for label, bad, fragment in _corruptions(good):
        if label == "nan norms":
            line = next(ln for ln in bad.splitlines() if "typical_norms_b64:" in ln)
            bad = bad.replace(line, line.split(": ")[0] + ": " + nan_b64)
        with pytest.raises(LibraryError) as err:
            dest.import_bundle(bad, slug="new-one" if label != "bad slug" else None)
        assert fragment in str(err.value), label
        assert _snapshot(root) == before, label
    assert [s.slug for s in dest.list()] == ["keep"]


def test_bundle_errors_point_at_lines(source, tmp_path):
    text = source.export_bundle("joy").replace("negative: Ok.", "negative: ''")
    line = next(i for i, ln in enumerate(text.splitlines(), 1) if "negative: ''" in ln)
    with pytest.raises(ConceptValidationError, match=f"line {line}: pairs\\[0\\].negative"):
        ConceptLibrary(tmp_path / "d").import_bundle(text)
    with pytest.raises(StaleVectors):
        ConceptLibrary(tmp_path / "e").import_bundle(source.export_bundle("joy").replace("Yay!", "Yay!!"))
