"""Which object backends a service uses, from `--storage` (FLUXEDIT_STORAGE), and the worker reader that matches.

- a local folder (the default: the data folder): files in <folder>/files, LoRAs in <folder>/loras, as always;
- s3://bucket/prefix: files under <prefix>/files/, LoRAs under <prefix>/loras/, in that bucket; endpoint from
  --s3-endpoint-url or AWS_ENDPOINT_URL, region from AWS_REGION, credentials the usual AWS ways.

Trainings' working folders (pairs, checkpoints) stay in the data folder either way; the LoRA a training makes
is stored like any other LoRA.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from .files import LocalStoreReader
from .objects import LocalFolderObjects, ObjectBackend
from .s3_objects import INSTALL_HINT, S3Location, S3Objects, StoreUnavailable
from .s3_reader import S3StoreReader


def is_s3_address(value: str | None) -> bool:
    return bool(value) and value.startswith("s3://")


@dataclass(frozen=True)
class Storage:
    folder: Path | None  # a local store's folder
    s3: S3Location | None = None

    @classmethod
    def from_settings(cls, settings) -> Storage:
        if not is_s3_address(settings.storage):
            return cls(Path(settings.storage).expanduser() if settings.storage else settings.data_dir)
        if importlib.util.find_spec("boto3") is None:
            raise StoreUnavailable(f"--storage {settings.storage} needs boto3: {INSTALL_HINT}")
        endpoint = settings.s3_endpoint_url or os.environ.get("AWS_ENDPOINT_URL", "")
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or ""
        return cls(None, S3Location.parse(settings.storage, endpoint, region))

    def files(self) -> Path | ObjectBackend:
        """What store/files.py's FileStore is given."""
        return self.folder / "files" if self.s3 is None else S3Objects(self.s3.child("files"))

    def loras(self) -> ObjectBackend:
        """The LoRA files' backend (they are written and checked in `lora_staging` first)."""
        return LocalFolderObjects(self.folder / "loras") if self.s3 is None else S3Objects(self.s3.child("loras"))

    def lora_staging(self, data_dir: Path) -> Path:
        """Where LoRA files are written and checked before they are stored: the LoRA folder itself when local."""
        return self.folder / "loras" if self.s3 is None else data_dir / "lora-uploads"

    def reader(self) -> LocalStoreReader | S3StoreReader:
        """How workers read what jobs name: from the local folders, or from the bucket (on any machine)."""
        if self.s3 is None:
            return LocalStoreReader(self.folder / "files", self.folder / "loras")
        return S3StoreReader.of(self.s3)

    def describe(self) -> str:
        return str(self.folder.expanduser().resolve()) if self.s3 is None else self.s3.url
