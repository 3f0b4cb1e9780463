"""The input of Replicate's black-forest-labs/flux-kontext-dev, translated to and from ours.

Their names: prompt, input_image, aspect_ratio, num_inference_steps, guidance, seed, output_format,
output_quality, disable_safety_checker, go_fast, lora_weights, lora_strength; and `mask` as Replicate's
inpainting models take it (white: inpaint, black: keep), which is our mask_url's rule. Our strength and
output_resolution keep their names.
"""

from __future__ import annotations

from ...resolution import ASPECT_RATIOS
from ...schema import InputError

MODEL_NAME = "black-forest-labs/flux-kontext-dev"
SAME_NAME = ("prompt", "num_inference_steps", "seed", "output_quality", "strength", "output_resolution")
MATCH_INPUT = "match_input_image"
# Our field -> theirs, for the error messages (a message names the field the caller sent).
THEIR_FIELD = {
    "image_url": "input_image",
    "mask_url": "mask",
    "resolution_mode": "aspect_ratio",
    "guidance_scale": "guidance",
    "enable_safety_checker": "disable_safety_checker",
    "acceleration": "go_fast",
    "loras": "lora_weights",
}


def to_edit_input(given: dict) -> dict:
    """Their input as ours; a null counts as absent. Unknown names are refused, never dropped."""
    ours: dict = {}
    for name, value in given.items():
        if value is None or name == "lora_strength":
            continue
        if name in SAME_NAME:
            ours[name] = value
        elif name == "input_image":
            ours["image_url"] = value
        elif name == "mask":
            ours["mask_url"] = value
        elif name == "output_format":
            ours["output_format"] = "jpeg" if value == "jpg" else value  # their enum says jpg
        elif name == "aspect_ratio":
            ours["resolution_mode"] = "match_input" if value == MATCH_INPUT else value
        elif name == "guidance":
            ours["guidance_scale"] = value
        elif name == "disable_safety_checker":
            ours["enable_safety_checker"] = not _boolean(name, value)
        elif name == "go_fast":
            ours["acceleration"] = "regular" if _boolean(name, value) else "none"
        elif name == "lora_weights":
            strength = given.get("lora_strength")
            ours["loras"] = [{"path": value, "scale": 1.0 if strength is None else strength}]
        else:
            raise InputError(f"input.{name}", f"is not an input of {MODEL_NAME}")
    return ours


def _boolean(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise InputError(f"input.{name}", f"must be true or false (got {value!r})")
    return value


def from_edit_input(ours: dict) -> dict:
    """Our stored input shown with their names (fields only our API has keep their own names)."""
    theirs: dict = {}
    for name, value in ours.items():
        if name == "image_url":
            theirs["input_image"] = value
        elif name == "mask_url":
            theirs["mask"] = value
        elif name == "resolution_mode":
            theirs["aspect_ratio"] = MATCH_INPUT if value == "match_input" else value
        elif name == "guidance_scale":
            theirs["guidance"] = value
        elif name == "output_format":
            theirs["output_format"] = "jpg" if value == "jpeg" else value
        elif name == "enable_safety_checker":
            theirs["disable_safety_checker"] = not value
        elif name == "acceleration":
            theirs["go_fast"] = value != "none"
        elif name == "loras" and value:
            theirs["lora_weights"], theirs["lora_strength"] = value[0].get("path"), value[0].get("scale", 1.0)
        else:
            theirs[name] = value
    return theirs


def their_error(error: InputError) -> InputError:
    """The same error, naming their field (input.input_image, not input.image_url)."""
    if error.field == "webhook_url":
        return InputError("webhook", error.problem)
    prefix, _, rest = error.field.partition("input.")
    if prefix or not rest:
        return error
    name, dot, tail = rest.partition(".")
    theirs = THEIR_FIELD.get(name)
    if theirs is None:
        return error
    if theirs == "aspect_ratio":
        got = error.problem[error.problem.find(" (got ") :] if " (got " in error.problem else ""
        return InputError("input.aspect_ratio", f"must be {MATCH_INPUT} or one of {', '.join(ASPECT_RATIOS)}{got}")
    if theirs == "lora_weights" and tail.endswith("scale"):
        theirs, tail, dot = "lora_strength", "", ""
    elif theirs == "lora_weights":
        tail, dot = "", ""
    return InputError(f"input.{theirs}{dot}{tail}", error.problem.replace("(input.image_url)", "(input.input_image)"))


def their_message(message: str | None) -> str | None:
    """A stored error message that starts with one of our field names, naming theirs instead."""
    if not message or not message.startswith("input."):
        return message
    field, colon, problem = message.partition(": ")
    if not colon:
        return message
    return f"{their_error(InputError(field, problem)).field}: {problem}"
