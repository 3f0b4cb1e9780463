"""Turning each `loras[i].path` of an input into a LoRA the worker can load: a registered name, an https URL,
a Hugging Face reference or a file in a folder the operator allows. Downloads land in the LoraStore.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

from ..schema import InputDownloadError, InputError
from .fetch import UrlPolicy, fetch_to_file, parse_http_url
from .keys import Caller
from .loras import LoraStore, file_digest, safetensors_keys

HUB_REF = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)(?:/(?P<file>[\w./-]+\.safetensors))?$")
DIGEST_CACHE_SIZE = 256


@dataclass(frozen=True)
class ResolvedLora:
    path: str
    sha256: str
    scale: float
    field: str
    in_store: bool = False  # kept in the LoRA store under its digest (a worker anywhere can get it by that)

    def as_job(self) -> dict:
        job = {"path": self.path, "digest": self.sha256, "scale": self.scale, "field": self.field}
        return job | {"in_store": self.in_store}


class LoraResolver:
    """Turns each `loras[i].path` of an input into a checked local file."""

    def __init__(self, store: LoraStore, policy: UrlPolicy, allowed_dirs: list[Path], hub_token: str | None):
        self.store = store
        self.policy = UrlPolicy(
            allow_private=policy.allow_private,
            allowed_networks=policy.allowed_networks,
            max_bytes=store.max_bytes,
            timeout_s=600.0,  # LoRAs are large; the address rules are the same as for images
            max_redirects=policy.max_redirects,
        )
        self.allowed_dirs = [d.resolve() for d in allowed_dirs]
        self.hub_token = hub_token
        self._digests: dict[tuple, str] = {}  # (path, size, mtime) of a folder LoRA -> its sha256: hashed once
        self._digests_lock = threading.Lock()

    def kind(self, ref: str, field: str, caller: Caller) -> str:
        """What a reference names (checked when the prediction is created): name, url, path or hub."""
        if self.store.find(caller, ref) is not None:
            return "name"
        if ref.startswith(("http://", "https://")):
            parse_http_url(ref, field)
            return "url"
        if ref.startswith(("/", "~")):
            return "path"
        if HUB_REF.match(ref):
            return "hub"
        raise InputError(
            field,
            f"{ref!r} is not a LoRA name of yours, an https URL, a Hugging Face reference (owner/repo or "
            "owner/repo/file.safetensors) or an allowed server path",
        )

    async def resolve(self, ref: str, scale: float, field: str, caller: Caller) -> ResolvedLora:
        kind = self.kind(ref, field, caller)
        if kind == "path":
            return await asyncio.to_thread(self._local, ref, scale, field)  # hashing up to 2 GB: off the loop
        if kind == "name":
            sha256 = self.store.find(caller, ref).sha256
        elif kind == "url":
            sha256 = await self._download(ref, field)
        else:
            sha256 = await self._from_hub(ref, field)
        self.store.touch(sha256)
        return ResolvedLora(self.store.location(sha256), sha256, scale, field, in_store=True)

    async def _download(self, url: str, field: str) -> str:
        sha256 = self.store.cached(url)
        if sha256 is not None:
            return sha256
        temporary, sink = self.store.temporary()
        try:
            with sink:
                await fetch_to_file(url, self.policy, field, sink)
            sha256, _ = await asyncio.to_thread(self.store.add, temporary, field, False)
        finally:
            temporary.unlink(missing_ok=True)
        self.store.remember(url, sha256)
        return sha256

    def _local(self, ref: str, scale: float, field: str) -> ResolvedLora:
        """A file in an allowed folder, checked and hashed (in a thread: it reads the whole file)."""
        path = Path(ref).expanduser().resolve()
        if not any(path.is_relative_to(folder) for folder in self.allowed_dirs):
            allowed = ", ".join(str(d) for d in self.allowed_dirs) or "none (set --lora-dir)"
            raise InputError(field, f"server paths are allowed only inside the LoRA folders ({allowed})")
        if not path.is_file():
            raise InputError(field, f"{ref} does not exist on the server")
        stat = path.stat()
        if stat.st_size > self.store.max_bytes:
            raise InputError(field, f"is larger than {self.store.max_bytes // 2**20} MB")
        safetensors_keys(path, field)
        version = (str(path), stat.st_size, stat.st_mtime_ns)  # a changed file is hashed again
        digest = self._digests.get(version)
        if digest is None:
            digest = file_digest(path)
            with self._digests_lock:
                if len(self._digests) >= DIGEST_CACHE_SIZE:
                    self._digests.pop(next(iter(self._digests)))
                self._digests[version] = digest
        return ResolvedLora(str(path), digest, scale, field)

    async def _from_hub(self, ref: str, field: str) -> str:
        source = f"hf://{ref}"
        sha256 = self.store.cached(source)
        if sha256 is not None:
            return sha256
        match = HUB_REF.match(ref)
        path = await asyncio.to_thread(
            download_hub_lora, match.group("repo"), match.group("file"), self.hub_token, field
        )
        temporary, sink = self.store.temporary()
        try:
            await asyncio.to_thread(_copy_into, path, sink)  # up to 2 GB: off the loop
            sha256, _ = await asyncio.to_thread(self.store.add, temporary, field, False)
        finally:
            temporary.unlink(missing_ok=True)
        self.store.remember(source, sha256)
        return sha256


def download_hub_lora(repo: str, filename: str | None, token: str | None, field: str) -> Path:
    """A LoRA file from the Hugging Face hub (its own cache); without a file name, the repo's only .safetensors."""
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        if filename is None:
            files = [f for f in HfApi(token=token).list_repo_files(repo) if f.endswith(".safetensors")]
            if len(files) != 1:
                raise InputError(field, f"{repo} holds {len(files)} .safetensors files: name one (owner/repo/file)")
            filename = files[0]
        return Path(hf_hub_download(repo, filename, token=token))
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError, ValueError) as error:
        raise InputDownloadError(field, f"could not download {repo}/{filename or ''} from the hub ({error})") from None


def _copy_into(path: Path, sink) -> None:
    with sink, path.open("rb") as source_file:
        shutil.copyfileobj(source_file, sink, 1 << 20)
