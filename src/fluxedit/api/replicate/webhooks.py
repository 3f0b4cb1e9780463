"""Replicate's webhooks: the prediction object, signed per Standard Webhooks with the key's default secret."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from ...service.keys import Caller
from ...service.notify import WebhookFormat
from ...service.services import Services
from ...service.standard_webhooks import signature_headers
from ...service.webhook_secrets import WebhookSecrets
from ..deps import caller, services
from .views import prediction_view

router = APIRouter(tags=["replicate"])


@router.get("/v1/webhooks/default/secret")
async def default_secret(request: Request, who: Caller = Depends(caller)) -> dict:
    """The secret that signs this key's webhooks (the same for all of them), for the receiver to check."""
    return {"key": WebhookSecrets(services(request).sessions).default_for(who.key_id)}


def webhook_format(found: Services) -> WebhookFormat:
    return WebhookFormat(
        payload=lambda prediction: prediction_view(found, prediction, prediction.base_url),
        signer=signature_headers,
    )
