"""The service's LoRA files: registered by name or downloaded (service/lora_resolver.py resolves a
request's reference into one); each a checked safetensors file on disk.

Files are kept once per content hash (<sha256>.safetensors in the LoRA backend: data/loras/, or the loras/
prefix of an S3 store, store/objects_setup.py); each is written and checked in a local folder first. Downloads
are a cache: when they pass the size cap, the least recently used ones go. Registered files stay until deleted.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import struct
import tempfile
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from ..schema import InputError
from ..store.files import lora_key, lora_path
from ..store.models import LoraBlob, LoraName, LoraSource, utcnow
from ..store.objects import LocalFolderObjects, ObjectBackend
from .in_use import in_use
from .keys import Caller
from .quota import NOBODY

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
MAX_HEADER_BYTES = 100 * 1024 * 1024


def safetensors_keys(path: Path, field: str) -> list[str]:
    """The tensor names in a safetensors file, read from its header alone; refuse anything else (pickles)."""
    with path.open("rb") as stream:
        prefix = stream.read(8)
        if len(prefix) < 8:
            raise InputError(field, "is not a safetensors file (too short)")
        (length,) = struct.unpack("<Q", prefix)
        if length > MAX_HEADER_BYTES:
            raise InputError(field, "is not a safetensors file (its header is not valid)")
        try:
            header = json.loads(stream.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):  # deep nesting: not a header either
            raise InputError(
                field, "is not a safetensors file (pickled .ckpt/.pt/.bin files are never loaded)"
            ) from None
    if not isinstance(header, dict):
        raise InputError(field, "is not a safetensors file (its header is not valid)")
    return [key for key in header if key != "__metadata__"]


class LoraStore:
    def __init__(
        self,
        folder: Path,
        sessions: sessionmaker[Session],
        max_bytes: int,
        cache_bytes: int,
        quota=None,
        objects: ObjectBackend | None = None,
    ):
        """`folder`: where files are written and checked; `objects`: where they are kept (default: that folder)."""
        self.folder = folder
        self.objects: ObjectBackend = objects or LocalFolderObjects(folder)
        self.sessions = sessions
        self.max_bytes = max_bytes
        self.cache_bytes = cache_bytes
        self.quota = quota  # StorageQuota: a LoRA that does not fit is refused before it is kept
        folder.mkdir(parents=True, exist_ok=True)

    def path(self, sha256: str) -> Path:
        """Where a kept LoRA lies in the local folder (a local store's; tests look there)."""
        return lora_path(self.folder, sha256)

    def location(self, sha256: str) -> str:
        """Where a kept LoRA is, as a prediction's record shows it (a path, or an s3:// address)."""
        return self.objects.describe(lora_key(sha256))

    def has(self, sha256: str) -> bool:
        return self.objects.exists(lora_key(sha256))

    def add(self, temporary: Path, field: str, kept: bool, owner=NOBODY) -> tuple[str, int]:
        """Check a written file, move it under its content hash, record it; (sha256, size). `owner`: the key
        id it is registered for (its quota counts it), or NOBODY for a download into the shared cache."""
        size = temporary.stat().st_size
        if size > self.max_bytes:
            raise InputError(field, f"is larger than {self.max_bytes // 2**20} MB")
        keys = safetensors_keys(temporary, field)
        if not any("lora" in key or "processor" in key for key in keys):
            raise InputError(field, f"holds no LoRA weights (its {len(keys)} tensors have no lora_* names)")
        sha256 = file_digest(temporary)
        with self.sessions() as session:
            new_on_disk = 0 if session.get(LoraBlob, sha256) is not None else size
        with self.quota.room_for(owner, size, new_on_disk) if self.quota else contextlib.nullcontext():
            self.objects.put_file(lora_key(sha256), temporary)
            with self.sessions.begin() as session:
                blob = session.get(LoraBlob, sha256)
                if blob is None:
                    session.add(LoraBlob(sha256=sha256, size=size, kept=kept))
                else:
                    blob.kept = blob.kept or kept
                    blob.last_used_at = utcnow()
        if not kept:
            self.evict()
        return sha256, size

    def temporary(self) -> tuple[Path, object]:
        handle, name = tempfile.mkstemp(dir=self.folder, suffix=".partial")
        return Path(name), os.fdopen(handle, "wb")

    def touch(self, sha256: str) -> None:
        with self.sessions.begin() as session:
            blob = session.get(LoraBlob, sha256)
            if blob is not None:
                blob.last_used_at = utcnow()

    def evict(self) -> None:
        """Drop the least recently used downloads while the cache is over its size cap (never one that a queued
        or running prediction was resolved to: it would fail when it runs)."""
        with self.sessions.begin() as session:
            cached = list(session.scalars(select(LoraBlob).where(~LoraBlob.kept).order_by(LoraBlob.last_used_at)))
            total = sum(blob.size for blob in cached)
            needed = in_use(session).lora_digests
            for blob in cached:
                if total <= self.cache_bytes:
                    break
                if blob.sha256 in needed:
                    continue
                total -= blob.size
                session.query(LoraSource).filter(LoraSource.sha256 == blob.sha256).delete()
                session.delete(blob)
                self.objects.delete(lora_key(blob.sha256))

    # ---- registered names ------------------------------------------------------------------

    def release(self, sha256: str) -> None:
        """A blob stored for a name that was then refused: no longer kept unless a name holds it, so the cache's
        eviction (and the quota) treat it like any download."""
        with self.sessions.begin() as session:
            named = session.scalars(select(LoraName.id).where(LoraName.sha256 == sha256).limit(1)).first()
            blob = session.get(LoraBlob, sha256)
            if blob is not None and named is None:
                blob.kept = False
        self.evict()

    def register(self, caller: Caller, name: str, sha256: str, size: int) -> LoraName:
        if not NAME.match(name):
            raise InputError("name", "must be 1-100 letters, digits, '.', '_' or '-', starting with a letter or digit")
        with self.sessions.begin() as session:
            taken = session.scalars(
                select(LoraName).where(LoraName.owner_key_id == caller.key_id, LoraName.name == name)
            ).first()
            if taken is not None:
                raise InputError("name", f"a LoRA named {name!r} exists already; delete it first")
            record = LoraName(
                id="lora_" + secrets.token_hex(8), owner_key_id=caller.key_id, name=name, sha256=sha256, size=size
            )
            session.add(record)
        return record

    def names(self, caller: Caller) -> list[LoraName]:
        with self.sessions() as session:
            query = select(LoraName).where(LoraName.owner_key_id == caller.key_id).order_by(LoraName.name)
            return list(session.scalars(query))

    def find(self, caller: Caller, name_or_id: str) -> LoraName | None:
        with self.sessions() as session:
            return session.scalars(
                select(LoraName).where(
                    LoraName.owner_key_id == caller.key_id, (LoraName.name == name_or_id) | (LoraName.id == name_or_id)
                )
            ).first()

    def unregister(self, record: LoraName) -> None:
        with self.sessions.begin() as session:
            session.delete(session.get(LoraName, record.id))
            still_named = session.scalar(select(func.count()).where(LoraName.sha256 == record.sha256))
            if not still_named:  # the file stays as a cache entry until evicted
                session.get(LoraBlob, record.sha256).kept = False
        self.evict()

    # ---- downloads -----------------------------------------------------------------------

    def cached(self, source: str) -> str | None:
        with self.sessions() as session:
            record = session.get(LoraSource, source)
        if record is not None and self.has(record.sha256):
            return record.sha256
        return None

    def remember(self, source: str, sha256: str) -> None:
        with self.sessions.begin() as session:
            session.merge(LoraSource(source=source, sha256=sha256))


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
