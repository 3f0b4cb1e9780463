"""GET /v1/models/flux-kontext-dev: the input's JSON Schema and the price rule (no key needed)."""

from __future__ import annotations

from fastapi import APIRouter

from ...schema import MODEL_SLUG, EditInput
from ...service.intake import VERSION
from ...service.pricing import price_rule
from ..deps import ServicesDep
from ..errors import SEED_ERRORS, not_found
from .protocol import ModelCard, ModelList

router = APIRouter(prefix="/v1/models", tags=["models"], responses=SEED_ERRORS)


def request_schema() -> dict:
    schema = EditInput.model_json_schema()
    schema["properties"].pop("write_metadata", None)  # an engine option, not part of the API
    return schema


def model_card(price_per_image: float) -> ModelCard:
    return ModelCard(
        title="FLUX.1 Kontext [dev]",
        slug=MODEL_SLUG,
        version=VERSION,
        description="Edit an image with a text instruction: style transfer, object and background changes, "
        "text editing, character consistency. Open weights by Black Forest Labs, running on this server.",
        output_type="image",
        request_schema=request_schema(),
        cost=price_rule(price_per_image),
    )


@router.get("")
async def list_models(found: ServicesDep) -> ModelList:
    return ModelList(data=[model_card(found.settings.price_per_image)])


@router.get("/{slug}")
async def get_model(found: ServicesDep, slug: str) -> ModelCard:
    if slug != MODEL_SLUG:
        raise not_found(f"model {slug}")
    return model_card(found.settings.price_per_image)
