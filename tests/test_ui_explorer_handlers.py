"""The explorer's handlers as plain methods over a Lab on a tiny model: no server, no browser."""

from __future__ import annotations

import gradio as gr
import pytest

from app.service.lab import Lab
from app.ui.tabs.explorer import ExplorerHandlers
from test_service_judges import tiny_service


def _quiet(*_a, **_k):
    return None


@pytest.fixture
def handlers(tmp_path):
    return ExplorerHandlers(Lab(tiny_service(tmp_path)))


def test_explore_draws_every_chart_and_pages_from_the_cache(handlers):
    lab = handlers.service
    summary, norms, heat, lens, table, proj = handlers.explore("w3 w4 w5", "wordy", False, progress=_quiet)
    n = lab.info().num_layers
    assert summary.strip() and len(norms.data[0].y) == n and table
    calls = []
    real = lab.explore
    lab.explore = lambda *a, **k: calls.append(1) or real(*a, **k)
    heat2, lens2, proj2, note = handlers.show_range("w3 w4 w5", "wordy", False, "0-1")
    assert calls == [] and "showing tokens 0–1" in note["info"]  # paging did not run the model again
    handlers.explore("w3 w4 w5", "wordy", False, progress=_quiet)
    assert calls == [1]  # Explore is always fresh


def test_the_cache_keeps_only_the_last_few(handlers):
    for i in range(ExplorerHandlers.CACHED + 2):
        handlers.explore(f"w{i + 1} w2", "", False, progress=_quiet)
    assert len(handlers._cache) == ExplorerHandlers.CACHED


def test_cosine_compares_two_concepts_layer_by_layer(handlers):
    fig, md = handlers.cosine("wordy", "plain", progress=_quiet)
    assert len(fig.data[0].y) == handlers.service.info().num_layers and md.strip()


@pytest.mark.parametrize("call", [
    lambda h: h.explore("  ", "", False, progress=_quiet),
    lambda h: h.show_range("", "", False, "0-3"),
    lambda h: h.cosine("wordy", "", progress=_quiet),
])
def test_missing_input_is_a_clear_error(handlers, call):
    with pytest.raises(gr.Error):
        call(handlers)
