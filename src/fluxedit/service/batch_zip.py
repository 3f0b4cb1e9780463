"""A batch's images from a zip upload: each member read, checked and stored as a file, one at a time.

The zip is opened under the training data's limits (members, unpacked size, paths that stay inside it);
a member that is not a JPEG, PNG or WebP image (or does not decode as one) is listed as skipped with the
reason instead of refusing the whole batch. A `prompts.csv` (name,prompt) or `prompts.jsonl` ({"name",
"prompt"} per line) in the zip gives per-image prompts. Never more than one image is in memory at once.
Runs in a thread: every step here blocks.
"""

from __future__ import annotations

import csv
import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import PurePosixPath

from ..imaging.decode import decode_image
from ..schema import InputError
from ..store.files import CONTENT_TYPES, FileStore
from ..training.dataset import IMAGE_SUFFIXES, MAX_UNPACKED_BYTES, MAX_ZIP_MEMBERS
from .keys import Caller
from .training_data import UNREADABLE_ZIP, zip_problem

PROMPT_FILES = ("prompts.csv", "prompts.jsonl")
MAX_MEMBER_BYTES = 50 * 1024 * 1024  # one image, as an upload may be (api/uploads.py)
MAX_PROMPTS_BYTES = 16 * 1024 * 1024
NOT_AN_IMAGE = "not a JPEG, PNG or WebP image"


@dataclass(frozen=True)
class BatchImage:
    """One image of a batch as the caller gave it: a URL, a file id or a data URI; an optional prompt and name."""

    image: str
    prompt: str | None = None
    name: str | None = None


@dataclass(frozen=True)
class Skipped:
    name: str
    reason: str


def read_batch_zip(
    zip_path, files: FileStore, caller: Caller, max_images: int
) -> tuple[list[BatchImage], list[Skipped]]:
    """The zip's images stored as the caller's input files (in name order), and the members skipped."""
    try:
        with zipfile.ZipFile(zip_path) as archive:
            members = _checked_members(archive)
            images_in = sum(PurePosixPath(m.filename).suffix.lower() in IMAGE_SUFFIXES for m in members)
            if images_in > max_images:  # before any is stored
                raise InputError(
                    "data",
                    f"holds {images_in:,} images; a batch holds at most {max_images:,} (FLUXEDIT_MAX_BATCH_IMAGES)",
                )
            root = _common_folder(members)
            prompts = _prompts(archive, members, root)
            images, skipped, names = [], [], set()
            for member in members:
                name = _name(member.filename, root)
                if name in PROMPT_FILES:
                    continue
                stored, reason = _store_member(archive, member, name, files, caller)
                if stored is None:
                    skipped.append(Skipped(name, reason))
                    continue
                names.add(name)
                images.append(BatchImage(stored, _prompt_for(prompts, name), name))
    except UNREADABLE_ZIP as error:
        raise InputError("data", zip_problem(error)) from None
    unknown = sorted(set(prompts) - names - {PurePosixPath(n).stem for n in names})
    if unknown:
        shown = ", ".join(unknown[:5]) + (" ..." if len(unknown) > 5 else "")
        raise InputError("data", f"the prompts file names images the zip does not hold: {shown}")
    return images, skipped


def _checked_members(archive: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    members = [m for m in archive.infolist() if not m.is_dir() and not _hidden(m.filename)]
    if len(members) > MAX_ZIP_MEMBERS:
        raise InputError("data", f"holds {len(members):,} files, at most {MAX_ZIP_MEMBERS:,}")
    unpacked = sum(member.file_size for member in members)
    if unpacked > MAX_UNPACKED_BYTES:
        raise InputError("data", f"unpacks to {unpacked / 1024**3:.1f} GB, at most {MAX_UNPACKED_BYTES // 1024**3} GB")
    for member in members:
        parts = PurePosixPath(member.filename.replace("\\", "/")).parts
        if member.filename.startswith(("/", "\\")) or ".." in parts:
            raise InputError("data", f"{member.filename}: points outside the archive")
    return sorted(members, key=lambda m: m.filename)


def _hidden(path: str) -> bool:
    """macOS resource forks and dot files: not the user's images, never listed as skipped."""
    return any(part.startswith(("__MACOSX", ".")) for part in PurePosixPath(path).parts)


def _common_folder(members: list[zipfile.ZipInfo]) -> str:
    """The one folder every member lies in (a zip of a folder), or "": names are shown relative to it."""
    tops = {m.filename.split("/", 1)[0] for m in members}
    if len(tops) == 1 and all("/" in m.filename for m in members):
        return tops.pop() + "/"
    return ""


def _name(path: str, root: str) -> str:
    return path.removeprefix(root)[:255]


def _store_member(archive, member, name: str, files: FileStore, caller: Caller) -> tuple[str | None, str]:
    """(the stored file's id, "") or (None, why it was skipped)."""
    if PurePosixPath(name).suffix.lower() not in IMAGE_SUFFIXES:
        return None, NOT_AN_IMAGE
    if member.file_size > MAX_MEMBER_BYTES:
        return None, f"larger than {MAX_MEMBER_BYTES // 1024**2} MB"
    data = archive.read(member)  # its declared size and CRC are checked while it is read
    try:
        decoded = decode_image(data, name)
    except InputError as error:
        return None, error.problem
    decoded.image.close()
    record = files.put(
        data,
        purpose="input",
        content_type=CONTENT_TYPES[decoded.format.value],
        filename=PurePosixPath(name).name,
        owner_key_id=caller.key_id,
        size=decoded.original_size,
    )
    return record.id, ""


def _prompts(archive: zipfile.ZipFile, members: list[zipfile.ZipInfo], root: str) -> dict[str, str]:
    """name -> prompt, from the zip's prompts file (at its top, or in its one folder); {} without one."""
    found = {_name(m.filename, root): m for m in members}
    for file_name in PROMPT_FILES:
        member = found.get(file_name)
        if member is None:
            continue
        if member.file_size > MAX_PROMPTS_BYTES:
            raise InputError("data", f"{file_name}: is larger than {MAX_PROMPTS_BYTES // 1024**2} MB")
        try:
            text = archive.read(member).decode("utf-8-sig")
        except UnicodeDecodeError:
            raise InputError("data", f"{file_name}: is not UTF-8 text") from None
        return _csv_prompts(text) if file_name.endswith(".csv") else _jsonl_prompts(text)
    return {}


def _csv_prompts(text: str) -> dict[str, str]:
    prompts = {}
    for number, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        if not row or not any(cell.strip() for cell in row):
            continue
        if number == 1 and [cell.strip().lower() for cell in row[:2]] == ["name", "prompt"]:
            continue  # the header
        if len(row) < 2 or not row[0].strip() or not row[1].strip():
            raise InputError("data", f"prompts.csv line {number}: must be name,prompt")
        prompts[row[0].strip()] = row[1].strip()
    return prompts


def _jsonl_prompts(text: str) -> dict[str, str]:
    prompts = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            entry = None
        if not (
            isinstance(entry, dict) and isinstance(entry.get("name"), str) and isinstance(entry.get("prompt"), str)
        ):
            raise InputError("data", f'prompts.jsonl line {number}: must be {{"name": ..., "prompt": ...}}')
        prompts[entry["name"].strip()] = entry["prompt"].strip()
    return prompts


def _prompt_for(prompts: dict[str, str], name: str) -> str | None:
    """A prompts file may name an image with or without its extension."""
    return prompts.get(name) or prompts.get(PurePosixPath(name).stem) or None
