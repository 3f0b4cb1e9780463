"""/docs and /redoc work on a machine without internet: their scripts and styles come from this server.

A real headless Chromium loads each page from a real `fluxedit serve` with every request to another host
aborted, as on an offline machine, and must show the API's operations. It lives beside the other browser
tests on purpose: the session's Playwright (tests/web/conftest.py) keeps an event loop running in the main
thread, so the in-process asyncio tests of other folders must run before it starts.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from tests.service.server import Server

OPERATIONS = ["/v1/prediction", "/v1/files", "/v1/models/{owner}/{name}/predictions", "/v1/images/edits"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with Server(tmp_path_factory.mktemp("docs") / "data") as running:
        yield running


@pytest.fixture
def offline_page(browser):
    """A page whose requests beyond 127.0.0.1 are cut off, and the list of those it tried."""
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(30_000)
    blocked: list[str] = []

    def route(request_route):
        url = request_route.request.url
        if urlsplit(url).hostname == "127.0.0.1":
            request_route.continue_()
        else:
            blocked.append(url)
            request_route.abort("internetdisconnected")

    page.route("**/*", route)
    page.blocked = blocked
    yield page
    context.close()


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
def test_the_api_reference_shows_its_operations_offline(offline_page, server, path):
    offline_page.goto(server.url + path)
    for operation in OPERATIONS:
        offline_page.get_by_text(operation, exact=True).first.wait_for(state="attached")
    assert offline_page.blocked == [], f"{path} asked for files from other hosts: {offline_page.blocked}"
