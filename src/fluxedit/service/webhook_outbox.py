"""The webhook outbox: each delivery is a database row until it arrives or is given up, so no restart loses one.

A sender claims a due row before it tries it (an atomic compare-and-set, so two servers sharing the database
never send the same try twice), records what the receiver answered, and schedules the next try or ends the row.
A server killed during a try leaves the claim to lapse: the row is tried again once `claimed_until` passes.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import case, func, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from ..store.models import WebhookDelivery, utcnow
from .webhook_schedule import RetrySchedule

MAX_LOGGED_TRIES = 100  # the log of a delivery keeps its first try and the latest ones


@dataclass(frozen=True)
class Claimed:
    """A delivery this sender may try now."""

    id: str
    prediction_id: str
    url: str
    body: bytes
    secret: str | None
    signer: str | None


@dataclass(frozen=True)
class Ended:
    """A delivery that has just arrived or been given up."""

    id: str
    attempts: int
    delivered: bool
    last_error: str


class WebhookOutbox:
    def __init__(self, sessions: sessionmaker[Session]):
        self.sessions = sessions

    def add(
        self,
        prediction_id: str,
        url: str,
        body: str,
        secret: str | None,
        signer: str | None,
        prediction_status: str,
        session: Session | None = None,
    ) -> str:
        """Store a delivery, due now; its id is the same on every try (receivers drop repeats by it).

        With `session`, the row is written in that transaction: the status change that caused it and the
        delivery commit together, so no crash between the two can lose the webhook."""
        delivery = WebhookDelivery(
            id="msg_" + secrets.token_hex(12),
            prediction_id=prediction_id,
            prediction_status=prediction_status,
            url=url,
            body=body,
            secret=secret,
            signer=signer,
            attempts=0,
            tries=[],
            next_attempt_at=utcnow(),
        )
        if session is not None:
            session.add(delivery)
            return delivery.id
        with self.sessions.begin() as own:
            own.add(delivery)
        return delivery.id

    def claim_due(self, now: datetime, limit: int, lease_s: float, skip: set[str]) -> list[Claimed]:
        """Up to `limit` due deliveries, each claimed for `lease_s` seconds (oldest due first)."""
        if limit <= 0:
            return []
        claimed = []
        with self.sessions.begin() as session:
            due = session.scalars(
                select(WebhookDelivery)
                .where(WebhookDelivery.next_attempt_at <= now, _unclaimed(now), WebhookDelivery.id.not_in(skip))
                .order_by(WebhookDelivery.next_attempt_at)
                .limit(limit)
            ).all()
            for delivery in due:
                won = session.execute(
                    update(WebhookDelivery)
                    .where(
                        WebhookDelivery.id == delivery.id,
                        WebhookDelivery.attempts == delivery.attempts,
                        WebhookDelivery.next_attempt_at.is_not(None),
                        _unclaimed(now),
                    )
                    .values(claimed_until=now + timedelta(seconds=lease_s))
                    .execution_options(synchronize_session=False)
                )
                if won.rowcount == 1:  # another server may have claimed it between the select and here
                    claimed.append(
                        Claimed(
                            delivery.id,
                            delivery.prediction_id,
                            delivery.url,
                            delivery.body.encode(),
                            delivery.secret,
                            delivery.signer,
                        )
                    )
        return claimed

    def next_due(self, now: datetime, skip: set[str]) -> datetime | None:
        """When the next delivery is due (maybe already), or None when none waits; a claimed one when its claim
        lapses (another server, maybe killed mid-try, holds it)."""
        due_at = case(
            (WebhookDelivery.claimed_until > now, WebhookDelivery.claimed_until), else_=WebhookDelivery.next_attempt_at
        )
        with self.sessions() as session:
            moment = session.scalar(
                select(func.min(due_at)).where(
                    WebhookDelivery.next_attempt_at.is_not(None), WebhookDelivery.id.not_in(skip)
                )
            )
        return moment

    def record(
        self,
        delivery_id: str,
        tried_at: datetime,
        seconds: float,
        status_code: int | None,
        error: str | None,
        retry: bool,
        schedule: RetrySchedule,
    ) -> Ended | None:
        """Log one finished try and decide what comes next; the delivery if that try ended it."""
        now = utcnow()
        with self.sessions.begin() as session:
            delivery = session.get(WebhookDelivery, delivery_id)
            if delivery is None or delivery.next_attempt_at is None:
                return None  # already ended
            _log_try(delivery, tried_at, seconds, status_code, error)
            delivery.claimed_until = None
            if error is None:
                delivery.delivered_at, delivery.next_attempt_at, delivery.secret = now, None, None
                return Ended(delivery.id, delivery.attempts, True, "")
            following = schedule.next_attempt(delivery.created_at, now, delivery.attempts) if retry else None
            if following is not None:
                delivery.next_attempt_at = following
                return None
            delivery.given_up_at, delivery.next_attempt_at, delivery.secret = now, None, None
            return Ended(delivery.id, delivery.attempts, False, error)

    def interrupted(self, delivery_id: str, tried_at: datetime, seconds: float) -> None:
        """A try cut short by this server stopping: logged, and due again as soon as a server runs."""
        with self.sessions.begin() as session:
            delivery = session.get(WebhookDelivery, delivery_id)
            if delivery is None or delivery.next_attempt_at is None:
                return
            _log_try(delivery, tried_at, seconds, None, "interrupted: the server stopped during this try")
            delivery.claimed_until, delivery.next_attempt_at = None, utcnow()

    def for_prediction(self, prediction_id: str) -> list[WebhookDelivery]:
        with self.sessions() as session:
            return list(
                session.scalars(
                    select(WebhookDelivery)
                    .where(WebhookDelivery.prediction_id == prediction_id)
                    .order_by(WebhookDelivery.created_at, WebhookDelivery.id)
                )
            )


def _unclaimed(now: datetime):
    return or_(WebhookDelivery.claimed_until.is_(None), WebhookDelivery.claimed_until <= now)


def _log_try(delivery: WebhookDelivery, tried_at: datetime, seconds: float, status_code: int | None, error) -> None:
    delivery.attempts += 1
    entry = {"at": iso(tried_at), "status_code": status_code, "error": error, "seconds": round(seconds, 3)}
    tries = [*delivery.tries, entry]
    if len(tries) > MAX_LOGGED_TRIES:
        tries = [tries[0], *tries[-(MAX_LOGGED_TRIES - 1) :]]
    delivery.tries = tries  # a new list: the JSON column notices only assignments
    delivery.last_status_code, delivery.last_error = status_code, error


def iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.isoformat().replace("+00:00", "Z")
