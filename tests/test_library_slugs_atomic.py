"""Slug/model-key rules and crash-safe writes for the concept library."""

from __future__ import annotations

import os

import pytest

from app.library import (
    ConceptLibrary,
    InvalidSlug,
    atomic_write_bytes,
    atomic_write_text,
    clean_stray_temp_files,
    model_key,
    slugify,
    validate_slug,
)
from app.types import Concept, ContrastPair


@pytest.mark.parametrize("slug", ["happy", "a", "9lives", "a-b_c", "x" * 64, "con-2", "com10"])
def test_valid_slugs_pass_unchanged(slug):
    assert validate_slug(slug) == slug


@pytest.mark.parametrize(
    "slug, fragment",
    [
        ("../../etc/x", "path separator"),
        ("a/b", "path separator"),
        ("a\\b", "path separator"),
        ("..", "'..'"),
        ("a..b", "'..'"),
        ("con", "reserved"),
        ("nul", "reserved"),
        ("lpt9", "reserved"),
        ("com1", "reserved"),
        ("", "empty"),
        ("x" * 300, "300 characters"),
        ("héllo", "'é'"),
        ("日本", "not allowed"),
        ("Happy", "'H'"),
        ("a b", "' '"),
        ("x.yaml", "'.'"),
        ("-abc", "must start with a letter or digit"),
        ("_abc", "must start with a letter or digit"),
        (None, "must be a string"),
    ],
)
def test_bad_slugs_rejected_with_reason(slug, fragment):
    with pytest.raises(InvalidSlug) as err:
        validate_slug(slug)
    msg = str(err.value)
    assert fragment in msg
    assert "allowed" in msg or "add a word" in msg


@pytest.mark.parametrize(
    "name, expected",
    [
        ("Très Happy!", "tres-happy"),
        ("  Pirate   Voice ", "pirate-voice"),
        ("", "concept"),
        ("日本語", "concept"),
        ("CON", "con-concept"),
        ("../../etc/passwd", "etc-passwd"),
    ],
)
def test_slugify_makes_valid_slugs(name, expected):
    assert slugify(name) == expected
    validate_slug(slugify(name))


def test_slugify_truncates_long_names():
    s = slugify("word " * 100)
    assert len(s) <= 64 and not s.endswith("-")
    validate_slug(s)


@pytest.mark.parametrize(
    "model_id, key",
    [
        ("mlx-community/Qwen2.5-0.5B-Instruct-4bit", "mlx-community--qwen2.5-0.5b-instruct-4bit"),
        ("/x/y/SmolLM2-135M-Instruct", "smollm2-135m-instruct"),
        ("/x/y/SmolLM2-135M-Instruct/", "smollm2-135m-instruct"),
        ("./models/Foo", "foo"),
        ("C:\\models\\Foo Bar", "foo-bar"),
        ("a/b/c", "c"),
        ("../..", "model"),
        ("smollm2-135m-instruct", "smollm2-135m-instruct"),
    ],
)
def test_model_key(model_id, key):
    assert model_key(model_id) == key
    assert model_key(key) == key  # idempotent, so keys can be passed where ids are expected


def test_atomic_write_replaces_and_creates_parents(tmp_path):
    target = tmp_path / "deep" / "er" / "f.txt"
    atomic_write_text(target, "one")
    atomic_write_bytes(target, b"two")
    assert target.read_bytes() == b"two"
    assert sorted(p.name for p in target.parent.iterdir()) == ["f.txt"]
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask  # like an ordinary open(), not 0600


def test_failed_replace_keeps_old_file_and_removes_temp(tmp_path, monkeypatch):
    target = tmp_path / "f.txt"
    atomic_write_text(target, "old")

    def broken_replace(src, dst):
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        atomic_write_text(target, "new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


class _Crash(BaseException):
    """Stands in for the process dying: no except-Exception cleanup code runs."""


def test_crash_between_write_and_rename_leaves_old_file_and_cleanable_temp(tmp_path, monkeypatch):
    target = tmp_path / "sub" / "f.txt"
    atomic_write_text(target, "old")
    keep = tmp_path / "sub" / "tmp-but-not-ours.txt"
    keep.write_text("x")

    def crash(src, dst):
        raise _Crash()

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(_Crash):
        atomic_write_text(target, "new")
    monkeypatch.undo()
    assert target.read_text() == "old"
    strays = list(target.parent.glob(".tmp-*"))
    assert len(strays) == 1 and strays[0].read_text() == "new"
    removed = clean_stray_temp_files(tmp_path)
    assert removed == strays
    assert sorted(p.name for p in target.parent.iterdir()) == ["f.txt", "tmp-but-not-ours.txt"]


def test_crash_during_library_save_is_cleaned_by_next_library(tmp_path, monkeypatch):
    lib = ConceptLibrary(tmp_path / "user")
    v1 = Concept(slug="joy", name="Joy v1", pairs=[ContrastPair("yay!", "ok.")])
    lib.save(v1)
    path = tmp_path / "user" / "concepts" / "joy.yaml"
    before = path.read_bytes()

    def crash(src, dst):
        raise _Crash()

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(_Crash):
        lib.save(Concept(slug="joy", name="Joy v2", pairs=[ContrastPair("hooray", "fine")]), overwrite=True)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert list(path.parent.glob(".tmp-*")), "the simulated crash should leave a temp file"
    lib2 = ConceptLibrary(tmp_path / "user")
    assert not list(path.parent.glob(".tmp-*"))
    assert lib2.get("joy").name == "Joy v1"
    assert [s.slug for s in lib2.list()] == ["joy"] and lib2.problems == []


def test_library_imports_no_model_runtime_or_ui():
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import sys, app.library\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('mlx', 'mlx_lm', 'gradio', 'torch'))\n"
        "assert not bad, bad\n"
    )
    repo = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
