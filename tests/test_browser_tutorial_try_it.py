"""Every tutorial "Try it", as a newcomer would do it: click it, press the tab's button, see a result, no error.

One test walks every step in order on one page (the real model, headless Chromium); screenshots of each
result go to tests/output/screenshots/tryit_*.png for a person to look at.
"""

from __future__ import annotations

import re

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.real_model]

WAIT_MS = 300_000  # the real model on 2 shared CPU cores


def _no_error(page) -> None:
    assert "Traceback" not in page.content()
    errors = page.locator(".toast-body.error")
    assert errors.count() == 0, errors.first.inner_text()


def _try(page, i: int) -> None:
    """Open the tutorial, open step i, press its Try it (the target tab opens at the top)."""
    page.get_by_role("tab", name="Tutorial").click()
    step = page.locator(f"#tutorial-step-{i}")
    button = page.locator(f"#tutorial-try-{i}")
    if not button.is_visible():
        step.get_by_text(re.compile(rf"^Step {i}\.")).click()
    button.click()
    page.wait_for_timeout(300)
    assert page.evaluate("() => window.scrollY") == 0  # the tab opens at its top, not on old results


def _shot(page, shots, name: str) -> None:
    page.wait_for_timeout(400)
    page.screenshot(path=str(shots / f"tryit_{name}.png"), full_page=True)


def _run_done(page, prefix: str) -> None:
    page.wait_for_function(
        """(p) => {
            const badge = document.querySelector(`#${p}-status .badge`);
            const toks = document.querySelectorAll(`#${p}-steered .tok`).length;
            return badge && toks > 0 && !/generating|preparing|ready|waiting|queue/.test(badge.textContent);
        }""", arg=prefix, timeout=WAIT_MS)


