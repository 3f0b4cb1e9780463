"""Retention: what expired is removed, by the server's periodic sweep or by `fluxedit gc`, safely while it runs.

- outputs older than `retain_outputs`;
- inputs (uploads, data URIs, fetched images) not used by a prediction for `retain_inputs`;
- the pairs, checkpoints and validation images of trainings ended `retain_trainings` ago (their LoRA stays);
- leftovers of crashed writes: partial files, and bytes or training folders without a record, a day old.

Nothing that queued or running work needs is touched (in_use.py), checked in the same write transaction
that deletes the records, so no prediction can start on a file between the check and the delete. A record
goes first: from then on every view says `data_removed` and no new reader finds the file; its bytes go
READ_GRACE_S later, so a reader that found the record a moment before still opens them.

Bytes are removed through the stores' object backends (a local folder or S3: store/objects.py); the training
folders are local either way.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import delete, false, func, or_, select
from sqlalchemy.orm import Session, sessionmaker

from ..schema import ENDED_STATUSES
from ..store.files import INPUT_PURPOSES, FileStore
from ..store.models import LoraBlob, Prediction, StoredFile, Training, WebhookDelivery
from ..store.objects import PARTIAL, LocalFolderObjects, ObjectBackend, StoredObject
from ..store.objects_setup import Storage
from .in_use import in_use
from .training_files import TrainingFiles

log = logging.getLogger(__name__)
READ_GRACE_S = 10.0  # bytes outlive their record this long
LEFTOVER_AGE_S = 86400.0  # a partial write or an unrecorded file this old is a crash's leftover
BATCH = 500  # records deleted per transaction: other writers wait at most for one batch
TRAINING_LEFTOVERS = ("data", "work/checkpoints", "work/validation")  # what an ended training no longer needs
ENDED_TRAININGS = tuple(ENDED_STATUSES)


@dataclass
class SweepReport:
    outputs: int = 0
    inputs: int = 0
    trainings: int = 0
    leftovers: int = 0
    webhooks: int = 0  # ended webhook deliveries (their log) past the outputs' retention
    bytes_freed: int = 0
    dry_run: bool = False

    @property
    def removed(self) -> int:
        return self.outputs + self.inputs + self.trainings + self.leftovers

    def summary(self) -> str:
        verb = "would remove" if self.dry_run else "removed"
        return (
            f"{verb} {self.outputs} outputs, {self.inputs} inputs, the data of {self.trainings} trainings and "
            f"{self.leftovers} leftovers of interrupted writes: {self.bytes_freed / 2**20:.1f} MB; "
            f"{self.webhooks} ended webhook deliveries"
        )


@dataclass
class Expired:
    report: SweepReport
    file_ids: list[str] = field(default_factory=list)  # files whose records are gone: bytes removed after READ_GRACE_S


class Retention:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        files: FileStore,
        trainings_folder: Path,
        loras_folder: Path,
        *,
        retain_inputs: float | None,
        retain_outputs: float | None,
        retain_trainings: float | None,
        quota=None,
        lora_objects: ObjectBackend | None = None,
    ):
        """`loras_folder`: where LoRA files are written first; `lora_objects`: where they are kept (that folder)."""
        self.sessions = sessions
        self.files = files
        self.trainings_folder = trainings_folder
        self.loras_folder = loras_folder
        self.lora_objects = lora_objects or LocalFolderObjects(loras_folder)
        self.retain_inputs = retain_inputs  # seconds; None: kept for ever
        self.retain_outputs = retain_outputs
        self.retain_trainings = retain_trainings
        self.quota = quota

    @classmethod
    def from_settings(cls, settings, sessions: sessionmaker[Session], files: FileStore, quota=None) -> Retention:
        storage = Storage.from_settings(settings)
        return cls(
            sessions,
            files,
            settings.data_dir / "trainings",
            storage.lora_staging(settings.data_dir),
            retain_inputs=settings.retain_inputs,
            retain_outputs=settings.retain_outputs,
            retain_trainings=settings.retain_trainings,
            quota=quota,
            lora_objects=storage.loras(),
        )

    # ---- one sweep ------------------------------------------------------------------------

    def sweep(self, now: datetime | None = None, dry_run: bool = False, grace: float = READ_GRACE_S) -> SweepReport:
        """Everything in one call, waiting out the read grace (for `fluxedit gc`)."""
        expired = self.expire(now, dry_run)
        if expired.file_ids:
            time.sleep(grace)
            self.remove(expired)
        return expired.report

    def expire(self, now: datetime | None = None, dry_run: bool = False) -> Expired:
        """Delete the records of what expired (and training leftovers, which have none); return the bytes to
        remove once READ_GRACE_S has passed (`remove`)."""
        now = now or datetime.now(UTC)
        expired = Expired(SweepReport(dry_run=dry_run))
        if self.retain_outputs is not None:
            cutoff = now - timedelta(seconds=self.retain_outputs)
            expired.report.outputs = self._expire_files(("output",), cutoff, set(), expired, dry_run)
            expired.report.webhooks = self._expire_webhook_log(cutoff, dry_run)
        if self.retain_inputs is not None:
            cutoff = now - timedelta(seconds=self.retain_inputs)
            recently_used = self._inputs_used_since(cutoff)
            expired.report.inputs = self._expire_files(INPUT_PURPOSES, cutoff, recently_used, expired, dry_run)
        if self.retain_trainings is not None:
            self._expire_trainings(now - timedelta(seconds=self.retain_trainings), expired.report, dry_run)
        self._remove_leftovers(now, expired, dry_run)
        if self.quota is not None:
            self.quota.forget_training_sizes()
        return expired

    def _expire_webhook_log(self, cutoff: datetime, dry_run: bool) -> int:
        """Deliveries that arrived or were given up before `cutoff` go with the outputs they announced;
        pending ones are never touched (the outbox still has to send them)."""
        ended = or_(WebhookDelivery.delivered_at < cutoff, WebhookDelivery.given_up_at < cutoff)
        with self.sessions.begin() as session:
            if dry_run:
                return session.scalar(select(func.count()).select_from(WebhookDelivery).where(ended))
            return session.execute(delete(WebhookDelivery).where(ended)).rowcount

    def remove(self, expired: Expired) -> None:
        """The bytes of the files `expire` took the records of (once READ_GRACE_S has passed)."""
        for file_id in expired.file_ids:
            self.files.objects.delete(self.files.key(file_id))

    # ---- files ------------------------------------------------------------------------------

    def _expire_files(
        self, purposes: tuple[str, ...], cutoff: datetime, keep: set[str], expired: Expired, dry_run: bool
    ) -> int:
        """Delete the records of the files of `purposes` made before `cutoff`, but those in `keep` or in use."""
        count, after = 0, ""
        while True:
            with self.sessions.begin() as session:
                if not dry_run:
                    session.execute(delete(StoredFile).where(false()))  # take the write lock before looking
                needed = keep | in_use(session).file_ids
                rows = session.execute(
                    select(StoredFile.id, StoredFile.size)
                    .where(StoredFile.purpose.in_(purposes), StoredFile.created_at < cutoff, StoredFile.id > after)
                    .order_by(StoredFile.id)
                    .limit(BATCH)
                ).all()
                if not rows:
                    return count
                after = rows[-1][0]
                doomed = [
                    (file_id, size)
                    for file_id, size in rows
                    if file_id not in needed and not self._stored_again_since(file_id, cutoff)
                ]
                if doomed and not dry_run:
                    for file_id, _ in doomed:  # fresh: no leftover scan takes it before its grace
                        self.files.objects.touch(self.files.key(file_id))
                    session.execute(delete(StoredFile).where(StoredFile.id.in_([f for f, _ in doomed])))
            count += len(doomed)
            expired.report.bytes_freed += sum(size for _, size in doomed)
            if not dry_run:
                expired.file_ids += [file_id for file_id, _ in doomed]

    def _stored_again_since(self, file_id: str, cutoff: datetime) -> bool:
        """An input sent again is the same file (content addressing); its bytes' time says when it last came."""
        modified = self.files.objects.modified(self.files.key(file_id))
        return modified is not None and modified >= cutoff.timestamp()  # None: only the record is left to remove

    def _inputs_used_since(self, cutoff: datetime) -> set[str]:
        used: set[str] = set()
        with self.sessions() as session:
            rows = session.execute(
                select(Prediction.input_files).where(Prediction.created_at >= cutoff).execution_options(yield_per=1000)
            )
            for (input_files,) in rows:
                used.update(file_id for file_id in input_files or [] if file_id)
        return used

    # ---- trainings --------------------------------------------------------------------------

    def _expire_trainings(self, cutoff: datetime, report: SweepReport, dry_run: bool) -> None:
        with self.sessions() as session:
            ended = list(
                session.scalars(
                    select(Training).where(Training.status.in_(ENDED_TRAININGS), Training.completed_at < cutoff)
                )
            )
        stored = TrainingFiles(self.files)
        for training in ended:
            # its pairs and checkpoints in the file store (folder or bucket), and any a version before kept on disk
            freed = stored.remove_working(training, dry_run) + sum(
                _remove_tree(self.trainings_folder / training.id / part, dry_run) for part in TRAINING_LEFTOVERS
            )
            if freed:
                report.trainings += 1
                report.bytes_freed += freed

    # ---- leftovers of crashes ---------------------------------------------------------------

    def _remove_leftovers(self, now: datetime, expired: Expired, dry_run: bool) -> None:
        old = now.timestamp() - LEFTOVER_AGE_S
        report = expired.report
        pending = {self.files.key(file_id) for file_id in expired.file_ids}  # removed after their read grace
        partials = [*self.loras_folder.glob("*.partial")]  # a LoRA being written or checked
        partials += self.trainings_folder.glob("upload-*.zip")  # an upload whose request never ended
        partials += self.trainings_folder.glob("*/work/*.staged")
        for path in partials:
            report.leftovers += _remove_if_older(path, old, report, dry_run)
        files = [entry for entry in self.files.objects.listing() if entry.key.count("/") == 1]  # <xy>/<file id>
        unfinished = [entry for entry in files if entry.key.endswith(PARTIAL)]  # bytes being written at a crash
        recorded = [entry for entry in files if not entry.key.endswith(PARTIAL)]
        blobs = {entry.key.removesuffix(".safetensors"): entry for entry in self.lora_objects.listing()
                 if entry.key.endswith(".safetensors") and "/" not in entry.key}  # fmt: skip
        with self.sessions() as session:
            known = _existing(session, StoredFile.id, [entry.key.rsplit("/", 1)[1] for entry in recorded])
            # bytes whose record never was written, or is gone a day
            strays = [e for e in recorded if e.key.rsplit("/", 1)[1] not in known and e.key not in pending]
            stray_blobs = [blobs[sha] for sha in set(blobs) - _existing(session, LoraBlob.sha256, list(blobs))]
            for entry in unfinished + strays:
                report.leftovers += _remove_object_if_older(self.files.objects, entry, old, report, dry_run)
            for entry in stray_blobs:
                report.leftovers += _remove_object_if_older(self.lora_objects, entry, old, report, dry_run)
            folders = [p for p in _subfolders(self.trainings_folder) if p.name.startswith("training_")]
            for training_id in {p.name for p in folders} - _existing(session, Training.id, [p.name for p in folders]):
                if (self.trainings_folder / training_id).stat().st_mtime < old:  # a create that never finished
                    freed = _remove_tree(self.trainings_folder / training_id, dry_run)
                    report.leftovers += 1
                    report.bytes_freed += freed


