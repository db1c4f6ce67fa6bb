"""Schema migrations (Alembic): an existing database is upgraded in place.

    vo db upgrade                    # the config's database to the newest revision
    vo db current                    # its revision, and the newest one
    vo db revision -m "add a column" # after a change to the models: write the migration

* A new (empty) database gets its tables straight from the models and is stamped with the
  newest revision (:func:`ensure_schema`, called by :func:`vo.db.migrate.init_db`).
* A database at an older revision is upgraded by ``init_db`` (every ingest job calls it;
  the schema lock makes concurrent jobs queue, the first one upgrades) or by ``vo db
  upgrade``.  Each revision of ``migrations/versions`` runs in the one transaction.
* A database made before migrations existed (the tables, no ``alembic_version`` table) is
  taken to be at :data:`BASELINE`, the schema of the first revision, and upgraded from it.

To change the schema: change the models, then run ``vo db revision -m "..."`` on a database
at the newest revision; it writes ``migrations/versions/NNNN_*.py`` from the differences
(Alembic autogenerate).  Review it: autogenerate does not see renamed columns or CHECK
constraints, and SQLite needs ``batch_alter_table`` for column changes.
``tests/db/test_migrations.py`` checks that upgrading an older database gives exactly the
models' schema.  The q3c indexes (:func:`vo.db.engine.ensure_q3c`) are outside migrations.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from vo.db.engine import ensure_q3c, schema_transaction
from vo.db.models import Base

#: Folder of the Alembic environment (``env.py``, ``versions/``).
MIGRATIONS = Path(__file__).parent / "migrations"
#: Revision of databases made before migrations existed.
BASELINE = "0001"


def alembic_config(connection: sa.Connection | None = None) -> Config:
    """Alembic config of the package's migrations; ``env.py`` runs on ``connection``."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


@lru_cache(maxsize=1)
def scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def head() -> str:
    """The newest revision."""
    return scripts().get_current_head()


def include_object(obj, name, type_, reflected, compare_to) -> bool:
    """Leave the q3c indexes out of comparisons: init_db makes them where q3c exists."""
    return not (type_ == "index" and name is not None and name.endswith("_q3c"))


def _context_options(connection: sa.Connection) -> dict:
    return {"target_metadata": Base.metadata, "include_object": include_object, "compare_type": True,
            "render_as_batch": connection.dialect.name == "sqlite"}


def configure_context(context) -> None:
    """Configure Alembic's ``context`` in ``env.py``: the connection of :func:`alembic_config`."""
    connection = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("vo's migrations run through vo.db.migrate (vo db upgrade), on a connection")
    context.configure(connection=connection, **_context_options(connection))


def current_revision(conn: sa.Connection) -> str | None:
    """Revision of the database (None: not stamped)."""
    return MigrationContext.configure(conn).get_current_revision()


def ensure_schema(conn: sa.Connection) -> str:
    """Bring the database of ``conn`` to the newest revision, in the caller's transaction
    (which should hold :func:`vo.db.engine.schema_transaction`'s lock).  Returns what was
    done: ``"current"``, ``"created"`` or ``"upgraded from REV"``."""
    ctx = MigrationContext.configure(conn)
    current = ctx.get_current_revision()
    if current == head():
        return "current"
    if current is not None and current not in {s.revision for s in scripts().walk_revisions()}:
        raise RuntimeError(f"the database is at schema revision {current}, which this version of vo does "
                           f"not know (its newest is {head()}): use the vo that upgraded it")
    if current is None:
        if not _has_tables(conn):
            Base.metadata.create_all(conn)
            ctx.stamp(scripts(), "head")
            return "created"
        ctx.stamp(scripts(), BASELINE)
        current = BASELINE
    command.upgrade(alembic_config(conn), "head")
    return f"upgraded from {current}"


def _has_tables(conn: sa.Connection) -> bool:
    return bool(set(sa.inspect(conn).get_table_names()) & set(Base.metadata.tables))


def upgrade(engine, revision: str = "head") -> tuple[str | None, str | None]:
    """Upgrade the database to ``revision`` (an unstamped one is created or taken to be at
    :data:`BASELINE` first); returns the revisions before and after."""
    with schema_transaction(engine) as conn:
        before = current_revision(conn)
        if revision == "head":
            ensure_schema(conn)
        else:
            if before is None and _has_tables(conn):  # made before migrations existed
                MigrationContext.configure(conn).stamp(scripts(), BASELINE)
            command.upgrade(alembic_config(conn), revision)
        ensure_q3c(conn)
        return before, current_revision(conn)


def downgrade(engine, revision: str) -> tuple[str | None, str | None]:
    """Downgrade the database to ``revision`` (``base``: no tables); returns the revisions
    before and after."""
    with schema_transaction(engine) as conn:
        before = current_revision(conn)
        command.downgrade(alembic_config(conn), revision)
        return before, current_revision(conn)


def schema_diffs(conn: sa.Connection) -> list:
    """Differences between the database's schema and the models (Alembic autogenerate's
    comparison; q3c indexes left out); empty when they agree."""
    return compare_metadata(MigrationContext.configure(conn, opts=_context_options(conn)), Base.metadata)


def new_revision(engine, message: str) -> Path:
    """Write the migration from the database (at the newest revision) to the models:
    ``migrations/versions/NNNN_<message>.py``; returns its path."""
    with engine.connect() as conn:
        if current_revision(conn) != head():
            raise RuntimeError(f"the database is at {current_revision(conn)}, not at {head()}: "
                               "upgrade it first (vo db upgrade)")
        rev_id = f"{int(head()) + 1:04d}"
        slug = re.sub(r"[^a-z0-9]+", "_", message.lower()).strip("_")[:40]
        cfg = alembic_config(conn)
        cfg.set_main_option("file_template", f"{rev_id}_{slug}")
        script = command.revision(cfg, message, autogenerate=True, rev_id=rev_id)
    scripts.cache_clear()
    return Path(script.path)


def run_command(engine, action: str, revision: str = "head", message: str | None = None) -> str:
    """``vo db ACTION``: ``upgrade`` (to ``revision``), ``downgrade`` (to ``revision``),
    ``current`` or ``revision`` (write a migration, ``message``); returns the line to print."""
    if action == "upgrade":
        before, after = upgrade(engine, revision)
        return f"database at revision {after} (was {before or 'unstamped'})"
    if action == "downgrade":
        if revision == "head":
            raise ValueError("vo db downgrade needs the revision to go down to (e.g. 0001, or base)")
        before, after = downgrade(engine, revision)
        return f"database at revision {after or 'base'} (was {before})"
    if action == "current":
        with engine.connect() as conn:
            return f"database at revision {current_revision(conn) or 'none (unstamped)'}; newest {head()}"
    if action == "revision":
        if not message:
            raise ValueError("vo db revision needs a message (-m)")
        return f"wrote {new_revision(engine, message)}"
    raise ValueError(f"unknown vo db action {action!r}")


def init_db(engine: sa.Engine) -> None:
    """Create every table and index, or upgrade an existing database to the newest schema
    revision (:func:`vo.db.migrate.ensure_schema`); idempotent, and safe when several
    processes call it at once (they queue on the schema lock).

    On PostgreSQL the q3c extension and indexes are made too (:func:`ensure_q3c`).
    """
    with schema_transaction(engine) as conn:
        ensure_schema(conn)
        ensure_q3c(conn)
