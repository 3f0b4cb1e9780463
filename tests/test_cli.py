"""The `fluxedit` command, run as a user runs it: a real process."""

import io
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fluxedit.imaging.encode import read_metadata
from tests.helpers import encoded, pattern

FLUXEDIT = shutil.which("fluxedit") or str(Path(sys.executable).with_name("fluxedit"))


def fluxedit(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([FLUXEDIT, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.fixture
def photo(tmp_path) -> Path:
    path = tmp_path / "photo.jpg"
    path.write_bytes(encoded(pattern(640, 480), "JPEG"))
    return path


def test_edit_writes_an_image_of_the_snapped_size(photo, tmp_path):
    result = fluxedit("edit", str(photo), "--prompt", "make it blue", "--model", "tiny", "-o", "out.png",
                      "--steps", "2", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    written = Image.open(tmp_path / "out.png")
    assert written.format == "PNG" and written.size == (1184, 880)
    assert "wrote out.png (1184x880" in result.stderr
    assert "seed " in result.stderr and "2/2" in result.stderr  # the seed and the progress bar


def test_same_seed_gives_byte_identical_files(photo, tmp_path):
    for name in ("a.png", "b.png"):
        result = fluxedit("edit", str(photo), "-p", "make it blue", "--model", "tiny", "-o", name,
                          "--seed", "42", "--steps", "2", cwd=tmp_path)  # fmt: skip
        assert result.returncode == 0, result.stderr
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    assert read_metadata((tmp_path / "a.png").read_bytes())["seed"] == 42


def test_num_images_writes_that_many_files_in_the_format_asked(photo, tmp_path):
    result = fluxedit("edit", str(photo), "-p", "make it blue", "--model", "tiny", "-o", "out.png",
                      "--num-images", "3", "--steps", "1", "--format", "webp", "--resolution-mode", "1:1",
                      cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    files = sorted(p.name for p in tmp_path.glob("out-*"))
    assert files == ["out-1.png", "out-2.png", "out-3.png"]
    for name in files:  # --format wins over the extension
        picture = Image.open(tmp_path / name)
        assert picture.format == "WEBP" and picture.size == (1024, 1024)


def test_references_and_default_output_name(photo, tmp_path):
    reference = tmp_path / "style.png"
    reference.write_bytes(encoded(pattern(300, 300, seed=3), "PNG"))
    result = fluxedit("edit", str(photo), str(reference), "-p", "in the style of the second image",
                      "--model", "tiny", "--steps", "1", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    output = tmp_path / "photo-edited.jpg"  # next to the input, in the input's format
    assert Image.open(io.BytesIO(output.read_bytes())).format == "JPEG"


def test_a_reference_image_changes_the_result(photo, tmp_path):
    """Same seed and prompt: the reference is part of what the model sees, and which reference matters."""
    references = {}
    for seed in (3, 4):
        references[seed] = tmp_path / f"style-{seed}.png"
        references[seed].write_bytes(encoded(pattern(300, 300, seed=seed), "PNG"))

    def edit(name: str, *extra: str) -> bytes:
        result = fluxedit("edit", str(photo), *extra, "-p", "in the style of the second image", "--model", "tiny",
                          "--steps", "1", "--seed", "7", "--no-metadata", "-o", name, cwd=tmp_path)  # fmt: skip
        assert result.returncode == 0, result.stderr
        return (tmp_path / name).read_bytes()

    alone = edit("alone.png")
    with_three, with_four = edit("three.png", str(references[3])), edit("four.png", str(references[4]))
    assert alone == edit("alone-again.png")  # deterministic, so a difference below is the reference's doing
    assert with_three != alone and with_four != alone and with_three != with_four


@pytest.mark.parametrize(
    ("make_input", "extra", "message"),
    [
        (lambda d: d / "missing.jpg", [], "image {path}: no such file"),
        (lambda d: _write(d / "notes.jpg", b"just some text"), [], "is not an image"),
        (lambda d: _write(d / "anim.png", encoded(pattern(64, 64), "GIF")), [],
         "is a GIF image; only JPEG, PNG and WebP are accepted"),
        (lambda d: _write(d / "ok.jpg", encoded(pattern(64, 64), "JPEG")), ["--steps", "80"],
         "--steps (num_inference_steps): must be at most 50 (got 80)"),
        (lambda d: _write(d / "ok.jpg", encoded(pattern(64, 64), "JPEG")), ["-o", "out.gif"],
         "-o: .gif is not a format fluxedit writes"),
        (lambda d: _write(d / "ok.jpg", encoded(pattern(64, 64), "JPEG")), ["--num-images", "0"],
         "--num-images (num_images): must be at least 1"),
    ],
)  # fmt: skip
def test_clear_errors_without_a_traceback(tmp_path, make_input, extra, message):
    path = make_input(tmp_path)
    result = fluxedit("edit", str(path), "-p", "x", "--model", "tiny", *extra, cwd=tmp_path)
    assert result.returncode == 2
    assert message.format(path=path) in result.stderr
    assert "Traceback" not in result.stderr


def _mask(path: Path, size=(640, 480), box=(0, 0, 320, 240), level=255) -> Path:
    mask = Image.new("L", size, 0)
    mask.paste(level, box)
    mask.save(path)
    return path


def test_edit_with_a_mask_strength_and_output_resolution(photo, tmp_path):
    mask = _mask(tmp_path / "mask.png")
    result = fluxedit("edit", str(photo), "-p", "a red hat", "--model", "tiny", "--steps", "1", "-o", "out.png",
                      "--mask", str(mask), "--strength", "0.8", "--output-resolution", "input",
                      cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert Image.open(tmp_path / "out.png").format == "PNG" and "wrote out.png" in result.stderr


def test_a_full_mask_is_the_plain_edit(photo, tmp_path):
    full = _mask(tmp_path / "full.png", box=(0, 0, 640, 480))
    for name, extra in (("plain.png", []), ("full.png", ["--mask", str(full)])):
        result = fluxedit("edit", str(photo), "-p", "x", "--model", "tiny", "--steps", "1", "--seed", "3",
                          "-o", name, *extra, cwd=tmp_path)  # fmt: skip
        assert result.returncode == 0, result.stderr
    assert (tmp_path / "plain.png").read_bytes() == (tmp_path / "full.png").read_bytes()


def test_output_resolution_input_keeps_a_large_inputs_size_and_every_pixel_outside_the_mask(tmp_path):
    """Above the model's decode size the main image and the mask are read at full size, as the worker reads a
    job's: the result is the input's size and, outside the mask and its feather, the input's own pixels."""
    from fluxedit.imaging.composite import feather_width

    width, height = 1800, 1200  # past model_size's 2 MP: a model-size decode would have shrunk it
    source = pattern(width, height, seed=9)
    photo = _write(tmp_path / "large.png", encoded(source, "PNG"))
    corner = (width - 150, height - 150, width, height)  # a small corner: the crop path
    mask = _mask(tmp_path / "corner.png", (width, height), corner)
    args = ["edit", str(photo), "-p", "a red hat", "--model", "tiny", "--steps", "2", "--seed", "5",
            "--output-resolution", "input"]  # fmt: skip
    masked = fluxedit(*args, "--mask", str(mask), "-o", "masked.png", cwd=tmp_path)
    whole = fluxedit(*args, "-o", "whole.png", cwd=tmp_path)
    assert masked.returncode == 0 == whole.returncode, masked.stderr + whole.stderr
    assert f"wrote masked.png ({width}x{height}" in masked.stderr and "edited a crop" in masked.stderr
    assert Image.open(tmp_path / "whole.png").size == (width, height)
    pixels = np.asarray(Image.open(tmp_path / "masked.png").convert("RGB"))
    expected = np.asarray(source)
    reach_x, reach_y = corner[0] - feather_width(width, height), corner[1] - feather_width(width, height)
    assert pixels.shape == expected.shape
    assert np.array_equal(pixels[:reach_y], expected[:reach_y]) and np.array_equal(
        pixels[:, :reach_x], expected[:, :reach_x]
    )
    assert not np.array_equal(pixels[corner[1] :, corner[0] :], expected[corner[1] :, corner[0] :])


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--mask", "{small}"], "--mask {small}: is 64x48 but the image to edit ({photo}) is 640x480"),
        (["--mask", "{empty}"], "--mask {empty}: marks nothing to edit"),
        (["--mask", "{missing}"], "--mask {missing}: no such file"),
        (["--strength", "2"], "--strength (strength): must be at most 1"),
        (["--output-resolution", "8k"], "--output-resolution (output_resolution): must be one of model, input"),
    ],
)
def test_bad_masks_and_settings_are_refused_clearly(photo, tmp_path, extra, message):
    paths = {"small": _mask(tmp_path / "small.png", (64, 48), (0, 0, 8, 8)), "photo": photo,
             "empty": _mask(tmp_path / "empty.png", level=0), "missing": tmp_path / "missing.png"}  # fmt: skip
    args = [part.format(**paths) for part in extra]
    result = fluxedit("edit", str(photo), "-p", "x", "--model", "tiny", *args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert message.format(**paths) in " ".join(result.stderr.split())
    assert "Traceback" not in result.stderr


def test_unknown_model_path_exits_with_a_reason(photo, tmp_path):
    result = fluxedit("edit", str(photo), "-p", "x", "--model", "./no/such/folder", cwd=tmp_path)
    assert result.returncode == 1
    assert "./no/such/folder was not found" in result.stderr
    assert "Traceback" not in result.stderr


def test_tiny_command_writes_a_loadable_folder_and_single_file(photo, tmp_path):
    result = fluxedit("tiny", "tiny-model", "--bfl-file", "tiny.safetensors", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "tiny-model" / "model_index.json").is_file()
    result = fluxedit("edit", str(photo), "-p", "x", "--model", "tiny.safetensors", "--components", "tiny-model",
                      "--steps", "1", "-o", "single.png", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert Image.open(tmp_path / "single.png").size == (1184, 880)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_edit_with_loras_and_their_scales(photo, tmp_path):
    from tests import lora_builders as build

    style = build.write(build.diffusers_lora(seed=50), tmp_path / "style.safetensors")
    args = ["edit", str(photo), "-p", "x", "--model", "tiny", "--steps", "1", "--seed", "3"]
    base = fluxedit(*args, "-o", "base.png", cwd=tmp_path)
    zero = fluxedit(*args, "-o", "zero.png", "--lora", f"{style}:0", cwd=tmp_path)
    styled = fluxedit(*args, "-o", "styled.png", "--lora", f"{style}:0.9", cwd=tmp_path)
    assert base.returncode == zero.returncode == styled.returncode == 0, styled.stderr
    pixels = {name: Image.open(tmp_path / f"{name}.png").tobytes() for name in ("base", "zero", "styled")}
    assert pixels["zero"] == pixels["base"] and pixels["styled"] != pixels["base"]
    assert read_metadata((tmp_path / "styled.png").read_bytes())["loras"] == [
        {"name": "style.safetensors", "scale": 0.9}
    ]
    sdxl = build.write(build.sdxl_lora(), tmp_path / "sdxl.safetensors")
    refused = fluxedit(*args, "--lora", str(sdxl), cwd=tmp_path)
    assert refused.returncode == 2
    assert "--lora" in refused.stderr and ("is not a FLUX LoRA" in refused.stderr or "does not fit" in refused.stderr)


def test_train_writes_both_lora_layouts_and_reports_data_problems(tmp_path):
    from PIL import ImageOps

    data = tmp_path / "pairs"
    data.mkdir()
    for i in range(3):
        pattern(128, 128, seed=i).save(data / f"p{i}_start.png")
        ImageOps.invert(pattern(128, 128, seed=i)).save(data / f"p{i}_end.png")
    result = fluxedit("train", str(data), "--out", "invert.safetensors", "--model", "tiny", "--steps", "4",
                      "--resolution", "256", "--default-caption", "invert", "--checkpoint-every", "2",
                      cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "invert.safetensors").is_file() and (tmp_path / "invert-comfyui.safetensors").is_file()
    assert (tmp_path / "invert-training" / "checkpoints" / "step-000004").is_dir()
    assert "4/4" in result.stderr and "loss" in result.stderr
    (data / "p0_end.png").unlink()
    broken = fluxedit("train", str(data), "--out", "x.safetensors", "--model", "tiny", cwd=tmp_path)
    assert broken.returncode == 2
    assert "p0_start.png: its pair p0_end.* is missing" in broken.stderr and "no caption" in broken.stderr


def test_keys_commands_say_which_data_folder_they_use(tmp_path):
    made = fluxedit("keys", "create", "alice", cwd=tmp_path)  # no --data-dir: the default, relative to here
    assert made.returncode == 0, made.stderr
    folder = (tmp_path / "fluxedit-data").resolve()
    assert f"data folder {folder} (new)" in made.stderr and "--data-dir" in made.stderr
    assert made.stdout.strip().startswith("fxe_") and len(made.stdout.strip().splitlines()) == 1  # stdout: the key
    elsewhere = tmp_path / "elsewhere"
    listed = fluxedit("keys", "list", "--data-dir", str(elsewhere), cwd=tmp_path)
    assert f"data folder {elsewhere.resolve()} (new)" in listed.stderr and "alice" not in listed.stdout
    listed = fluxedit("keys", "list", cwd=tmp_path)
    assert f"data folder {folder};" in listed.stderr and "alice" in listed.stdout


def test_texts_with_brackets_are_printed_as_written(tmp_path):
    missing = fluxedit("edit", "photo[dev].png", "-p", "x", "--model", "tiny", cwd=tmp_path)
    assert missing.returncode == 2 and "image photo[dev].png: no such file" in missing.stderr
    made = fluxedit("keys", "create", "a[dev]", cwd=tmp_path)
    assert "created key 'a[dev]'" in made.stderr
    assert "a[dev]" in fluxedit("keys", "list", cwd=tmp_path).stdout


def test_a_refused_serve_suggests_the_key_command_with_its_data_folder(tmp_path):
    data = tmp_path / "service data"
    refused = fluxedit("serve", "--model", "tiny", "--host", "0.0.0.0", "--data-dir", str(data), cwd=tmp_path)
    assert refused.returncode == 2
    assert f"data folder {data.resolve()}" in refused.stderr
    assert f"`fluxedit keys create NAME --data-dir '{data.resolve()}'`" in refused.stderr


@pytest.fixture
def hub_watch(monkeypatch):
    """A Hugging Face endpoint on 127.0.0.1 that records whether anything connects (and never answers)."""
    import socket

    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{listener.getsockname()[1]}")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("FLUXEDIT_COMPONENTS", raising=False)

    def connected() -> bool:
        try:
            listener.accept()[0].close()
            return True
        except BlockingIOError:
            return False

    yield connected
    listener.close()


def test_a_single_file_without_components_is_refused_at_once_with_the_fix(photo, tmp_path, hub_watch):
    assert fluxedit("tiny", "tiny-model", "--bfl-file", "tiny.safetensors", cwd=tmp_path).returncode == 0
    commands = [["edit", str(photo), "-p", "x"], ["train", str(tmp_path), "--out", "x.safetensors"], ["serve"]]
    for command in commands:
        result = fluxedit(*command, "--model", "tiny.safetensors", cwd=tmp_path)
        assert result.returncode == 1, (command, result.stderr)
        assert "tiny.safetensors is a single-file transformer" in result.stderr
        assert "--components" in result.stderr and "diffusers folder of FLUX.1 Kontext [dev]" in result.stderr
        assert "Traceback" not in result.stderr
    assert not hub_watch(), "nothing may be fetched to say that --components is missing"


def test_the_engine_refuses_a_single_file_without_components(tmp_path, hub_watch):
    from fluxedit.engine.loading import load_model
    from fluxedit.engine.tiny import write_tiny_bfl_checkpoint
    from fluxedit.schema import ModelUnavailable

    checkpoint = tmp_path / "tiny.safetensors"
    write_tiny_bfl_checkpoint(checkpoint)
    with pytest.raises(ModelUnavailable, match="single-file transformer: the text encoders, VAE and configs come from"):
        load_model(str(checkpoint))
    assert not hub_watch()


def test_the_startup_bench_splits_an_edit_into_its_parts():
    result = subprocess.run([sys.executable, "-m", "bench.cli_startup", "--repeats", "1"],
                            capture_output=True, text=True, timeout=600, cwd=Path(__file__).parent.parent)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    for row in ("| `python -c pass` |", "| `fluxedit --help` |", "| total, as the user waits |",
                "| importing torch and diffusers (printed by the command) |",
                "| the engine's edit: generate + encode (printed) |"):  # fmt: skip
        assert row in result.stdout
    assert "overhead on top of the engine's edit: median" in result.stdout
