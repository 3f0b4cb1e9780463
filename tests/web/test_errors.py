"""A run that fails says why in the output panel, and no message of an earlier state stays beside it."""

from __future__ import annotations

import pytest

from tests.service.server import Server
from tests.web.conftest import make_key, open_playground
from tests.web.steps import choose_file, expect, run_and_wait, set_steps

STARTING = "Starting…"
HOW_TO_START = "Choose an image, describe the change, press Run."


@pytest.fixture(scope="module")
def own_keyed_server(tmp_path_factory):
    """A keyed server of this module's own: the runs here stay out of the shared one's history."""
    data = tmp_path_factory.mktemp("web-errors") / "data"
    key = make_key(data, "errors")
    with Server(data) as running:
        running.key = key
        yield running


def expect_failure_shown(page, *parts: str) -> None:
    expect(page.locator("#status-pill")).to_have_text("Failed")
    message = page.locator("#placeholder-text")
    expect(message).to_be_visible()
    for part in parts:
        expect(message).to_contain_text(part)
    expect(message).not_to_contain_text(STARTING)
    expect(page.locator("#placeholder-hint")).to_be_hidden()  # "Choose an image…" is not what to do now
    expect(page.locator("#progress-box")).to_be_hidden()
    expect(page.locator("#run")).to_be_enabled()


def test_a_wrong_key_says_so_in_the_output_then_goes_once_a_good_key_is_saved(page, own_keyed_server, photo):
    page.goto(own_keyed_server.url + "/")
    page.evaluate("localStorage.setItem('fluxedit.apiKey', 'fxe_not_a_real_key')")
    open_playground(page, own_keyed_server)
    choose_file(page, photo)
    page.fill("#prompt", "Add snow on the mountain tops")
    set_steps(page, 2)
    page.click("#run")
    expect_failure_shown(page, "The run could not start", "the API key is not valid", "Set a valid API key")
    expect(page.locator("#key-toggle-label")).to_have_text("API key refused")  # not "API key set"

    page.fill("#api-key", own_keyed_server.key)
    page.click("#key-panel button[type=submit]")
    expect(page.locator("#placeholder-text")).to_have_text("Your edited image appears here.")  # no stale failure
    expect(page.locator("#status-pill")).to_be_hidden()
    expect(page.locator("#key-toggle-label")).to_have_text("API key set")
    run_and_wait(page)
    expect(page.locator("#placeholder")).to_be_hidden()
    expect(page.locator("#result-bar")).to_be_visible()


def test_a_refused_input_says_why_in_the_output_and_a_next_run_clears_it(page, server, photo):
    open_playground(page, server)
    page.fill("#image-url", "http://127.0.0.1:9/photo.png")  # the server does not fetch its own loopback
    page.click("#image-url-use")
    page.fill("#prompt", "Make it autumn")
    set_steps(page, 2)
    page.click("#run")
    expect_failure_shown(page, "The edit failed", "input.image_url", "loopback/private address")
    expect(page.locator("#run-error")).to_be_empty()  # said once, where the result would be

    choose_file(page, photo)
    page.click("#run")
    expect(page.locator("#placeholder-text")).to_have_text(f"{STARTING} a live preview appears after the first step.")
    expect(page.locator("#placeholder-hint")).to_be_hidden()
    expect(page.locator("#status-pill.success")).to_be_visible(timeout=120_000)
    expect(page.locator("#placeholder")).to_be_hidden()


def test_a_form_problem_goes_once_the_form_changes(page, server, photo):
    open_playground(page, server)
    choose_file(page, photo)
    page.click("#run")
    expect(page.locator("#run-error")).to_have_text("Write a prompt: what should change?")
    page.fill("#prompt", "Make it autumn")
    expect(page.locator("#run-error")).to_be_empty()
    expect(page.locator("#placeholder-hint")).to_have_text(HOW_TO_START)  # nothing ran: the empty panel as it was
