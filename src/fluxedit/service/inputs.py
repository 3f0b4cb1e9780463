"""Turn each image reference of an input into a stored, checked file.

A reference is a data URI, an id or URL of this server's own files (resolved
internally, whatever the private-URL setting: this is how an output becomes
the next edit's input), or an http(s) URL fetched under the address rules.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from ..imaging.decode import decode_image
from ..schema import InputError
from ..store.files import CONTENT_TYPES, FileStore
from ..store.models import StoredFile
from .fetch import UrlPolicy, fetch_bytes, parse_data_uri, parse_http_url
from .keys import Caller

FILE_ID = r"file_[A-Za-z0-9_-]{10,40}"
_BARE_ID = re.compile(rf"^{FILE_ID}$")
_OWN_PATH = re.compile(rf"^/(?:outputs/(?P<output>{FILE_ID})\.\w+|v1/files/(?P<upload>{FILE_ID})(?:/content)?)$")


@dataclass(frozen=True)
class Reference:
    kind: str  # "file", "data" or "url"
    value: str


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
        own = _OWN_PATH.match(urlsplit(ref).path)
        if own and f"{url.host}:{url.port or _default_port(url.scheme)}" in own_hosts:
            return Reference("file", own.group("output") or own.group("upload"))
        return Reference("url", ref)

    async def store_now(self, ref: Reference, field: str, caller: Caller) -> StoredFile | None:
        """Resolve what needs no network (own files, data URIs); None for a URL to fetch later."""
        if ref.kind == "file":
            record = self.files.get(ref.value)
            if record is None or record.owner_key_id != caller.key_id:
                raise InputError(field, f"{ref.value} is not a file of yours on this server")
            return record
        if ref.kind == "data":
            return await self._store(parse_data_uri(ref.value, field, self.policy.max_bytes), field, caller, "data-uri")
        return None

    async def fetch_and_store(self, ref: Reference, field: str, caller: Caller) -> StoredFile:
        fetched = await fetch_bytes(ref.value, self.policy, field)
        name = urlsplit(fetched.final_url).path.rsplit("/", 1)[-1] or "download"
        return await self._store(fetched.data, field, caller, name)

    async def _store(self, data: bytes, field: str, caller: Caller, filename: str) -> StoredFile:
        decoded = await asyncio.to_thread(decode_image, data, field)
        return await asyncio.to_thread(
            self.files.put,
            data,
            purpose="input",
            content_type=CONTENT_TYPES[decoded.format.value],
            filename=filename,
            owner_key_id=caller.key_id,
            size=decoded.image.size,
        )


def _default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80
