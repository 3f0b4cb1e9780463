"""File bytes in a local folder, their records in the database.

Ids are 128-bit random, so a file's URL is also a capability: outputs can be
shown in an <img> without a key, the way presigned object-store URLs work.

Inputs are content-addressed per key: the same bytes uploaded or sent again by
the same key give back the file stored the first time (same id), so sending one
image with every edit stores it once. Outputs are always new files.

A worker reads stored bytes by id, not by path (`LocalStoreReader` here; a reader of an object store
takes its place for workers on other machines), and checks them against the record it was given.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import threading
from collections.abc import Iterable
from contextlib import nullcontext, suppress
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from .models import StoredFile

CONTENT_TYPES = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp"}
EXTENSIONS = {v: k if k != "jpeg" else "jpg" for k, v in CONTENT_TYPES.items()}
INPUT_PURPOSES = ("upload", "input")  # images a key sent (as an upload, a data URI or a URL): stored once each


def new_file_id() -> str:
    return "file_" + secrets.token_urlsafe(16)


def file_path(folder: Path, file_id: str) -> Path:
    """Where a file's bytes lie in a local files folder (fanned out by the id's last two characters)."""
    return folder / file_id[-2:] / file_id


def lora_path(folder: Path, sha256: str) -> Path:
    """Where a LoRA's bytes lie in a local LoRA folder: one file per content hash."""
    return folder / f"{sha256}.safetensors"


class StoredBytesMismatch(OSError):
    """The bytes read for a file are not the ones its record describes (changed or damaged on disk)."""


@dataclass(frozen=True)
class LocalStoreReader:
    """How a worker on this machine gets the bytes a job names: input files by id, LoRAs by digest.
    Plain paths only, so it pickles into a worker process; it never touches the database."""

    files: Path
    loras: Path

    def read_file(self, file_id: str, *, size: int | None = None, sha256: str | None = None) -> bytes:
        data = file_path(self.files, file_id).read_bytes()  # a file that is gone raises FileNotFoundError
        if (size is not None and len(data) != size) or (sha256 and hashlib.sha256(data).hexdigest() != sha256):
            raise StoredBytesMismatch(f"the stored file {file_id} does not match its record (changed on disk)")
        return data

    def lora_path(self, digest: str) -> Path:
        return lora_path(self.loras, digest)


class FileStore:
    def __init__(self, folder: Path, sessions: sessionmaker[Session], quota=None):
        self.folder = folder
        self.sessions = sessions
        self.quota = quota  # service/quota.py's StorageQuota: new bytes are checked against it, or refused
        self._writing = threading.Lock()  # look-up and insert of a content-addressed file are one step
        folder.mkdir(parents=True, exist_ok=True)

    def path(self, file_id: str) -> Path:
        return file_path(self.folder, file_id)

    def put(
        self,
        data: bytes,
        *,
        purpose: str,
        content_type: str,
        filename: str,
        owner_key_id: str | None,
        size: tuple[int, int] | None = None,
    ) -> StoredFile:
        """Write the bytes (atomically: a crash never leaves half a file) and record them. An input the same
        key has stored before is not stored again: its first record is the answer."""
        sha256 = hashlib.sha256(data).hexdigest()
        if purpose in INPUT_PURPOSES:
            with self._writing:
                known = self._stored_input(owner_key_id, sha256)
                if known is not None:
                    if not self.path(known.id).is_file():  # its bytes went missing: these are the same bytes
                        self._write(known.id, data)
                    else:  # sent again now: retention counts from here (service/retention.py)
                        with suppress(OSError):
                            os.utime(self.path(known.id))
                    return known
                return self._new(data, sha256, purpose, content_type, filename, owner_key_id, size)
        return self._new(data, sha256, purpose, content_type, filename, owner_key_id, size)

    def _stored_input(self, owner_key_id: str | None, sha256: str) -> StoredFile | None:
        owned = StoredFile.owner_key_id.is_(None) if owner_key_id is None else StoredFile.owner_key_id == owner_key_id
        query = select(StoredFile).where(owned, StoredFile.sha256 == sha256, StoredFile.purpose.in_(INPUT_PURPOSES))
        with self.sessions() as session:
            return session.scalars(query.order_by(StoredFile.created_at).limit(1)).first()

    def _new(
        self,
        data: bytes,
        sha256: str,
        purpose: str,
        content_type: str,
        filename: str,
        owner_key_id: str | None,
        size: tuple[int, int] | None,
    ) -> StoredFile:
        record = StoredFile(
            id=new_file_id(),
            owner_key_id=owner_key_id,
            purpose=purpose,
            filename=filename[:255],
            content_type=content_type,
            size=len(data),
            sha256=sha256,
            width=size[0] if size else None,
            height=size[1] if size else None,
        )
        with self.quota.room_for(owner_key_id, len(data)) if self.quota else nullcontext():
            self._write(record.id, data)
            with self.sessions.begin() as session:
                session.add(record)
        return record

    def _write(self, file_id: str, data: bytes) -> None:
        target = self.path(file_id)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".partial")
        partial.write_bytes(data)
        os.replace(partial, target)

    def get(self, file_id: str) -> StoredFile | None:
        with self.sessions() as session:
            return session.get(StoredFile, file_id)

    def present(self, file_ids: Iterable[str | None]) -> dict[str, StoredFile]:
        """The records of those files whose bytes are still here (one query): what a view can still show."""
        wanted = {file_id for file_id in file_ids if file_id}
        if not wanted:
            return {}
        with self.sessions() as session:
            records = session.scalars(select(StoredFile).where(StoredFile.id.in_(wanted)))
            return {record.id: record for record in records if self.path(record.id).is_file()}

    def read(self, file_id: str) -> bytes:
        return self.path(file_id).read_bytes()

    def delete(self, file_id: str) -> None:
        with self.sessions.begin() as session:
            record = session.get(StoredFile, file_id)
            if record is not None:
                session.delete(record)
        self.path(file_id).unlink(missing_ok=True)
