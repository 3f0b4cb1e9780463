"""A Python client for a fluxedit server's HTTP API (the seed dialect).

It speaks plain HTTP with httpx, so it never loads torch or the engine: it can
run on any machine that reaches the server.

    with Client("http://127.0.0.1:8000") as client:
        (image,) = client.edit("photo.jpg", "make it a watercolour", num_inference_steps=28)
        image.save("watercolour.png")
        # only where mask.png is white, at the photo's own size
        (image,) = client.edit("photo.jpg", "a red scarf", mask="mask.png", output_resolution="input")
"""

from __future__ import annotations

import io
import json
import os
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

import httpx
from PIL import Image

from . import __version__
from .imaging.encode import read_metadata  # PIL only, no torch
from .schema import FluxeditError

__all__ = [
    "ApiError",
    "Client",
    "EditedImage",
    "FluxeditError",
    "PredictionCancelled",
    "PredictionFailed",
    "WaitTimeout",
]

DEFAULT_BASE_URL = "http://127.0.0.1:8000"
MODEL = "flux-kontext-dev"
TERMINAL = frozenset({"success", "error", "cancelled"})
MAX_WAIT_SLICE_S = 60.0  # the server holds a long-poll at most this long
MAX_PAGE = 100  # the server's largest list page
MIN_POLL_INTERVAL_S = 0.5  # guards against a tight loop should a long-poll come back early
STREAM_READ_TIMEOUT_S = 60.0  # the server sends a keep-alive every 15 s, so a silent minute means trouble
MAX_RETRY_AFTER_S = 60.0  # a 429 asking to wait longer than this is raised at once rather than slept through
# Strings the server resolves itself: URLs, data URIs and ids of its own files.
_REMOTE = re.compile(r"^(?:https?://|data:|file_[A-Za-z0-9_-]{10,40}$)", re.IGNORECASE)

ImageLike = str | os.PathLike | bytes | bytearray | memoryview | Image.Image | IO[bytes]


# ---- errors ------------------------------------------------------------------------------------


class ApiError(FluxeditError):
    """The server refused a request (4xx) or failed at it (5xx); `message` is its explanation."""

    def __init__(self, status_code: int, message: str, retry_after: float | None = None):
        self.status_code = status_code
        self.message = message
        self.retry_after = retry_after  # seconds, when the server said (429: a rate limit or a full queue)
        super().__init__(f"{status_code}: {message}")


class PredictionFailed(FluxeditError):
    """A prediction ended with status "error"; the code says which kind (e.g. INPUT_DOWNLOAD_ERROR)."""

    def __init__(self, prediction: dict):
        self.prediction = prediction
        detail = prediction.get("output") if isinstance(prediction.get("output"), dict) else {}
        self.error_code: str = detail.get("error_code") or "UNKNOWN"
        self.error_message: str = detail.get("error_message") or ""
        super().__init__(f"prediction {prediction.get('id')} failed: {self.error_code}: {self.error_message}")


class PredictionCancelled(FluxeditError):
    """A prediction was cancelled before it produced its images."""

    def __init__(self, prediction: dict):
        self.prediction = prediction
        super().__init__(f"prediction {prediction.get('id')} was cancelled")


class WaitTimeout(FluxeditError, TimeoutError):
    """`Client.wait` gave up before the prediction ended (the prediction itself goes on)."""

    def __init__(self, prediction: dict, timeout: float):
        self.prediction = prediction
        super().__init__(f"prediction {prediction.get('id')} still {prediction.get('status')} after {timeout:g} s")


# ---- results -----------------------------------------------------------------------------------


