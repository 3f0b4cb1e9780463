"""The playground under a real headless Chromium (Debian's package, driven by Playwright) against a real
`fluxedit serve --model tiny` on 127.0.0.1."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.service.server import FLUXEDIT, Server
from tests.web.pictures import encode, landscape

# Without the background-networking flags, the closed network floods Chromium with refused connections.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DESKTOP = {"width": 1360, "height": 1000}


def chromium_path() -> str | None:
    return os.environ.get("FLUXEDIT_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="session")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    executable = chromium_path()
    if sync_playwright is None or executable is None:
        missing = "the playwright package" if sync_playwright is None else "Debian's chromium"
        if os.environ.get("FLUXEDIT_REQUIRE_BROWSER"):
            pytest.fail(f"browser tests need {missing} (make install-test installs both)")
        pytest.skip(f"browser tests need {missing}: run `make install-test` as root")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    with Server(tmp_path_factory.mktemp("web") / "data") as running:
        yield running


@pytest.fixture(scope="session")
def keyed_server(tmp_path_factory):
    data = tmp_path_factory.mktemp("web-keys") / "data"
    key = make_key(data, "playground")
    with Server(data) as running:
        running.key = key
        yield running


def make_key(data_dir: Path, name: str) -> str:
    result = subprocess.run(
        [FLUXEDIT, "keys", "create", name, "--data-dir", str(data_dir)], capture_output=True, text=True, check=True
    )
    return result.stdout.strip().splitlines()[-1]


@pytest.fixture
def page(browser, request):
    """A fresh browser context (its own local storage) per test; an uncaught page error fails the test."""
    context = browser.new_context(viewport=DESKTOP, accept_downloads=True)
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    opened.set_default_timeout(30_000)
    yield opened
    context.close()
    assert not errors, f"uncaught errors in the page: {errors}"


def open_playground(page, server) -> None:
    page.goto(server.url + "/")
    page.wait_for_selector("body[data-ready=true]")


@pytest.fixture(scope="session")
def photo(tmp_path_factory) -> Path:
    """An 800x600 PNG landscape on disk, as a user would pick it."""
    path = tmp_path_factory.mktemp("pictures") / "lake.png"
    path.write_bytes(encode(landscape()))
    return path
