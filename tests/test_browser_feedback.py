"""What the page says about the user's own inputs, in a real browser (headless Chromium).

A typed value outside a slider's range is clamped by the page (max tokens 100000 -> 512,
strength 1e9 -> 1): a note next to the slider says which value is used. A failed run of the
explorer or the creator leaves its message next to the button that started it until the next run
(not only in a toast that fades).
"""

from __future__ import annotations

import pytest
from lab_server import open_page

pytestmark = [pytest.mark.browser, pytest.mark.real_model]

WAIT_MS = 240_000


def _type(page, elem_id: str, value: str) -> None:
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(value)
    box.press("Enter")


def test_clamped_slider_values_are_announced(running_lab, browser, shots):
    from playwright.sync_api import expect

    page = open_page(browser, running_lab + "?tab=playground&concept=happy&layer=12&max_tokens=8", "#pg-generate")
    page.wait_for_function("() => document.querySelector('#pg-max-tokens input[type=number]').value === '8'")
    _type(page, "pg-max-tokens", "100000")
    expect(page.locator("#pg-max-tokens .clamp-note")).to_contain_text("100000 is above the maximum")
    expect(page.locator("#pg-max-tokens .clamp-note")).to_contain_text("512 is used")
    _type(page, "pg-strength", "1e9")
    expect(page.locator("#pg-strength .clamp-note")).to_contain_text("1 is used")
    page.locator("#pg-prompt textarea").click()  # leaving the box: the page clamps the value
    assert page.locator("#pg-max-tokens input[type=number]").input_value() == "512"
    page.wait_for_timeout(1500)
    expect(page.locator("#pg-strength .clamp-note")).to_be_visible()  # still true: the note stays
    page.screenshot(path=str(shots / "clamp_notes.png"), full_page=False)
    _type(page, "pg-max-tokens", "8")  # an allowed value: its note goes
    expect(page.locator("#pg-max-tokens .clamp-note")).to_have_count(0)
    page.click("#pg-generate")
    page.wait_for_function("() => /token 8\\/8/.test(document.querySelector('#pg-status').innerText)", timeout=WAIT_MS)
    expect(page.locator("#pg-status .settings-line")).to_contain_text("@ 1 ")  # it ran with the value the note gave
    expect(page.locator("#pg-strength .clamp-note")).to_be_visible()
    # set to another value by the lab (a concept's recommended setting): the note no longer applies
    page.click("#pg-concept input")
    page.locator("[role=option][aria-label=sad]").click()
    page.wait_for_function("() => /recommended/.test(document.querySelector('#pg-strength').innerText)",
                           timeout=WAIT_MS)
    expect(page.locator("#pg-strength .clamp-note")).to_have_count(0, timeout=5_000)
    page.close()

    page = open_page(browser, running_lab + "?tab=sweeps", "#sw-run")
    _type(page, "sw-max-tokens", "100000")
    expect(page.locator("#sw-max-tokens .clamp-note")).to_contain_text("128 is used")
    page.close()


def test_errors_stay_next_to_their_button_until_the_next_run(running_lab, browser, shots):
    from playwright.sync_api import expect

    page = open_page(browser, running_lab + "?tab=explorer", "#ex-run")
    page.locator("#ex-prompt textarea").fill("")
    page.click("#ex-run")
    summary = page.locator("#ex-summary")
    expect(summary).to_contain_text("The exploration did not run", timeout=WAIT_MS)
    expect(summary).to_contain_text("Type a prompt")
    page.wait_for_timeout(7000)  # the toast has faded by now; the message has not
    expect(summary).to_contain_text("The exploration did not run")
    expect(summary.locator("[data-testid=status-tracker] .error")).to_be_hidden()  # no "Error" pill over the text
    page.screenshot(path=str(shots / "error_explorer.png"), full_page=False)
    page.locator("#ex-prompt textarea").fill("The capital of France is")
    page.click("#ex-run")
    expect(summary).to_contain_text("tokens ×", timeout=WAIT_MS)  # the next run replaces it
    expect(summary).not_to_contain_text("did not run")
    token_range = page.locator("#ex-token-range")
    token_range.locator("textarea, input").first.fill("a-b")
    token_range.locator("textarea, input").first.press("Enter")
    expect(token_range).to_contain_text("Not redrawn", timeout=WAIT_MS)  # under the box that caused it
    token_range.locator("textarea, input").first.fill("1-3")
    token_range.locator("textarea, input").first.press("Enter")
    expect(token_range).to_contain_text("showing tokens 1–3", timeout=WAIT_MS)

    page.get_by_role("tab", name="Concept creator").click()
    page.wait_for_selector("#cr-extract", state="visible")
    page.click("#cr-extract")  # no pairs yet
    status = page.locator("#cr-extract-status")
    expect(status).to_contain_text("The extraction did not run", timeout=WAIT_MS)
    page.click("#cr-save")
    saved = page.locator("#cr-save-status")
    expect(saved).to_contain_text("The concept was not saved", timeout=WAIT_MS)
    page.wait_for_timeout(7000)
    expect(status).to_contain_text("The extraction did not run")
    expect(saved).to_contain_text("The concept was not saved")
    page.locator("#cr-save-status").scroll_into_view_if_needed()
    page.screenshot(path=str(shots / "error_creator.png"), full_page=False)
    page.close()
