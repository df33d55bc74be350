"""The steering tabs in a real browser (headless Chromium via Playwright).

Steer with the shipped ``happy`` concept, run a 2x2 sweep, mix two concepts, reopen a shared URL and
trigger a bad input. Screenshots of every step go to tests/output/screenshots/ for a person to look at.
"""

from __future__ import annotations

import pytest
from lab_server import open_page

pytestmark = [pytest.mark.browser, pytest.mark.real_model]

RUN_TIMEOUT_MS = 240_000


@pytest.fixture(scope="module")
def app_url(running_lab):
    return running_lab


def _open(browser, url, width=1280, height=800, ready="#pg-generate"):
    """A new page at ``url``, once the element ``ready`` of the tab it opens is shown (tabs render lazily)."""
    return open_page(browser, url, ready, width, height)


def _wait_run_done(page, prefix: str) -> None:
    """Both panes have tokens and the badge no longer says the run is going."""
    page.wait_for_function(
        """(p) => {
            const badge = document.querySelector(`#${p}-status .badge`);
            const toks = document.querySelectorAll(`#${p}-steered .tok`).length;
            const base = document.querySelectorAll(`#${p}-baseline .tok`).length;
            return badge && toks > 0 && base > 0 && !/generating|preparing/.test(badge.textContent);
        }""",
        arg=prefix, timeout=RUN_TIMEOUT_MS,
    )


def _slider_value(page, elem_id: str) -> str:
    return page.locator(f"#{elem_id} input[type=number]").input_value()


def test_playground_steers_with_happy(browser, app_url, shots):
    page = _open(browser, app_url + "?tab=playground&concept=happy&layer=12&strength=0.3&max_tokens=16")
    page.wait_for_function("() => document.querySelector('#pg-max-tokens input[type=number]').value === '16'")
    page.click("#pg-generate")
    _wait_run_done(page, "pg")
    steered = page.locator("#pg-steered .pane").inner_text()
    baseline = page.locator("#pg-baseline .pane").inner_text()
    assert steered.strip() and baseline.strip()
    assert page.locator("#pg-status .settings-line").inner_text().startswith("happy")
    assert "tok/s" in page.locator("#pg-status").inner_text()
    if steered != baseline:
        assert page.locator("#pg-steered .tok-diverge").count() == 1
    # the steered tokens carry a colour and a hover title with their projection
    first = page.locator("#pg-steered .tok").first
    assert "projection" in (first.get_attribute("title") or "")
    page.screenshot(path=str(shots / "playground_1280x800.png"), full_page=False)
    page.screenshot(path=str(shots / "playground_full.png"), full_page=True)
    # the URL follows the controls
    assert "concept=happy" in page.url and "layer=12" in page.url
    page.close()


def test_playground_narrow_window(browser, app_url, shots):
    page = _open(browser, app_url + "?tab=playground&concept=happy&max_tokens=10", width=420, height=900)
    page.click("#pg-generate")
    _wait_run_done(page, "pg")
    box_b = page.locator("#pg-baseline").bounding_box()
    box_s = page.locator("#pg-steered").bounding_box()
    assert box_s["y"] > box_b["y"]  # the panes stack in a narrow window
    page.locator("#pg-generate").scroll_into_view_if_needed()
    page.screenshot(path=str(shots / "playground_420x900.png"), full_page=False)
    page.screenshot(path=str(shots / "playground_420_full.png"), full_page=True)
    page.close()


def test_stop_keeps_the_partial_answer(browser, app_url, shots):
    page = _open(browser, app_url + "?tab=playground&concept=happy&max_tokens=400")
    page.click("#pg-generate")
    # while streaming the panes are plain text (colours come at the end): read the token counter
    page.wait_for_function(
        "() => { const m = /token (\\d+)\\//.exec(document.querySelector('#pg-status').innerText);"
        " return m !== null && Number(m[1]) >= 3; }", timeout=RUN_TIMEOUT_MS)
    page.click("#pg-stop")
    page.wait_for_function("() => /stopped/.test(document.querySelector('#pg-status').innerText)", timeout=60_000)
    n = page.locator("#pg-steered .tok").count()
    assert 3 <= n < 400
    page.wait_for_timeout(1500)
    assert page.locator("#pg-steered .tok").count() <= n + 2  # nothing keeps streaming in
    page.screenshot(path=str(shots / "playground_stopped.png"), full_page=False)
    # the model is free again: a short run completes
    page.locator("#pg-max-tokens input[type=number]").fill("6")
    page.locator("#pg-max-tokens input[type=number]").press("Enter")
    page.click("#pg-generate")
    page.wait_for_function("() => /token 6\\/6/.test(document.querySelector('#pg-status').innerText)",
                           timeout=RUN_TIMEOUT_MS)
    page.close()


