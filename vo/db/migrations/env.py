"""Alembic environment: runs the migrations on the connection :mod:`vo.db.migrate` gives
(``config.attributes["connection"]``), inside its transaction, against the models'
metadata.  SQLite runs in batch mode (tables are copied to alter them)."""

from __future__ import annotations

from alembic import context

from vo.db.migrate import configure_context

configure_context(context)
with context.begin_transaction():
    context.run_migrations()
