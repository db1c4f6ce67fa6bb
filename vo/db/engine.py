"""Engines and sessions for SQLite (default) and PostgreSQL (production).

SQLite runs in WAL mode with a long busy timeout, so several ingest jobs writing the same
file wait for each other instead of failing.  Writers open their transaction with
``BEGIN IMMEDIATE`` (see :func:`write_engine`): a deferred transaction that reads first and
then writes can fail at once with ``database is locked`` when another writer committed in
between, without the busy timeout ever being used.

PostgreSQL goes through psycopg 3 (``postgresql+psycopg://``); ``postgresql://`` URLs are
rewritten to it.
"""

from __future__ import annotations

import json
import math
import random
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session as _Session

from vo import config as vconfig
from vo.io.encoding import numpy_to_json

#: Seconds a SQLite writer waits for the lock before giving up.
SQLITE_BUSY_TIMEOUT_S = 300
#: PostgreSQL advisory lock key that serialises schema changes (:func:`init_db`, migrations).
_INIT_LOCK_KEY = 0x766F5F696E6974  # "vo_init"


class Session(_Session):
    """SQLAlchemy ORM session: ``with Session(engine) as session: ...``.

    ``Session()`` with no engine opens the database of the default config
    (``config/config.yaml``, ``VO_DATA``, ``VO_DB_URL``), as virtualobserver's did.
    ``cfg``: the config whose files the rows index (default with no engine: the default
    config); raw photometry and light curves read in this session load their data from its
    data root (or ``data_root``), and light curves added to it get its reduce provenance.
    """

    def __init__(self, bind=None, data_root=None, cfg: dict | None = None, **kwargs):
        if bind is None:
            from vo.config import load_config
            cfg = cfg if cfg is not None else load_config()
            bind = engine_from_config(cfg)
        super().__init__(bind=bind, **kwargs)
        if cfg is not None:
            from vo.config import data_root as config_data_root
            self.info["cfg"] = cfg
            self.info["data_root"] = str(config_data_root(cfg))
        if data_root is not None:
            self.info["data_root"] = str(data_root)


def _nan_to_none(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_nan_to_none(v) for v in obj]
    return obj


def json_dumps(obj) -> str:
    """JSON for the database: numpy scalars become numbers, NaN/inf become null
    (PostgreSQL's JSONB rejects NaN)."""
    return json.dumps(_nan_to_none(json.loads(json.dumps(obj, default=numpy_to_json))),
                      allow_nan=False)


def normalise_url(url: str) -> str:
    """``postgresql://`` and ``postgres://`` URLs use psycopg 3."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def get_engine(url: str, echo: bool = False) -> Engine:
    """Engine for ``url`` (SQLite: WAL, busy timeout, foreign keys on; PostgreSQL: psycopg 3)."""
    url = normalise_url(str(url))
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, echo=echo, json_serializer=json_dumps,
                                  connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S})
        _configure_sqlite(engine)
        return engine
    return sa.create_engine(url, echo=echo, json_serializer=json_dumps, pool_pre_ping=True)


def _configure_sqlite(engine: Engine) -> None:
    """WAL journal, busy timeout, foreign keys, and explicit BEGIN (DEFERRED or IMMEDIATE).

    pysqlite's own transaction handling is switched off (``isolation_level = None``) so
    that SQLAlchemy's ``begin`` event emits the BEGIN; this is the recipe of the SQLAlchemy
    SQLite dialect documentation ("Serializable isolation / Savepoints / Transactional DDL").
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_S * 1000}")
        _set_wal(cur)
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")


def _set_wal(cur) -> None:
    """Switch to WAL (persistent in the file).  The switch needs an exclusive lock and SQLite
    does not use the busy handler for it, so jobs opening a new database at the same moment
    retry here until the first one has done it."""
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_S
    while True:
        try:
            cur.execute("PRAGMA journal_mode=WAL")  # in-memory databases answer "memory"
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(random.uniform(0.005, 0.05))


def write_engine(engine: Engine) -> Engine:
    """The engine whose transactions take the write lock at once (SQLite ``BEGIN IMMEDIATE``).

    Use it for every transaction that writes; on PostgreSQL it is ``engine`` itself.
    """
    if engine.dialect.name == "sqlite":
        return engine.execution_options(sqlite_begin="IMMEDIATE")
    return engine


def url_from_config(cfg: dict) -> str:
    """Database URL of a config (``VO_DB_URL``, ``database.url`` or SQLite in the data root)."""
    return vconfig.database_url(cfg)


def engine_from_config(cfg: dict) -> Engine:
    """Engine of a config; creates the data root for the default SQLite file."""
    url = url_from_config(cfg)
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    return get_engine(url, echo=bool(cfg.get("database", {}).get("echo", False)))


def has_q3c(conn: sa.Connection | _Session) -> bool:
    """Whether the q3c extension is installed in this PostgreSQL database."""
    bind = conn.get_bind() if isinstance(conn, _Session) else conn
    if bind.dialect.name != "postgresql":
        return False
    return conn.execute(sa.text("SELECT 1 FROM pg_extension WHERE extname = 'q3c'")).first() is not None


def _q3c_available(conn: sa.Connection) -> bool:
    return conn.execute(sa.text(
        "SELECT 1 FROM pg_available_extensions WHERE name = 'q3c'")).first() is not None


@contextmanager
def schema_transaction(engine: Engine) -> Iterator[sa.Connection]:
    """A write transaction that holds the schema lock: a PostgreSQL advisory lock, SQLite's
    write lock (``BEGIN IMMEDIATE``).  Concurrent callers queue; DDL is transactional in both."""
    if engine.dialect.name != "sqlite":
        with write_engine(engine).begin() as conn:
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_INIT_LOCK_KEY)))
            yield conn
        return
    # SQLite alters a table by copying it (Alembic batch mode); with foreign keys enforced,
    # dropping the old copy would run the ON DELETE actions of the rows that point at it.
    # As SQLite's documentation advises: foreign keys off (outside the transaction), change,
    # check them before commit, on again.
    with write_engine(engine).connect() as conn:
        raw = conn.connection.driver_connection
        raw.execute("PRAGMA foreign_keys=OFF")
        try:
            with conn.begin():
                yield conn
                broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                if broken:
                    raise RuntimeError(f"schema change broke foreign keys: {broken[:5]}")
        finally:
            raw.execute("PRAGMA foreign_keys=ON")


def ensure_q3c(conn: sa.Connection) -> None:
    """PostgreSQL: create the q3c extension when the server has it (and the user may), and a
    q3c index on ``q3c_ang2ipix(ra, dec)`` of every table with sky positions."""
    from vo.db.models import spatial_tables

    if conn.dialect.name != "postgresql":
        return
    if not has_q3c(conn) and _q3c_available(conn):
        try:
            with conn.begin_nested():
                conn.execute(sa.text("CREATE EXTENSION IF NOT EXISTS q3c"))
        except sa.exc.DBAPIError:  # not allowed for this user: HEALPix is used instead
            pass
    if has_q3c(conn):
        for table in spatial_tables():
            conn.execute(sa.text(f"CREATE INDEX IF NOT EXISTS ix_{table.name}_q3c "
                                 f"ON {table.name} (q3c_ang2ipix(ra, dec))"))