@dataclass
class EditedImage:
    """One output image, downloaded."""

    url: str
    data: bytes = field(repr=False)
    content_type: str

    @property
    def filename(self) -> str:
        return httpx.URL(self.url).path.rsplit("/", 1)[-1]

    @property
    def metadata(self) -> dict | None:
        """The edit settings the server embedded (prompt, seed, steps, size...), or None."""
        return read_metadata(self.data)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the image; a directory gets the output's own file name. Returns the file's path."""
        target = Path(path)
        if target.is_dir():
            target = target / self.filename
        target.write_bytes(self.data)
        return target

    def to_pil(self) -> Image.Image:
        picture = Image.open(io.BytesIO(self.data))
        picture.load()  # decode now, while the bytes are at hand
        return picture


# ---- the client --------------------------------------------------------------------------------


class Client:
    """A fluxedit server. Keys and the address come from FLUXEDIT_API_KEY / FLUXEDIT_BASE_URL when not given."""

    def __init__(
        self, base_url: str | None = None, api_key: str | None = None, timeout: float = 120.0, max_retries: int = 3
    ):
        """`max_retries`: how often a request refused with 429 (rate limit, full queue) is sent again after the
        server's Retry-After; nothing was created by a refused request, so sending it again is safe."""
        self.base_url = (base_url or os.environ.get("FLUXEDIT_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        self.max_retries = max_retries
        self.api_key = api_key or os.environ.get("FLUXEDIT_API_KEY") or None
        self.timeout = timeout
        headers = {"User-Agent": f"fluxedit-python/{__version__}"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)

    # ---- files ---------------------------------------------------------------------------------

    def upload(self, image: ImageLike) -> dict:
        """Store a local image on the server (POST /v1/files); its `id` can be used as an image URL."""
        name, data = _image_bytes(image)
        return self._request("POST", "/v1/files", files={"file": (name, data)}).json()

    # ---- predictions ---------------------------------------------------------------------------

    def create(
        self,
        image: ImageLike,
        prompt: str,
        *,
        references: Iterable[ImageLike] = (),
        mask: ImageLike | None = None,
        webhook_url: str | None = None,
        webhook_secret: str | None = None,
        **input: Any,
    ) -> dict:
        """Queue an edit and return the prediction as it stands. Local images are uploaded first.

        `mask`: where the edit may change the image (white, or opaque where it has transparency), the image's
        size; a path, bytes, PIL image, file or URL like `image`. `strength` and `output_resolution` ("input":
        the result at the image's own size) go with the other inputs."""
        edit_input = self._edit_input(image, prompt, references, input)
        if mask is not None:
            edit_input["mask_url"] = self._image_ref(mask)
        body: dict[str, Any] = {"model": MODEL, "input": edit_input}
        if webhook_url is not None:
            body["webhook_url"] = webhook_url
        if webhook_secret is not None:
            body["webhook_secret"] = webhook_secret
        created = self._request("POST", "/v1/prediction", json=body).json()
        return self.get(created["predictionID"])

    def get(self, prediction_id: str, wait: float = 0) -> dict:
        """The prediction; with `wait`, the server holds the answer until it ends or `wait` s (60 at most) pass."""
        params = {"wait": wait} if wait > 0 else None
        # The read timeout must outlast the server's hold.
        timeout = self.timeout + min(wait, MAX_WAIT_SLICE_S)
        return self._request("GET", _prediction_path(prediction_id), params=params, timeout=timeout).json()

    def wait(self, prediction_id: str, timeout: float | None = None) -> dict:
        """Long-poll until the prediction ends (success, error or cancelled); WaitTimeout after `timeout` s."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = MAX_WAIT_SLICE_S if deadline is None else max(0.0, deadline - time.monotonic())
            asked = time.monotonic()
            prediction = self.get(prediction_id, wait=min(remaining, MAX_WAIT_SLICE_S))
            if prediction["status"] in TERMINAL:
                return prediction
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(prediction, timeout)
            time.sleep(max(0.0, MIN_POLL_INTERVAL_S - (time.monotonic() - asked)))

    def cancel(self, prediction_id: str) -> dict:
        """Cancel a queued or running prediction; an ended one is left as it is. Returns the prediction."""
        return self._request("POST", _prediction_path(prediction_id, "/cancel")).json()

    def list(self, limit: int = 20) -> Iterator[dict]:
        """All of this key's predictions, newest first, fetched `limit` per request (the server allows 100)."""
        params: dict[str, Any] = {"limit": min(limit, MAX_PAGE)}  # only the page size: clamping loses nothing
        while True:
            page = self._request("GET", "/v1/prediction", params=params).json()
            yield from page["data"]
            if not page.get("next_cursor"):
                return
            params["cursor"] = page["next_cursor"]

    def stream(self, prediction_id: str, previews: bool = False) -> Iterator[dict]:
        """Server-sent events as {"event": name, "data": {...}} until "done": status, progress, preview, output."""
        params = {"previews": "true"} if previews else None
        timeout = httpx.Timeout(self.timeout, read=max(self.timeout, STREAM_READ_TIMEOUT_S))
        path = _prediction_path(prediction_id, "/stream")
        with self._http.stream("GET", path, params=params, timeout=timeout) as response:
            if response.is_error:
                response.read()
                raise _api_error(response)
            for event in _sse_events(response.iter_lines()):
                yield event
                if event["event"] == "done":
                    return

    def edit(
        self,
        image: ImageLike,
        prompt: str,
        *,
        references: Iterable[ImageLike] = (),
        mask: ImageLike | None = None,
        **input: Any,
    ) -> list[EditedImage]:
        """Create, wait and download: the edited images. Raises PredictionFailed or PredictionCancelled.
        `mask`, `strength`, `output_resolution`: as for `create`."""
        prediction = self.wait(self.create(image, prompt, references=references, mask=mask, **input)["id"])
        return self.download(prediction)

    def download(self, prediction: dict) -> list[EditedImage]:
        """The output images of an ended prediction."""
        if prediction["status"] == "error":
            raise PredictionFailed(prediction)
        if prediction["status"] == "cancelled":
            raise PredictionCancelled(prediction)
        if prediction["status"] != "success":
            raise ValueError(f"prediction {prediction['id']} has not ended yet (status {prediction['status']})")
        return [self._download(url) for url in prediction["output"]]

    # ---- batches (docs/api.md, "Batches") -------------------------------------------------------

    def batch(
        self,
        images: Iterable[ImageLike | dict] | str | os.PathLike,
        prompt: str | None = None,
        *,
        webhook_url: str | None = None,
        webhook_secret: str | None = None,
        prediction_webhooks: bool = False,
        **input: Any,
    ) -> dict:
        """Queue one edit over many images; the batch view. `images`: paths, URLs, file ids, images, or dicts
        {"image", "prompt", "name"} (a prompt of its own); or the path of a .zip of images (uploaded whole).
        Local images are uploaded one at a time and named after their files."""
        template = {**({"prompt": prompt} if prompt is not None else {}), **input}
        hooks = {"webhook_url": webhook_url, "webhook_secret": webhook_secret}
        hooks = {key: value for key, value in hooks.items() if value is not None}
        if isinstance(images, str | os.PathLike) and str(images).lower().endswith(".zip"):
            form = {"input": json.dumps(template), "prediction_webhooks": str(prediction_webhooks).lower(), **hooks}
            with open(images, "rb") as data:
                files = {"data": (Path(images).name, data, "application/zip")}
                return self._request("POST", "/v1/batches", files=files, data=form).json()
        items = [self._batch_item(image) for image in images]
        body = {"input": template, "images": items, "prediction_webhooks": prediction_webhooks, **hooks}
        return self._request("POST", "/v1/batches", json=body).json()

    def get_batch(self, batch_id: str) -> dict:
        """The batch: counts by status, progress, cost so far, estimated_seconds_left, completed_at."""
        return self._request("GET", _batch_path(batch_id)).json()

    def wait_batch(self, batch_id: str, timeout: float | None = None, poll: float = 2.0) -> dict:
        """Poll until every prediction of the batch has ended; WaitTimeout after `timeout` s."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while (batch := self.get_batch(batch_id))["completed_at"] is None:
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(batch, timeout)
            time.sleep(poll)
        return batch

    def batch_items(self, batch_id: str, limit: int = 100) -> Iterator[dict]:
        """Every image of the batch in order: index, name, prediction_id, status, output, error, seed."""
        params: dict[str, Any] = {"limit": limit}
        while True:
            page = self._request("GET", _batch_path(batch_id, "/items"), params=params).json()
            yield from page["items"]
            if page.get("next") is None:
                return
            params["cursor"] = page["next"]

    def cancel_batch(self, batch_id: str) -> dict:
        """Cancel what of the batch has not ended (running predictions at their next step); the batch view."""
        return self._request("POST", _batch_path(batch_id, "/cancel")).json()

    def download_batch(self, batch_id: str, path: str | os.PathLike) -> Path:
        """Save results.zip (the outputs so far, named after their inputs, and manifest.csv) to `path`."""
        target = Path(path)
        partial = target.with_name(target.name + ".partial")
        with self._http.stream("GET", _batch_path(batch_id, "/results.zip")) as response:
            if response.is_error:
                response.read()
                raise _api_error(response)
            with partial.open("wb") as sink:
                for chunk in response.iter_bytes():
                    sink.write(chunk)
        partial.replace(target)
        return target

    def _batch_item(self, image: ImageLike | dict) -> str | dict:
        if isinstance(image, dict):
            return {**image, "image": self._image_ref(image["image"])}
        reference = self._image_ref(image)
        if isinstance(image, str | os.PathLike) and reference != image:
            return {"image": reference, "name": Path(image).name}  # results.zip names it after the file
        return reference

    # ---- plumbing ------------------------------------------------------------------------------

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client({self.base_url!r}, api_key={'set' if self.api_key else None})"

    def _edit_input(self, image: ImageLike, prompt: str, references: Iterable[ImageLike], extra: dict) -> dict:
        taken = {"prompt", "image_url", "image_urls", "mask_url"} & extra.keys()
        if taken:
            raise TypeError(f"pass {', '.join(sorted(taken))} as the image/prompt/references/mask arguments")
        if isinstance(references, str | bytes | os.PathLike | Image.Image) or hasattr(references, "read"):
            references = [references]  # one reference given bare: not a sequence of characters or lines
        refs = [self._image_ref(ref) for ref in references]
        edit_input = {"prompt": prompt, "image_url": self._image_ref(image), **extra}
        if refs:
            edit_input["image_urls"] = refs
        return edit_input

    def _image_ref(self, image: ImageLike) -> str:
        """What the server takes as an image URL: remote strings as they are, local images uploaded."""
        if isinstance(image, str) and _REMOTE.match(image):
            return image
        return self.upload(image)["id"]

    def _download(self, url: str) -> EditedImage:
        response = self._request("GET", url)
        content_type = response.headers.get("content-type", "application/octet-stream").split(";")[0]
        return EditedImage(url=url, data=response.content, content_type=content_type)

    def _request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        retries = 0
        while True:
            response = self._http.request(method, url, **kwargs)
            if not response.is_error:
                return response
            error = _api_error(response)
            wait = error.retry_after
            if error.status_code != 429 or wait is None or wait > MAX_RETRY_AFTER_S or retries >= self.max_retries:
                raise error
            time.sleep(wait)  # the server said when to come back (rate limit, full queue)
            retries += 1


def _prediction_path(prediction_id: str, action: str = "") -> str:
    return f"/v1/prediction/{quote(prediction_id, safe='')}{action}"  # an id is one path segment, whatever it holds


def _batch_path(batch_id: str, action: str = "") -> str:
    return f"/v1/batches/{quote(batch_id, safe='')}{action}"


def _api_error(response: httpx.Response) -> ApiError:
    """The server's {"error": ...} message; a proxy's page or an empty body falls back to the status text."""
    try:
        message = response.json()["error"]
    except (ValueError, KeyError, TypeError):
        message = response.text.strip()[:500] or response.reason_phrase
    retry = response.headers.get("retry-after")
    return ApiError(response.status_code, str(message), float(retry) if retry and retry.isdigit() else None)


def _image_bytes(image: ImageLike) -> tuple[str, bytes]:
    """(file name, encoded bytes) of a path, bytes, PIL image or binary file object."""
    if isinstance(image, Image.Image):
        buffer = io.BytesIO()
        image.save(buffer, "PNG")  # lossless: the server decodes it again anyway
        return "image.png", buffer.getvalue()
    if isinstance(image, bytes | bytearray | memoryview):
        return "upload", bytes(image)
    if isinstance(image, str | os.PathLike):
        path = Path(image)
        return path.name, path.read_bytes()
    if hasattr(image, "read"):
        data = image.read()
        if not isinstance(data, bytes):
            raise TypeError("a file object passed as an image must be opened in binary mode ('rb')")
        return Path(getattr(image, "name", "upload") or "upload").name, data
    raise TypeError(f"not an image: {type(image).__name__} (give a path, bytes, a PIL image or a binary file)")


def _sse_events(lines: Iterator[str]) -> Iterator[dict]:
    """Parse text/event-stream lines into {"event", "data"} dicts (data decoded as JSON)."""
    name, data = "message", []
    for line in lines:
        if not line:  # a blank line ends an event
            if data:
                yield {"event": name, "data": json.loads("\n".join(data))}
            name, data = "message", []
        elif line.startswith(":"):
            continue  # a keep-alive comment
        else:
            key, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if key == "event":
                name = value
            elif key == "data":
                data.append(value)
