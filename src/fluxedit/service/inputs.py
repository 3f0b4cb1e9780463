"""Turn each image reference of an input into a stored, checked file.

A reference is a data URI, an id or URL of this server's own files (resolved
internally, whatever the private-URL setting: this is how an output becomes
the next edit's input), or an http(s) URL fetched under the address rules.

A URL names this server when its host:port is one the request came in on, or
when it is a loopback address (127.0.0.1, localhost, ::1) on one of our ports:
such a URL is never fetched, so a wrong one answers "not found", not "refused".
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from ..imaging.decode import decode_image_async
from ..masks import Coverage, MaskRule, read_mask, refuse_empty
from ..schema import EditInput, InputError
from ..store.files import CONTENT_TYPES, FileStore
from ..store.models import StoredFile
from .access import is_loopback_host
from .data_uri import parse_data_uri
from .fetch import UrlPolicy, fetch_bytes, parse_http_url
from .keys import Caller
from .urls import stored_file_reference

FILE_ID = r"file_[A-Za-z0-9_-]{10,40}"
_BARE_ID = re.compile(rf"^{FILE_ID}$")
_OWN_PATH = re.compile(rf"^/(?:outputs/(?P<output>{FILE_ID})\.\w+|v1/files/(?P<upload>{FILE_ID})(?:/content)?)$")
_FILE_PATHS = ("/outputs/", "/v1/files/")


@dataclass(frozen=True)
class Reference:
    kind: str  # "file" (an id or /v1/files URL: the caller's own), "output" (an /outputs/ URL), "data" or "url"
    value: str


@dataclass(frozen=True)
class StoredMask:
    """A mask as it is kept: its greyscale form (masks.py) as a file, and how much of the picture it covers."""

    record: StoredFile
    coverage: Coverage

    @property
    def size(self) -> tuple[int, int]:
        return (self.record.width, self.record.height)


class InputResolver:
    def __init__(self, files: FileStore, policy: UrlPolicy):
        self.files = files
        self.policy = policy

    def classify(self, ref: str, field: str, own_hosts: set[str]) -> Reference:
        """Say what a reference is, refusing malformed ones now ("Invalid URL.")."""
        if ref.startswith("data:"):
            return Reference("data", ref)
        if _BARE_ID.match(ref):
            return Reference("file", ref)
        url = parse_http_url(ref, field)
        if not _names_this_server(url, own_hosts):
            return Reference("url", ref)
        own = _OWN_PATH.match(url.path)
        if own and own.group("output"):
            return Reference("output", own.group("output"))
        if own:
            return Reference("file", own.group("upload"))
        if url.path.startswith(_FILE_PATHS):
            raise InputError(field, f"{_cut(url.path)} not found: this server has no such file")
        raise InputError(
            field,
            f"is a URL of this server that names no image ({_cut(url.path)}): give a file id, "
            "a /v1/files/{id} URL or an /outputs/ URL",
        )

    async def store_now(self, ref: Reference, field: str, caller: Caller) -> StoredFile | None:
        """Resolve what needs no network (own files, data URIs); None for a URL to fetch later."""
        if ref.kind in ("file", "output"):
            return await self._own_file(ref, field, caller)
        if ref.kind == "data":
            return await self._store(parse_data_uri(ref.value, field, self.policy.max_bytes), field, caller, "data-uri")
        return None

    async def fetch_and_store(self, ref: Reference, field: str, caller: Caller) -> StoredFile:
        fetched = await fetch_bytes(ref.value, self.policy, field)
        name = urlsplit(fetched.final_url).path.rsplit("/", 1)[-1] or "download"
        return await self._store(fetched.data, field, caller, name)

    async def mask_now(self, ref: Reference, field: str, caller: Caller) -> StoredMask | None:
        """A mask that needs no network, read and stored in its greyscale form; None for a URL to fetch later.
        An empty one is refused here (InputError)."""
        if ref.kind in ("file", "output"):
            record = await self._own_file(ref, field, caller)
            data = await asyncio.to_thread(self.files.read, record.id)
        elif ref.kind == "data":
            data = parse_data_uri(ref.value, field, self.policy.max_bytes)
        else:
            return None
        return await self._store_mask(data, field, caller)

    async def fetch_mask(self, ref: Reference, field: str, caller: Caller) -> StoredMask:
        fetched = await fetch_bytes(ref.value, self.policy, field)
        return await self._store_mask(fetched.data, field, caller)

    async def _store_mask(self, data: bytes, field: str, caller: Caller) -> StoredMask:
        mask = refuse_empty(await asyncio.to_thread(read_mask, data, field, MaskRule.white), field)
        record = await asyncio.to_thread(
            self.files.put, mask.png, purpose="input", content_type=CONTENT_TYPES["png"], filename="mask.png",
            owner_key_id=caller.key_id, size=mask.size,
        )  # fmt: skip
        return StoredMask(record, mask.coverage)

    async def _own_file(self, ref: Reference, field: str, caller: Caller) -> StoredFile:
        record = self.files.get(ref.value)
        mine = record is not None and record.owner_key_id == caller.key_id
        # An /outputs/ URL needs no key (its random id is the capability): another key's output can be used
        # too, as a copy of the caller's own. A file id or /v1/files URL is private to its key.
        shared_output = record is not None and ref.kind == "output" and record.purpose == "output"
        if not (mine or shared_output):
            raise InputError(field, f"{ref.value} not found: it is not a file of yours on this server")
        if not await asyncio.to_thread(self.files.has_bytes, record.id):
            raise InputError(field, f"{ref.value} not found: its data was removed from this server")
        if mine:
            return record
        data = await asyncio.to_thread(self.files.read, record.id)
        return await asyncio.to_thread(
            self.files.put,
            data,
            purpose="input",
            content_type=record.content_type,
            filename=record.filename,
            owner_key_id=caller.key_id,
            size=(record.width, record.height) if record.width and record.height else None,
        )

    async def _store(self, data: bytes, field: str, caller: Caller, filename: str) -> StoredFile:
        decoded = await decode_image_async(data, field)  # off the loop, within the decode budget
        return await asyncio.to_thread(
            self.files.put,
            data,
            purpose="input",
            content_type=CONTENT_TYPES[decoded.format.value],
            filename=filename,
            owner_key_id=caller.key_id,
            size=decoded.original_size,
        )


def stored_input(
    edit_input: EditInput,
    references: list[Reference],
    records: list[StoredFile | None],
    mask: tuple[Reference, StoredMask | None] | None = None,
) -> dict:
    """The input as a prediction keeps it: the validated fields the caller set (not the raw body), with each
    data URI replaced by a reference to the file it was stored as (the bytes are kept once, as that file;
    a mask's in its greyscale form)."""
    kept = edit_input.model_dump(mode="json", exclude_unset=True)
    if mask is not None and mask[0].kind == "data":
        kept["mask_url"] = stored_file_reference(mask[1].record.id)
    shown = [
        stored_file_reference(record.id) if ref.kind == "data" else ref_text
        for ref, record, ref_text in zip(
            references, records, [edit_input.image_url, *edit_input.image_urls], strict=True
        )
    ]
    kept["image_url"] = shown[0]
    if "image_urls" in kept:
        kept["image_urls"] = shown[1:]
    return kept


def _names_this_server(url: httpx.URL, own_hosts: set[str]) -> bool:
    port = url.port or _default_port(url.scheme)
    if f"{url.host}:{port}" in own_hosts:
        return True
    own_ports = {int(host.rpartition(":")[2]) for host in own_hosts if host.rpartition(":")[2].isdigit()}
    return port in own_ports and _is_loopback(url.host)


def _is_loopback(host: str) -> bool:
    """A destination that is this machine: a loopback name or address, or the unspecified address."""
    if is_loopback_host(host) or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


def _cut(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80
