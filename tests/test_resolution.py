import pytest

from fluxedit.resolution import PREFERRED_SIZES, RESOLUTION_MODES, nearest_preferred_size, output_size


def test_every_preferred_size_snaps_to_itself_and_is_a_multiple_of_16():
    assert len(PREFERRED_SIZES) == 17
    for width, height in PREFERRED_SIZES:
        assert nearest_preferred_size(width, height) == (width, height)
        assert width % 16 == 0 and height % 16 == 0
        assert 0.9e6 < width * height < 1.1e6


@pytest.mark.parametrize(
    ("input_size", "expected"),
    [
        ((640, 480), (1184, 880)),  # 4:3 photo
        ((480, 640), (880, 1184)),
        ((1920, 1080), (1392, 752)),  # 16:9 video frame
        ((6000, 4000), (1248, 832)),  # 3:2 camera photo
        ((32, 32), (1024, 1024)),  # an icon is scaled up
        ((12000, 8000), (1248, 832)),
        ((4000, 1000), (1568, 672)),  # wider than any preferred size: the widest
    ],
)
def test_match_input_snaps_to_the_nearest_preferred_aspect(input_size, expected):
    assert output_size("match_input", *input_size) == expected


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("1:1", (1024, 1024)),
        ("16:9", (1360, 768)),
        ("9:16", (768, 1360)),
        ("4:3", (1184, 880)),
        ("3:2", (1248, 832)),
        ("21:9", (1568, 672)),
        ("9:21", (672, 1568)),
    ],
)
def test_aspect_ratio_modes_ignore_the_input_shape(mode, expected):
    assert output_size(mode, 640, 480) == expected
    assert output_size(mode, 100, 900) == expected


def test_auto_keeps_the_input_aspect_at_about_one_megapixel():
    width, height = output_size("auto", 1000, 700)
    assert width % 16 == 0 and height % 16 == 0
    assert abs(width / height - 1000 / 700) < 0.03  # sides are rounded to multiples of 16
    assert 0.95 < width * height / 1024**2 < 1.05


def test_every_mode_is_listed_and_an_unknown_mode_is_refused():
    assert {"match_input", "auto", "16:9"} <= set(RESOLUTION_MODES)
    with pytest.raises(ValueError, match="resolution_mode"):
        output_size("5:4", 100, 100)
