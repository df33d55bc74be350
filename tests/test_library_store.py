"""ConceptLibrary on real folders: shipped vs user concepts, vectors and their status."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from app.library import (
    ConceptExists,
    ConceptLibrary,
    ConceptNotFound,
    InvalidSlug,
    LibraryError,
    StaleVectors,
    VectorMismatch,
    concept_to_yaml,
)
from app.library.vectors import save_vectors as save_vectors_file
from app.types import Concept, ConceptVectors, ContrastPair, Recommendation

MODEL = "org/Tiny-Model"
KEY = "org--tiny-model"
REPO = Path(__file__).resolve().parents[1]


def concept(slug="joy", name="Joy", category="emotion", pairs=None, **kw) -> Concept:
    pairs = pairs or [ContrastPair("Yay, what a day!", "It is a day."), ContrastPair("So glad!", "Noted.")]
    return Concept(slug=slug, name=name, category=category, pairs=pairs, **kw)


def vectors(c: Concept | None, layers=3, hidden=4, seed=1, fingerprint="fp") -> ConceptVectors:
    rng = np.random.default_rng(seed)
    return ConceptVectors(
        model_id=MODEL, model_fingerprint=fingerprint, method="mean_diff",
        vectors=rng.standard_normal((layers, hidden)).astype(np.float32),
        typical_norms=np.full(layers, 4.0, np.float32),
        concept_fingerprint=c.pairs_fingerprint() if c else "",
    )


@pytest.fixture()
def dirs(tmp_path):
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    (shipped / "happy.yaml").write_text(concept_to_yaml(concept("happy", "Happy")), encoding="utf-8")
    (shipped / "pirate.yaml").write_text(concept_to_yaml(concept("pirate", "Pirate", "persona")), encoding="utf-8")
    shipped_vectors = tmp_path / "shipped_vectors"
    save_vectors_file(shipped_vectors / KEY / "happy.safetensors", vectors(concept("happy", "Happy"), seed=7))
    return tmp_path / "user", shipped, shipped_vectors


@pytest.fixture()
def lib(dirs):
    return ConceptLibrary(*dirs)


def test_save_get_and_clobber_refused(lib):
    c = concept()
    stored = lib.save(c)
    assert stored == c and lib.get("joy") == c and lib.exists("joy")
    with pytest.raises(ConceptExists) as err:
        lib.save(dataclasses.replace(c, name="Other"))
    assert "overwrite=True" in str(err.value)
    assert lib.get("joy").name == "Joy"
    lib.save(dataclasses.replace(c, name="Other"), overwrite=True)
    assert lib.get("joy").name == "Other"


def test_save_validates_before_writing(lib):
    with pytest.raises(LibraryError, match=r"pairs\[0\].positive: must not be empty"):
        lib.save(concept(pairs=[ContrastPair("", "x")]))
    with pytest.raises(LibraryError, match="at least 1 contrast pair"):
        lib.save(Concept(slug="joy", name="Joy"))
    with pytest.raises(LibraryError, match="must be one of"):
        lib.save(concept(category="nope"))
    assert not lib.exists("joy")


@pytest.mark.parametrize("slug", ["../../etc/x", "a/b", "con", "", "x" * 300, "ünï"])
def test_bad_slugs_never_touch_the_disk(lib, tmp_path, slug):
    before = sorted(p for p in tmp_path.rglob("*"))
    for call in (lambda: lib.get(slug), lambda: lib.delete(slug), lambda: lib.save(concept(slug=slug)),
                 lambda: lib.save_vectors(slug, MODEL, vectors(None))):
        with pytest.raises(InvalidSlug):
            call()
    assert sorted(p for p in tmp_path.rglob("*")) == before


def test_shipped_concept_cannot_be_deleted_and_is_shadowed(lib, dirs):
    _, shipped, _ = dirs
    with pytest.raises(LibraryError, match="shipped concepts cannot be deleted"):
        lib.delete("happy")
    with pytest.raises(ConceptExists, match="shipped concept"):
        lib.save(concept("happy", "My Happy"))
    lib.save(concept("happy", "My Happy"), overwrite=True)
    assert lib.get("happy").name == "My Happy" and lib.is_shipped("happy")
    listed = [s for s in lib.list() if s.slug == "happy"]
    assert len(listed) == 1 and listed[0].name == "My Happy" and listed[0].shipped is False
    lib.delete("happy")  # removes only the user copy
    assert lib.get("happy").name == "Happy"
    assert (shipped / "happy.yaml").exists()


def test_rename_moves_concept_and_vectors(lib, dirs):
    user = dirs[0]
    c = lib.save(concept())
    lib.save_vectors("joy", MODEL, vectors(c))
    renamed = lib.rename("joy", "glee", new_name="Glee")
    assert renamed.slug == "glee" and renamed.name == "Glee" and renamed.pairs == c.pairs
    assert not lib.exists("joy") and not (user / "vectors" / KEY / "joy.safetensors").exists()
    assert lib.vector_status("glee", MODEL, "fp", 4, 3) == "ready"
    lib.save(concept("other", "Other"))
    with pytest.raises(ConceptExists):
        lib.rename("glee", "other")
    with pytest.raises(ConceptExists):
        lib.rename("glee", "pirate")  # a shipped slug is taken too
    with pytest.raises(LibraryError, match="cannot be renamed"):
        lib.rename("pirate", "corsair")
    with pytest.raises(ConceptNotFound):
        lib.rename("nothing", "something")


def test_duplicate_shipped_concept_with_vectors(lib):
    copy = lib.duplicate("happy", "happy-2")
    assert copy.slug == "happy-2" and copy.name == "Happy (copy)"
    assert copy.provenance["duplicated_from"] == "happy"
    assert copy.pairs == lib.get("happy").pairs
    assert lib.vector_status("happy-2", MODEL, "fp", 4, 3) == "ready"
    assert not lib.is_shipped("happy-2")
    lib.delete("happy-2")
    assert not lib.exists("happy-2")
    with pytest.raises(ConceptExists):
        lib.duplicate("happy", "pirate")


def test_delete_removes_user_vectors(lib, dirs):
    c = lib.save(concept())
    path = lib.save_vectors("joy", MODEL, vectors(c))
    assert path == dirs[0] / "vectors" / KEY / "joy.safetensors" and path.exists()
    lib.delete("joy")
    assert not path.exists() and not lib.exists("joy")
    with pytest.raises(ConceptNotFound):
        lib.get("joy")
    with pytest.raises(ConceptNotFound):
        lib.delete("joy")


def test_list_sorting_and_filters(lib):
    lib.save(concept("calm", "Calm", tags=["Quiet"], description="peaceful words"))
    lib.save(concept("brief", "Brief", "brevity"))
    assert [s.slug for s in lib.list()] == ["brief", "calm", "happy", "pirate"]
    assert [s.slug for s in lib.list(category="emotion")] == ["calm", "happy"]
    assert [s.slug for s in lib.list(tag="quiet")] == ["calm"]
    assert [s.slug for s in lib.list(text="PEACEFUL")] == ["calm"]
    summary = lib.list(text="pirate")[0]
    assert summary.shipped and summary.n_pairs == 2 and summary.source_path.name == "pirate.yaml"


def test_list_survives_malformed_files(lib, dirs):
    lib.save(concept())
    concepts = dirs[0] / "concepts"
    (concepts / "broken.yaml").write_text("name: Broken\npairs:\n  - positive: [oops\n", encoding="utf-8")
    (concepts / "bad-field.yaml").write_text("name: Bad\ncategory: nope\npairs:\n  - {positive: a, negative: b}\n")
    (concepts / "Bad Name.yaml").write_text(concept_to_yaml(concept()))
    (concepts / "wrong-ext.yml").write_text(concept_to_yaml(concept()))
    slugs = [s.slug for s in lib.list()]
    assert slugs == ["happy", "joy", "pirate"]
    reported = {p.name: msg for p, msg in lib.problems}
    assert set(reported) == {"broken.yaml", "bad-field.yaml", "Bad Name.yaml", "wrong-ext.yml"}
    assert "must end in .yaml" in reported["wrong-ext.yml"]
    assert "invalid YAML" in reported["broken.yaml"] and "line" in reported["broken.yaml"]
    assert "line 2: category" in reported["bad-field.yaml"]
    assert "not a valid slug" in reported["Bad Name.yaml"]
    with pytest.raises(LibraryError, match="broken.yaml"):
        lib.get("broken")


def test_vectors_round_trip_and_status(lib):
    c = lib.save(concept())
    assert lib.load_vectors("joy", MODEL) is None
    assert lib.vector_status("joy", MODEL, "fp", 4, 3) == "missing"
    cv = vectors(None)  # empty fingerprint: filled in from the concept on save
    lib.save_vectors("joy", MODEL, cv)
    back = lib.load_vectors("joy", MODEL, "fp", 4, 3)
    assert back.vectors.tobytes() == cv.vectors.tobytes()
    assert back.concept_fingerprint == c.pairs_fingerprint()
    assert lib.vector_status("joy", MODEL, "fp", 4, 3) == "ready"
    assert lib.vector_status("joy", MODEL, "other-fp", 4, 3) == "mismatch"
    assert lib.vector_status("joy", MODEL, "fp", 8, 3) == "mismatch"
    assert lib.vector_status("joy", "org/another-model") == "missing"
    with pytest.raises(VectorMismatch, match="hidden 4.*hidden 896"):
        lib.load_vectors("joy", MODEL, "fp", 896, 3)


def test_editing_pairs_makes_vectors_stale_but_renaming_display_name_does_not(lib):
    c = lib.save(concept())
    lib.save_vectors("joy", MODEL, vectors(c))
    lib.save(dataclasses.replace(c, name="Joyful", tags=["x"]), overwrite=True)
    assert lib.vector_status("joy", MODEL, "fp", 4, 3) == "ready"
    lib.set_recommendation("joy", MODEL, Recommendation(1, 0.5))
    assert lib.vector_status("joy", MODEL, "fp", 4, 3) == "ready"
    edited = dataclasses.replace(lib.get("joy"), pairs=c.pairs + [ContrastPair("Hooray!", "Okay.")])
    lib.save(edited, overwrite=True)
    assert lib.vector_status("joy", MODEL, "fp", 4, 3) == "stale"
    with pytest.raises(StaleVectors, match="re-extract"):
        lib.load_vectors("joy", MODEL, "fp", 4, 3)


def test_shipped_vectors_used_and_user_vectors_win(lib):
    shipped = lib.load_vectors("happy", MODEL, "fp", 4, 3)
    assert shipped is not None
    mine = vectors(lib.get("happy"), seed=99)
    lib.save_vectors("happy", MODEL, mine)
    assert lib.load_vectors("happy", MODEL).vectors.tobytes() == mine.vectors.tobytes()
    assert not lib.has_user_copy("happy")  # vectors alone do not copy the concept


def test_corrupt_vector_file_reported(lib, dirs):
    c = lib.save(concept())
    path = lib.save_vectors("joy", MODEL, vectors(c))
    path.write_bytes(path.read_bytes()[:30])
    assert lib.vector_status("joy", MODEL) == "mismatch"
    assert lib.problems and "truncated" in lib.problems[-1][1]
    with pytest.raises(LibraryError, match="truncated or corrupt"):
        lib.load_vectors("joy", MODEL)


def test_set_recommendation_on_shipped_writes_user_copy(lib, dirs):
    shipped_file = dirs[1] / "happy.yaml"
    before = shipped_file.read_bytes()
    updated = lib.set_recommendation("happy", "/models/SmolLM2-135M-Instruct", Recommendation(12, 0.3))
    assert updated.recommended == {"smollm2-135m-instruct": Recommendation(12, 0.3, "relative", "sweep")}
    assert lib.has_user_copy("happy") and lib.get("happy") == updated
    assert shipped_file.read_bytes() == before


def test_repo_shipped_concepts_all_parse(tmp_path):
    shipped = REPO / "concepts"
    if not any(shipped.glob("*.yaml")):
        pytest.skip("no shipped concepts in this checkout")
    lib = ConceptLibrary(tmp_path / "user", shipped)
    listed = lib.list()
    assert lib.problems == []
    assert len(listed) == len(list(shipped.glob("*.yaml")))


def test_get_sees_external_edits_and_returns_independent_copies(lib, dirs):
    lib.save(concept())
    first = lib.get("joy")
    first.pairs.append(ContrastPair("mutated", "copy"))
    first.recommended["x"] = Recommendation(0, 1.0)
    assert lib.get("joy") == concept()  # callers cannot change what the library holds
    path = dirs[0] / "concepts" / "joy.yaml"
    path.write_text(path.read_text(encoding="utf-8").replace("name: Joy", "name: Joy edited by hand"), encoding="utf-8")
    assert lib.get("joy").name == "Joy edited by hand"
    path.write_text("name: [broken\n", encoding="utf-8")
    with pytest.raises(LibraryError, match="invalid YAML"):
        lib.get("joy")


def test_ship_writes_shipped_yaml_and_vectors_and_refuses_user_or_stale(lib, dirs):
    c = dataclasses.replace(lib.get("happy"), method="bipolar", opposite="pirate",
                            recommended={KEY: Recommendation(12, 0.2, "relative", "calibration")})
    cv = vectors(c, seed=3)
    path = lib.ship(c, MODEL, cv)
    assert path == dirs[2] / KEY / "happy.safetensors"
    assert lib.load_vectors("happy", MODEL).vectors.tobytes() == cv.vectors.tobytes()
    stored = lib.get("happy")
    assert (stored.method, stored.opposite, stored.recommended) == ("bipolar", "pirate", c.recommended)
    assert not lib.has_user_copy("happy")
    before = (dirs[1] / "happy.yaml").read_bytes()
    with pytest.raises(LibraryError, match="do not match"):
        lib.ship(dataclasses.replace(c, pairs=c.pairs[:1]), MODEL, cv)
    with pytest.raises(LibraryError, match="not a shipped concept"):
        lib.ship(concept("joy"), MODEL, vectors(concept("joy")))
    assert (dirs[1] / "happy.yaml").read_bytes() == before


def test_method_and_opposite_are_validated_with_lines():
    from app.library.errors import ConceptValidationError
    from app.library.schema import parse_concept

    text = concept_to_yaml(concept("joy")) + "method: magic\nopposite: joy\n"
    with pytest.raises(ConceptValidationError) as e:
        parse_concept(text, "joy")
    msg = str(e.value)
    lines = text.splitlines()
    assert f"line {lines.index('method: magic') + 1}: method: must be one of" in msg
    assert f"line {lines.index('opposite: joy') + 1}: opposite: a concept cannot be its own opposite" in msg
