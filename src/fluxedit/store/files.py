"""File bytes in an object backend (a local folder, or S3: store/objects.py), their records in the database.

Ids are 128-bit random, so a file's URL is also a capability: outputs can be
shown in an <img> without a key, the way presigned object-store URLs work.

Inputs are content-addressed per key: the same bytes uploaded or sent again by
the same key give back the file stored the first time (same id), so sending one
image with every edit stores it once. Outputs are always new files.

A worker reads stored bytes by id, not by path (`LocalStoreReader` here; `S3StoreReader` in store/s3_reader.py
for a store on S3, on any machine), and checks them against the record it was given.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import nullcontext, suppress
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from .models import StoredFile
from .objects import LocalFolderObjects, ObjectBackend

CONTENT_TYPES = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp"}
EXTENSIONS = {v: k if k != "jpeg" else "jpg" for k, v in CONTENT_TYPES.items()}
INPUT_PURPOSES = ("upload", "input")  # images a key sent (as an upload, a data URI or a URL): stored once each


def new_file_id() -> str:
    return "file_" + secrets.token_urlsafe(16)


def file_key(file_id: str) -> str:
    """A file's key in the files backend: fanned out by the id's last two characters."""
    return f"{file_id[-2:]}/{file_id}"


def lora_key(sha256: str) -> str:
    """A LoRA's key in the LoRA backend: one object per content hash."""
    return f"{sha256}.safetensors"


def file_path(folder: Path, file_id: str) -> Path:
    """Where a file's bytes lie in a local files folder."""
    return folder / file_key(file_id)


def lora_path(folder: Path, sha256: str) -> Path:
    """Where a LoRA's bytes lie in a local LoRA folder."""
    return folder / lora_key(sha256)


class StoredBytesMismatch(OSError):
    """The bytes read for a file are not the ones its record describes (changed or damaged in the store)."""


def check_stored_bytes(file_id: str, data: bytes, size: int | None, sha256: str | None) -> bytes:
    """The bytes, when they match the record a job carries; StoredBytesMismatch naming the file otherwise."""
    if (size is not None and len(data) != size) or (sha256 and hashlib.sha256(data).hexdigest() != sha256):
        raise StoredBytesMismatch(f"the stored file {file_id} does not match its record (changed in the store)")
    return data


@dataclass(frozen=True)
class LocalStoreReader:
    """How a worker on this machine gets the bytes a job names: input files by id, LoRAs by digest.
    Plain paths only, so it pickles into a worker process; it never touches the database."""

    files: Path
    loras: Path

    def read_file(self, file_id: str, *, size: int | None = None, sha256: str | None = None) -> bytes:
        data = file_path(self.files, file_id).read_bytes()  # a file that is gone raises FileNotFoundError
        return check_stored_bytes(file_id, data, size, sha256)

    def lora_path(self, digest: str) -> Path:
        return lora_path(self.loras, digest)


