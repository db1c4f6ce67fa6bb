"""Indexes: by filename where ingest looks rows up; none that duplicate a unique constraint

Ingest finds the images, zero points, references, subtractions and cutouts of a CCD by
file name: those lookups get an index.  A column that leads a table's unique constraint
needs no index of its own (the unique index serves its lookups and foreign-key checks),
and every index slows bulk ingest: those are dropped.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21 15:33:32
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

#: (table, column) of the indexes that duplicate the leading column of a unique constraint.
DUPLICATES = [("cutouts", "subtraction_id"), ("detections", "provenance_id"), ("exposures", "instrument"),
              ("images", "exposure_id"), ("lightcurves", "provenance_id"), ("measurements", "cutouts_id"),
              ("provenances", "step"), ("psfs", "source_list_id"), ("raw_photometry", "source_id"),
              ("references", "provenance_id"), ("scores", "measurement_id"), ("source_lists", "image_id"),
              ("sources", "name"), ("subtractions", "image_id"), ("world_coordinates", "source_list_id"),
              ("zero_points", "source_list_id")]
#: Tables whose rows are looked up by ``filename``.
BY_FILENAME = ("cutouts", "images", "references", "subtractions", "zero_points")


def upgrade() -> None:
    for table, column in DUPLICATES:
        op.drop_index(f"ix_{table}_{column}", table_name=table)
    for table in BY_FILENAME:
        op.create_index(f"ix_{table}_filename", table, ["filename"])


def downgrade() -> None:
    for table in BY_FILENAME:
        op.drop_index(f"ix_{table}_filename", table_name=table)
    for table, column in DUPLICATES:
        op.create_index(f"ix_{table}_{column}", table, [column])
