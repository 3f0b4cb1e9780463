"""Output sizes: the Kontext preferred resolutions and the resolution modes.

Pure arithmetic, no torch: the API uses it for pricing before any model runs.
"""

from __future__ import annotations

import math

# The (width, height) sizes FLUX.1 Kontext was trained around (~1 MP each).
PREFERRED_SIZES: tuple[tuple[int, int], ...] = (
    (672, 1568),
    (688, 1504),
    (720, 1456),
    (752, 1392),
    (800, 1328),
    (832, 1248),
    (880, 1184),
    (944, 1104),
    (1024, 1024),
    (1104, 944),
    (1184, 880),
    (1248, 832),
    (1328, 800),
    (1392, 752),
    (1456, 720),
    (1504, 688),
    (1568, 672),
)

# Sides must be multiples of 16: 8x VAE downsampling, then 2x2 patches.
SIDE_MULTIPLE = 16
TARGET_AREA = 1024 * 1024

ASPECT_RATIOS: dict[str, tuple[int, int]] = {
    "1:1": (1, 1),
    "16:9": (16, 9),
    "9:16": (9, 16),
    "4:3": (4, 3),
    "3:4": (3, 4),
    "3:2": (3, 2),
    "2:3": (2, 3),
    "21:9": (21, 9),
    "9:21": (9, 21),
}
RESOLUTION_MODES: tuple[str, ...] = ("match_input", "auto", *ASPECT_RATIOS)


def nearest_preferred_size(width: int, height: int) -> tuple[int, int]:
    """The preferred size whose aspect ratio is closest to width:height."""
    aspect = width / height
    return min(PREFERRED_SIZES, key=lambda size: abs(aspect - size[0] / size[1]))


def size_for_aspect(aspect: float, area: int = TARGET_AREA) -> tuple[int, int]:
    """A size with the given aspect ratio, about `area` pixels, sides multiples of 16."""
    width = math.sqrt(area * aspect)
    height = math.sqrt(area / aspect)
    return _round_side(width), _round_side(height)


def output_size(mode: str, input_width: int, input_height: int) -> tuple[int, int]:
    """The exact (width, height) an edit produces for a resolution mode.

    - match_input: the preferred Kontext size nearest to the input's aspect ratio.
    - auto: the input's own aspect ratio at about 1 MP (not snapped to the list).
    - "W:H": that aspect ratio at about 1 MP.
    """
    if mode == "match_input":
        return nearest_preferred_size(input_width, input_height)
    if mode == "auto":
        return size_for_aspect(input_width / input_height)
    if mode in ASPECT_RATIOS:
        w, h = ASPECT_RATIOS[mode]
        return size_for_aspect(w / h)
    raise ValueError(f"resolution_mode must be one of {', '.join(RESOLUTION_MODES)} (got {mode!r})")


def _round_side(side: float) -> int:
    return max(SIDE_MULTIPLE, round(side / SIDE_MULTIPLE) * SIDE_MULTIPLE)
