"""Full-resolution results: the edit laid onto the original through a feathered region keeps every other pixel
byte for byte; masks are read by alpha or grey level; the crop for a small region."""

import io

import numpy as np
import pytest
from PIL import Image

from fluxedit.imaging.composite import (
    MAX_OUTPUT_PIXELS,
    composite,
    difference_region,
    feather_width,
)
from fluxedit.imaging.crop import CROP_MAX_SHARE, crop_box, generated_size
from fluxedit.imaging.decode import decode_image
from fluxedit.imaging.regions import binary_mask, check_mask, dilate, erode, feathered_alpha, mask_bounds
from fluxedit.resolution import PREFERRED_SIZES
from fluxedit.schema import InputError
from tests.helpers import encoded, pattern, png_bomb

WIDTH, HEIGHT = 3000, 2000
CORNER = (2200, 1400, 3000, 2000)  # the mask: the bottom-right corner


def _png_round_trip(picture: Image.Image) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(encoded(picture, "PNG"))).convert("RGB"))


def _outside(box, feather, size=(WIDTH, HEIGHT)) -> np.ndarray:
    """Pixels farther than `feather` (in x or y) from the rectangle `box`."""
    left, top, right, bottom = box
    near = np.zeros(size[::-1], bool)
    near[max(0, top - feather) : bottom + feather, max(0, left - feather) : right + feather] = True
    return ~near


def test_a_corner_mask_keeps_every_pixel_outside_it_and_its_feather_exactly():
    original = pattern(WIDTH, HEIGHT, seed=1)
    edited = pattern(1248, 832, seed=2)  # what the model made, at its own size
    region = np.zeros((HEIGHT, WIDTH), bool)
    region[CORNER[1] : CORNER[3], CORNER[0] : CORNER[2]] = True
    result = composite(original, edited, region)
    assert result.size == (WIDTH, HEIGHT)
    pixels, source = _png_round_trip(result), np.asarray(original)
    outside = _outside(CORNER, feather_width(WIDTH, HEIGHT))
    assert np.array_equal(pixels[outside], source[outside])
    scaled = np.asarray(edited.resize((WIDTH, HEIGHT), Image.Resampling.LANCZOS))
    assert np.array_equal(pixels[region], scaled[region])  # inside the mask: the edit, upscaled
    assert not np.array_equal(pixels[region], source[region])


def test_the_feather_ramps_across_its_width_and_is_zero_beyond():
    region = np.zeros((60, 60), bool)
    region[20:40, 20:40] = True
    alpha = feathered_alpha(region, 4)
    assert (alpha[region] == 255).all()
    assert (alpha[_outside((20, 20, 40, 40), 8, (60, 60))] == 0).all()
    ramp = alpha[30, 40:49]
    assert list(ramp) == sorted(ramp, reverse=True) and 0 < ramp[3] < 255


def test_a_region_on_the_border_is_not_faded_there():
    region = np.zeros((40, 40), bool)
    region[:10, :10] = True
    assert (feathered_alpha(region, 3)[:10, :10] == 255).all()
    assert erode(region, 2)[:8, :8].all() and not dilate(region, 2)[13:, :].any()


def test_a_box_limits_the_edit_to_the_crop():
    original = pattern(400, 300, seed=1)
    region = np.zeros((300, 400), bool)
    region[100:150, 200:260] = True
    box = (120, 40, 360, 220)
    result = np.asarray(composite(original, pattern(240, 180, seed=5), region, box))
    source = np.asarray(original)
    outside = _outside((200, 100, 260, 150), feather_width(400, 300), (400, 300))
    assert np.array_equal(result[outside], source[outside])
    assert not np.array_equal(result[100:150, 200:260], source[100:150, 200:260])


def test_the_difference_region_is_where_the_edit_changed_the_picture_cleaned():
    seen = pattern(320, 240, seed=1)
    changed = np.array(seen)
    changed[60:120, 100:200] = 255 - changed[60:120, 100:200]  # the edit
    changed[10, 10] = 255 - changed[10, 10]  # one noisy pixel: a speck, not an edit
    region = difference_region(Image.fromarray(changed), seen, threshold=0.1)
    assert region[64:116, 104:196].all()
    assert not region[:40, :40].any() and not region[150:, :].any()
    assert not difference_region(Image.fromarray(changed), seen, threshold=1.0).any()  # the threshold is honoured


