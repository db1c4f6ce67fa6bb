"""SQLAlchemy 2.0 models: the database indexes the files, it is never the only copy.

Tables are keyed by natural keys (unique constraints) so that ingest can upsert with
``INSERT ... ON CONFLICT`` and several ingest jobs can run at once.  To add a table: subclass
:class:`Base` (plus :class:`SkyPositionMixin` for RA/Dec with cone search, :class:`FileMixin`
for file-backed rows), declare its natural key as a ``UniqueConstraint`` and list it in
:data:`NATURAL_KEYS`; :func:`vo.db.migrate.init_db` creates it (and its q3c index) in a
new database, and a migration (``vo db revision``) adds it to existing ones.

Design choices
--------------
* ``sources`` are unique on ``(name, project)``: as in virtualobserver a source is a row of
  one project's catalog (its own name, magnitude and catalog columns), so two projects may
  hold the same star under different names, or the same name with different catalog rows,
  without touching each other.  Raw photometry is shared on disk; each project's source has
  its own ``raw_photometry`` row pointing at the same file and key.
* ``provenances.obs`` is ``""`` (not NULL) for steps that are not per observatory, because
  NULLs never conflict in a unique constraint and the upsert would then duplicate them.
* ``detections.filter`` is ``""`` for a detection that uses all filters, for the same reason.
* Image pipeline: ``exposures`` (shared raw data, unique on ``(instrument, name)``) ->
  ``images`` (one CCD, one preprocessing provenance) -> ``source_lists`` -> ``psfs``,
  ``world_coordinates`` -> ``zero_points``; each product row is keyed by its parent and its
  provenance, and carries ``bad``/``bad_reason`` that ingest propagates downstream.
* Transients: ``references`` (coadds, found by instrument/field/filter/ccd) and ``images`` ->
  ``subtractions`` -> ``cutouts`` (one file per CCD) -> ``measurements`` (one row per
  candidate, ``filekey`` = row index) -> ``scores``; measurements point at ``objects``
  (named sky objects, created race-free by :mod:`vo.db.objects`; name counters per year in
  ``object_counters``).  FITS
  products are whole files: their ``filekey`` is ``""``.  ``catalog_excerpts`` index the
  cached reference-catalog tiles (HEALPix pixel ``tile`` at ``nside``, no provenance).
* Measures that cannot be negative (counts, rms, exposure time) have CHECK constraints.
* Indexes: a column that leads a unique constraint has no index of its own (the unique
  index serves its lookups and foreign-key checks; every extra index slows bulk ingest);
  tables whose rows ingest finds by file (images, zero points, references, subtractions,
  cutouts) have an index on ``filename``.
* The bulk tables (``lightcurves``, ``measurements``, ``scores``: millions of rows a night)
  have no foreign key on ``provenance_id``: PostgreSQL checks a foreign key row by row (a
  trigger and a lookup each, about a third of the server time of a ``COPY`` into
  ``lightcurves``), while every batch has one or a few provenances that ingest looks up
  (and fails on) before it writes.  Provenances are never deleted.  Their parent rows
  (sources, cutouts, measurements) keep their foreign keys and cascades.
* ``sources``, ``raw_photometry``, ``lightcurves`` and ``detections`` rows are the light-curve
  classes themselves (:mod:`vo.lightcurves.sources`, ``datasets``, ``detections``, mapped
  imperatively in :mod:`vo.db.models.lightcurves`; :mod:`vo.db.datasets` ties row and file):
  one class whether read from a file or a table.
* Every change to the models needs a migration (:mod:`vo.db.migrate`: ``vo db revision``).
"""

from __future__ import annotations

import sqlalchemy as sa

from vo.db.models.base import (HEALPIX_LEVEL, HEALPIX_NSIDE, Base, BadnessMixin, FileMixin,  # noqa: F401
                               JSONType, SkyPositionMixin, TimestampMixin, healpix_index)
from vo.db.models.images import (PSF, CatalogExcerpt, Cutouts, Exposure, Image, Measurement,  # noqa: F401
                                 ObjectCounter, Reference, Score, SkyObject, SourceList, Subtraction,
                                 WorldCoordinates, ZeroPoint)
from vo.db.models.lightcurves import (Detection, DetectionInTime, Lightcurve, Provenance, RawPhotometry,  # noqa: F401
                                      Source)

NATURAL_KEYS: dict[str, tuple[str, ...]] = {
    Provenance.__tablename__: ("step", "obs", "hash"),
    Source.__tablename__: ("name", "project"),
    RawPhotometry.__tablename__: ("source_id", "obs"),
    Lightcurve.__tablename__: ("provenance_id", "filename", "filekey"),
    Detection.__tablename__: ("provenance_id", "source_id", "obs", "filter", "simulated", "time_peak"),
    Exposure.__tablename__: ("instrument", "name"),
    Image.__tablename__: ("exposure_id", "ccd", "provenance_id"),
    SourceList.__tablename__: ("image_id", "provenance_id"),
    PSF.__tablename__: ("source_list_id", "provenance_id"),
    WorldCoordinates.__tablename__: ("source_list_id", "provenance_id"),
    ZeroPoint.__tablename__: ("source_list_id", "provenance_id"),
    CatalogExcerpt.__tablename__: ("catalog", "nside", "tile"),
    Reference.__tablename__: ("provenance_id", "instrument", "field", "filter", "ccd"),
    Subtraction.__tablename__: ("image_id", "reference_id", "provenance_id"),
    Cutouts.__tablename__: ("subtraction_id", "provenance_id"),
    SkyObject.__tablename__: ("name",),
    ObjectCounter.__tablename__: ("year",),
    Measurement.__tablename__: ("cutouts_id", "provenance_id", "row_index"),
    Score.__tablename__: ("measurement_id", "provenance_id"),
}

#: Tables of the light-curve pipeline and of the image pipeline (up to zero points).
LIGHTCURVE_TABLES = ("provenances", "sources", "raw_photometry", "lightcurves", "detections")
IMAGE_TABLES = ("exposures", "images", "source_lists", "psfs", "world_coordinates", "zero_points",
                "catalog_excerpts")
#: Tables of the transient (difference-imaging) part of the image pipeline.
TRANSIENT_TABLES = ("references", "subtractions", "cutouts", "measurements", "scores", "objects",
                    "object_counters")


def spatial_tables() -> list[sa.Table]:
    """Tables with sky positions (ra, dec, healpix): they get a q3c index on PostgreSQL."""
    return [t for t in Base.metadata.sorted_tables if {"ra", "dec", "healpix"} <= set(t.c.keys())]


# every mapper configured now: light curves made fast (without __init__, see
# vo.lightcurves.datasets._blank) need their attributes set up before the first one is built
sa.orm.configure_mappers()
