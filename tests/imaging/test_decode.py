import numpy as np
import pytest
from PIL import Image

from fluxedit.imaging.decode import MAX_PIXELS, decode_image
from fluxedit.schema import InputError, OutputFormat
from tests.helpers import encoded, pattern, png_bomb


def test_formats_are_detected_from_the_bytes():
    picture = pattern(64, 48)
    for fmt, expected in (("JPEG", OutputFormat.jpeg), ("PNG", OutputFormat.png), ("WEBP", OutputFormat.webp)):
        decoded = decode_image(encoded(picture, fmt))
        assert decoded.format is expected
        assert decoded.image.mode == "RGB" and decoded.image.size == (64, 48)


def test_exif_orientation_is_applied():
    picture = pattern(80, 40)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: rotate 90 degrees clockwise to view
    decoded = decode_image(encoded(picture, "JPEG", exif=exif.tobytes(), quality=100)).image
    assert decoded.size == (40, 80)
    upright = np.asarray(picture.transpose(Image.Transpose.ROTATE_270), dtype=int)
    assert np.abs(np.asarray(decoded, dtype=int) - upright).mean() < 6


def test_palette_image_is_converted_with_its_colours():
    picture = pattern(64, 64).quantize(colors=16)
    decoded = decode_image(encoded(picture, "PNG")).image
    assert decoded.mode == "RGB"
    assert np.array_equal(np.asarray(decoded), np.asarray(picture.convert("RGB")))


def test_transparent_pixels_become_white():
    rgba = Image.new("RGBA", (32, 32), (255, 0, 0, 255))
    rgba.putpixel((0, 0), (0, 0, 255, 0))  # fully transparent blue
    rgba.putpixel((1, 0), (0, 0, 0, 128))  # half-transparent black
    decoded = decode_image(encoded(rgba, "PNG")).image
    assert decoded.getpixel((0, 0)) == (255, 255, 255)
    assert decoded.getpixel((1, 0)) in {(127, 127, 127), (128, 128, 128)}
    assert decoded.getpixel((5, 5)) == (255, 0, 0)


def test_palette_with_a_transparent_entry_becomes_white_there():
    palette = Image.new("P", (32, 32), 1)
    palette.putpalette([0, 0, 0, 0, 200, 0] + [0] * 762)
    palette.putpixel((3, 3), 0)
    decoded = decode_image(encoded(palette, "PNG", transparency=0)).image
    assert decoded.getpixel((3, 3)) == (255, 255, 255)
    assert decoded.getpixel((10, 10)) == (0, 200, 0)


def test_greyscale_with_alpha_is_read():
    decoded = decode_image(encoded(Image.new("LA", (20, 20), (100, 255)), "PNG")).image
    assert decoded.getpixel((0, 0)) == (100, 100, 100)


def test_cmyk_jpeg_is_converted_to_rgb():
    cmyk = Image.new("CMYK", (32, 32), (0, 255, 255, 0))  # pure red in ink
    decoded = decode_image(encoded(cmyk, "JPEG", quality=100)).image
    red, green, blue = decoded.getpixel((16, 16))
    assert decoded.mode == "RGB"
    assert red > 200 and green < 60 and blue < 60


def test_greyscale_is_read_as_rgb():
    decoded = decode_image(encoded(Image.new("L", (20, 20), 77), "PNG")).image
    assert decoded.getpixel((5, 5)) == (77, 77, 77)


def test_sixteen_bit_greyscale_keeps_its_brightness():
    values = np.full((20, 20), 0x8000, dtype=np.uint16)  # mid grey in 16 bits
    values[0, 0] = 0xFFFF
    decoded = decode_image(encoded(Image.fromarray(values), "PNG")).image
    assert decoded.getpixel((5, 5)) == (128, 128, 128)
    assert decoded.getpixel((0, 0)) == (255, 255, 255)


def test_small_icon_is_accepted_and_tiny_sliver_is_refused():
    assert decode_image(encoded(pattern(32, 32), "PNG")).image.size == (32, 32)
    with pytest.raises(InputError, match="at least 16 pixels"):
        decode_image(encoded(pattern(8, 8), "PNG"))


def test_extreme_aspect_ratio_is_refused_with_the_limit():
    with pytest.raises(InputError, match=r"2000x400 \(aspect 5.0:1\); at most 4:1"):
        decode_image(encoded(pattern(2000, 400), "PNG"))


def test_a_large_camera_photo_is_accepted_and_kept_at_the_size_the_model_needs():
    big = Image.new("RGB", (12000, 8000), (10, 120, 200))
    decoded = decode_image(encoded(big, "JPEG", quality=70))
    assert decoded.original_size == (12000, 8000)
    width, height = decoded.image.size
    assert 1.9e6 < width * height < 2.3e6 and abs(width / height - 1.5) < 0.01
    assert np.abs(np.asarray(decoded.image, dtype=int) - (10, 120, 200)).max() < 8


def test_decompression_bomb_is_refused_before_decoding():
    with pytest.raises(InputError, match=f"more than {MAX_PIXELS:,} pixels"):
        decode_image(png_bomb(13000, 12000), field="image_url")


def test_gif_is_refused_naming_the_format():
    with pytest.raises(InputError, match="is a GIF image; only JPEG, PNG and WebP are accepted"):
        decode_image(encoded(pattern(32, 32), "GIF"))


def test_truncated_jpeg_is_refused():
    data = encoded(pattern(256, 256), "JPEG")
    with pytest.raises(InputError, match="could not be read as JPEG"):
        decode_image(data[: len(data) // 2])


def test_not_an_image_and_empty_input_are_refused_naming_the_field():
    with pytest.raises(InputError, match=r"^photo: is not an image"):
        decode_image(b"hello, this is text", field="photo")
    with pytest.raises(InputError, match=r"^photo: is empty"):
        decode_image(b"", field="photo")