def test_every_try_it_runs_as_filled(running_lab, browser, shots):
    from playwright.sync_api import expect

    from app.ui.tabs.tutorial import STEPS

    assert len(STEPS) == 8, "a new tutorial step needs its Try it driven in this test"

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(60_000)
    page.goto(running_lab)
    expect(page.locator("#tutorial-step-1")).to_be_visible()
    # step 2's text carries the sink ratio measured on the loaded model, not a fixed guess
    page.locator("#tutorial-step-2").get_by_text(re.compile(r"^Step 2\.")).click()
    expect(page.locator("#tutorial-step-2")).to_contain_text(re.compile(r"\d+× longer than an average token"),
                                                             timeout=WAIT_MS)

    # 1-2: the explorer
    _try(page, 1)
    expect(page.locator("#ex-prompt textarea")).to_have_value("What is the capital of France?")
    page.locator("#ex-run").click()
    expect(page.locator("#ex-summary")).to_contain_text("logit lens first ranks it", timeout=WAIT_MS)
    # the step asks for the word "with or without its leading space": the summary names that layer too
    expect(page.locator("#ex-summary")).to_contain_text("the same word with other spacing")
    _no_error(page)
    _shot(page, shots, "1_explorer")
    _try(page, 2)
    expect(page.locator("#ex-summary")).not_to_contain_text("logit lens")  # the old result is gone
    page.locator("#ex-run").click()
    expect(page.locator("#ex-summary")).to_contain_text("Tokens point most toward", timeout=WAIT_MS)
    expect(page.locator("#ex-summary")).not_to_contain_text("charts show tokens")  # the whole message is drawn
    sink = re.search(r"(\d+)× longer", page.locator("#ex-summary").inner_text())
    assert sink and sink.group(1) in page.locator("#tutorial-step-2").inner_text()  # the tutorial's number
    _no_error(page)
    _shot(page, shots, "2_explorer_projection")

    # 3: the creator, then "Try it in the playground" with the concept's recommended setting
    _try(page, 3)
    expect(page.locator("#cr-pairs")).to_contain_text("dozed off on the train")
    page.locator("#cr-extract").click()
    expect(page.locator("#cr-quality-summary")).to_contain_text("Recommended layer", timeout=WAIT_MS)
    page.locator("#cr-overwrite input").check()
    page.locator("#cr-save").click()
    expect(page.locator("#cr-save-status")).to_contain_text("ready to steer", timeout=WAIT_MS)
    _no_error(page)
    _shot(page, shots, "3_creator")
    page.locator("#cr-use").click()
    expect(page.locator("#pg-layer")).to_contain_text("recommended for sleepy", timeout=WAIT_MS)
    expect(page.locator("#pg-strength")).to_contain_text("recommended strength")
    expect(page.locator("#pg-concept input")).to_have_value("sleepy")
    page.locator("#pg-concept input").click()
    expect(page.locator("[role=option][aria-label=sleepy]")).to_be_attached()  # the new concept is listed
    page.keyboard.press("Escape")

    # 4: the playground
    _try(page, 4)
    expect(page.locator("#pg-prompt textarea")).to_have_value(STEPS[3].fill["playground.prompt"])
    expect(page.locator("#pg-steered .tok")).to_have_count(0)  # no old answer under the new inputs
    page.locator("#pg-generate").click()
    _run_done(page, "pg")
    # the example's judge can see the change the reader sees (a neutral baseline, not one already at VADER's top)
    expect(page.locator("#pg-status")).to_contain_text("judge: steered moved it the right way")
    _no_error(page)
    _shot(page, shots, "4_playground")

    # 5-6: sweeps; the kind of sweep follows what was filled
    for i, kind, cells in ((5, "layer sweep", 7), (6, "strength sweep", 5)):
        _try(page, i)
        expect(page.locator(f"#sw-kind input[value='{kind}']")).to_be_checked()
        page.locator("#sw-run").click()
        expect(page.locator("#sw-summary")).to_contain_text(f"{cells} cells", timeout=WAIT_MS)
        expect(page.locator("#sw-heatmap .main-svg").first).to_be_visible()
        expect(page.locator("#sw-cell-text")).to_contain_text("Verdict:")
        expect(page.locator("#sw-summary")).to_contain_text("Recommended (★)")  # the example finds a setting
        _no_error(page)
        _shot(page, shots, f"{i}_sweep")

    # 7: beyond adding (rotate in the playground)
    _try(page, 7)
    expect(page.locator("#pg-steered .tok")).to_have_count(0)
    page.locator("#pg-generate").click()
    _run_done(page, "pg")
    _no_error(page)
    _shot(page, shots, "7_playground_rotate")
    # "then open Advanced, set Operation to add and then to ablate, and generate each time"
    page.locator("#pg-advanced").get_by_text(re.compile("^Advanced")).first.click()
    for op in ("add", "ablate"):
        page.locator("#pg-op input").click()
        page.get_by_role("option", name=re.compile(rf"^{op}:")).click()
        page.locator("#pg-generate").click()
        # "Where it applied" names the operation once the run is done (the table is written at its end)
        expect(page.locator("#pg-applied")).to_contain_text(re.compile(rf"L12\s*{op}"), timeout=WAIT_MS)
        _run_done(page, "pg")
        expect(page.locator("#pg-status")).to_contain_text(re.compile(rf"L12 ({op}|@)"))
        _no_error(page)
    _shot(page, shots, "7_playground_ablate")

    # 8: the mixer, and the one-click comparison with each concept alone
    _try(page, 8)
    expect(page.locator("#mx-text textarea, #mx-text input").first).to_have_value("happy:0.6, pirate:0.4")
    page.locator("#mx-generate").click()
    _run_done(page, "mx")
    _no_error(page)
    page.locator("#mx-alone").click()
    expect(page.locator("#mx-alone-out")).to_contain_text("pirate alone:", timeout=WAIT_MS)
    expect(page.locator("#mx-alone-out")).to_contain_text("happy alone:")
    _no_error(page)
    _shot(page, shots, "8_mixer")
    page.close()
