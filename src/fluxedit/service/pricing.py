"""The price rule: per started megapixel of output, per image.

The output counted is what the model generates (about 1 MP, from resolution_mode and the main image's size):
a result returned at the input's own size (output_resolution "input") is that output upscaled where it changed
and the original elsewhere, so it costs the same as at the model's size.
"""

from __future__ import annotations

import math

from ..resolution import output_size

MEGAPIXEL = 1024 * 1024
DEFAULT_PRICE_PER_IMAGE = 0.025


def megapixel_units(width: int, height: int) -> int:
    return max(1, math.ceil(width * height / MEGAPIXEL))


def prediction_cost(width: int, height: int, num_images: int, price_per_image: float) -> float:
    """ceil(output pixels / 1,048,576) x num_images x price, rounded to a tenth of a cent's fraction."""
    return round(megapixel_units(width, height) * num_images * price_per_image, 6)


def price_rule(price_per_image: float) -> dict:
    return {
        "currency": "USD",
        "price_per_image": price_per_image,
        "rule": "ceil(output_width * output_height / 1048576) * num_images * price_per_image",
        "output": "the size the model generates; output_resolution input costs the same as model",
        "example": {"output": "1024x1024", "num_images": 1, "cost": prediction_cost(1024, 1024, 1, price_per_image)},
    }


def settled_cost(cost: float | None, priced: tuple[int | None, int | None], generated: tuple[int, int]) -> float | None:
    """The cost once the model's generated size is known: as priced, unless the model made another number of
    megapixel units (the crop path edits at the crop's own Kontext size), then scaled to those units."""
    if cost is None or not all(priced) or not all(generated):
        return cost
    units, made = megapixel_units(*priced), megapixel_units(*generated)
    return cost if units == made else round(cost / units * made, 6)


def price_prediction(prediction, width: int, height: int, edit_input, price_per_image: float) -> None:
    """Set a prediction's output size and its cost, from its main input's size (known once it is stored): the
    size the model generates, whatever output_resolution (the result's own size is set when it is stored)."""
    out_w, out_h = output_size(edit_input.resolution_mode, width, height)
    prediction.width, prediction.height = out_w, out_h
    prediction.cost = prediction_cost(out_w, out_h, edit_input.num_images, price_per_image)
