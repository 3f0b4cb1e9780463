"""Open the database (SQLite by default, PostgreSQL with --database-url) and keep its schema in step.

The schema comes from the Alembic migrations alone. `fluxedit migrate` (`migrate`) upgrades a database
explicitly; opening one that is behind the migrations is refused (DatabaseBehind, naming that command), so
no replica starts on, or silently rewrites, a schema another replica is still using. One exception, so that
`fluxedit serve` on a new data folder needs nothing first: an SQLite database without any table (a new file)
is created at the newest migration when it is opened; there is nothing in it to lose.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, inspect, make_url, text
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).with_name("migrations")
# PostgreSQL advisory locks ("flxe" and a number): two `fluxedit migrate` at once run one after the other; the
# leader lock is service/leader.py's; creates take turns at the queue and spending checks, stores at the quota.
MIGRATE_LOCK = 0x666C7865_0001
ADMISSION_LOCK = 0x666C7865_0003
QUOTA_LOCK = 0x666C7865_0004
FIRST_KEY_LOCK = 0x666C7865_0005


class DatabaseBehind(RuntimeError):
    """The database's schema is older (or newer) than this fluxedit's migrations."""

    def __init__(self, url: str, current: str | None, head: str):
        self.url, self.current, self.head = url, current, head
        where = safe_url(url)
        if current is not None and not _known(current):
            message = (
                f"the database {where} is at migration {current}, which this fluxedit does not have: it was "
                f"upgraded by a newer fluxedit (this one's newest is {head}); run that version"
            )
        else:
            message = (
                f"the database {where} is at migration {current or 'none'}, behind this fluxedit's {head}: "
                f"upgrade it with `fluxedit migrate {migrate_flag(url)}` (stop the servers that use it first)"
            )
        super().__init__(message)


def make_engine(url: str) -> Engine:
    """An engine for `url`: SQLite with its pragmas, PostgreSQL (psycopg 3) with connections checked before use."""
    if is_postgresql(url):
        _require_psycopg()
        return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)
    engine = create_engine(url, connect_args={"check_same_thread": False} if url.startswith("sqlite") else {})
    if url.startswith("sqlite"):
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def open_database(url: str) -> sessionmaker[Session]:
    """A session factory on a database at the newest migration: DatabaseBehind when it is not (see the top)."""
    engine = make_engine(url)
    current, head = revisions(engine)
    if current != head:
        if url.startswith("sqlite") and not inspect(engine).get_table_names():
            upgrade(engine)
        else:
            engine.dispose()
            raise DatabaseBehind(url, current, head)
    return sessionmaker(engine, expire_on_commit=False)


def migrate(url: str) -> tuple[str | None, str]:
    """Upgrade the database to the newest migration (`fluxedit migrate`): the revisions before and after."""
    engine = make_engine(url)
    try:
        before, head = revisions(engine)
        if before is not None and not _known(before):
            raise DatabaseBehind(url, before, head)
        upgrade(engine)
        return before, head
    finally:
        engine.dispose()


def revisions(engine: Engine) -> tuple[str | None, str]:
    """The database's migration (None: none ran) and the newest one this fluxedit has."""
    with engine.connect() as connection:
        current = MigrationContext.configure(connection).get_current_revision()
    return current, ScriptDirectory.from_config(_config()).get_current_head()


def upgrade(engine: Engine) -> None:
    config = _config()
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATE_LOCK})
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def is_postgresql(url: str) -> bool:
    return url.startswith(("postgresql", "postgres:"))


def safe_url(url: str) -> str:
    """The URL to show, its password hidden."""
    return make_url(url).render_as_string(hide_password=True)


def migrate_flag(url: str) -> str:
    """The flag `fluxedit migrate` needs to reach this database."""
    if url.startswith("sqlite:///") and Path(url.removeprefix("sqlite:///")).name == "fluxedit.db":
        return f"--data-dir {shlex.quote(str(Path(url.removeprefix('sqlite:///')).parent))}"  # a data folder's own
    return f"--database-url {shlex.quote(safe_url(url))}"


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def _known(revision: str) -> bool:
    try:
        return ScriptDirectory.from_config(_config()).get_revision(revision) is not None
    except Exception:  # alembic raises its own errors for an unknown revision
        return False


def _require_psycopg() -> None:
    try:
        import psycopg  # noqa: F401
    except ImportError as error:
        raise RuntimeError("PostgreSQL needs psycopg: pip install 'fluxedit[cluster]' (or psycopg[binary])") from error


def _sqlite_pragmas(connection, _record) -> None:
    # WAL lets readers (long-polls, listings) run while the runner writes; foreign keys are off by default.
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def is_postgresql_session(session: Session | sessionmaker) -> bool:
    """Whether a session (or a session factory) is on PostgreSQL: for the few places that lock differently there."""
    bind = session.kw["bind"] if isinstance(session, sessionmaker) else session.get_bind()
    return bind.dialect.name == "postgresql"


def advisory_xact_lock(session: Session, key: int) -> None:
    """On PostgreSQL, hold the advisory lock `key` until this transaction ends: replicas take turns at what it
    guards. SQLite needs none: its writes are one at a time, and a check there follows the write that locks."""
    if is_postgresql_session(session):
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})
