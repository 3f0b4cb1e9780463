"""API keys: created once, shown once, stored as a SHA-256 hash.

Keys are 256-bit random, so a plain hash is enough (no password-style stretching).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from ..store.models import ApiKey, Prediction, utcnow

KEY_PREFIX = "fxe_"


@dataclass(frozen=True)
class Caller:
    """Who is calling: a key, or nobody when the server runs without keys (loopback only)."""

    key_id: str | None
    name: str
    spending_limit: float | None = None


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class KeyRing:
    def __init__(self, sessions: sessionmaker[Session]):
        self.sessions = sessions

    def create(self, name: str, spending_limit: float | None = None) -> tuple[ApiKey, str]:
        """Make a key; return its record and the key itself (the only time it is seen)."""
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        record = ApiKey(
            id=secrets.token_hex(8),
            name=name,
            prefix=key[:10],
            key_hash=hash_key(key),
            spending_limit=spending_limit,
        )
        with self.sessions.begin() as session:
            session.add(record)
        return record, key

    def list(self) -> list[ApiKey]:
        with self.sessions() as session:
            return list(session.scalars(select(ApiKey).order_by(ApiKey.created_at)))

    def revoke(self, name_or_id: str) -> ApiKey | None:
        with self.sessions.begin() as session:
            record = session.scalars(
                select(ApiKey)
                .where((ApiKey.id == name_or_id) | (ApiKey.name == name_or_id))
                .where(ApiKey.revoked_at.is_(None))
            ).first()
            if record is not None:
                record.revoked_at = utcnow()
            return record

    def any_active(self) -> bool:
        with self.sessions() as session:
            return session.scalar(select(func.count()).where(ApiKey.revoked_at.is_(None))) > 0

    def authenticate(self, key: str) -> Caller | None:
        with self.sessions() as session:
            record = session.scalars(select(ApiKey).where(ApiKey.key_hash == hash_key(key))).first()
        if record is None or record.revoked_at is not None:
            return None
        return Caller(record.id, record.name, record.spending_limit)

    def spent(self, key_id: str | None, since: datetime | None = None) -> float:
        query = select(func.coalesce(func.sum(Prediction.cost), 0.0)).where(
            Prediction.owner_key_id == key_id, Prediction.status == "success"
        )
        if since is not None:
            query = query.where(Prediction.created_at >= since)
        with self.sessions() as session:
            return float(session.scalar(query))
