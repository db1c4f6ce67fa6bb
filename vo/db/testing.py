"""A temporary PostgreSQL server for the tests and the benchmarks.

:func:`temporary_server` starts a throw-away server with the system's ``pg_ctl`` (``initdb``
in a temporary folder, listening on 127.0.0.1 and a free port, trust authentication, user
``postgres``) and removes it afterwards::

    from vo.db.testing import temporary_server

    with temporary_server() as server:
        url = server.url(server.create_database())

PostgreSQL refuses to run as root: as root, ``pg_ctl`` runs as the ``postgres`` system user
(``runuser``) and the data directory lives in a temporary folder owned by that user.
Durability is switched off (``fsync``, ``synchronous_commit``, ``full_page_writes``): the
server is for tests and benchmarks, never for data that must survive.
``.ci/install-postgres.sh`` installs the server and the q3c extension.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

#: Server settings of the temporary server (``postgres -c`` options).
SETTINGS = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off",
            "max_connections": "200", "listen_addresses": "127.0.0.1"}


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server can be started here (no ``pg_ctl``, or root without a
    ``postgres`` user)."""


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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """A running temporary server: ``url(dbname)``, ``create_database()``, ``drop_database()``."""

    def __init__(self, host: str, port: int, user: str, workdir: Path):
        self.host, self.port, self.user = host, port, user
        self.workdir = workdir
        self.logfile = workdir / "server.log"
        self._names = itertools.count()

    def url(self, dbname: str) -> str:
        """SQLAlchemy URL (psycopg 3) of database ``dbname`` on this server."""
        return f"postgresql+psycopg://{self.user}@{self.host}:{self.port}/{dbname}"

    def admin(self, sql: str) -> None:
        """Run ``sql`` on the ``postgres`` database in autocommit mode."""
        import psycopg
        with psycopg.connect(host=self.host, port=self.port, user=self.user, dbname="postgres",
                             autocommit=True) as conn:
            conn.execute(sql)

    def create_database(self, prefix: str = "vo_test") -> str:
        """Create a new empty database; returns its name."""
        name = f"{prefix}_{os.getpid()}_{next(self._names)}"
        self.admin(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        self.admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def temporary_server(settings: dict | None = None) -> Iterator[PostgresServer]:
    """Start a temporary server (``SETTINGS`` updated with ``settings``), stop and delete it
    on exit.  Raises :class:`PostgresUnavailable` where no server can be started and
    ``RuntimeError`` with the server log when it fails to start."""
    pg_ctl = find_pg_ctl()
    if pg_ctl is None:
        raise PostgresUnavailable("no pg_ctl found (install PostgreSQL: bash .ci/install-postgres.sh)")
    prefix: list[str] = []
    if os.geteuid() == 0:
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            raise PostgresUnavailable("running as root and there is no 'postgres' user to run the "
                                      "server") from None
        prefix = ["runuser", "-u", "postgres", "--"]
    top = Path(tempfile.mkdtemp(prefix="vo-pg-"))
    os.chmod(top, 0o755)
    workdir = top / "pg"
    workdir.mkdir()
    if prefix:
        os.chown(workdir, pw.pw_uid, pw.pw_gid)
    datadir = workdir / "data"
    server = PostgresServer("127.0.0.1", _free_port(), "postgres", workdir)
    options = " ".join(f"-c {k}={v}" for k, v in {**SETTINGS, **(settings or {})}.items())
    env = {**os.environ, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}

    def pg(*args: str) -> None:
        subprocess.run([*prefix, pg_ctl, *args], check=True, capture_output=True, text=True,
                       cwd="/", env=env, timeout=120)

    started = False
    try:
        try:
            pg("initdb", "-D", str(datadir), "-o", "--username=postgres --auth=trust --encoding=UTF8")
            pg("start", "-D", str(datadir), "-w", "-l", str(server.logfile),
               "-o", f"-p {server.port} -k {workdir} {options}")
        except subprocess.CalledProcessError as exc:
            log = server.logfile.read_text() if server.logfile.exists() else ""
            raise RuntimeError(f"cannot start PostgreSQL with {pg_ctl}: {exc.stderr.strip()}\n{log}") from exc
        started = True
        yield server
    finally:
        if started:
            pg("stop", "-D", str(datadir), "-m", "fast", "-w")
        shutil.rmtree(top, ignore_errors=True)


# -- synthetic transient products (tests and benchmarks of the database layer) ------------------
