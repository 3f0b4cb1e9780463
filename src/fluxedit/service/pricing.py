"""The price rule: per started megapixel of output, per image."""

from __future__ import annotations

import math

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
