"""The schema comes from migrations alone, on SQLite and on PostgreSQL, and upgrading keeps what is stored."""

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, text

from fluxedit.store.database import MIGRATIONS, DatabaseBehind, make_engine, migrate, open_database, upgrade
from fluxedit.store.models import Base
from tests.postgres import postgres_cluster, postgres_url  # noqa: F401  (fixtures)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path) -> str:
    """An empty database of each kind the service runs on."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'fluxedit.db'}"
    return request.getfixturevalue("postgres_url")


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def _upgrade_to(url: str, revision: str) -> None:
    engine = make_engine(url)
    with engine.begin() as connection:
        config = _config()
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
    engine.dispose()


def test_migrations_build_exactly_the_tables_the_code_uses(database_url):
    engine = make_engine(database_url)
    upgrade(engine)
    with engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
    engine.dispose()


def test_migrations_build_exactly_the_tables_the_code_uses_in_memory():
    engine = create_engine("sqlite://")
    upgrade(engine)
    with engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []


def test_an_old_database_is_upgraded_in_place_without_losing_rows(database_url):
    _upgrade_to(database_url, "0001")
    engine = make_engine(database_url)
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO api_keys (id, name, prefix, key_hash, created_at) "
                "VALUES ('k1', 'alice', 'fxe_', 'h', '2026-01-01')"
            )
        )
    assert migrate(database_url) == ("0001", ScriptDirectory.from_config(_config()).get_current_head())  # `migrate`
    with engine.connect() as connection:
        assert connection.execute(text("SELECT name FROM api_keys")).scalar() == "alice"
        version = connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
    engine.dispose()
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head != "0001" and version == head  # upgraded to the newest migration on disk, not just past 0001


def test_a_database_behind_its_migrations_is_refused_naming_the_command_that_upgrades_it(database_url):
    _upgrade_to(database_url, "0003")
    with pytest.raises(DatabaseBehind) as refused:
        open_database(database_url)
    message = str(refused.value)
    assert "0003" in message and "fluxedit migrate --" in message
    engine = make_engine(database_url)
    with engine.connect() as connection:  # refused means untouched: still at 0003
        assert connection.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0003"
    engine.dispose()
    migrate(database_url)
    open_database(database_url)  # and once migrated it opens


def test_a_new_sqlite_file_is_created_at_the_newest_migration_but_a_new_postgresql_database_is_not(database_url):
    if database_url.startswith("sqlite"):
        open_database(database_url)  # `make serve` on a new data folder: nothing to run first
        migrate(database_url)  # already at the newest: nothing to do, no error
        return
    with pytest.raises(DatabaseBehind, match="fluxedit migrate --database-url"):
        open_database(database_url)


def test_the_refusal_never_shows_the_password():
    error = DatabaseBehind("postgresql+psycopg://alice:s3cret@db.example/fluxedit", "0003", "0007")
    assert "s3cret" not in str(error) and "alice" in str(error) and "db.example/fluxedit" in str(error)
