"""Storage quotas: one for everything the server stores, one per key, checked each time bytes are stored.

Usage is derived, never counted separately (so it cannot drift): the sizes of the file records (images),
of the LoRA files (once per content hash in all, once per registered name for a key), and of the training
folders on disk. A check and the record it admits are one step under a lock, so two stores in this process
cannot both take the last free bytes; on PostgreSQL the lock is also an advisory lock of the database, so the API
replicas sharing it take turns as well. (Training folders are measured on each replica's own disk.)
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, sessionmaker

from ..schema import FluxeditError
from ..store.database import QUOTA_LOCK, is_postgresql_session
from ..store.models import LoraBlob, LoraName, StoredFile, Training

TRAINING_SIZES_TTL_S = 10.0  # training folders are walked at most this often (they change a slice at a time)
NOBODY = object()  # bytes no key owns (the LoRA download cache): only the total quota applies


class QuotaExceeded(FluxeditError):
    status = 507
    code = "storage_quota_exceeded"
    error_code = "STORAGE_QUOTA_EXCEEDED"  # a prediction that fails for it


class StorageFull(QuotaExceeded):
    """The server's total quota (FLUXEDIT_STORAGE_QUOTA_BYTES): 507 Insufficient Storage."""


class KeyStorageFull(QuotaExceeded):
    """One key's quota (FLUXEDIT_KEY_STORAGE_QUOTA_BYTES): 413, the request is too large for what is left."""

    status = 413
    code = "key_storage_quota_exceeded"


@dataclass(frozen=True)
class Usage:
    total: int
    key: int


def size_text(count: int) -> str:
    for unit, scale in (("GB", 1024**3), ("MB", 1024**2), ("KB", 1024)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} bytes"


class StorageQuota:
    def __init__(self, sessions: sessionmaker[Session], trainings_folder: Path, total_bytes: int, key_bytes: int):
        self.sessions = sessions
        self.trainings_folder = trainings_folder
        self.total_bytes = total_bytes  # 0: no limit
        self.key_bytes = key_bytes  # 0: no limit
        self._lock = threading.Lock()
        self._training_sizes: tuple[float, dict[str, int]] | None = None

    @classmethod
    def from_settings(cls, settings, sessions: sessionmaker[Session]) -> StorageQuota:
        return cls(
            sessions, settings.data_dir / "trainings", settings.storage_quota_bytes, settings.key_storage_quota_bytes
        )

    @property
    def enabled(self) -> bool:
        return bool(self.total_bytes or self.key_bytes)

    @contextmanager
    def room_for(self, owner, size: int, new_on_disk: int | None = None) -> Iterator[None]:
        """Check that `size` more bytes for `owner` (a key id, None for the keyless caller, NOBODY for shared
        bytes) fit, and hold the check while the caller stores and records them. `new_on_disk`: what the
        total grows by, when less (a LoRA stored once already and now registered by a key)."""
        if not self.enabled:
            yield
            return
        with self._lock, self._across_replicas():
            self.check(owner, size, new_on_disk)
            yield

    @contextmanager
    def _across_replicas(self) -> Iterator[None]:
        """PostgreSQL: a session advisory lock on a connection of its own, held while the caller stores and
        records (in transactions of its own, committed before this ends)."""
        if not is_postgresql_session(self.sessions):
            yield
            return
        with self.sessions.kw["bind"].connect() as connection:
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": QUOTA_LOCK})
            connection.commit()
            try:
                yield
            finally:
                connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": QUOTA_LOCK})
                connection.commit()

    def check(self, owner, size: int, new_on_disk: int | None = None) -> None:
        """Raise StorageFull or KeyStorageFull when `size` more bytes do not fit; 0 asks whether any room is left."""
        if not self.enabled:
            return
        usage = self.usage(owner)
        on_disk = size if new_on_disk is None else new_on_disk
        if _over(usage.total, on_disk, self.total_bytes):
            raise StorageFull(
                f"the server's storage is full: {size_text(usage.total)} of its {size_text(self.total_bytes)} "
                f"quota ({self.total_bytes:,} bytes) are used"
                + (f", and these {size_text(on_disk)} do not fit" if on_disk else "")
                + "; files are freed as they expire, or when deleted"
            )
        if owner is not NOBODY and _over(usage.key, size, self.key_bytes):
            raise KeyStorageFull(
                f"this key's storage quota is full: {size_text(usage.key)} of {size_text(self.key_bytes)} "
                f"({self.key_bytes:,} bytes) are used"
                + (f", and these {size_text(size)} do not fit" if size else "")
                + "; delete files, LoRAs or trainings of this key, or wait until they expire"
            )

    def usage(self, owner=NOBODY) -> Usage:
        key, trainings = 0, set()
        with self.sessions() as session:
            total = _sum(session, StoredFile.size) + _sum(session, LoraBlob.size)
            if owner is not NOBODY:
                key = _sum(session, StoredFile.size, _owned(StoredFile, owner)) + _sum(
                    session, LoraName.size, _owned(LoraName, owner)
                )
                trainings = set(session.scalars(select(Training.id).where(_owned(Training, owner))))
        sizes = self._trainings_on_disk()
        total += sum(sizes.values())
        key += sum(size for training_id, size in sizes.items() if training_id in trainings)
        return Usage(total, key)

    def _trainings_on_disk(self) -> dict[str, int]:
        """Bytes under each training's folder, walked at most every TRAINING_SIZES_TTL_S."""
        cached = self._training_sizes
        if cached is not None and time.monotonic() - cached[0] < TRAINING_SIZES_TTL_S:
            return cached[1]
        sizes: dict[str, int] = {}
        if self.trainings_folder.is_dir():
            for entry in os.scandir(self.trainings_folder):
                sizes[entry.name] = _tree_size(Path(entry.path)) if entry.is_dir() else _file_size(entry)
        self._training_sizes = (time.monotonic(), sizes)
        return sizes

    def forget_training_sizes(self) -> None:
        """A training folder grew or shrank a lot (a new training, a sweep): measure it again next time."""
        self._training_sizes = None


def _over(used: int, size: int, limit: int) -> bool:
    if not limit:
        return False
    return used + size > limit if size else used >= limit


def _owned(model, owner):
    return model.owner_key_id.is_(None) if owner is None else model.owner_key_id == owner


def _sum(session: Session, column, *where) -> int:
    return int(session.scalar(select(func.coalesce(func.sum(column), 0)).where(*where)))


def _tree_size(folder: Path) -> int:
    total = 0
    for root, _dirs, names in os.walk(folder):
        for name in names:
            with contextlib.suppress(OSError):  # removed while we looked
                total += os.stat(os.path.join(root, name), follow_symlinks=False).st_size
    return total


def _file_size(entry: os.DirEntry) -> int:
    try:
        return entry.stat(follow_symlinks=False).st_size
    except OSError:
        return 0
