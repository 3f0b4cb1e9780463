"""Keyboard, screen readers and a phone-width screen."""

from __future__ import annotations

from tests.web.conftest import open_playground
from tests.web.steps import choose_file, expect, run_and_wait, set_steps

UNLABELLED_CONTROLS = """() => [...document.querySelectorAll('input, select, textarea, button')]
  .filter((control) => !control.closest('[hidden]') && control.getAttribute('aria-hidden') !== 'true')
  .filter((control) => {
    const named = control.labels?.length || control.getAttribute('aria-label')
      || control.getAttribute('aria-labelledby');
    return !named && !(control.tagName === 'BUTTON' && control.textContent.trim());
  })
  .map((control) => control.outerHTML.slice(0, 120))"""


def test_every_control_has_a_name_for_screen_readers(page, server):
    open_playground(page, server)
    page.click("#settings summary")
    page.click("#lora-add")
    assert page.evaluate(UNLABELLED_CONTROLS) == []
    assert page.get_attribute("#progress", "role") == "progressbar"
    assert page.get_attribute("#image-error", "role") == "alert"


def test_an_edit_with_the_keyboard(page, server, photo):
    open_playground(page, server)
    choose_file(page, photo)  # a file dialog is the system's, not the page's
    set_steps(page, 2)
    page.focus("#prompt")
    page.keyboard.type("Make the lake green")
    page.keyboard.press("Control+Enter")
    expect(page.locator("#status-pill.success")).to_be_visible(timeout=120_000)
    # From the result, Tab reaches its actions in order.
    page.focus("#view-result")
    page.keyboard.press("Tab")
    expect(page.locator("#view-compare")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("#compare")).to_have_class("compare comparing")
    page.keyboard.press("Tab")
    expect(page.locator("#download")).to_be_focused()
    page.keyboard.press("Tab")
    expect(page.locator("#edit-result")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("#prompt")).to_be_focused()


def test_the_page_fits_a_phone(browser, server, photo, tmp_path):
    context = browser.new_context(viewport={"width": 375, "height": 740}, device_scale_factor=2, has_touch=True)
    phone = context.new_page()
    try:
        open_playground(phone, server)
        choose_file(phone, photo)
        phone.fill("#prompt", "Make it spring")
        set_steps(phone, 2)
        assert phone.evaluate("document.documentElement.scrollWidth") <= 375
        run_and_wait(phone)
        assert phone.evaluate("document.documentElement.scrollWidth") <= 375
        box = phone.locator("#result-image").bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= 375
        phone.locator("#compare").scroll_into_view_if_needed()
        expect(phone.locator("#before-image")).to_be_hidden()
        phone.screenshot(path=str(tmp_path / "phone.png"))
    finally:
        context.close()
