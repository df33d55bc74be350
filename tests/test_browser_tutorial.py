"""A person's first visit in headless Chromium: tutorial -> explorer -> creator -> library.

Screenshots of every step go to tests/output/screenshots/ so a person can look at them.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.real_model]

SHOTS = Path(__file__).resolve().parent / "output" / "screenshots"
PAIRS = """I'm so sleepy, I keep yawning and my eyes are closing. | I'm at my desk reading the news.
After lunch I felt drowsy and nodded off at my desk. | After lunch I went back to my desk.
I'm exhausted and could fall asleep right here on the couch. | I'm sitting on the couch watching TV.
Yawn, it's late and I'm so tired I can barely think. | It's eight o'clock and I'm making tea."""
MODEL_WAIT_MS = 240_000  # the real model on 2 shared CPU cores
# Not "sleepy": tests/test_browser_tutorial_try_it.py saves the tutorial's sleepy concept in the same session's
# library, and either file may run first.
NAME = "Drowsy"


@pytest.fixture(scope="module")
def lab_url(running_lab, shots):
    return running_lab


def shot(page, name: str, keep_toasts: bool = False) -> None:
    if not keep_toasts:  # info toasts would cover what the screenshot is about
        for btn in page.locator(".toast-close").all():
            try:
                btn.click(timeout=1000)
            except Exception:
                pass
    page.wait_for_timeout(400)  # let plotly and transitions settle
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def no_traceback(page) -> None:
    assert "Traceback" not in page.content()


def test_tutorial_walkthrough(lab_url, browser):
    from playwright.sync_api import expect

    from app.ui.tabs.tutorial import STEPS

    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.goto(lab_url)
    expect(page.locator("#tutorial-step-1")).to_be_visible(timeout=60_000)
    expect(page.get_by_text("Learn activation steering in about 15 minutes")).to_be_visible()
    expect(page.locator("#model-info")).to_contain_text("30 layers")
    shot(page, "01_tutorial")

    # click through the steps: each opens and shows its text and its Try-it button
    for i, needle in ((2, "minus the mean"), (4, "relative strength"), (6, "repeating itself")):
        page.locator(f"#tutorial-step-{i}").get_by_text(re.compile(rf"^Step {i}\.")).click()
        expect(page.locator(f"#tutorial-try-{i}")).to_be_visible()
        expect(page.locator(f"#tutorial-step-{i}")).to_contain_text(needle)
    shot(page, "02_tutorial_steps_open")

    # step 1's "Try it" fills the explorer and switches to it; running it draws the charts
    page.locator("#tutorial-try-1").click()
    prompt = page.locator("#ex-prompt textarea")
    expect(prompt).to_be_visible(timeout=10_000)
    expect(prompt).to_have_value("What is the capital of France?")
    page.locator("#ex-run").click()
    expect(page.locator("#ex-summary")).to_contain_text("tokens × 30 layers", timeout=MODEL_WAIT_MS)
    expect(page.locator("#ex-norms .scatterlayer .trace").first).to_be_visible()  # the norm lines are drawn
    expect(page.locator("#ex-lens .heatmaplayer").first).to_be_attached()
    no_traceback(page)
    shot(page, "03_explorer_after_try_it")

    # the other tabs' "Try it" buttons fill them too (no model work needed to check that)
    page.get_by_role("tab", name="Tutorial").click()
    page.locator("#tutorial-step-3").get_by_text(re.compile(r"^Step 3\.")).click()
    page.locator("#tutorial-try-3").click()
    expect(page.locator("#cr-pairs")).to_contain_text("dozed off on the train", timeout=10_000)
    expect(page.locator("#cr-name textarea, #cr-name input").first).to_have_value("Sleepy")
    page.get_by_role("tab", name="Tutorial").click()
    page.locator("#tutorial-try-4").click()
    expect(page.locator("#pg-prompt textarea")).to_have_value(STEPS[3].fill["playground.prompt"], timeout=10_000)
    shot(page, "03b_playground_after_try_it")
    page.close()


def test_tutorial_narrow_window(lab_url, browser):
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 420, "height": 900})
    page.goto(lab_url)
    expect(page.locator("#tutorial-try-1")).to_be_visible(timeout=60_000)
    box = page.locator("#tutorial-try-1").bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 420  # nothing runs off screen
    shot(page, "04_tutorial_narrow")
    page.close()


