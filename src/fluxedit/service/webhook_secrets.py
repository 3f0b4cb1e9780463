"""Each key's default webhook signing secret, made on first use and kept in the database."""

from __future__ import annotations

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from ..store.models import WebhookSecret
from .standard_webhooks import new_secret

OPEN_OWNER = "open"  # the server's own secret while it runs without keys


class WebhookSecrets:
    def __init__(self, sessions: sessionmaker[Session]):
        self.sessions = sessions

    def default_for(self, key_id: str | None) -> str:
        owner = key_id or OPEN_OWNER
        with self.sessions() as session:
            found = session.get(WebhookSecret, owner)
        if found is not None:
            return found.secret
        try:
            with self.sessions.begin() as session:
                session.add(WebhookSecret(owner=owner, secret=new_secret()))
        except IntegrityError:
            pass  # a concurrent first request made it: use that one
        with self.sessions() as session:
            return session.get(WebhookSecret, owner).secret
