"""The tab registry: a module in app/ui/tabs with LABEL and ORDER is a tab; nothing else lists tabs."""

from __future__ import annotations

import sys

from app.ui.tabs import discover, tab_ids


def test_the_lab_s_tabs_in_page_order():
    assert list(tab_ids().items()) == [
        ("tutorial", "Tutorial"), ("explorer", "Layer explorer"), ("creator", "Concept creator"),
        ("playground", "Steering playground"), ("sweeps", "Sweeps"), ("mixer", "Concept mixer"),
        ("library", "Library")]
    assert "operations" not in tab_ids()  # a helper module of the tabs, not a tab


def test_a_new_tab_is_one_module(tmp_path, monkeypatch):
    """A package with two tab modules and a helper: the tabs are found, ordered by ORDER; the helper is not a tab."""
    pkg = tmp_path / "fake_tabs_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "zeta.py").write_text('LABEL = "Zeta first"\nORDER = 1\n\ndef build(service, ctx):\n    pass\n')
    (pkg / "alpha.py").write_text('LABEL = "Alpha second"\nORDER = 2\n\ndef build(service, ctx):\n    pass\n')
    (pkg / "helpers.py").write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        found = discover("fake_tabs_pkg")
        assert list(found) == ["zeta", "alpha"]
        assert [m.LABEL for m in found.values()] == ["Zeta first", "Alpha second"]
    finally:
        for name in [n for n in sys.modules if n.startswith("fake_tabs_pkg")]:
            del sys.modules[name]


def test_a_link_opens_only_a_known_tab():
    from app.ui.urlstate import read_params

    assert read_params({"tab": "sweeps"}, 30)["tab"] == "sweeps"
    assert read_params({"tab": "operations"}, 30)["tab"] is None
    assert read_params({"tab": "nope"}, 30)["tab"] is None