def test_create_extract_save_and_find_in_library(lab_url, browser):
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.goto(lab_url)
    expect(page.locator("#tutorial-step-1")).to_be_visible(timeout=60_000)
    page.get_by_role("tab", name="Concept creator").click()
    expect(page.locator("#cr-extract")).to_be_visible()

    # a bad input first: extracting with no pairs says what to do, no traceback
    page.locator("#cr-extract").click()
    expect(page.get_by_text(re.compile("There are no contrast pairs yet")).first).to_be_visible(timeout=30_000)
    no_traceback(page)
    shot(page, "05_creator_error_no_pairs", keep_toasts=True)
    page.keyboard.press("Escape")

    page.locator("#cr-name input, #cr-name textarea").first.fill(NAME)
    expect(page.locator("#cr-slug input, #cr-slug textarea").first).to_have_value(NAME.lower())
    page.locator("#cr-paste textarea").fill(PAIRS)
    page.locator("#cr-append").click()
    expect(page.locator("#cr-pairs")).to_contain_text("nodded off at my desk", timeout=30_000)
    shot(page, "06_creator_pairs")

    page.locator("#cr-extract").click()
    expect(page.locator("#cr-quality-summary")).to_contain_text("Recommended layer", timeout=MODEL_WAIT_MS)
    expect(page.locator("#cr-quality-plot .barlayer .trace").first).to_be_visible()  # the d′ bars
    page.locator("#cr-quality-plot").scroll_into_view_if_needed()
    shot(page, "07_creator_quality_card")

    page.locator("#cr-save").click()
    expect(page.locator("#cr-save-status")).to_contain_text("Saved", timeout=60_000)
    expect(page.locator("#cr-save-status")).to_contain_text("ready to steer")
    shot(page, "08_creator_saved")

    page.get_by_role("tab", name="Library").click()
    table = page.locator("#lib-table")
    expect(table).to_contain_text(NAME.lower(), timeout=30_000)
    page.locator("#lib-search input, #lib-search textarea").first.fill(NAME.lower())
    page.locator("#lib-search input, #lib-search textarea").first.press("Enter")
    expect(table).not_to_contain_text("Angry", timeout=30_000)
    table.get_by_text(NAME, exact=True).filter(visible=True).first.click()  # the visible cell
    expect(page.locator("#lib-card")).to_contain_text("your concept", timeout=30_000)
    expect(page.locator("#lib-card")).to_contain_text("ready")
    expect(page.locator("#lib-quality-plot .js-plotly-plot")).to_be_visible(timeout=30_000)
    no_traceback(page)
    shot(page, "09_library_card")
    # the llama.cpp export downloads with one click (it once only made a link to click a second time)
    with page.expect_download(timeout=MODEL_WAIT_MS) as download:
        page.locator("#lib-export-gguf").click()
    assert download.value.suggested_filename == f"{NAME.lower()}.gguf"
    expect(page.locator("#lib-status")).to_contain_text("llama.cpp control vector")
    page.close()


def test_a_link_with_only_a_concept_opens_at_its_recommended_setting(lab_url, browser):
    """`?concept=sad` opens the playground at sad's recommended layer and strength, as picking it does;
    a layer the link names itself wins. The expected setting is read from the library the lab serves (not from
    the slider's note: after a model switch in an earlier test the page-load range update may replace that note,
    a known cosmetic bug)."""
    import os

    from playwright.sync_api import expect

    from app import paths
    from app.library.slugs import model_key
    from app.library.store import ConceptLibrary

    lib = ConceptLibrary(Path(os.environ["STEERING_LAB_LIBRARY"]), paths.SHIPPED_CONCEPTS, paths.SHIPPED_VECTORS)
    rec = lib.get("sad").recommended[model_key(paths.DEFAULT_MODEL_ID)]
    layer, strength = str(rec.layer), f"{rec.strength:g}"
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.goto(lab_url + "?tab=playground&concept=sad")
    expect(page.locator("#pg-layer input[type=number]")).to_have_value(layer, timeout=60_000)
    expect(page.locator("#pg-strength input[type=number]")).to_have_value(strength, timeout=60_000)
    other = "5" if layer != "5" else "6"
    page.goto(lab_url + f"?tab=playground&concept=sad&layer={other}")
    expect(page.locator("#pg-layer input[type=number]")).to_have_value(other, timeout=60_000)
    expect(page.locator("#pg-strength input[type=number]")).to_have_value(strength, timeout=60_000)
    no_traceback(page)
    page.close()