class FileStore:
    def __init__(self, where: Path | ObjectBackend, sessions: sessionmaker[Session], quota=None):
        """`where`: a local folder, or an object backend (S3: store/s3_objects.py)."""
        self.objects: ObjectBackend = LocalFolderObjects(where) if isinstance(where, Path) else where
        self.folder: Path | None = where if isinstance(where, Path) else None  # the local folder, if it is one
        self.sessions = sessions
        self.quota = quota  # service/quota.py's StorageQuota: new bytes are checked against it, or refused
        self._writing = threading.Lock()  # look-up and insert of a content-addressed file are one step

    def path(self, file_id: str) -> Path:
        """Where a file's bytes lie in the local folder (a local store only: tests and `fluxedit gc` look there)."""
        if self.folder is None:
            raise ValueError(f"the files are in {self.objects.describe()}, not in a local folder")
        return file_path(self.folder, file_id)

    def key(self, file_id: str) -> str:
        return file_key(file_id)

    def local_path(self, file_id: str) -> Path | None:
        """The bytes' path when they are on this machine's disk (then served as a file), else None."""
        return self.objects.local_path(file_key(file_id))

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
                    if not self.has_bytes(known.id):  # its bytes went missing: these are the same bytes
                        self._write(known.id, data)
                    else:  # sent again now: retention counts from here (service/retention.py)
                        self.objects.touch(file_key(known.id))
                    return known
                return self._new(data, sha256, purpose, content_type, filename, owner_key_id, size)
        return self._new(data, sha256, purpose, content_type, filename, owner_key_id, size)

    def put_file(
        self, path: Path, *, purpose: str, content_type: str, filename: str, owner_key_id: str | None
    ) -> StoredFile:
        """Store a local file's bytes, streamed (a training's zip is up to gigabytes), and record them; the file
        is consumed (moved or removed). Always a new file, as an output is."""
        digest, size = hashlib.sha256(), 0
        with path.open("rb") as stream:
            while chunk := stream.read(1 << 20):
                digest.update(chunk)
                size += len(chunk)
        record = StoredFile(
            id=new_file_id(), owner_key_id=owner_key_id, purpose=purpose, filename=filename[:255],
            content_type=content_type, size=size, sha256=digest.hexdigest(),
        )  # fmt: skip
        with self.quota.room_for(owner_key_id, size) if self.quota else nullcontext():
            self.objects.put_file(file_key(record.id), path)
            with self.sessions.begin() as session:
                session.add(record)
        return record

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
        record = _record(data, sha256, purpose, content_type, filename, owner_key_id, size)
        self._store_new([record], [data])
        return record

    def put_outputs(
        self,
        images: Sequence[bytes],
        *,
        content_type: str,
        filenames: Sequence[str],
        owner_key_id: str | None,
        size: tuple[int, int],
    ) -> list[StoredFile]:
        """Store a prediction's output images: all of them or none. One quota check holds for their total, and
        their records commit in one transaction (a prediction's result is on its critical path)."""
        records = [_record(data, hashlib.sha256(data).hexdigest(), "output", content_type, filename, owner_key_id,
                           size) for data, filename in zip(images, filenames, strict=True)]  # fmt: skip
        self._store_new(records, images)
        return records

    def _store_new(self, records: list[StoredFile], contents: Sequence[bytes]) -> None:
        """Write the bytes and commit their records together, under one quota check for their total (they share
        an owner); on any failure no part of them stays behind (retention sweeps what cannot be deleted now)."""
        if not records:
            return
        total = sum(len(data) for data in contents)
        with self.quota.room_for(records[0].owner_key_id, total) if self.quota else nullcontext():
            try:
                for record, data in zip(records, contents, strict=True):
                    self._write(record.id, data)
                with self.sessions.begin() as session:
                    session.add_all(records)
            except BaseException:
                for record in records:
                    with suppress(Exception):
                        self.objects.delete(file_key(record.id))
                raise

    def _write(self, file_id: str, data: bytes) -> None:
        self.objects.put(file_key(file_id), data)  # whole or not at all: a crash never leaves half a file

    def get(self, file_id: str) -> StoredFile | None:
        with self.sessions() as session:
            return session.get(StoredFile, file_id)

    def records(self, file_ids: Iterable[str | None]) -> dict[str, StoredFile]:
        """The records of these files, by id, in one query (whether or not their bytes are still here)."""
        wanted = {file_id for file_id in file_ids if file_id}
        if not wanted:
            return {}
        with self.sessions() as session:
            found = session.scalars(select(StoredFile).where(StoredFile.id.in_(wanted)))
            return {record.id: record for record in found}

    def present(self, file_ids: Iterable[str | None]) -> dict[str, StoredFile]:
        """The records of those files whose bytes are still here (one query): what a view can still show."""
        records = self.records(file_ids)
        if self.folder is None:  # an object store loses nothing by itself: one request per file would cost more
            return records
        return {file_id: record for file_id, record in records.items() if self.has_bytes(file_id)}

    def has_bytes(self, file_id: str) -> bool:
        return self.objects.exists(file_key(file_id))

    def read(self, file_id: str) -> bytes:
        return self.objects.get(file_key(file_id))

    def chunks(self, file_id: str) -> Iterator[bytes]:
        """The bytes a piece at a time (outputs streamed to a client, into a zip); FileNotFoundError when gone."""
        return self.objects.chunks(file_key(file_id))

    def presigned_url(self, record: StoredFile, seconds: int, filename: str | None = None) -> str | None:
        """A short-lived URL of the object store for the file's bytes, or None where the store has none."""
        return self.objects.presigned_url(file_key(record.id), seconds, record.content_type, filename)

    def delete(self, file_id: str) -> None:
        with self.sessions.begin() as session:
            record = session.get(StoredFile, file_id)
            if record is not None:
                session.delete(record)
        self.objects.delete(file_key(file_id))


def _record(data: bytes, sha256: str, purpose: str, content_type: str, filename: str, owner_key_id: str | None,
            size: tuple[int, int] | None) -> StoredFile:  # fmt: skip
    return StoredFile(
        id=new_file_id(), owner_key_id=owner_key_id, purpose=purpose, filename=filename[:255],
        content_type=content_type, size=len(data), sha256=sha256,
        width=size[0] if size else None, height=size[1] if size else None,
    )  # fmt: skip
