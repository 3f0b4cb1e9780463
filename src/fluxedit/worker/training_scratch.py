"""A worker's local scratch for training slices: the pairs and the checkpoint a slice needs, fetched through the
store reader, and the checkpoint a paused slice hands back.

A slice may run on any worker, so nothing here is shared with the service or with other workers: each worker
process has its own folder in the temporary folder (`fluxedit-trainings-<uid>/worker-<pid>`). A training's pairs
are fetched once per worker and kept by their sha256 while it trains there; its folder goes when it ends or
leaves this worker, and the folders of workers that died are removed when the next one starts.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

from .messages import InputFile

CHECKPOINT_FILES = ("lora.safetensors", "optimizer.pt", "generator.pt", "state.json")


def scratch_root() -> Path:
    return Path(tempfile.gettempdir()) / f"fluxedit-trainings-{os.getuid()}"


class TrainingScratch:
    def __init__(self, reader, root: Path | None = None):
        self.reader = reader
        self.folder = (root or scratch_root()) / f"worker-{os.getpid()}"
        self._pairs: dict[str, Path] = {}  # sha256 of a data zip -> the folder of its unpacked pairs
        _remove_dead_workers(self.folder.parent)

    def pairs(self, data: InputFile) -> Path:
        """The folder of the training's unpacked pairs, fetched through the reader the first time."""
        from ..training.dataset import extract_zip

        key = data.sha256 or data.id
        if key in self._pairs and self._pairs[key].is_dir():
            return self._pairs[key]
        target = self.folder / "data" / key
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        archive = target.with_name(f"{key}.zip")
        archive.write_bytes(self.reader.read_file(data.id, size=data.size, sha256=data.sha256))
        try:
            self._pairs[key] = extract_zip(archive, target)
        finally:
            archive.unlink(missing_ok=True)
        return self._pairs[key]

    def work(self, training_id: str, checkpoint: InputFile | None) -> Path:
        """A fresh working folder for the training, holding only `checkpoint` (fetched through the reader): what
        the trainer resumes from. None: an empty one (the training starts at step 0)."""
        work = self.folder / training_id
        shutil.rmtree(work, ignore_errors=True)
        (work / "checkpoints").mkdir(parents=True)
        if checkpoint is not None:
            packed = self.reader.read_file(checkpoint.id, size=checkpoint.size, sha256=checkpoint.sha256)
            unpack_checkpoint(packed, work / "checkpoints")
        return work

    def forget(self, training_id: str, data: InputFile | None) -> None:
        """The training ended here, or goes on elsewhere: its folder and its pairs go."""
        shutil.rmtree(self.folder / training_id, ignore_errors=True)
        if data is not None:
            key = data.sha256 or data.id
            self._pairs.pop(key, None)
            shutil.rmtree(self.folder / "data" / key, ignore_errors=True)


def pack_checkpoint(folder: Path) -> bytes:
    """A complete checkpoint folder (step-NNNNNN) as one zip: its name, then its files."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:  # weights do not compress
        archive.writestr("checkpoint.json", json.dumps({"folder": folder.name}))
        for name in CHECKPOINT_FILES:
            archive.write(folder / name, name)
    return buffer.getvalue()


def unpack_checkpoint(packed: bytes, checkpoints: Path) -> Path:
    """Write a packed checkpoint back as a complete folder under `checkpoints`; that folder."""
    with zipfile.ZipFile(io.BytesIO(packed)) as archive:
        name = json.loads(archive.read("checkpoint.json"))["folder"]
        if not name.startswith("step-") or not name.removeprefix("step-").isdigit():
            raise ValueError(f"not a checkpoint folder name: {name!r}")
        partial = checkpoints / f"partial-{name}"
        partial.mkdir(parents=True)
        for member in CHECKPOINT_FILES:
            (partial / member).write_bytes(archive.read(member))
    partial.rename(checkpoints / name)  # complete or not there, as the trainer writes its own
    return checkpoints / name


def _remove_dead_workers(root: Path) -> None:
    """Folders of worker processes that are gone (killed mid-slice): nobody else will remove them."""
    if not root.is_dir():
        return
    for folder in root.glob("worker-*"):
        pid = folder.name.removeprefix("worker-")
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process with this pid: not ours to judge
        return True
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"  # a zombie is gone
    return True
