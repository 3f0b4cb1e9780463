"""What a person does on the playground, as small steps the browser tests share."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

# Without the playwright package the browser tests skip (CI, with FLUXEDIT_REQUIRE_BROWSER set, fails instead).
if not os.environ.get("FLUXEDIT_REQUIRE_BROWSER"):
    pytest.importorskip("playwright.sync_api", reason="the browser tests need playwright: make install-test")
from playwright.sync_api import Page, expect

__all__ = ["expect"]

RUN_TIMEOUT_MS = 120_000


def choose_file(page: Page, path: Path) -> None:
    page.set_input_files("#image-file", str(path))
    expect(page.locator("#chosen")).to_be_visible()


def open_settings(page: Page) -> None:
    if page.get_attribute("#settings", "open") is None:
        page.click("#settings summary")


def set_steps(page: Page, steps: int) -> None:
    open_settings(page)
    page.fill("#set-num_inference_steps", str(steps))


def record_progress(page: Page) -> None:
    """Keep every progress text and bar value the page shows, however briefly."""
    page.evaluate(
        """() => {
          window.progressSeen = [];
          const note = () => window.progressSeen.push([
            document.getElementById('progress-text').textContent,
            document.getElementById('progress').getAttribute('aria-valuenow')]);
          new MutationObserver(note).observe(document.getElementById('progress-box'),
            {subtree: true, childList: true, characterData: true, attributes: true});
        }"""
    )


def progress_seen(page: Page) -> list[tuple[str, int]]:
    return [(text, int(value)) for text, value in page.evaluate("window.progressSeen")]


def run_and_wait(page: Page, status: str = "success") -> None:
    page.click("#run")
    expect(page.locator(f"#status-pill.{status}")).to_be_visible(timeout=RUN_TIMEOUT_MS)
    expect(page.locator("#run")).to_be_enabled()


def wait_until(page: Page, condition: str, timeout: float = 60) -> None:
    """Poll a JavaScript condition. (wait_for_function would eval() it in the page, which its CSP forbids.)"""
    deadline = time.monotonic() + timeout
    while not page.evaluate(f"() => Boolean({condition})"):
        if time.monotonic() > deadline:
            raise TimeoutError(f"still false after {timeout} s: {condition}")
        time.sleep(0.05)


def result_url(page: Page) -> str:
    wait_until(page, "document.getElementById('result-image').naturalWidth > 0")
    return page.get_attribute("#result-image", "src")
