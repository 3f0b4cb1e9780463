"""results.zip: a batch's outputs so far, named after its inputs, and a manifest.csv, streamed as it is written.

The zip is written into a small buffer that is handed on after each piece (zipfile writes a stream it cannot
seek with data descriptors), so neither the zip nor one whole output is ever held in memory; the predictions
are read a page at a time. Images are stored as they are (they are compressed already); the manifest is
deflated. A blocking generator: the API streams it from a thread.
"""

from __future__ import annotations

import csv
import io
import zipfile
from collections.abc import Iterator
from pathlib import PurePosixPath

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from ..schema import Status
from ..store.files import EXTENSIONS, FileStore
from ..store.models import Batch, Prediction

PAGE = 200
MANIFEST_COLUMNS = ("name", "prediction_id", "status", "error", "seed")


class _Sink(io.RawIOBase):
    """A write-only stream without seek: what is written waits here until `take`."""

    def __init__(self) -> None:
        self.buffer = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self.buffer += data
        return len(data)

    def take(self) -> bytes:
        data = bytes(self.buffer)
        self.buffer.clear()
        return data


def results_zip(sessions: sessionmaker[Session], files: FileStore, batch: Batch) -> Iterator[bytes]:
    sink = _Sink()
    manifest = io.StringIO()
    writer = csv.writer(manifest)
    writer.writerow(MANIFEST_COLUMNS)
    used: set[str] = set()
    with zipfile.ZipFile(sink, "w", zipfile.ZIP_STORED) as archive:
        for row in _predictions(sessions, batch.id):
            name = row.batch_name or f"image-{row.batch_index}"
            writer.writerow([name, row.id, row.status.value, row.error_message or "", row.seed or ""])
            if row.status != Status.success:
                continue
            outputs = list(row.output or [])
            present = files.present(outputs)
            for number, file_id in enumerate(outputs, start=1):
                record = present.get(file_id)
                if record is None:
                    continue  # removed since (retention): left out, as the views leave it out
                member = _unique(_output_name(name, number, len(outputs), EXTENSIONS[record.content_type]), used,
                                 row.batch_index)  # fmt: skip
                with archive.open(member, "w") as target:
                    for chunk in files.chunks(file_id):  # from the local folder or the object store
                        target.write(chunk)
                        yield sink.take()
                yield sink.take()
        archive.writestr(zipfile.ZipInfo("manifest.csv"), manifest.getvalue(), zipfile.ZIP_DEFLATED)
    yield sink.take()


def _predictions(sessions: sessionmaker[Session], batch_id: str) -> Iterator[Prediction]:
    start = 0
    while True:
        with sessions() as session:
            rows = list(
                session.scalars(
                    select(Prediction)
                    .where(Prediction.batch_id == batch_id, Prediction.batch_index >= start)
                    .order_by(Prediction.batch_index)
                    .limit(PAGE)
                )
            )
        yield from rows
        if len(rows) < PAGE:
            return
        start = rows[-1].batch_index + 1


def _output_name(input_name: str, number: int, count: int, extension: str) -> str:
    """shoe-12.jpg -> shoe-12.png, or shoe-12-1.png, shoe-12-2.png... for several images; inside the zip only."""
    parts = [part for part in PurePosixPath(input_name.replace("\\", "/")).parts if part not in ("", ".", "..", "/")]
    path = PurePosixPath(*parts) if parts else PurePosixPath("image")
    stem = path.stem or "image"
    suffix = f"-{number}" if count > 1 else ""
    return str(path.with_name(f"{stem}{suffix}.{extension}"))


def _unique(name: str, used: set[str], index: int) -> str:
    """Two inputs of the same name (shoe.jpg and shoe.png) give two outputs: the later one gets its index."""
    if name in used:
        path = PurePosixPath(name)
        name = str(path.with_name(f"{path.stem}-{index}{path.suffix}"))
    used.add(name)
    return name
