"""Service-side limits and leaks: extraction bounded by tokens (checked outside the model lock),
model switching only between prepared models unless allowed (without revealing the server's
disk), bounded download folders, uploads removed, GGUF files with aliased or absurd layers refused.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pytest

from app.errors import InputError, ModelLoadError
from app.types import Concept, ContrastPair

from gguf_files import write_gguf


# ---- model switching ------------------------------------------------------------------------------
def test_a_browser_can_switch_only_to_prepared_models_and_learns_nothing_about_paths(tmp_path):
    from app.service.model_service import ModelService

    svc = ModelService(allow_model_paths=False)
    existing = tmp_path / "a-model-folder"
    existing.mkdir()
    (existing / "config.json").write_text("{}")
    messages = {}
    for text in (str(existing), str(tmp_path / "missing"), "/etc", "../../etc/passwd", "org/some-hub-model"):
        with pytest.raises(ModelLoadError) as info:
            svc.switch_model(text)
        messages[text] = str(info.value).replace(repr(text[:80]), "<TEXT>")
    assert len(set(messages.values())) == 1, messages  # the same words whether the folder exists or not
    assert "--allow-model-paths" in next(iter(messages.values()))
    assert not svc.is_loaded and svc.switch_notice is None


def test_header_says_a_switch_is_for_everyone():
    from app.ui.header import picker_info

    class Svc:
        is_loaded = False
        allow_model_paths = False
        switch_notice = None

    assert "everyone" in picker_info(Svc()) and "prepared" in picker_info(Svc())


# ---- downloads and uploads ------------------------------------------------------------------------
def test_download_folders_are_a_bounded_cache(tmp_path, monkeypatch):
    import tempfile

    from app.ui import downloads

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    made = []
    for i in range(downloads.MAX_KEPT + 20):  # a long session: every generation offers its files
        d = downloads.out_dir("generation")
        (d / "x.json").write_text("{}")
        os.utime(d, (1_000_000 + i, 1_000_000 + i))  # in order of creation, whatever the clock's resolution
        made.append(d)
    downloads.out_dir("sweep")
    kept = [p for p in downloads.parent_dir().iterdir()]
    assert len(kept) == downloads.MAX_KEPT
    assert made[-1] in kept and made[0] not in kept  # the newest stay, the oldest go


def test_uploads_are_removed_after_use_but_other_files_are_not(tmp_path, monkeypatch):
    import gradio.utils

    from app.ui.downloads import remove_upload

    uploads = tmp_path / "gradio"
    monkeypatch.setattr(gradio.utils, "get_upload_folder", lambda: str(uploads))
    one = uploads / "abc123" / "bundle.yaml"
    one.parent.mkdir(parents=True)
    one.write_text("x")
    mine = tmp_path / "mine.yaml"
    mine.write_text("x")
    remove_upload(str(one))
    remove_upload(str(mine))
    assert not one.exists() and not one.parent.exists() and mine.exists()


# ---- GGUF: aliased layers, absurd values, metadata ---------------------------------------------------
def _gguf(path: Path, tensors: dict, hint: str = "llama") -> Path:
    return write_gguf(path, tensors, hint=hint)


def test_gguf_with_aliased_or_absurd_layers_is_refused(tmp_path):
    from app.core.gguf_io import GGUFError, import_control_vector

    H = 16
    ok = _gguf(tmp_path / "ok.gguf", {"direction.3": np.ones(H, np.float32)})
    vectors, present, meta = import_control_vector(ok, 6, H)
    assert present == [3] and meta["model_hint"] == "llama"
    aliased = _gguf(tmp_path / "aliased.gguf", {"direction.3": np.ones(H, np.float32),
                                                "direction.03": np.zeros(H, np.float32)})
    with pytest.raises(GGUFError, match="layer 3 appears more than once"):
        import_control_vector(aliased, 6, H)
    absurd = _gguf(tmp_path / "absurd.gguf", {"direction.3": np.full(H, 3e38, np.float32)})
    with pytest.raises(GGUFError, match="far beyond"):
        import_control_vector(absurd, 6, H)
    long_hint = _gguf(tmp_path / "hint.gguf", {"direction.3": np.ones(H, np.float32)}, hint="x" * 5000)
    with pytest.raises(GGUFError, match="model_hint"):
        import_control_vector(long_hint, 6, H)
    with pytest.raises(GGUFError) as info:
        import_control_vector(tmp_path / "nope.gguf", 6, H)
    assert str(tmp_path) not in str(info.value)  # no server paths in messages


# ---- extraction bounded by tokens, refused without waiting for the model ------------------------------
@pytest.mark.real_model
def test_a_huge_extraction_is_refused_at_once_even_while_the_model_is_busy(default_service):
    from app.service.jobs import CancelToken

    svc = default_service
    text = "I am so happy today, the sun is shining and everything is wonderful. " * 55  # ~3900 characters
    pairs = [ContrastPair(f"{i} {text}"[:4000], f"{i} {text.replace('happy', 'here')}"[:4000]) for i in range(64)]
    concept = Concept(slug="huge", name="Huge", pairs=pairs)  # inside the pair and character limits
    out: dict = {}
    token = CancelToken()

    def run():
        try:
            svc.extract_concept(concept, token=token, save=False)
            out["result"] = "extracted"
        except Exception as exc:
            out["result"] = exc

    with svc.jobs.lock:  # another user's long job holds the model
        worker = threading.Thread(target=run)
        worker.start()
        worker.join(120)
        token.cancel()  # before the fix it waits for the lock; never let it run 64 long pairs
        finished_while_busy = not worker.is_alive()
    worker.join(600)
    assert finished_while_busy, "the extraction waited for the model instead of being refused"
    assert isinstance(out["result"], InputError) and "tokens" in str(out["result"]), out


def test_bundle_and_gguf_imports_are_not_queued_behind_the_model(monkeypatch, tmp_path):
    """A bundle is parsed and checked without the model: its event is not in the model queue."""
    monkeypatch.setenv("STEERING_LAB_LIBRARY", str(tmp_path / "lib"))
    from app.service.model_service import ModelService
    from app.ui.server import build_app

    demo = build_app(ModelService())
    fns = {fn.api_name: fn for fn in demo.fns.values()}
    assert fns["library_import"].concurrency_id != "model"
    assert fns["extract"].concurrency_id == "model"  # model work still queues
