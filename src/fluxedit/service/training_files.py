"""A training's files in the file store (a local folder or S3): its pairs, its checkpoints, the LoRA it made.

Each is a file of the store with a record, owned by the training's key (so its quota counts them) and named
`<training id>/<what>`: `data.zip` (the zip it was given), `step-NNNNNN.zip` (a checkpoint, packed by the
worker: worker/training_scratch.py) and `lora.safetensors`, `lora-comfyui.safetensors` (what it made). The
training's row names its data and its newest checkpoint by file id, in the columns that held their local paths
before (`data_dir`, `work_dir`; "" while there is no checkpoint), so a slice's job names both by id and a worker
on any machine reads them through its reader. A row from before (local paths) is moved into the store once,
when the server that took it starts (`adopt_local`).
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from sqlalchemy import select

from ..store.files import FileStore
from ..store.models import StoredFile, Training
from ..store.objects import LocalFolderObjects
from ..store.s3_objects import S3Location, S3Objects
from ..worker.training_scratch import pack_checkpoint

DATA, CHECKPOINT, TRAINED = "training-data", "checkpoint", "trained-lora"  # purposes (at most 16 characters)
ZIP, SAFETENSORS = "application/zip", "application/octet-stream"


def files_beside_loras(loras, quota=None) -> FileStore:
    """The file store whose backend is the LoRA store's sibling (`<storage>/files` beside `<storage>/loras`, as
    store/objects_setup.py lays them out, in a folder or a bucket): for a TrainingRunner not given its file store."""
    backend = loras.objects
    if isinstance(backend, LocalFolderObjects):
        return FileStore(backend.root.parent / "files", loras.sessions, quota)
    location = backend.location  # an S3 backend under <prefix>loras/
    parent = S3Location(location.bucket, location.prefix.removesuffix("loras/"), location.endpoint, location.region)
    return FileStore(S3Objects(parent.child("files")), loras.sessions, quota)


def in_store(reference: str | None) -> bool:
    """Whether a row's data_dir/work_dir names a file of the store (not a local path of an older version)."""
    return bool(reference) and reference.startswith("file_")


class TrainingFiles:
    def __init__(self, files: FileStore):
        self.files = files
        self.sessions = files.sessions

    def store_data(self, training_id: str, owner: str | None, zip_path: Path) -> StoredFile:
        """The zip of pairs a training was given (checked already); `zip_path` is consumed."""
        return self.files.put_file(
            zip_path, purpose=DATA, content_type=ZIP, filename=f"{training_id}/data.zip", owner_key_id=owner
        )

    def store_checkpoint(self, training: Training, step: int, packed: bytes) -> StoredFile:
        return self.files.put(
            packed, purpose=CHECKPOINT, content_type=ZIP, filename=f"{training.id}/step-{step:06d}.zip",
            owner_key_id=training.owner_key_id,
        )  # fmt: skip

    def store_lora(self, training: Training, name: str, data: bytes) -> StoredFile:
        return self.files.put(
            data, purpose=TRAINED, content_type=SAFETENSORS, filename=f"{training.id}/{name}",
            owner_key_id=training.owner_key_id,
        )  # fmt: skip

    def lora(self, training: Training, name: str) -> StoredFile | None:
        """The trained LoRA's file in one layout (`lora.safetensors`, `lora-comfyui.safetensors`), if stored."""
        found = [r for r in self._of(training, TRAINED) if r.filename == f"{training.id}/{name}"]
        return found[-1] if found else None

    def keep_newest_checkpoints(self, training: Training, keep: int) -> None:
        """Delete all but the newest `keep` checkpoints (one per step: a step written again replaces it)."""
        newest: dict[str, StoredFile] = {}
        doomed = []
        for record in self._of(training, CHECKPOINT):  # oldest first
            if record.filename in newest:
                doomed.append(newest[record.filename])
            newest[record.filename] = record
        steps = sorted(newest)  # step-NNNNNN: by step
        doomed += [newest[name] for name in steps[: -max(1, keep)]]
        for record in doomed:
            if record.id != training.work_dir:  # never the one the row resumes from
                self.files.delete(record.id)

    def remove_working(self, training: Training, dry_run: bool = False) -> int:
        """An ended training's pairs and checkpoints (its LoRA stays): for retention; the bytes freed (or, on a
        dry run, that would be)."""
        records = self._of(training, DATA) + self._of(training, CHECKPOINT)
        if not dry_run:
            for record in records:
                self.files.delete(record.id)
        return sum(record.size for record in records)

    def _of(self, training: Training, purpose: str) -> list[StoredFile]:
        owned = (
            StoredFile.owner_key_id.is_(None)
            if training.owner_key_id is None
            else StoredFile.owner_key_id == training.owner_key_id
        )
        query = select(StoredFile).where(
            owned, StoredFile.purpose == purpose, StoredFile.filename.startswith(f"{training.id}/", autoescape=True)
        )
        with self.sessions() as session:
            return list(session.scalars(query.order_by(StoredFile.created_at, StoredFile.id)))

    # ---- rows of an older version: pairs and checkpoints in local folders -------------------------

    def adopt_local(self, training: Training) -> None:
        """Store a row's local pairs folder (zipped) and its newest local checkpoint, and name them in the row."""
        fields = self._stored_from_local(training)
        with self.sessions.begin() as session:
            row = session.get(Training, training.id)
            for name, value in fields.items():
                setattr(row, name, value)

    def _stored_from_local(self, training: Training) -> dict:
        data = Path(training.data_dir)
        staged = data.parent / "data.zip.staged"
        with zipfile.ZipFile(staged, "w", zipfile.ZIP_STORED) as archive:
            for path in sorted(p for p in data.rglob("*") if p.is_file()):
                archive.write(path, path.relative_to(data).as_posix())
        fields = {"data_dir": self.store_data(training.id, training.owner_key_id, staged).id, "work_dir": ""}
        folders = sorted(Path(training.work_dir).glob("checkpoints/step-*"))
        if not folders:
            return fields | {"step": 0, "losses": []}
        state = json.loads((folders[-1] / "state.json").read_text())
        packed = pack_checkpoint(folders[-1])
        fields["work_dir"] = self.store_checkpoint(training, state["step"], packed).id
        return fields | {"step": state["step"], "losses": state["losses"]}
