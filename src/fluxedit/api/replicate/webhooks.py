"""Replicate's webhooks: the prediction object, signed per Standard Webhooks with the key's default secret."""

from __future__ import annotations

from fastapi import APIRouter

from ...service.notify import WebhookFormat
from ...service.services import Services
from ...service.standard_webhooks import signature_headers
from ...service.webhook_secrets import WebhookSecrets
from ..deps import CallerDep, ServicesDep
from .errors import REPLICATE_ERRORS
from .protocol import WebhookSecret
from .views import prediction_view

router = APIRouter(tags=["replicate"], responses=REPLICATE_ERRORS)


@router.get("/v1/webhooks/default/secret")
async def default_secret(found: ServicesDep, who: CallerDep) -> WebhookSecret:
    """The secret that signs this key's webhooks (the same for all of them), for the receiver to check."""
    return WebhookSecret(key=WebhookSecrets(found.sessions).default_for(who.key_id))


def webhook_format(found: Services) -> WebhookFormat:
    return WebhookFormat(
        payload=lambda prediction: prediction_view(found, prediction, prediction.base_url).model_dump(mode="json"),
        signer=signature_headers,
    )