async def sweep_forever(retention: Retention, interval: float) -> None:
    """The server's automatic sweep: the file work in threads, the read grace as a sleep on the loop."""
    while True:
        try:
            expired = await asyncio.to_thread(retention.expire)
            if expired.file_ids:
                await asyncio.sleep(READ_GRACE_S)
                await asyncio.to_thread(retention.remove, expired)
            if expired.report.removed:
                log.info("retention: %s", expired.report.summary())
        except Exception:  # a failed sweep is tried again at the next interval, never stops the server
            log.exception("the retention sweep failed")
        await asyncio.sleep(interval)


def _existing(session: Session, column, values: list[str]) -> set[str]:
    found: set[str] = set()
    for start in range(0, len(values), BATCH):
        found |= set(session.scalars(select(column).where(column.in_(values[start : start + BATCH]))))
    return found


def _subfolders(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.is_dir()] if folder.is_dir() else []


def _remove_object_if_older(objects: ObjectBackend, entry: StoredObject, moment: float, report, dry_run) -> int:
    if entry.modified >= moment:
        return 0
    if not dry_run:
        objects.delete(entry.key)
    report.bytes_freed += entry.size
    return 1


def _remove_if_older(path: Path, moment: float, report: SweepReport, dry_run: bool) -> int:
    try:
        stat = path.stat()
    except OSError:
        return 0
    if stat.st_mtime >= moment:
        return 0
    if not dry_run:
        path.unlink(missing_ok=True)
    report.bytes_freed += stat.st_size
    return 1


def _remove_tree(path: Path, dry_run: bool) -> int:
    """Bytes under `path` (removed unless dry_run); 0 when it is not there."""
    if not path.exists():
        return 0
    if not path.is_dir():
        size = path.stat().st_size
        if not dry_run:
            path.unlink(missing_ok=True)
        return size
    size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    if not dry_run:
        shutil.rmtree(path, ignore_errors=True)
    return size
