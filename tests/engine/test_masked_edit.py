"""Masked edits: only the masked region is regenerated, as diffusers' FluxKontextInpaintPipeline does it."""

import copy
import io

import numpy as np
import pytest
import torch
from diffusers import FluxKontextInpaintPipeline
from PIL import Image

from fluxedit.engine import EditRequest
from fluxedit.engine.engine import EngineOptions
from fluxedit.engine.kontext import encode_latent
from fluxedit.engine.masked import start_step
from fluxedit.engine.tokens import unpack
from fluxedit.imaging.composite import feather_width
from fluxedit.imaging.decode import DecodedImage, decode_image
from fluxedit.imaging.encode import read_metadata
from fluxedit.resolution import nearest_preferred_size
from fluxedit.schema import InputError, OutputFormat
from tests.helpers import encoded, pattern, settings

WIDTH, HEIGHT = 1184, 880  # a preferred Kontext size: the model works on the input as it is
BOX = (320, 160, 800, 560)  # the masked rectangle; its edges on the 16-pixel token grid


def _rectangle_mask(size=(WIDTH, HEIGHT), box=BOX) -> Image.Image:
    mask = Image.new("L", size, 0)
    mask.paste(255, box)
    return mask


@pytest.fixture(scope="module")
def photo():
    return DecodedImage(pattern(WIDTH, HEIGHT, seed=3), OutputFormat.png)


def run_inpaint(engine, image, mask, seed, steps, strength, guidance=2.5, prompt="make it blue"):
    """diffusers' FluxKontextInpaintPipeline on the engine's own weights (its own scheduler copy: it sets state)."""
    components = dict(engine.pipe.components, scheduler=copy.deepcopy(engine.pipe.scheduler))
    pipe = FluxKontextInpaintPipeline(**components)
    return pipe(
        image=image,
        mask_image=mask,
        prompt=prompt,
        num_inference_steps=steps,
        guidance_scale=guidance,
        strength=strength,
        generator=torch.Generator().manual_seed(seed),
        output_type="np",
    ).images


@pytest.mark.parametrize(("steps", "strength"), [(2, 1.0), (3, 0.6)])
def test_masked_edit_equals_diffusers_inpaint_pipeline(tiny_engine, photo, steps, strength):
    mask = DecodedImage(_rectangle_mask(), OutputFormat.png)
    request = EditRequest(settings(num_inference_steps=steps, strength=strength), [photo], mask=mask)
    progress = []
    generation = tiny_engine.generate(request, progress=progress.append)
    reference = run_inpaint(tiny_engine, photo.image, mask.image, generation.seed, steps, strength)
    assert generation.pixels.shape == reference.shape == (1, HEIGHT, WIDTH, 3)
    assert np.abs(generation.pixels - reference).max() < 1e-4
    assert [p.total for p in progress] == [steps - start_step(steps, strength)] * len(progress)
    assert generation.transformer_passes == steps - start_step(steps, strength)


def _final_latents(engine, request, monkeypatch) -> torch.Tensor:
    """The latents the edit hands to the VAE decoder, (1, 16, H/8, W/8)."""
    seen = []
    decode = engine._decode

    def capture(tokens, latent_h, latent_w):
        seen.append(unpack(tokens, latent_h, latent_w))
        return decode(tokens, latent_h, latent_w)

    monkeypatch.setattr(engine, "_decode", capture)
    engine.generate(request)
    monkeypatch.undo()
    return seen[0]


