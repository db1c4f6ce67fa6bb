"""Shared fixtures: databases.

``db_url`` is parametrised over ``sqlite`` and ``postgresql``, so every database test runs on
both backends.  PostgreSQL is a real temporary server started with the system's ``pg_ctl``
(pytest-postgresql's executor); each test gets a fresh database in it.  Without ``pg_ctl``
the PostgreSQL variants are skipped locally and FAIL when the ``CI`` environment variable is
set (CI must test both backends; ``.ci/install-postgres.sh`` installs the server).

PostgreSQL refuses to run as root.  When the tests run as root (containers, CI), ``pg_ctl``
runs as the ``postgres`` system user through a small wrapper, and the data directory lives
in a temporary folder owned by that user; this is why the fixture builds pytest-postgresql's
``PostgreSQLExecutor`` itself instead of using the ``postgresql_proc`` factory, whose data
directory sits under pytest's root-only (0700) temporary folder.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest


def find_pg_ctl() -> str | None:
    """``pg_ctl`` of the newest installed server: ``VO_PG_CTL``, ``pg_config --bindir``,
    ``/usr/lib/postgresql/*/bin``, then ``PATH``."""
    candidates = [os.environ.get("VO_PG_CTL")]
    try:
        bindir = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True,
                                timeout=10).stdout.strip()
        candidates.append(os.path.join(bindir, "pg_ctl") if bindir else None)
    except (OSError, subprocess.SubprocessError):
        pass

    def major(path):
        try:
            return int(Path(path).parts[-3])
        except (ValueError, IndexError):
            return 0

    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=major, reverse=True)
    candidates.append(shutil.which("pg_ctl"))
    for c in candidates:
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    return None


def _unavailable(reason: str):
    if os.environ.get("CI"):
        pytest.fail(f"PostgreSQL tests cannot run on CI: {reason}", pytrace=False)
    pytest.skip(reason)


class PostgresServer:
    """A running temporary server: ``url(dbname)``, ``create_database()``."""

    def __init__(self, executor, user: str):
        self.executor = executor
        self.host = executor.host
        self.port = executor.port
        self.user = user
        self._names = itertools.count()

    def url(self, dbname: str) -> str:
        return f"postgresql+psycopg://{self.user}@{self.host}:{self.port}/{dbname}"

    def _admin(self, sql: str) -> None:
        import psycopg
        with psycopg.connect(host=self.host, port=self.port, user=self.user, dbname="postgres",
                             autocommit=True) as conn:
            conn.execute(sql)

    def create_database(self) -> str:
        name = f"vo_test_{os.getpid()}_{next(self._names)}"
        self._admin(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _as_postgres_user(pg_ctl: str, workdir: Path) -> str:
    """A wrapper that runs ``pg_ctl`` as the ``postgres`` user (for tests run as root)."""
    try:
        pw = pwd.getpwnam("postgres")
    except KeyError:
        _unavailable("tests run as root and there is no 'postgres' user to run the server")
    os.chown(workdir, pw.pw_uid, pw.pw_gid)
    wrapper = workdir.parent / "pg_ctl_as_postgres"
    wrapper.write_text(f'#!/bin/sh\ncd / && exec runuser -u postgres -- "{pg_ctl}" "$@"\n')
    wrapper.chmod(0o755)
    return str(wrapper)


@pytest.fixture(scope="session")
def postgres_server():
    """A temporary PostgreSQL server on 127.0.0.1 (q3c is created in each database by
    ``init_db`` when the server has the extension)."""
    from port_for import select_random
    from pytest_postgresql.executors import PostgreSQLExecutor

    pg_ctl = find_pg_ctl()
    if pg_ctl is None:
        _unavailable("no pg_ctl found (install PostgreSQL: bash .ci/install-postgres.sh)")
    top = Path(tempfile.mkdtemp(prefix="vo-pg-"))
    workdir = top / "pg"
    workdir.mkdir()
    os.chmod(top, 0o755)
    executable = _as_postgres_user(pg_ctl, workdir) if os.geteuid() == 0 else pg_ctl
    executor = PostgreSQLExecutor(
        executable=executable, host="127.0.0.1", port=select_random(), datadir=str(workdir / "data"),
        unixsocketdir=str(workdir), logfile=str(workdir / "server.log"), startparams="-w",
        dbname="vo_test", user="postgres",
        postgres_options="-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
                         "-c max_connections=200")
    try:
        executor.start()
    except Exception as exc:  # noqa: BLE001 - report the server log with the failure
        log = (workdir / "server.log").read_text() if (workdir / "server.log").exists() else ""
        shutil.rmtree(top, ignore_errors=True)
        pytest.fail(f"cannot start PostgreSQL with {pg_ctl}: {exc}\n{log}", pytrace=False)
    try:
        yield PostgresServer(executor, "postgres")
    finally:
        executor.stop()
        shutil.rmtree(top, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    """URL of an empty database: a SQLite file, or a fresh database on the temporary server."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'vo.sqlite'}"
        return
    server = request.getfixturevalue("postgres_server")
    name = server.create_database()
    try:
        yield server.url(name)
    finally:
        server.drop_database(name)


@pytest.fixture
def engine(db_url):
    """An engine on an initialised empty database (tables, indexes, q3c where available)."""
    from vo.db import get_engine, init_db
    eng = get_engine(db_url)
    init_db(eng)
    yield eng
    eng.dispose()
