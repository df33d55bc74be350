"""The header, explorer, creator and library events through the HTTP API (gradio_client).

One app is launched per module on a free port with the real default model and a temporary
library (STEERING_LAB_LIBRARY is set before the service is created), so nothing is written
into the real library.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from lab_server import served_lab

pytestmark = pytest.mark.real_model

FOUR_PAIRS = [
    ["I'm so sleepy, I keep yawning and my eyes are closing.", "I'm at my desk reading the news."],
    ["After lunch I felt drowsy and nodded off at my desk.", "After lunch I went back to my desk."],
    ["I'm exhausted and could fall asleep right here on the couch.", "I'm sitting on the couch watching TV."],
    ["Yawn, it's late and I'm so tired I can barely think.", "It's eight o'clock and I'm making tea."],
]
TABLE = {"headers": ["positive", "negative"], "data": FOUR_PAIRS}
EMPTY_TABLE = {"headers": ["positive", "negative"], "data": [["", ""], ["", ""]]}


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    from gradio_client import Client

    with served_lab(tmp_path_factory.mktemp("library")) as served:
        yield Client(served.url, verbose=False), served.library


def figure(value) -> dict:
    """A gr.Plot output (or an update carrying one) as a plotly figure dict."""
    if isinstance(value, dict) and value.get("__type__") == "update":
        value = value.get("value")
    assert isinstance(value, dict) and value.get("type") == "plotly", value
    plot = value["plot"]
    return json.loads(plot) if isinstance(plot, str) else plot


def file_path(value) -> Path:
    """A gr.File output (a path, a FileData dict, or an update carrying one) as a local path."""
    if isinstance(value, dict) and value.get("__type__") == "update":
        value = value.get("value")
    if isinstance(value, dict):
        value = value.get("path") or value.get("name")
    return Path(value)


def error_of(client, *args, api_name: str) -> str:
    with pytest.raises(Exception) as info:
        client.predict(*args, api_name=api_name)
    return str(info.value)


def test_header_load_model_failure_keeps_the_model(lab):
    client, _ = lab
    msg = error_of(client, "/nonexistent", api_name="/load_model")
    assert "nonexistent" in msg
    assert "Traceback" not in msg
    assert "Available" in msg  # says what can be loaded instead
    # the server still answers, with the old model
    rows = client.predict("", "all", api_name="/library_list")
    assert rows["data"] if isinstance(rows, dict) else rows
    msg = error_of(client, "  ", api_name="/load_model")
    assert "Pick a model" in msg


def test_explore_returns_figures(lab):
    client, _ = lab
    summary, norms, heat, lens, table, proj = client.predict("What is the capital of France?", "", True,
                                                           api_name="/explore")
    assert "tokens ×" in summary and "30 layers" in summary
    f = figure(norms)
    assert "norm" in f["layout"]["title"]["text"].lower()
    assert len(f["data"]) >= 2 and len(f["data"][0]["x"]) == 30
    h = figure(heat)
    assert h["data"][0]["type"] == "heatmap" and len(h["data"][0]["z"]) == 30
    lz = figure(lens)
    assert "lens" in lz["layout"]["title"]["text"].lower()
    rows = table["data"] if isinstance(table, dict) else table
    assert len(rows) == 30 and rows[0][0] == 29
    p = figure(proj)
    assert p["data"] == [] or p["data"] is None or len(p["data"]) == 0  # no concept chosen


def test_explore_empty_prompt_is_a_clear_error(lab):
    client, _ = lab
    msg = error_of(client, "   ", "", True, api_name="/explore")
    assert "Type a prompt" in msg and "Traceback" not in msg


def test_extract_errors_are_clear(lab):
    client, _ = lab
    args = ("Sleepy", "sleepy", "", "custom")
    msg = error_of(client, *args, EMPTY_TABLE, "", "", "mean_diff", api_name="/extract")
    assert "no contrast pairs" in msg
    one = {"headers": ["positive", "negative"], "data": [FOUR_PAIRS[0]]}
    msg = error_of(client, *args, one, "", "", "mean_diff", api_name="/extract")
    assert "at least 2" in msg
    half = {"headers": ["positive", "negative"], "data": [FOUR_PAIRS[0], ["only positive", ""]]}
    msg = error_of(client, *args, half, "", "", "mean_diff", api_name="/extract")
    assert "row 2" in msg and "negative" in msg
    # a missing side of the system prompts
    msg = error_of(client, *args, TABLE, "be sleepy", "", "mean_diff", api_name="/extract")
    assert "System prompts" in msg


def test_extract_save_list_export_and_project(lab):
    client, library = lab
    md, plot, status = client.predict("Sleepy", "sleepy", "Tired vs neutral", "custom", TABLE, "", "", "mean_diff",
                                      api_name="/extract")
    assert "Recommended layer" in md and "d′" in md and "4 pairs" in md
    f = figure(plot)
    names = [t.get("name") for t in f["data"]]
    assert "vector norm" in names and "leave-one-out accuracy" in names
    assert "Save" in status

    # bad slug, then a good save (vectors from the extraction above are stored with it)
    msg = error_of(client, "Sleepy", "../x", "", "custom", TABLE, "", "", False, api_name="/save_concept")
    assert "slug" in msg and "../x" in msg
    status, _ = client.predict("Sleepy", "sleepy", "Tired vs neutral", "custom", TABLE, "", "", False,
                               api_name="/save_concept")  # (the saved-slug State is not an API output)
    assert "`sleepy`" in status and "ready to steer" in status
    assert (library / "concepts" / "sleepy.yaml").is_file()
    assert list((library / "vectors").glob("*/sleepy.safetensors"))

    # saving again needs the overwrite box
    msg = error_of(client, "Sleepy", "sleepy", "", "custom", TABLE, "", "", False, api_name="/save_concept")
    assert "already" in msg and "Overwrite" in msg
    # shipped slugs too
    msg = error_of(client, "Happy", "happy", "", "custom", TABLE, "", "", False, api_name="/save_concept")
    assert "shipped" in msg

    rows = client.predict("sleepy", "all", api_name="/library_list")
    rows = rows["data"] if isinstance(rows, dict) else rows
    assert rows[0][1] == "sleepy" and rows[0][4] == "user" and rows[0][5] == "ready"

    card, qplot = client.predict("sleepy", api_name="/library_card")
    assert "Sleepy" in card and "ready" in card and "Quality at layer" in card
    assert figure(qplot)["data"]

    path, status = client.predict("sleepy", api_name="/library_export")
    text = file_path(path).read_text(encoding="utf-8")
    assert "Sleepy" in text and "sleepy" in status

    # the explorer can now project on the saved concept without extracting again
    summary, *_, proj = client.predict("I am so tired, I need a nap.", "sleepy", True, api_name="/explore")
    p = figure(proj)
    assert p["data"][0]["type"] == "heatmap" and p["data"][0]["zmid"] == 0
    assert "sleepy" in summary


def test_library_protects_shipped_and_confirms_delete(lab):
    client, _ = lab
    msg = error_of(client, "happy", True, "", "all", api_name="/library_delete")
    assert "cannot be deleted" in msg
    status, rows, _, _ = client.predict("happy", "my-happy", "", "all", api_name="/library_duplicate")
    assert "my-happy" in status
    msg = error_of(client, "my-happy", False, "", "all", api_name="/library_delete")
    assert "I understand" in msg
    msg = error_of(client, "my-happy", "../x", "", "all", api_name="/library_rename")
    assert "slug" in msg
    status, rows, _, _ = client.predict("my-happy", "my-joy", "", "all", api_name="/library_rename")
    assert "my-joy" in status
    status, rows, _, _ = client.predict("my-joy", True, "", "all", api_name="/library_delete")
    assert "Deleted" in status
    data = rows["data"] if isinstance(rows, dict) else rows
    assert "my-joy" not in [r[1] for r in data]
    msg = error_of(client, None, api_name="/library_export")
    assert "Select a concept" in msg


def test_library_import_bundle_roundtrip(lab, tmp_path):
    from gradio_client import handle_file

    client, library = lab
    path, _ = client.predict("pirate", api_name="/library_export")
    path = str(file_path(path))
    status, rows, _ = client.predict(handle_file(path), "pirate-copy", False, "", "all", api_name="/library_import")
    assert "pirate-copy" in status
    assert (library / "concepts" / "pirate-copy.yaml").is_file()
    msg = error_of(client, handle_file(path), "pirate-copy", False, "", "all", api_name="/library_import")
    assert "already exists" in msg
    bad = tmp_path / "bad.yaml"
    bad.write_text("format: nope\n: [unclosed", encoding="utf-8")
    msg = error_of(client, handle_file(str(bad)), "bad", False, "", "all", api_name="/library_import")
    assert "Traceback" not in msg and msg


def test_gguf_export_and_import(lab):
    from gradio_client import handle_file

    client, library = lab
    path, status = client.predict("sleepy", "8-12", "", True, api_name="/library_export_gguf")
    assert file_path(path).stat().st_size > 0 and "layers 8-12" in status and "5 layers written" in status
    assert "--control-vector-scaled" in status  # no strength given: raw vectors
    status, rows, _ = client.predict(handle_file(str(file_path(path))), "sleepy-gguf", False, "", "all",
                                     api_name="/library_import")
    assert "sleepy-gguf" in status
    card, _ = client.predict("sleepy-gguf", api_name="/library_card")
    assert "imported" in card and "ready" in card
    path, status = client.predict("sleepy", "10", "0.3", True, api_name="/library_export_gguf")
    assert "strength 0.3 (relative) baked in" in status
    msg = error_of(client, "sleepy", "10", "lots", True, api_name="/library_export_gguf")
    assert "finite number" in msg
    msg = error_of(client, "sleepy", "0-3", None, True, api_name="/library_export_gguf")
    assert "layer 0" in msg
    msg = error_of(client, "sleepy", "12-40", None, True, api_name="/library_export_gguf")
    assert "does not exist" in msg


def test_header_load_model_success(lab):
    from app.core import registry

    client, _ = lab
    default_id = registry.list_models()[0].model_id  # the bundled model is listed first
    line, picker = client.predict(default_id, api_name="/load_model")
    assert default_id in line
    assert "30 layers" in line and "hidden size 576" in line and "BLAS" in line
    summary, *_ = client.predict("Hello there", "", False, api_name="/explore")  # works after the reload
    assert "30 layers" in summary


def test_concept_cosine(lab):
    client, _ = lab
    plot, md = client.predict("sleepy", "sleepy", api_name="/concept_cosine")
    f = figure(plot)
    ys = [y for y in f["data"][0]["y"] if y is not None]
    assert len(f["data"][0]["x"]) == 30 and all(abs(y - 1.0) < 1e-4 for y in ys)
    assert "1.00" in md
