"""GET /v1/prediction/{id}/webhooks: each webhook call of a prediction and every try of it, as the outbox keeps them."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter

from ...service.webhook_outbox import iso
from ...store.models import WebhookDelivery
from ..deps import CallerPredictionsDep, ServicesDep
from ..errors import SEED_ERRORS
from .protocol import WebhookDeliveries
from .protocol import WebhookDelivery as DeliveryView

router = APIRouter(prefix="/v1/prediction", tags=["predictions"], responses=SEED_ERRORS)


@router.get("/{prediction_id}/webhooks")
async def webhook_deliveries(
    found: ServicesDep, predictions: CallerPredictionsDep, prediction_id: str
) -> WebhookDeliveries:
    """The webhook deliveries of this prediction, oldest first: where, whether it arrived, and each try's answer."""
    predictions.get(prediction_id)
    deliveries = found.sender.outbox.for_prediction(prediction_id)
    return WebhookDeliveries(prediction_id=prediction_id, deliveries=[delivery_view(d) for d in deliveries])


def delivery_view(delivery: WebhookDelivery) -> DeliveryView:
    return DeliveryView(
        id=delivery.id,
        url=delivery.url,
        state=_state(delivery),
        prediction_status=delivery.prediction_status,
        created_at=iso(delivery.created_at),
        attempts=delivery.attempts,
        next_attempt_at=iso(delivery.next_attempt_at),
        delivered_at=iso(delivery.delivered_at),
        given_up_at=iso(delivery.given_up_at),
        last_status_code=delivery.last_status_code,
        last_error=delivery.last_error,
        tries=delivery.tries,
    )


def _state(delivery: WebhookDelivery) -> str:
    if delivery.delivered_at is not None:
        return "delivered"
    if delivery.given_up_at is not None:
        return "failed"
    claimed = delivery.claimed_until
    if claimed is not None and claimed > datetime.now(UTC):
        return "sending"
    return "pending"
