"""A server that requires keys: the page asks for one, keeps it, and never puts it in a URL."""

from __future__ import annotations

from tests.web.conftest import open_playground
from tests.web.steps import choose_file, expect, run_and_wait, set_steps


def test_the_page_asks_for_a_key_then_edits_with_it(page, keyed_server, photo):
    urls: list[str] = []
    page.on("request", lambda request: urls.append(request.url))
    open_playground(page, keyed_server)
    expect(page.locator("#key-panel")).to_be_visible()
    expect(page.locator("#key-message")).to_contain_text("This server needs an API key")
    expect(page.locator("#api-key")).to_be_focused()
    expect(page.locator("#history-note")).to_have_text("Enter an API key to see your predictions.")

    page.fill("#api-key", "fxe_not_a_real_key")
    page.click("#key-panel button[type=submit]")
    expect(page.locator("#key-error")).to_contain_text("The server refused this key")

    page.fill("#api-key", keyed_server.key)
    page.click("#key-panel button[type=submit]")
    expect(page.locator("#key-panel")).to_be_hidden()
    expect(page.locator("#key-toggle-label")).to_have_text("API key set")
    expect(page.locator("#history-note")).to_have_text("No predictions yet: your runs will be listed here.")

    choose_file(page, photo)
    page.fill("#prompt", "Add snow on the mountain tops")
    set_steps(page, 2)
    run_and_wait(page)  # upload, create, stream: every call with the key in its header
    expect(page.locator("#history-list li")).to_have_count(1)
    curl = page.text_content("#code-curl")
    assert "Authorization: Bearer $FLUXEDIT_API_KEY" in curl and keyed_server.key not in curl

    page.reload()
    page.wait_for_selector("body[data-ready=true]")
    expect(page.locator("#key-panel")).to_be_hidden()  # kept in local storage
    assert page.evaluate("localStorage.getItem('fluxedit.apiKey')") == keyed_server.key
    expect(page.locator("#history-list li")).to_have_count(1)
    assert not [url for url in urls if keyed_server.key in url]


def test_forgetting_the_key_asks_again(page, keyed_server):
    page.goto(keyed_server.url + "/")
    page.evaluate("(key) => localStorage.setItem('fluxedit.apiKey', key)", keyed_server.key)
    open_playground(page, keyed_server)
    expect(page.locator("#key-panel")).to_be_hidden()
    page.click("#key-toggle")
    page.click("#key-forget")
    expect(page.locator("#key-panel")).to_be_visible()
    expect(page.locator("#history-note")).to_have_text("Enter an API key to see your predictions.")
    assert page.evaluate("localStorage.getItem('fluxedit.apiKey')") is None
