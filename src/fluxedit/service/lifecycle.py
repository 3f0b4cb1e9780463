"""The one place a prediction's or a training's status changes, and the status-change event it sends.

`Lifecycle.change` writes the new status (with its fields, a merged metrics dict and time-stamped log
lines) in one transaction. What follows a change subscribes to it instead of being called from here:
- within the transaction (`within_transaction`): a subscriber gets the session, so what it writes
  commits with the change or not at all (the webhook outbox row: a change never loses its webhook);
- after the commit (`after_commit`): waking waiters and streams, metrics, the queue gauge.
An ended status is final: a late change of an ended row is ignored. A change locks its row (FOR UPDATE on
PostgreSQL; SQLite's writes are one at a time anyway), so two replicas changing one row take turns, and the second
sees the first's status: a cancel and a dispatch of one queued prediction cannot both win. Predictions and
trainings each have one Lifecycle (their row type), with the same rules. A batch's predictions are created (and
cancelled) in bulk, many rows in one transaction (`create_many`, `change_many`): each row still sends its own change.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from ..schema import Status
from ..store.models import utcnow

log = logging.getLogger(__name__)
BULK_CHUNK = 500  # rows read per query by change_many (a database caps the parameters of one statement)


@dataclass(frozen=True)
class StatusChange:
    row: object  # a detached copy of the Prediction or Training after the change
    previous: Status | None  # None: the row was just created
    logged: bool  # the change added log lines

    @property
    def id(self) -> str:
        return self.row.id

    @property
    def status(self) -> Status:
        return self.row.status


WithinTransaction = Callable[[Session, StatusChange], None]
AfterCommit = Callable[[StatusChange], None]


class Lifecycle:
    def __init__(self, sessions: sessionmaker[Session], row_type: type, cleared_on_requeue: tuple[str, ...] = ()):
        self.sessions = sessions
        self.row_type = row_type
        self.cleared_on_requeue = cleared_on_requeue  # fields a return to `created` resets (a prediction's start)
        self._within: list[WithinTransaction] = []
        self._after: list[AfterCommit] = []

    def within_transaction(self, subscriber: WithinTransaction) -> None:
        self._within.append(subscriber)

    def after_commit(self, subscriber: AfterCommit) -> None:
        self._after.append(subscriber)

    def create(self, row, check: Callable[[Session], None] | None = None) -> None:
        """Insert a new row (status `created`). `check` runs after the insert, in its transaction: what it raises
        refuses the row (nothing is stored, nobody is told)."""
        self.create_many([row], check)

    def create_many(self, rows: list, check: Callable[[Session], None] | None = None, companions: list = ()) -> None:
        """Insert new rows (status `created`) in one transaction, with `companions` (rows of other tables that
        they refer to, such as their batch): all of them or, when `check` raises, none."""
        with self.sessions.begin() as session:
            session.add_all([*companions, *rows])
            session.flush()  # the insert takes the write lock first, so a check's counts see every other create
            if check is not None:
                check(session)
            changes = [StatusChange(detached_copy(row), None, logged=False) for row in rows]
            for change in changes:
                for subscriber in self._within:
                    subscriber(session, change)
        self._announce(changes)

    def change(
        self, row_id: str, status: Status, *, log_line: str | None = None, metrics_update=None,
        only_from: Collection[Status] | None = None, expect: dict | None = None, **fields,
    ) -> bool:  # fmt: skip
        """Move a row to `status`, setting `fields`; False when there is no such row or it has ended, or it is
        no longer in one of `only_from`, or no longer has the values in `expect` (checked under the row's lock)."""
        with self.sessions.begin() as session:
            row = session.get(self.row_type, row_id, with_for_update=True)
            if row is None or row.status.ended:
                return False  # an end is final: a late worker message cannot change it
            if only_from is not None and row.status not in only_from:
                return False
            if expect and any(getattr(row, name) != value for name, value in expect.items()):
                return False
            change = self._apply(session, row, status, log_line, metrics_update, fields)
        self._announce([change])
        return True

    def change_many(
        self, row_ids: list[str], status: Status, *, only_from: Status | None = None, log_line: str | None = None,
        **fields,
    ) -> list[str]:  # fmt: skip
        """Move many rows to `status` in one transaction (those still `only_from`, when given); the ids moved.
        Each moved row is one change, as `change` makes it."""
        changes = []
        with self.sessions.begin() as session:
            for start in range(0, len(row_ids), BULK_CHUNK):
                chunk = row_ids[start : start + BULK_CHUNK]
                chosen = select(self.row_type).where(self.row_type.id.in_(chunk)).order_by(self.row_type.id)
                for row in session.scalars(chosen.with_for_update()):  # locked in one order: no deadlock
                    if row.status.ended or (only_from is not None and row.status != only_from):
                        continue
                    changes.append(self._apply(session, row, status, log_line, None, fields))
        self._announce(changes)
        return [change.id for change in changes]

    def _apply(self, session: Session, row, status: Status, log_line, metrics_update, fields: dict) -> StatusChange:
        previous = row.status
        row.status = status
        if status == Status.created:
            for name in self.cleared_on_requeue:
                setattr(row, name, None)
        for name, value in fields.items():
            setattr(row, name, value)
        if metrics_update:
            row.metrics = {**row.metrics, **metrics_update}
        if log_line:
            row.logs = row.logs + stamped(log_line)
        change = StatusChange(detached_copy(row), previous, logged=bool(log_line))
        for subscriber in self._within:
            subscriber(session, change)
        return change

    def fail(self, row_id: str, code: str, message: str, *, log_line: str | None = None, **fields) -> bool:
        """End a row with an error: its code, its message (also its log line, unless another is given)."""
        return self.change(
            row_id, Status.error, error_code=code, error_message=message, completed_at=utcnow(),
            log_line=log_line or message, **fields,
        )  # fmt: skip

    def _announce(self, changes: list[StatusChange]) -> None:
        if not changes:
            return
        for subscriber in self._after:
            for change in changes:
                try:
                    subscriber(change)
                except Exception:  # the change is committed: one failing subscriber must not stop the others
                    log.exception("a subscriber of the change of %s to %s failed", change.id, change.status)


def stamped(text: str) -> str:
    """Log lines as they are stored: each prefixed with the UTC time."""
    stamp = datetime.now(UTC).strftime("%H:%M:%S")
    return "".join(f"{stamp} {line}\n" for line in text.splitlines())


def detached_copy(row):
    """The row's column values in a new object, readable after its session has closed."""
    copy = type(row)()
    for column in type(row).__table__.columns:
        setattr(copy, column.key, getattr(row, column.key))
    return copy
