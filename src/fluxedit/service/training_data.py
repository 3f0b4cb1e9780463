"""A training's data: the zip of before/after pairs unpacked into its folder, and every pair checked.

A damaged or unusual zip is the sender's problem, told as such (an InputError naming `data`, never a 500);
the pairs are checked against the storage quota before they are unpacked.
"""

from __future__ import annotations

import shutil
import zipfile
import zlib
from pathlib import Path

from ..schema import InputError
from ..training.dataset import DatasetError, count_pairs, extract_zip
from ..training_options import TrainingInput
from .keys import Caller

# What a damaged or unusual zip raises while it is read: the sender's problem, told as such (never a 500).
# RuntimeError: an encrypted member; NotImplementedError: an unsupported compression; zlib.error and
# EOFError: damaged data; UnicodeDecodeError: a caption that is not UTF-8 text.
UNREADABLE_ZIP = (zipfile.BadZipFile, zipfile.LargeZipFile, RuntimeError, NotImplementedError, zlib.error, EOFError,
                  UnicodeDecodeError)  # fmt: skip


def zip_problem(error: Exception) -> str:
    if isinstance(error, zipfile.BadZipFile):
        return f"not a zip file ({error})"
    if isinstance(error, UnicodeDecodeError):
        return "a caption file is not UTF-8 text"
    if isinstance(error, RuntimeError):
        return f"the zip cannot be read: it is encrypted or damaged ({error})"
    if isinstance(error, NotImplementedError):
        return f"the zip uses a compression method this server does not read ({error}); use deflate or store"
    return f"the zip is damaged ({type(error).__name__}: {error})"


def unpack(folder: Path, zip_path: Path, training_input: TrainingInput, caller: Caller, quota) -> tuple[Path, int]:
    """Extract the pairs under `folder`/data and check every one (runs in a thread); (the data folder, the number
    of pairs). On any failure `folder` is removed."""
    unpacked = folder / "data"
    unpacked.mkdir(parents=True)
    try:
        if quota is not None:
            with zipfile.ZipFile(zip_path) as archive:
                quota.check(caller.key_id, sum(info.file_size for info in archive.infolist()))
        data_dir = extract_zip(zip_path, unpacked)
        pairs = count_pairs(data_dir, training_input.default_caption, training_input.trigger_word)
    except (DatasetError, *UNREADABLE_ZIP) as error:
        shutil.rmtree(folder, ignore_errors=True)
        problems = error.problems if isinstance(error, DatasetError) else [f"data: {zip_problem(error)}"]
        raise InputError("data", "; ".join(problems)) from None
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    finally:
        if quota is not None:
            quota.forget_training_sizes()
    return data_dir, pairs