def test_sweep_shows_heatmap(browser, app_url, shots):
    page = _open(browser, app_url + "?tab=sweeps&concept=happy&layers=8,12&strengths=0.2,0.4&max_tokens=12",
                 ready="#sw-run")
    page.wait_for_function("() => document.querySelector('#sw-layers textarea, #sw-layers input').value === '8,12'")
    assert page.locator("#sw-max-tokens input[type=number]").input_value() == "12"
    page.click("#sw-run")
    page.wait_for_selector("#sw-heatmap .main-svg", timeout=RUN_TIMEOUT_MS)
    page.wait_for_function("() => document.querySelector('#sw-summary').innerText.includes('4 cells')")
    assert page.locator("#sw-heatmap .hm, #sw-heatmap .heatmaplayer").count() >= 1
    text = page.locator("#sw-cell-text").inner_text()
    assert "Layer" in text and "Baseline" in text
    page.screenshot(path=str(shots / "sweep.png"), full_page=True)
    page.click("#sw-use")
    page.wait_for_selector("#pg-generate", state="visible")
    assert _slider_value(page, "pg-layer") in ("8", "12")
    page.screenshot(path=str(shots / "sweep_use_setting.png"), full_page=False)
    page.close()


def test_mixer_generates_with_two_concepts(browser, app_url, shots):
    page = _open(browser, app_url + "?tab=mixer", ready="#mx-generate")
    box = page.locator("#mx-text textarea, #mx-text input").first
    box.fill("happy:0.6, calm:0.4")
    box.press("Tab")
    page.wait_for_function("() => document.querySelector('#mx-concept-2 input').value.startsWith('calm')")
    mt = page.locator("#mx-max-tokens input[type=number]")
    mt.fill("12")
    mt.press("Enter")
    page.click("#mx-cos-run")
    page.wait_for_selector("#mx-cos-plot .main-svg", timeout=RUN_TIMEOUT_MS)
    page.click("#mx-generate")
    _wait_run_done(page, "mx")
    assert "happy" in page.locator("#mx-status .settings-line").inner_text()
    page.screenshot(path=str(shots / "mixer.png"), full_page=True)
    page.close()


def test_url_sets_the_controls(browser, app_url, shots):
    page = _open(browser, app_url + "?tab=playground&concept=sad&layer=14&strength=0.25")
    page.wait_for_function("() => document.querySelector('#pg-layer input[type=number]').value === '14'")
    assert _slider_value(page, "pg-strength") == "0.25"
    assert page.locator("#pg-concept input").input_value().startswith("sad")
    assert page.locator("#pg-generate").is_visible()  # the playground tab is the open one
    page.screenshot(path=str(shots / "url_state.png"), full_page=False)
    # changing a control rewrites the URL (so the page can be bookmarked as it is now)
    box = page.locator("#pg-layer input[type=number]")
    box.fill("16")
    box.press("Enter")
    page.wait_for_function("() => new URL(location.href).searchParams.get('layer') === '16'")
    assert "concept=sad" in page.url and "tab=playground" in page.url
    # picking a concept from the list moves layer and strength to its recommended setting
    page.click("#pg-concept input")
    page.locator("[role=option][aria-label=happy]").click()
    page.wait_for_function("() => /recommended for happy/.test(document.querySelector('#pg-layer').innerText)",
                           timeout=RUN_TIMEOUT_MS)
    page.wait_for_function("() => new URL(location.href).searchParams.get('concept') === 'happy'")
    # bad values are ignored, the page still works
    page.goto(app_url + "?tab=nosuch&concept=<script>&layer=999&strength=nan&max_tokens=1000000000")
    page.wait_for_selector("#tab-tutorial, .tabs", state="attached")
    page.wait_for_timeout(2000)
    assert "Traceback" not in page.content()
    page.get_by_role("tab", name="Steering playground").click()
    page.wait_for_selector("#pg-generate", state="visible")
    assert _slider_value(page, "pg-layer") != "999"
    assert _slider_value(page, "pg-max-tokens") != "1000000000"
    page.close()


def test_empty_prompt_shows_a_message(browser, app_url, shots):
    page = _open(browser, app_url + "?tab=playground")
    page.locator("#pg-prompt textarea").fill("")
    page.click("#pg-generate")
    msg = page.get_by_text("Write a prompt first")
    msg.first.wait_for(timeout=60_000)
    assert msg.first.is_visible()
    assert "Traceback" not in page.content()
    page.wait_for_timeout(1000)  # let the toast finish fading in
    page.screenshot(path=str(shots / "empty_prompt_error.png"), full_page=False)
    page.close()
