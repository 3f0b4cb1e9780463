"""The playground: the web page at / and its assets under /web/. It calls only the public API."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

WEB_DIR = Path(__file__).resolve().parent.parent / "web"

# The page keeps an API key in local storage: allow scripts from this server only, so an injected
# script could not read it. Images may come from anywhere (a pasted URL, outputs on a public_url).
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob: http: https:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)


class RevalidatedFiles(StaticFiles):
    """Static files the browser revalidates each time (a 304 when unchanged): an upgrade never mixes versions."""

    def file_response(self, *args, **kwargs):
        response = super().file_response(*args, **kwargs)
        response.headers["Cache-Control"] = "no-cache"
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response


def mount_playground(app: FastAPI) -> None:
    app.mount("/web", RevalidatedFiles(directory=WEB_DIR), name="web")

    @app.get("/", include_in_schema=False)
    async def playground() -> FileResponse:
        headers = {
            "Cache-Control": "no-cache",  # a new version of the page shows up on the next load
            "Content-Security-Policy": CONTENT_SECURITY_POLICY,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "same-origin",
        }
        return FileResponse(WEB_DIR / "index.html", media_type="text/html", headers=headers)
