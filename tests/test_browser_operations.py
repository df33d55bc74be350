"""The playground's operation fields in a real browser: a link sets them and the page keeps them in its URL,
and a sweep over another operation's parameter sends that operation to the playground."""

from __future__ import annotations

import pytest
from lab_server import open_page

pytestmark = [pytest.mark.browser, pytest.mark.real_model]

WAIT_MS = 240_000
BOX = "#{0} textarea, #{0} input"


def _value(page, elem_id: str) -> str:
    return page.locator(BOX.format(elem_id)).first.input_value()


def _param(url: str, key: str):
    from urllib.parse import parse_qs, urlparse

    return (parse_qs(urlparse(url).query).get(key) or [None])[0]


def _fields(page) -> tuple:
    return (_value(page, "pg-op"), _value(page, "pg-op-param"), _value(page, "pg-op-layers"),
            _value(page, "pg-condition"), _value(page, "pg-threshold"))


def test_operation_fields_round_trip_through_the_url(running_lab, browser, shots):
    page = open_page(browser, running_lab + "?tab=playground&concept=calm&op=rotate&op_param=20&op_layers=8-12"
                 "&condition=angry&threshold=0.5", "#pg-op")  # the advanced section opens to show them
    page.wait_for_function("() => document.querySelector('#pg-op-layers textarea, #pg-op-layers input').value === '8-12'")
    op, param, layers, condition, threshold = _fields(page)
    assert op.startswith("rotate") and param == "20" and layers == "8-12"
    assert condition.startswith("angry") and threshold == "0.5"
    assert "theta" in page.locator("#pg-op-param").inner_text()  # the parameter box names rotate's parameter
    box = page.locator(BOX.format("pg-op-param")).first
    box.fill("30")
    box.press("Enter")
    box.blur()
    page.wait_for_function("() => new URL(location.href).searchParams.get('op_param') === '30'")
    url = page.url
    assert (_param(url, "op"), _param(url, "op_layers"), _param(url, "condition"), _param(url, "threshold")) == \
        ("rotate", "8-12", "angry", "0.5")
    page.locator("#pg-op").scroll_into_view_if_needed()
    page.screenshot(path=str(shots / "operations_from_url.png"), full_page=False)
    page.goto(url)  # the bookmarked page comes back as it was
    page.wait_for_selector("#pg-op", state="visible")
    page.wait_for_function("() => document.querySelector('#pg-op-param textarea, #pg-op-param input').value === '30'")
    assert _fields(page)[0].startswith("rotate") and _fields(page)[3].startswith("angry")
    page.close()


def test_use_this_setting_sends_a_rotation_to_the_playground(running_lab, browser, shots):
    page = open_page(browser, running_lab + "?tab=sweeps&concept=happy&layers=12&strengths=15&max_tokens=4", "#sw-run")
    page.wait_for_function("() => document.querySelector('#sw-layers textarea, #sw-layers input').value === '12'")
    page.locator("#sw-op input").click()
    page.get_by_role("option", name="rotate (sweeps theta)").click()
    page.click("#sw-run")
    page.wait_for_selector("#sw-heatmap .main-svg", timeout=WAIT_MS)
    page.wait_for_function("() => /1 cell/.test(document.querySelector('#sw-summary').innerText)", timeout=WAIT_MS)
    page.click("#sw-use")
    page.wait_for_selector("#pg-op", state="visible")  # the playground, its operation fields shown
    page.wait_for_function("() => document.querySelector('#pg-op-param textarea, #pg-op-param input').value === '15'")
    assert _value(page, "pg-op").startswith("rotate")
    assert page.locator("#pg-layer input[type=number]").input_value() == "12"
    page.locator("#pg-op").scroll_into_view_if_needed()
    page.screenshot(path=str(shots / "operations_use_setting.png"), full_page=False)
    page.close()


def test_effect_map_in_logits_mode(running_lab, browser, shots):
    from playwright.sync_api import expect

    page = open_page(browser, running_lab + "?tab=playground&concept=happy&layer=12&strength=0.4&max_tokens=6",
                 "#pg-generate")
    page.wait_for_function("() => document.querySelector('#pg-max-tokens input[type=number]').value === '6'")
    page.get_by_text("Advanced: where, when and how to steer").click()
    page.get_by_text("contrast in logit space").click()
    page.click("#pg-generate")
    effects = page.locator("#pg-effects")
    expect(effects).to_contain_text("sampled from in logits mode", timeout=WAIT_MS)
    assert effects.locator(".tok").count() >= 1  # one shaded span per generated token
    assert "KL" in (effects.locator(".tok").first.get_attribute("title") or "")
    effects.scroll_into_view_if_needed()
    page.screenshot(path=str(shots / "effect_map_logits.png"), full_page=False)
    page.close()


def test_the_mixer_rotates_towards_a_mix(running_lab, browser, shots):
    from playwright.sync_api import expect

    page = open_page(browser, running_lab + "?tab=mixer", "#mx-generate")
    expect(page.locator("#mx-op-note")).to_contain_text("cap")  # why cap and clamp are not offered for a mix
    page.locator("#mx-op input").click()
    options = [o.inner_text() for o in page.get_by_role("option").all()]
    assert [o.replace("✓", "").strip().split(":")[0] for o in options] == ["add", "ablate", "rotate"], options
    page.get_by_role("option", name="rotate", exact=False).last.click()
    page.wait_for_function("() => /theta/.test(document.querySelector('#mx-op-param').innerText)")
    box = page.locator(BOX.format("mx-op-param")).first
    box.fill("20")
    box.blur()
    mt = page.locator("#mx-max-tokens input[type=number]")
    mt.fill("8")
    mt.press("Enter")
    page.click("#mx-generate")
    page.wait_for_function("() => /token 8\\/8/.test(document.querySelector('#mx-status').innerText)", timeout=WAIT_MS)
    expect(page.locator("#mx-status .settings-line")).to_contain_text("rotate")
    expect(page.locator("#mx-status .settings-line")).to_contain_text("happy")
    page.locator("#mx-op").scroll_into_view_if_needed()
    page.screenshot(path=str(shots / "mixer_rotate.png"), full_page=False)
    page.close()
