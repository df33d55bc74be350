"""A calibrated band in a real browser: picking the concept fills the extra layers, and the run steers them all."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.real_model]

WAIT_MS = 240_000


def test_picking_a_concept_with_a_band_fills_the_extra_layers_and_steers_them(running_lab, browser, shots):
    from playwright.sync_api import expect

    from app import paths
    from app.library.slugs import model_key
    from app.library.store import ConceptLibrary
    from app.types import Recommendation

    # a user copy of shipped `calm` whose recommendation is a band (the server reads the same folder)
    lib = ConceptLibrary(Path(os.environ["STEERING_LAB_LIBRARY"]), paths.SHIPPED_CONCEPTS, paths.SHIPPED_VECTORS)
    lib.set_recommendation("calm", model_key(paths.DEFAULT_MODEL_ID),
                           Recommendation(layer=12, strength=0.07, source="calibration", band=(8, 10, 14, 16)))
    try:
        _pick_and_run(running_lab, browser, shots)
        _open_from_a_link(running_lab, browser)
    finally:
        lib.delete("calm")  # the shipped calm shows again


def _open_from_a_link(running_lab, browser):
    """A link naming only the concept opens at its recommended setting, band included, with the note saying so."""
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(60_000)
    page.goto(running_lab + "?tab=playground&concept=calm")
    page.wait_for_selector("#pg-generate", state="visible")
    page.locator("#pg-advanced").get_by_text("Advanced: where").first.click()
    extra = page.locator("#pg-extra-layers textarea, #pg-extra-layers input").first
    expect(extra).to_have_value("8:0.07, 10:0.07, 14:0.07, 16:0.07", timeout=WAIT_MS)
    expect(page.locator("#pg-layer input[type=number]")).to_have_value("12")
    expect(page.locator("#pg-layer")).to_contain_text("plus layers 8, 10, 14, 16", timeout=WAIT_MS)
    page.close()


def _pick_and_run(running_lab, browser, shots):
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(60_000)
    page.goto(running_lab + "?tab=playground&max_tokens=6")
    page.wait_for_selector("#pg-generate", state="visible")
    page.locator("#pg-advanced").get_by_text("Advanced: where").first.click()  # the extra layers live there
    page.wait_for_selector("#pg-extra-layers", state="visible")
    page.click("#pg-concept input")
    page.locator("[role=option][aria-label=calm]").click()
    extra = page.locator("#pg-extra-layers textarea, #pg-extra-layers input").first
    expect(extra).to_have_value("8:0.07, 10:0.07, 14:0.07, 16:0.07", timeout=WAIT_MS)
    expect(page.locator("#pg-layer input[type=number]")).to_have_value("12")
    page.click("#pg-generate")
    page.wait_for_function("() => /token 6\\/6|eos|loop/.test(document.querySelector('#pg-status').innerText)",
                           timeout=WAIT_MS)
    line = page.locator("#pg-status .settings-line").inner_text()
    for layer in (8, 10, 12, 14, 16):
        assert f"L{layer}" in line, line
    page.screenshot(path=str(shots / "playground_band.png"), full_page=False)
    # another concept without a band empties the box again
    page.click("#pg-concept input")
    page.locator("[role=option][aria-label=happy]").click()
    expect(extra).to_have_value("", timeout=WAIT_MS)
    page.close()
