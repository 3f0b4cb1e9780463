"""Training pairs: an input image, the wanted output, and the instruction.

Layouts accepted (the ones other Kontext trainers use):
- a folder (or a .zip of one) with NAME_start.EXT and NAME_end.EXT, and an optional NAME.txt caption;
- a JSONL manifest, one {"start": ..., "end": ..., "caption": ...} per line, paths relative to it.
Every problem is collected and reported at once, with the file names, before training starts.
"""

from __future__ import annotations

import json
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ..imaging.decode import DecodedImage, decode_image
from ..schema import FluxeditError, InputError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}
MIN_PAIRS = 2
# A zip is unpacked only within these, whatever its compressed size (a small zip can unpack to terabytes).
MAX_ZIP_MEMBERS = 20_000
MAX_UNPACKED_BYTES = 8 * 1024**3


class DatasetError(FluxeditError):
    def __init__(self, problems: list[str]):
        self.problems = problems
        listed = "\n".join(f"  - {problem}" for problem in problems)
        super().__init__(f"the training data has {len(problems)} problem(s):\n{listed}")


@dataclass
class Pair:
    name: str
    start: DecodedImage | None  # None only from count_pairs, which checks images without keeping them
    end: DecodedImage | None
    caption: str


def load_pairs(source: Path, default_caption: str | None = None, trigger_word: str | None = None) -> list[Pair]:
    return _load(Path(source), default_caption, trigger_word, keep_images=True)


def count_pairs(source: Path, default_caption: str | None = None, trigger_word: str | None = None) -> int:
    """Check every pair as load_pairs does, holding one decoded image at a time (the service checks a data
    set of thousands of pairs this way); the number of pairs."""
    return len(_load(Path(source), default_caption, trigger_word, keep_images=False))


def _load(source: Path, default_caption, trigger_word, keep_images: bool) -> list[Pair]:
    if not source.exists():
        raise DatasetError([f"{source}: no such file or folder"])
    if source.suffix == ".zip":
        with tempfile.TemporaryDirectory() as folder:
            root = extract_zip(source, Path(folder))
            return _from_folder(root, default_caption, trigger_word, source.name, keep_images)
    if source.suffix == ".jsonl":
        return _from_manifest(source, default_caption, trigger_word, keep_images)
    if source.is_dir():
        return _from_folder(source, default_caption, trigger_word, source.name, keep_images)
    raise DatasetError([f"{source}: not a folder, a .zip or a .jsonl manifest"])


def _from_folder(folder: Path, default_caption, trigger_word, shown: str, keep_images: bool) -> list[Pair]:
    starts, ends, problems = {}, {}, []
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        stem = path.stem
        if stem.endswith("_start"):
            starts[stem.removesuffix("_start")] = path
        elif stem.endswith("_end"):
            ends[stem.removesuffix("_end")] = path
        else:
            problems.append(f"{shown}/{path.name}: an image neither NAME_start nor NAME_end")
    for name in sorted(set(starts) - set(ends)):
        problems.append(f"{shown}/{starts[name].name}: its pair {name}_end.* is missing")
    for name in sorted(set(ends) - set(starts)):
        problems.append(f"{shown}/{ends[name].name}: its pair {name}_start.* is missing")
    entries = []
    for name in sorted(set(starts) & set(ends)):
        caption_file = folder / f"{name}.txt"
        caption = caption_file.read_text(encoding="utf-8").strip() if caption_file.is_file() else None
        entries.append((name, starts[name], ends[name], caption))
    return _build(entries, problems, default_caption, trigger_word, shown, keep_images)


def _from_manifest(manifest: Path, default_caption, trigger_word, keep_images: bool) -> list[Pair]:
    entries, problems = [], []
    for number, line in enumerate(manifest.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            start, end = manifest.parent / row["start"], manifest.parent / row["end"]
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            problems.append(f"{manifest.name} line {number}: not an object with start and end ({error})")
            continue
        entries.append((f"line {number}", start, end, row.get("caption")))
    return _build(entries, problems, default_caption, trigger_word, manifest.name, keep_images)


def _build(entries, problems: list[str], default_caption, trigger_word, shown: str, keep_images: bool) -> list[Pair]:
    pairs = []
    for name, start_path, end_path, caption in entries:
        start, end = _read(start_path, problems), _read(end_path, problems)
        caption = caption or default_caption
        if not caption:
            problems.append(f"{shown}: pair {name} has no caption ({name}.txt) and no default caption was given")
        if start is None or end is None or not caption:
            continue
        if not keep_images:  # checked: let them go before the next pair is decoded
            start = end = None
        pairs.append(Pair(name, start, end, f"{trigger_word} {caption}" if trigger_word else caption))
    if not problems and len(pairs) < MIN_PAIRS:
        problems.append(f"{shown}: {len(pairs)} pair(s) found, at least {MIN_PAIRS} are needed")
    if problems:
        raise DatasetError(problems)
    return pairs


def _read(path: Path, problems: list[str]) -> DecodedImage | None:
    try:
        return decode_image(path.read_bytes(), field=path.name)
    except OSError as error:
        problems.append(f"{path.name}: cannot be read ({error.strerror or error})")
    except InputError as error:
        problems.append(str(error))
    return None


def extract_zip(archive: Path, target: Path) -> Path:
    """Unpack `archive` into `target` (refusing members that point outside it); the folder holding the data:
    `target` itself, or the one folder a zip of a single folder contains."""
    with zipfile.ZipFile(archive) as zipped:
        members = zipped.infolist()
        if len(members) > MAX_ZIP_MEMBERS:
            raise DatasetError([f"{archive.name}: holds {len(members):,} files, at most {MAX_ZIP_MEMBERS:,}"])
        unpacked = sum(member.file_size for member in members)
        if unpacked > MAX_UNPACKED_BYTES:
            raise DatasetError([f"{archive.name}: unpacks to {unpacked / 1024**3:.1f} GB, at most "
                                f"{MAX_UNPACKED_BYTES // 1024**3} GB"])  # fmt: skip
        for member in members:
            if not (target / member.filename).resolve().is_relative_to(target.resolve()):
                raise DatasetError([f"{member.filename}: points outside the archive"])
        zipped.extractall(target)  # each member's declared size is enforced while it is read (its CRC too)
    children = [p for p in target.iterdir() if not p.name.startswith(("__MACOSX", "."))]
    return children[0] if len(children) == 1 and children[0].is_dir() else target