def test_masks_read_alpha_when_transparent_else_grey():
    grey = Image.new("L", (40, 20), 0)
    grey.paste(255, (0, 0, 5, 20))
    assert binary_mask(grey).sum() == 100
    rgba = Image.new("RGBA", (40, 20), (0, 0, 0, 0))
    rgba.paste((0, 0, 0, 255), (0, 0, 5, 20))  # opaque black: the part to edit, by its alpha
    assert np.array_equal(binary_mask(rgba), binary_mask(grey))
    opaque = Image.merge("RGBA", [grey, grey, grey, Image.new("L", (40, 20), 255)])  # no transparency: grey level
    assert np.array_equal(binary_mask(opaque), binary_mask(grey))
    decoded = decode_image(encoded(rgba, "PNG"), field="mask", as_mask=True)
    assert decoded.image.mode == "L" and np.array_equal(binary_mask(decoded.image), binary_mask(grey))


def test_mask_checks_name_the_mask():
    with pytest.raises(InputError, match="mask: is 20x10; it must be the size of the main image \\(40x20\\)"):
        check_mask(np.ones((10, 20), bool), (40, 20))
    with pytest.raises(InputError, match="empty"):
        check_mask(np.zeros((10, 20), bool), (20, 10))
    assert check_mask(np.ones((10, 20), bool), (20, 10)).full
    part = np.zeros((10, 20), bool)
    part[2:4, 3:9] = True
    info = check_mask(part, (20, 10))
    assert not info.full and info.bounds == (3, 2, 9, 4) == mask_bounds(part)


def test_full_size_decode_keeps_every_pixel_and_refuses_past_the_limit():
    picture = pattern(2400, 1600, seed=4)  # 3.8 MP: a model-size decode would shrink it
    assert decode_image(encoded(picture, "PNG")).image.size != (2400, 1600)
    full = decode_image(encoded(picture, "PNG"), full_size=True)
    assert full.image.size == (2400, 1600) and np.array_equal(np.asarray(full.image), np.asarray(picture))
    with pytest.raises(InputError) as error:
        decode_image(png_bomb(8000, 5001), full_size=True)  # 40,008,000 pixels
    assert error.value.field == "output_resolution" and f"{MAX_OUTPUT_PIXELS:,}" in error.value.problem


def test_exif_orientation_full_size_is_the_upright_picture():
    stored = pattern(300, 200, seed=6)
    exif = Image.Exif()
    exif[0x0112] = 6
    decoded = decode_image(encoded(stored, "PNG", exif=exif.tobytes()), full_size=True)
    upright = stored.transpose(Image.Transpose.ROTATE_270)
    assert decoded.original_size == decoded.image.size == (200, 300)
    assert np.array_equal(np.asarray(decoded.image), np.asarray(upright))


def test_the_crop_around_a_small_region_is_padded_within_the_picture_and_of_a_kontext_aspect():
    box = crop_box((WIDTH, HEIGHT), (2800, 1850, 2900, 1950))  # 100 x 100 near the corner
    left, top, right, bottom = box
    assert 0 <= left <= 2800 - 64 and 0 <= top <= 1850 - 64 and right <= WIDTH and bottom <= HEIGHT
    assert right - left >= 512 and bottom - top >= 512
    aspect = (right - left) / (bottom - top)
    assert min(abs(aspect - w / h) for w, h in PREFERRED_SIZES) < 0.01
    assert generated_size((WIDTH, HEIGHT), "match_input", "input", (2800, 1850, 2900, 1950)) in PREFERRED_SIZES


def test_the_crop_applies_only_under_half_the_picture():
    assert crop_box((WIDTH, HEIGHT), (0, 0, 2000, 1500)) is None  # padded, it would cover most of the picture
    small = crop_box((WIDTH, HEIGHT), CORNER)
    assert small is not None and (small[2] - small[0]) * (small[3] - small[1]) <= CROP_MAX_SHARE * WIDTH * HEIGHT
    assert generated_size((WIDTH, HEIGHT), "match_input", "model", CORNER) == (1248, 832)  # no crop at model size
