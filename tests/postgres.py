"""A throwaway PostgreSQL server for tests: Debian's server binaries, a cluster in a temporary folder.

`postgres_cluster` (session scope) runs initdb and pg_ctl once: listening on 127.0.0.1 on a free port, its unix
socket in the same folder, trust authentication, durability off (a test database never outlives its run). It is
stopped and removed at the end. `postgres_url` gives each test a database of its own (CREATE DATABASE), so tests
never see each other's rows. initdb refuses root: as root the cluster belongs to an unprivileged user (postgres,
or nobody) and its commands run as that user.

No server binaries (or no psycopg): the tests that need it skip, saying why. With FLUXEDIT_REQUIRE_POSTGRES=1
(.ci/run sets it; `make test` installs Debian's postgresql as root) they fail instead, so CI cannot pass by
skipping them.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

REQUIRED = os.environ.get("FLUXEDIT_REQUIRE_POSTGRES") == "1"
SUPERUSER = "postgres"
SERVER_OPTIONS = {
    "listen_addresses": "127.0.0.1",
    "max_connections": "300",  # two replicas with their pools, listeners and leader locks, and the tests' own
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
}


def server_bindir() -> Path | None:
    """Where initdb and pg_ctl are: pg_config's bindir when it has them (a source build), else Debian's
    /usr/lib/postgresql/N/bin (the newest), where its pg_config (from libpq-dev) does not point."""
    candidates = []
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        candidates.append(Path(subprocess.check_output(["pg_config", "--bindir"], text=True).strip()))
    by_version = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda path: int(Path(path).parent.name or 0))
    candidates += [Path(path) for path in reversed(by_version)]
    return next((path for path in candidates if (path / "initdb").is_file() and (path / "pg_ctl").is_file()), None)


def _unavailable(reason: str):
    if REQUIRED:
        pytest.fail(f"PostgreSQL is required here (FLUXEDIT_REQUIRE_POSTGRES=1) but {reason}")
    pytest.skip(f"no PostgreSQL for these tests: {reason} (as root, `make test` installs Debian's postgresql)")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class PostgresCluster:
    bindir: Path
    folder: Path
    port: int
    run_as: str | None  # the unprivileged user the server runs as, when the tests run as root

    @property
    def data(self) -> Path:
        return self.folder / "data"

    @property
    def log(self) -> Path:
        return self.folder / "server.log"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str) -> None:
        command = [str(self.bindir / args[0]), *args[1:]]
        if self.run_as is not None:
            command = ["runuser", "-u", self.run_as, "--", *command]
        subprocess.run(command, check=True, capture_output=True, text=True, timeout=120)

    def start(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", SUPERUSER, "-A", "trust", "-E", "UTF8", "--no-sync")
        options = " ".join(f"-c {name}={value}" for name, value in SERVER_OPTIONS.items())
        options += f" -p {self.port} -k {self.folder}"
        self._run("pg_ctl", "start", "-w", "-t", "60", "-D", str(self.data), "-l", str(self.log), "-o", options)

    def stop(self) -> None:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            self._run("pg_ctl", "stop", "-D", str(self.data), "-m", "immediate", "-w", "-t", "30")

    def create_database(self, name: str | None = None) -> str:
        """A new, empty database; its SQLAlchemy URL."""
        import psycopg

        name = name or "test_" + secrets.token_hex(6)
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user={SUPERUSER} dbname=postgres", autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def server_log(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-4000:]
        except OSError:
            return ""


def _unprivileged_user() -> str:
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    return "nobody"


@pytest.fixture(scope="session")
def postgres_cluster():
    bindir = server_bindir()
    if bindir is None:
        _unavailable("no PostgreSQL server binaries were found (initdb, pg_ctl)")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _unavailable("psycopg is not installed (pip install 'fluxedit[cluster]')")
    run_as = _unprivileged_user() if os.geteuid() == 0 else None
    if run_as is not None and shutil.which("runuser") is None:
        _unavailable("running as root, and there is no runuser to start the server as an unprivileged user")
    folder = Path(tempfile.mkdtemp(prefix="fluxedit-pg-"))  # short: the unix socket's path must fit in 107 bytes
    if run_as is not None:
        user = pwd.getpwnam(run_as)
        os.chown(folder, user.pw_uid, user.pw_gid)
    cluster = PostgresCluster(bindir, folder, _free_port(), run_as)
    try:
        cluster.start()
    except subprocess.CalledProcessError as error:
        shutil.rmtree(folder, ignore_errors=True)
        pytest.fail(f"PostgreSQL did not start: {error.stderr or error.stdout}\n{cluster.server_log()}")
    yield cluster
    cluster.stop()
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_cluster) -> str:
    """A fresh database of the test cluster, for this test alone."""
    return postgres_cluster.create_database()
