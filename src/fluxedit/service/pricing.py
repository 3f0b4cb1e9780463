"""The price rule: per started megapixel of output, per image."""

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
        "example": {"output": "1024x1024", "num_images": 1, "cost": prediction_cost(1024, 1024, 1, price_per_image)},
    }


def price_prediction(prediction, width: int, height: int, edit_input, price_per_image: float) -> None:
    """Set a prediction's output size and its cost, from its main input's size (known once it is stored)."""
    out_w, out_h = output_size(edit_input.resolution_mode, width, height)
    prediction.width, prediction.height = out_w, out_h
    prediction.cost = prediction_cost(out_w, out_h, edit_input.num_images, price_per_image)
