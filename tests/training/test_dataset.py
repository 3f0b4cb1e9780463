import json
import zipfile

import pytest
from PIL import ImageOps

from fluxedit.training.dataset import DatasetError, load_pairs
from tests.helpers import pattern


def make_pairs(folder, count=3, captions=True):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        picture = pattern(96, 64, seed=i)
        picture.save(folder / f"p{i}_start.png")
        ImageOps.invert(picture).save(folder / f"p{i}_end.jpg")
        if captions:
            (folder / f"p{i}.txt").write_text(f"invert the colours of picture {i}")
    return folder


def test_a_folder_of_pairs_with_captions_and_a_trigger_word(tmp_path):
    pairs = load_pairs(make_pairs(tmp_path / "data"), trigger_word="INV")
    assert [p.name for p in pairs] == ["p0", "p1", "p2"]
    assert pairs[1].caption == "INV invert the colours of picture 1"
    assert pairs[0].start.image.size == pairs[0].end.image.size == (96, 64)


def test_a_zip_and_a_jsonl_manifest(tmp_path):
    folder = make_pairs(tmp_path / "set", captions=False)
    archive = tmp_path / "set.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for path in folder.iterdir():
            zipped.write(path, f"set/{path.name}")
    assert [p.caption for p in load_pairs(archive, default_caption="invert")] == ["invert"] * 3
    manifest = tmp_path / "pairs.jsonl"
    rows = [{"start": f"set/p{i}_start.png", "end": f"set/p{i}_end.jpg", "caption": f"c{i}"} for i in range(2)]
    manifest.write_text("\n".join(json.dumps(row) for row in rows))
    assert [p.caption for p in load_pairs(manifest)] == ["c0", "c1"]


def test_every_problem_is_reported_at_once_with_file_names(tmp_path):
    folder = make_pairs(tmp_path / "data", count=3, captions=False)
    (folder / "p1_end.jpg").unlink()  # a pair with one half missing
    (folder / "p2_start.png").write_bytes(b"not an image")  # an unreadable image
    (folder / "lonely_end.png").write_bytes((folder / "p0_end.jpg").read_bytes())
    with pytest.raises(DatasetError) as error:
        load_pairs(folder)  # and no captions, no default caption
    problems = "\n".join(error.value.problems)
    assert "p1_start.png: its pair p1_end.* is missing" in problems
    assert "lonely_end.png: its pair lonely_start.* is missing" in problems
    assert "p2_start.png: is not an image" in problems
    assert "pair p0 has no caption (p0.txt) and no default caption was given" in problems
    assert "pair p2 has no caption" in problems
    assert len(error.value.problems) == 5


def test_too_few_pairs(tmp_path):
    with pytest.raises(DatasetError, match="1 pair\\(s\\) found, at least 2 are needed"):
        load_pairs(make_pairs(tmp_path / "one", count=1))
    with pytest.raises(DatasetError, match="no such file or folder"):
        load_pairs(tmp_path / "missing")
