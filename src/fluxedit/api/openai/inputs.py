"""images.edit's form fields, translated to our input: n, size, output_format, output_compression, prompt.

Besides OpenAI's own, a form may carry a few of ours (seed, num_inference_steps, guidance_scale,
acceleration, enable_safety_checker, strength, output_resolution), sent with the client's extra_body.
A parameter Kontext cannot honour (a transparent background) is refused, never dropped. The mask is a
file, read by images.py.
"""

from __future__ import annotations

import math
import re

from ...resolution import ASPECT_RATIOS
from ...schema import InputError

RENAMED = {"prompt": "prompt", "n": "num_images", "output_format": "output_format",
           "output_compression": "output_quality"}  # fmt: skip
OURS = ("seed", "num_inference_steps", "guidance_scale", "acceleration", "enable_safety_checker", "strength",
        "output_resolution")  # fmt: skip
IGNORED = ("user", "safety_identifier")  # who is asking, for abuse tracking: nothing to do here
AUTO_ONLY = {"quality": ("auto",), "background": ("auto",), "stream": ("false",)}
KNOWN = {*RENAMED, *OURS, *IGNORED, *AUTO_ONLY, "size"}
# Our field -> theirs, so an error names the parameter the caller sent.
THEIR_FIELD = {"num_images": "n", "output_quality": "output_compression", "resolution_mode": "size",
               "image_url": "image", "image_urls": "image", "mask_url": "mask"}  # fmt: skip
_SIZE = re.compile(r"^(\d{1,5})x(\d{1,5})$")


def to_edit_input(form_fields: dict[str, str]) -> dict:
    ours: dict = {}
    for name, value in form_fields.items():
        if name not in KNOWN:
            raise InputError(name, "is not supported by flux-kontext-dev")
        if not isinstance(value, str):
            raise InputError(name, "must be a text field, not a file")
        if name in RENAMED:
            ours[RENAMED[name]] = value
        elif name in OURS:
            ours[name] = value
        elif name == "size":
            ours["resolution_mode"] = resolution_mode(value)
        elif name in AUTO_ONLY and value not in AUTO_ONLY[name]:
            raise InputError(name, f"must be {' or '.join(AUTO_ONLY[name])} with flux-kontext-dev (got {value!r})")
    return ours


def resolution_mode(size: str) -> str:
    """auto: the input's own aspect; WxH: that aspect ratio, rendered at Kontext's ~1 megapixel."""
    if size == "auto":
        return "match_input"
    match = _SIZE.match(size)
    if match and int(match[1]) > 0 and int(match[2]) > 0:
        width, height = int(match[1]), int(match[2])
        divisor = math.gcd(width, height)
        ratio = f"{width // divisor}:{height // divisor}"
        if ratio in ASPECT_RATIOS:
            return ratio
    examples = ", ".join(ASPECT_RATIOS)
    raise InputError("size", f"must be auto or WIDTHxHEIGHT with one of the aspect ratios {examples} (got {size!r})")


def their_error(error: InputError) -> InputError:
    """The same error naming OpenAI's parameter; the service's own (input.mask_url) too."""
    name = error.field.removeprefix("input.").split(".", 1)[0]
    if name not in THEIR_FIELD:
        return error
    return InputError(THEIR_FIELD[name], error.problem.replace("(input.image_url)", "(image)"))
