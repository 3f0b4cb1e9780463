"""Where stored bytes live: an object backend, addressed by key, behind the file store and the LoRA store.

Two backends share one interface: a local folder (the default: the data folder's `files/` and `loras/`) and an
S3 bucket under a prefix (store/s3_objects.py, `--storage s3://bucket/prefix`). Records stay in the database;
a backend only holds bytes, so the stores above it never ask which one they have.

A key is a relative path with `/` separators ("ab/file_...ab", "<sha256>.safetensors"); each store has its
own backend (its own folder, or its own prefix in the bucket).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

CHUNK = 1 << 20
PARTIAL = ".partial"  # a local write under way (or cut short by a crash); never a stored object


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int
    modified: float  # seconds since the epoch: when it was written, or last touched


class ObjectBackend(Protocol):
    def put(self, key: str, data: bytes) -> None:
        """Store the bytes whole: a reader never sees half of them."""

    def put_file(self, key: str, path: Path) -> None:
        """Store a local file (streamed: LoRAs are up to gigabytes); the file is consumed (moved or removed)."""

    def get(self, key: str) -> bytes:
        """The bytes; FileNotFoundError when there are none under the key."""

    def chunks(self, key: str, size: int = CHUNK) -> Iterator[bytes]:
        """The bytes a piece at a time; FileNotFoundError (at the first piece) when there are none."""

    def download(self, key: str, target: Path) -> None:
        """Write the bytes to a local file (atomically: `target` is whole or absent)."""

    def delete(self, key: str) -> None:
        """Remove the bytes; nothing happens when they are gone already."""

    def exists(self, key: str) -> bool: ...

    def size(self, key: str) -> int | None:
        """The stored size, or None when there are no bytes under the key."""

    def modified(self, key: str) -> float | None:
        """When the bytes were written or last touched, or None when gone."""

    def touch(self, key: str) -> None:
        """Mark the bytes as written now (an input sent again: retention counts from here)."""

    def listing(self) -> Iterator[StoredObject]:
        """Every object, and every partial local write (its key ends in .partial): for the leftovers sweep."""

    def local_path(self, key: str) -> Path | None:
        """The path of the bytes when they lie on this machine's disk (served as a file), else None."""

    def presigned_url(self, key: str, seconds: int, content_type: str, filename: str | None) -> str | None:
        """A short-lived URL that fetches the bytes without this server, or None where there is no such thing."""

    def describe(self, key: str = "") -> str:
        """Where the bytes of `key` are, for messages and logs."""


class LocalFolderObjects:
    """Objects as files under one folder: the key is the relative path."""

    def __init__(self, root: Path):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        return self.root / key

    def put(self, key: str, data: bytes) -> None:
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + PARTIAL)
        partial.write_bytes(data)
        os.replace(partial, target)

    def put_file(self, key: str, path: Path) -> None:
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(path, target)
        except OSError:  # another file system: copy beside the target, then move it into place
            partial = target.with_name(target.name + PARTIAL)
            shutil.copyfile(path, partial)
            os.replace(partial, target)
            path.unlink(missing_ok=True)

    def get(self, key: str) -> bytes:
        return self.path(key).read_bytes()

    def chunks(self, key: str, size: int = CHUNK) -> Iterator[bytes]:
        with self.path(key).open("rb") as stream:
            while chunk := stream.read(size):
                yield chunk

    def download(self, key: str, target: Path) -> None:
        partial = target.with_name(target.name + PARTIAL)
        shutil.copyfile(self.path(key), partial)
        os.replace(partial, target)

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def size(self, key: str) -> int | None:
        try:
            return self.path(key).stat().st_size
        except OSError:
            return None

    def modified(self, key: str) -> float | None:
        try:
            return self.path(key).stat().st_mtime
        except OSError:
            return None

    def touch(self, key: str) -> None:
        with contextlib.suppress(OSError):  # gone meanwhile: nothing to mark
            os.utime(self.path(key))

    def listing(self) -> Iterator[StoredObject]:
        for folder, _, names in os.walk(self.root):
            for name in names:
                path = Path(folder) / name
                try:
                    stat = path.stat()
                except OSError:  # removed while walking
                    continue
                yield StoredObject(path.relative_to(self.root).as_posix(), stat.st_size, stat.st_mtime)

    def local_path(self, key: str) -> Path | None:
        return self.path(key)

    def presigned_url(self, key: str, seconds: int, content_type: str, filename: str | None) -> str | None:
        return None

    def describe(self, key: str = "") -> str:
        return str(self.path(key)) if key else str(self.root)