def test_outside_the_mask_the_latents_are_the_inputs_own(tiny_engine, photo, monkeypatch):
    """Every latent cell outside the mask ends as the input's own latent, exactly; those inside are edited. (The
    decoded pixels far from the mask are then the input through the VAE: nearly the input on the real model. The
    tiny VAE normalises over the whole picture, so there every pixel sees every latent.)"""
    mask = DecodedImage(_rectangle_mask(), OutputFormat.png)
    latents = _final_latents(tiny_engine, EditRequest(settings(), [photo], mask=mask), monkeypatch)
    plain = _final_latents(tiny_engine, EditRequest(settings(), [photo]), monkeypatch)
    with torch.inference_mode():
        known = encode_latent(tiny_engine.pipe, photo.image, WIDTH, HEIGHT, tiny_engine.device)
    left, top, right, bottom = (side // 8 for side in BOX)
    outside = torch.ones(HEIGHT // 8, WIDTH // 8, dtype=torch.bool)
    outside[top:bottom, left:right] = False
    assert torch.equal(latents[0][:, outside], known[0][:, outside])
    assert not torch.allclose(plain[0][:, outside], known[0][:, outside], atol=0.05)  # a plain edit moves them
    inside = latents[0][:, top:bottom, left:right]
    assert not torch.allclose(inside, known[0][:, top:bottom, left:right], atol=0.05)  # the masked cells moved


def test_strength_zero_runs_no_step_and_returns_the_input_through_the_vae(tiny_engine, photo):
    mask = DecodedImage(_rectangle_mask(), OutputFormat.png)
    generation = tiny_engine.generate(EditRequest(settings(strength=0.0), [photo], mask=mask))
    assert generation.transformer_passes == 0
    other_seed = tiny_engine.generate(EditRequest(settings(strength=0.0, seed=99), [photo], mask=mask))
    assert np.array_equal(generation.pixels, other_seed.pixels)  # no noise is left in it


def test_a_full_mask_at_strength_one_is_the_plain_edit(tiny_engine, photo):
    full = DecodedImage(Image.new("L", (WIDTH, HEIGHT), 255), OutputFormat.png)
    masked = tiny_engine.generate(EditRequest(settings(), [photo], mask=full))
    plain = tiny_engine.generate(EditRequest(settings(), [photo]))
    assert np.array_equal(masked.pixels, plain.pixels)


def test_a_mask_of_another_size_is_refused_naming_the_mask(tiny_engine, photo):
    wrong = DecodedImage(_rectangle_mask((WIDTH // 2, HEIGHT // 2), (10, 10, 100, 100)), OutputFormat.png)
    with pytest.raises(InputError) as error:
        tiny_engine.generate(EditRequest(settings(), [photo], mask=wrong))
    assert error.value.field == "mask"
    assert f"{WIDTH // 2}x{HEIGHT // 2}" in error.value.problem and f"{WIDTH}x{HEIGHT}" in error.value.problem


def test_an_empty_mask_is_refused(tiny_engine, photo):
    empty = DecodedImage(Image.new("L", (WIDTH, HEIGHT), 0), OutputFormat.png)
    with pytest.raises(InputError) as error:
        tiny_engine.generate(EditRequest(settings(), [photo], mask=empty))
    assert error.value.field == "mask" and "empty" in error.value.problem


def test_a_transparent_mask_is_read_by_its_alpha(tiny_engine, photo):
    """RGBA: opaque where the edit may change, whatever the colour; the same edit as the grey mask."""
    grey = _rectangle_mask()
    rgba = Image.new("RGBA", (WIDTH, HEIGHT), (255, 255, 255, 0))
    rgba.putalpha(grey)
    by_alpha = tiny_engine.generate(EditRequest(settings(), [photo], mask=DecodedImage(rgba, OutputFormat.png)))
    by_grey = tiny_engine.generate(EditRequest(settings(), [photo], mask=DecodedImage(grey, OutputFormat.png)))
    assert np.array_equal(by_alpha.pixels, by_grey.pixels)


def test_a_masked_edit_does_not_share_a_batch(tiny_engine, photo):
    mask = DecodedImage(_rectangle_mask(), OutputFormat.png)
    with pytest.raises(ValueError, match="alone"):
        tiny_engine.generate_many([EditRequest(settings(), [photo], mask=mask), EditRequest(settings(), [photo])])


# ---- full resolution (output_resolution "input") and the crop path ------------------------------------------

BIG_WIDTH, BIG_HEIGHT = 3000, 2000


@pytest.fixture(scope="module")
def big_photo():
    """A 3000x2000 PNG, decoded at full size as the worker decodes it for output_resolution input."""
    return decode_image(encoded(pattern(BIG_WIDTH, BIG_HEIGHT, seed=7), "PNG"), full_size=True)


def _corner_mask(box) -> DecodedImage:
    return DecodedImage(_rectangle_mask((BIG_WIDTH, BIG_HEIGHT), box), OutputFormat.png)


def _decoded_result(result) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(result.images[0])).convert("RGB"))


def _far_from(box, distance) -> np.ndarray:
    left, top, right, bottom = box
    near = np.zeros((BIG_HEIGHT, BIG_WIDTH), bool)
    near[max(0, top - distance) : bottom + distance, max(0, left - distance) : right + distance] = True
    return ~near


def test_full_resolution_with_a_corner_mask_keeps_every_other_pixel_exactly(tiny_engine, big_photo):
    corner = (1200, 700, 3000, 2000)  # large: the whole picture is edited at the model's size
    request = EditRequest(settings(output_resolution="input"), [big_photo], mask=_corner_mask(corner))
    result = tiny_engine.edit(request)
    assert (result.width, result.height) == (BIG_WIDTH, BIG_HEIGHT) and result.format is OutputFormat.png
    assert (result.generated_width, result.generated_height) == (1248, 832) and result.crop is None
    pixels, source = _decoded_result(result), np.asarray(big_photo.image)
    outside = _far_from(corner, feather_width(BIG_WIDTH, BIG_HEIGHT))
    assert np.array_equal(pixels[outside], source[outside])
    inside = (slice(corner[1], corner[3]), slice(corner[0], corner[2]))
    assert np.abs(pixels[inside].astype(int) - source[inside]).mean() > 5
    assert read_metadata(result.images[0])["width"] == BIG_WIDTH


def test_a_small_mask_on_a_large_picture_is_edited_on_a_crop_at_the_models_size(tiny_engine, big_photo):
    region = (2700, 1800, 2860, 1920)  # 160 x 120 near the bottom-right corner
    seen = []
    hook = tiny_engine.pipe.transformer.register_forward_pre_hook(
        lambda _m, _a, kwargs: seen.append(kwargs["img_ids"]), with_kwargs=True
    )
    try:
        request = EditRequest(settings(output_resolution="input"), [big_photo], mask=_corner_mask(region))
        result = tiny_engine.edit(request)
    finally:
        hook.remove()
    left, top, right, bottom = result.crop
    assert left <= region[0] and top <= region[1] and right >= region[2] and bottom >= region[3]
    assert (right - left) * (bottom - top) <= 0.5 * BIG_WIDTH * BIG_HEIGHT
    generated = (result.generated_width, result.generated_height)
    assert generated == nearest_preferred_size(right - left, bottom - top)
    output_tokens = (generated[0] // 16) * (generated[1] // 16)
    assert int((seen[0][:, 0] == 0).sum()) == output_tokens  # the model's whole output grid is the crop
    assert f"a crop {right - left}x{bottom - top} at ({left}, {top})" in " ".join(result.logs)
    assert (result.width, result.height) == (BIG_WIDTH, BIG_HEIGHT)
    pixels, source = _decoded_result(result), np.asarray(big_photo.image)
    outside = _far_from(region, feather_width(BIG_WIDTH, BIG_HEIGHT))
    assert np.array_equal(pixels[outside], source[outside])
    inside = (slice(region[1], region[3]), slice(region[0], region[2]))
    assert np.abs(pixels[inside].astype(int) - source[inside]).mean() > 5


def test_full_resolution_without_a_mask_changes_only_where_the_edit_did(tiny_engine, big_photo, monkeypatch):
    """The difference region: the tiny model changes every pixel, so all of it comes back edited and upscaled;
    with a threshold no change passes, the result is the input itself."""
    request = EditRequest(settings(output_resolution="input"), [big_photo])
    edited = tiny_engine.edit(request)
    assert (edited.width, edited.height) == (BIG_WIDTH, BIG_HEIGHT)
    assert np.abs(_decoded_result(edited).astype(int) - np.asarray(big_photo.image)).mean() > 5
    monkeypatch.setattr(tiny_engine, "options", EngineOptions(difference_threshold=1.0))  # FLUXEDIT_DIFFERENCE_...
    kept = tiny_engine.edit(request)
    assert np.array_equal(_decoded_result(kept), np.asarray(big_photo.image))


def test_full_resolution_keeps_the_upright_picture_of_a_rotated_photo(tiny_engine):
    stored = pattern(1200, 800, seed=8)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: the photo is 800 x 1200 upright
    photo = decode_image(encoded(stored, "PNG", exif=exif.tobytes()), full_size=True)
    mask = DecodedImage(_rectangle_mask((800, 1200), (0, 0, 400, 300)), OutputFormat.png)
    result = tiny_engine.edit(EditRequest(settings(output_resolution="input"), [photo], mask=mask))
    assert (result.width, result.height) == (800, 1200)
    upright = np.asarray(stored.transpose(Image.Transpose.ROTATE_270))
    pixels = _decoded_result(result)
    far = np.ones((1200, 800), bool)
    far[: 300 + feather_width(800, 1200), : 400 + feather_width(800, 1200)] = False
    assert np.array_equal(pixels[far], upright[far])


def test_full_resolution_needs_the_full_size_picture(tiny_engine):
    shrunk = decode_image(encoded(pattern(2400, 1600), "PNG"))  # a model-size decode
    with pytest.raises(ValueError, match="full size"):
        tiny_engine.generate(EditRequest(settings(output_resolution="input"), [shrunk]))
