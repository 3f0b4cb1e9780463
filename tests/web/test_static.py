"""The page and its assets are served by `fluxedit serve` itself, with no build step."""

from __future__ import annotations

import re

import httpx

from fluxedit.api.playground import WEB_DIR

IMPORT = re.compile(r'^import .* from "\./([\w-]+\.js)";$', re.MULTILINE)


def test_the_page_is_served_at_the_root(server):
    page = httpx.get(server.url + "/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert '<script type="module" src="/web/js/main.js">' in page.text
    for asset, kind in [("/web/js/main.js", "text/javascript"), ("/web/css/playground.css", "text/css")]:
        answer = httpx.get(server.url + asset)
        assert answer.status_code == 200 and answer.headers["content-type"].startswith(kind)
        assert answer.headers["cache-control"] == "no-cache"
    assert httpx.get(server.url + "/docs").status_code == 200  # the API's own pages are still there


def test_every_module_import_resolves():
    modules = sorted((WEB_DIR / "js").glob("*.js"))
    assert modules
    for module in modules:
        for name in IMPORT.findall(module.read_text()):
            assert (WEB_DIR / "js" / name).is_file(), f"{module.name} imports a missing {name}"
