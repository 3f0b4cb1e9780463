"""GET /v1/prediction/{id}/webhooks: each webhook call of a prediction and every try of it, as the outbox keeps them."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Depends, Request

from ...service.keys import Caller
from ...store.models import WebhookDelivery
from ..deps import caller, owned_prediction, services
from .views import iso

router = APIRouter(prefix="/v1/prediction", tags=["predictions"])


@router.get("/{prediction_id}/webhooks")
async def webhook_deliveries(request: Request, prediction_id: str, who: Caller = Depends(caller)) -> dict:
    """The webhook deliveries of this prediction, oldest first: where, whether it arrived, and each try's answer."""
    owned_prediction(request, who, prediction_id)
    deliveries = services(request).sender.outbox.for_prediction(prediction_id)
    return {"prediction_id": prediction_id, "deliveries": [delivery_view(d) for d in deliveries]}


def delivery_view(delivery: WebhookDelivery) -> dict:
    return {
        "id": delivery.id,
        "url": delivery.url,
        "state": _state(delivery),
        "prediction_status": delivery.prediction_status,
        "created_at": iso(delivery.created_at),
        "attempts": delivery.attempts,
        "next_attempt_at": iso(delivery.next_attempt_at),
        "delivered_at": iso(delivery.delivered_at),
        "given_up_at": iso(delivery.given_up_at),
        "last_status_code": delivery.last_status_code,
        "last_error": delivery.last_error,
        "tries": delivery.tries,
    }


def _state(delivery: WebhookDelivery) -> str:
    if delivery.delivered_at is not None:
        return "delivered"
    if delivery.given_up_at is not None:
        return "failed"
    claimed = delivery.claimed_until
    if claimed is not None and claimed > datetime.now(UTC):
        return "sending"
    return "pending"
