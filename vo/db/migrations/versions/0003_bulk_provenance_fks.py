"""Bulk tables: no foreign key on provenance_id (lightcurves, measurements, scores)

PostgreSQL checks a foreign key row by row: for ``provenance_id`` that is a trigger and a
lookup per light curve or measurement, about a third of the server time of ingest, while
every batch has one or a few provenances that ingest looks up (and fails on) before it
writes.  The parent foreign keys (sources, cutouts, measurements) and their cascades stay.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21 20:40:00
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

BULK = ("lightcurves", "measurements", "scores")
#: Names for SQLite's unnamed foreign keys, so that batch mode can drop them.
NAMING = {"fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s"}


def _name(table: str) -> str:
    """The foreign key's name: PostgreSQL's default, or the SQLite batch naming's."""
    if op.get_bind().dialect.name == "postgresql":
        return f"{table}_provenance_id_fkey"
    return f"fk_{table}_provenance_id_provenances"


def upgrade() -> None:
    for table in BULK:
        with op.batch_alter_table(table, naming_convention=NAMING) as batch:
            batch.drop_constraint(_name(table), type_="foreignkey")


def downgrade() -> None:
    for table in BULK:
        with op.batch_alter_table(table, naming_convention=NAMING) as batch:
            batch.create_foreign_key(_name(table), "provenances", ["provenance_id"], ["id"])
