"""How a worker on any machine gets the bytes a job names from a store on S3: input files by id, LoRAs by digest.

The S3 counterpart of store/files.py's LocalStoreReader, with the same two methods. Plain strings only, so it
pickles into a worker process or a Ray actor; each process makes its own boto3 client on first use. It never
touches the database: the job carries each file's size and sha256, and a LoRA's digest is its name.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from .files import StoredBytesMismatch, check_stored_bytes, file_key, lora_key
from .s3_objects import S3Location, S3Objects

_downloading = threading.Lock()  # one download of a LoRA at a time in a process (others wait, then find it)


@dataclass(frozen=True)
class S3StoreReader:
    bucket: str
    prefix: str = ""  # the storage prefix: files/ and loras/ lie under it
    endpoint: str = ""
    region: str = ""
    cache: str = ""  # where downloaded LoRAs are kept on the worker's machine; "": a folder in the temp dir

    @classmethod
    def of(cls, location: S3Location, cache: str = "") -> S3StoreReader:
        return cls(location.bucket, location.prefix, location.endpoint, location.region, cache)

    def _objects(self, part: str) -> S3Objects:
        return S3Objects(S3Location(self.bucket, self.prefix, self.endpoint, self.region).child(part))

    def read_file(self, file_id: str, *, size: int | None = None, sha256: str | None = None) -> bytes:
        """The file's bytes, checked against its record; FileNotFoundError or StoredBytesMismatch naming it."""
        try:
            data = self._objects("files").get(file_key(file_id))
        except FileNotFoundError:
            raise FileNotFoundError(f"the stored file {file_id} is gone from the store") from None
        return check_stored_bytes(file_id, data, size, sha256)

    def lora_path(self, digest: str) -> Path:
        """A local copy of the LoRA of this digest, downloaded once into the cache and checked against it."""
        folder = Path(self.cache) if self.cache else Path(tempfile.gettempdir()) / f"fluxedit-loras-{os.getuid()}"
        target = folder / lora_key(digest)
        if target.is_file():
            return target
        with _downloading:
            if not target.is_file():
                folder.mkdir(parents=True, exist_ok=True)
                self._download_lora(digest, target)
        return target

    def _download_lora(self, digest: str, target: Path) -> None:
        staged = target.with_name(f"{target.name}.{os.getpid()}.staged")
        try:
            self._objects("loras").download(lora_key(digest), staged)
            if _digest(staged) != digest:
                raise StoredBytesMismatch(f"the stored LoRA {digest} does not match its digest (changed in the store)")
            os.replace(staged, target)
        finally:
            staged.unlink(missing_ok=True)


def _digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
