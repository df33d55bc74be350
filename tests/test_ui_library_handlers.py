"""The library tab's handlers as plain methods over a Lab on a tiny model, with real files: no server."""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr
import pytest

from app.errors import LabError
from app.service.lab import Lab
from app.ui.tabs.library import NOTHING_SELECTED, LibraryHandlers
from test_service_judges import tiny_service


@pytest.fixture
def handlers(tmp_path, monkeypatch):
    monkeypatch.setenv("STEERING_LAB_HOME", str(tmp_path / "home"))  # exports land here, not in the checkout
    return LibraryHandlers(Lab(tiny_service(tmp_path)))


def _slugs(rows):
    return [r[1] for r in rows]


def test_listing_filters_and_picks_a_row(handlers):
    assert set(_slugs(handlers.list("", "all"))) == {"wordy", "plain"}
    assert _slugs(handlers.list("wordy", "all")) == ["wordy"]
    assert handlers.list("no such thing", "all")[0][0] == "(no concept matches)"
    picked = LibraryHandlers.pick_row(SimpleNamespace(row_value=["Wordy", "wordy"]))
    assert picked.value == "wordy"


def test_card_names_the_concept_and_nothing_selected_says_so(handlers):
    md, plot = handlers.card("wordy")
    assert "Wordy" in md
    assert handlers.card("")[0] == NOTHING_SELECTED
    tab = SimpleNamespace(value="library")
    assert handlers.refresh_card("", tab) == (gr.update(), gr.update())


def test_export_then_import_gives_the_same_concept_back(handlers, tmp_path, monkeypatch):
    file_update, msg = handlers.export_yaml("wordy")
    assert "YAML bundle" in msg
    path = file_update.value if isinstance(file_update.value, str) else file_update.value["path"]
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "uploads"))  # where Gradio would have stored the upload
    copy = tmp_path / "uploads" / "0123abcd" / "copy.steering.yaml"
    copy.parent.mkdir(parents=True)
    copy.write_bytes(open(path, "rb").read())
    status, rows, selected = handlers.import_file(str(copy), "wordy-copy", False, "", "all")
    assert "wordy-copy" in status and "wordy-copy" in _slugs(rows) and selected.value == "wordy-copy"
    assert not copy.exists()  # the upload is removed once read
    lab = handlers.service
    assert [p.positive for p in lab.concepts.get("wordy-copy").pairs] == [p.positive for p in lab.concepts.get("wordy").pairs]


def test_rename_duplicate_and_delete_change_the_files(handlers):
    msg, rows, selected, cleared = handlers.duplicate("wordy", "wordy2", "", "all")
    assert "wordy2" in _slugs(rows) and selected.value == "wordy2" and cleared == ""
    msg, rows, selected, _ = handlers.rename("wordy2", "wordy3", "", "all")
    assert "wordy3" in _slugs(rows) and "wordy2" not in _slugs(rows)
    with pytest.raises(gr.Error, match="Tick"):
        handlers.delete("wordy3", False, "", "all")
    assert "wordy3" in _slugs(handlers.list("", "all"))  # nothing lost without the tick
    msg, rows, selected, confirm = handlers.delete("wordy3", True, "", "all")
    assert "wordy3" not in _slugs(rows) and selected.value is None and confirm.value is False


@pytest.mark.parametrize("call", [
    lambda h: h.export_yaml(""),
    lambda h: h.rename("wordy", "  ", "", "all"),
    lambda h: h.import_file(None, "", False, "", "all"),
    lambda h: h.export_gguf("wordy", "0-1", "", True, progress=lambda *a, **k: None),
    lambda h: h.export_gguf("wordy", "1", "nan", True, progress=lambda *a, **k: None),
])
def test_bad_input_is_a_clear_error(handlers, call):
    with pytest.raises((gr.Error, LabError)):
        call(handlers)
