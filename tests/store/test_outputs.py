"""A prediction's outputs are stored all together or not at all."""

from __future__ import annotations

import hashlib

import pytest

from fluxedit.store.database import open_database
from fluxedit.store.files import FileStore
from fluxedit.store.models import StoredFile
from fluxedit.store.objects import LocalFolderObjects


class FailsOnSecondWrite(LocalFolderObjects):
    def __init__(self, folder):
        super().__init__(folder)
        self.writes = 0

    def put(self, key: str, data: bytes) -> None:
        self.writes += 1
        if self.writes == 2:
            raise OSError(28, "No space left on device")
        super().put(key, data)


def store(tmp_path, objects) -> FileStore:
    return FileStore(objects, open_database(f"sqlite:///{tmp_path / 'fluxedit.db'}"))


def stored_records(files: FileStore) -> list[StoredFile]:
    with files.sessions() as session:
        return list(session.query(StoredFile))


def test_the_outputs_are_recorded_with_their_digests_and_size(tmp_path):
    files = store(tmp_path, LocalFolderObjects(tmp_path / "files"))
    images = [b"first image", b"second image"]
    records = files.put_outputs(
        images, content_type="image/png", filenames=["p-0.png", "p-1.png"], owner_key_id=None, size=(64, 32)
    )
    assert [files.read(r.id) for r in records] == images
    assert [r.sha256 for r in records] == [hashlib.sha256(i).hexdigest() for i in images]
    assert {(r.purpose, r.width, r.height) for r in stored_records(files)} == {("output", 64, 32)}


def test_a_write_that_fails_leaves_no_part_of_the_outputs(tmp_path):
    objects = FailsOnSecondWrite(tmp_path / "files")
    files = store(tmp_path, objects)
    with pytest.raises(OSError, match="No space left"):
        files.put_outputs(
            [b"first", b"second"], content_type="image/png", filenames=["a.png", "b.png"], owner_key_id=None,
            size=(8, 8),
        )  # fmt: skip
    assert stored_records(files) == []
    assert [p for p in (tmp_path / "files").rglob("*") if p.is_file()] == []  # the first image's bytes went too
