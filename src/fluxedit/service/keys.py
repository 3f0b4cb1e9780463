"""API keys: created once, shown once, stored as a SHA-256 hash; never deleted, only revoked.

Keys are 256-bit random, so a plain hash is enough (no password-style stretching).

Work made while no key existed (owner NULL) belongs to the first key ever created: it adopts
those predictions, files, LoRAs and trainings when it is made, so they stay visible once the
server requires keys (docs/operations.md, "Access, spending limits, fairness and rate limits").
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from ..store.database import FIRST_KEY_LOCK, advisory_xact_lock
from ..store.models import ApiKey, Batch, LoraName, Prediction, StoredFile, Training, utcnow

log = logging.getLogger(__name__)

KEY_PREFIX = "fxe_"


@dataclass(frozen=True)
class Caller:
    """Who is calling: a key, or nobody when the server runs without keys (loopback only)."""

    key_id: str | None
    name: str
    spending_limit: float | None = None


@dataclass(frozen=True)
class Adopted:
    """What a key took over from the time before any key existed."""

    predictions: int = 0
    files: int = 0
    loras: int = 0
    trainings: int = 0
    batches: int = 0

    def __bool__(self) -> bool:
        return any((self.predictions, self.files, self.loras, self.trainings, self.batches))

    def __str__(self) -> str:
        counts = [(self.predictions, "prediction", "predictions"), (self.files, "file", "files"),
                  (self.loras, "LoRA", "LoRAs"), (self.trainings, "training", "trainings"),
                  (self.batches, "batch", "batches")]  # fmt: skip
        return ", ".join(f"{n} {one if n == 1 else many}" for n, one, many in counts if n)


@dataclass(frozen=True)
class NewKey:
    record: ApiKey
    key: str  # the key itself: the only time it is seen
    adopted: Adopted  # non-empty only for the first key


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class KeyRing:
    def __init__(self, sessions: sessionmaker[Session]):
        self.sessions = sessions
        self._keys_seen = False  # a latch: once this process has seen a key, keyless access stays closed

    def create(self, name: str, spending_limit: float | None = None) -> NewKey:
        """Make a key; the first one ever also adopts what was made without a key."""
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        record = ApiKey(
            id=secrets.token_hex(8),
            name=name,
            prefix=key[:10],
            key_hash=hash_key(key),
            spending_limit=spending_limit,
        )
        with self.sessions.begin() as session:
            advisory_xact_lock(session, FIRST_KEY_LOCK)  # PostgreSQL: two creates at once agree on which is first
            first = session.scalar(select(ApiKey.id).limit(1)) is None
            session.add(record)
            session.flush()
            adopted = _adopt_keyless_work(session, record.id) if first else Adopted()
        return NewKey(record, key, adopted)

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
            return session.scalar(select(ApiKey.id).where(ApiKey.revoked_at.is_(None)).limit(1)) is not None

    def ever_had_keys(self) -> bool:
        """Whether any key, revoked or not, has existed. Once true it stays true for this process,
        whatever happens to the key table; the first time, work still without an owner is adopted."""
        if self._keys_seen:
            return True
        with self.sessions.begin() as session:
            first = session.scalar(select(ApiKey.id).order_by(ApiKey.created_at, ApiKey.id).limit(1))
            if first is None:
                return False
            adopted = _adopt_keyless_work(session, first)  # made while the key was being created
        self._keys_seen = True
        if adopted:
            log.warning("the first API key (id %s) adopted %s made without a key", first, adopted)
        return True

    def authenticate(self, key: str) -> Caller | None:
        with self.sessions() as session:
            record = session.scalars(select(ApiKey).where(ApiKey.key_hash == hash_key(key))).first()
        if record is None or record.revoked_at is not None:
            return None
        self._keys_seen = True
        return Caller(record.id, record.name, record.spending_limit)


def _adopt_keyless_work(session: Session, key_id: str) -> Adopted:
    """Give every row without an owner to this key (a LoRA name it already uses stays unowned)."""

    def adopt(table, *extra) -> int:
        statement = update(table).where(table.owner_key_id.is_(None), *extra).values(owner_key_id=key_id)
        return session.execute(statement.execution_options(synchronize_session=False)).rowcount

    taken_names = select(LoraName.name).where(LoraName.owner_key_id == key_id)
    return Adopted(
        predictions=adopt(Prediction),
        files=adopt(StoredFile),
        loras=adopt(LoraName, LoraName.name.not_in(taken_names)),
        trainings=adopt(Training),
        batches=adopt(Batch),
    )
