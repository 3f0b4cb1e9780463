"""The schema comes from migrations alone, and upgrading keeps what is stored."""

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, text

from fluxedit.store.database import MIGRATIONS, open_database, upgrade
from fluxedit.store.models import Base


def test_migrations_build_exactly_the_tables_the_code_uses():
    engine = create_engine("sqlite://")
    upgrade(engine)
    with engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []


def test_an_old_database_is_upgraded_in_place_without_losing_rows(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0001")
        connection.execute(
            text(
                "INSERT INTO api_keys (id, name, prefix, key_hash, created_at) "
                "VALUES ('k1', 'alice', 'fxe_', 'h', '2026-01-01')"
            )
        )
    open_database(url)  # what `fluxedit serve` does at start
    with engine.connect() as connection:
        assert connection.execute(text("SELECT name FROM api_keys")).scalar() == "alice"
        version = connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head != "0001" and version == head  # upgraded to the newest migration on disk, not just past 0001
