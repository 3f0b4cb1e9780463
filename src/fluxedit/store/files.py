"""File bytes in a local folder, their records in the database.

Ids are 128-bit random, so a file's URL is also a capability: outputs can be
shown in an <img> without a key, the way presigned object-store URLs work.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from contextlib import nullcontext
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from .models import StoredFile

CONTENT_TYPES = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp"}
EXTENSIONS = {v: k if k != "jpeg" else "jpg" for k, v in CONTENT_TYPES.items()}


def new_file_id() -> str:
    return "file_" + secrets.token_urlsafe(16)


class FileStore:
    def __init__(self, folder: Path, sessions: sessionmaker[Session], quota=None):
        self.folder = folder
        self.sessions = sessions
        self.quota = quota  # service/quota.py's StorageQuota: new bytes are checked against it, or refused
        folder.mkdir(parents=True, exist_ok=True)

    def path(self, file_id: str) -> Path:
        return self.folder / file_id[-2:] / file_id

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
        """Write the bytes (atomically: a crash never leaves half a file) and record them."""
        record = StoredFile(
            id=new_file_id(),
            owner_key_id=owner_key_id,
            purpose=purpose,
            filename=filename[:255],
            content_type=content_type,
            size=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            width=size[0] if size else None,
            height=size[1] if size else None,
        )
        with self.quota.room_for(owner_key_id, len(data)) if self.quota else nullcontext():
            target = self.path(record.id)
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_suffix(".partial")
            partial.write_bytes(data)
            os.replace(partial, target)
            with self.sessions.begin() as session:
                session.add(record)
        return record

    def get(self, file_id: str) -> StoredFile | None:
        with self.sessions() as session:
            return session.get(StoredFile, file_id)

    def read(self, file_id: str) -> bytes:
        return self.path(file_id).read_bytes()

    def delete(self, file_id: str) -> None:
        with self.sessions.begin() as session:
            record = session.get(StoredFile, file_id)
            if record is not None:
                session.delete(record)
        self.path(file_id).unlink(missing_ok=True)
