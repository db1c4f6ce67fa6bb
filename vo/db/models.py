"""SQLAlchemy 2.0 models: the database indexes the files, it is never the only copy.

Tables are keyed by natural keys (unique constraints) so that ingest can upsert with
``INSERT ... ON CONFLICT`` and several ingest jobs can run at once.  To add a table: subclass
:class:`Base` (plus :class:`SkyPositionMixin` for RA/Dec with cone search, :class:`FileMixin`
for file-backed rows), declare its natural key as a ``UniqueConstraint`` and list it in
:data:`NATURAL_KEYS`; :func:`vo.db.engine.init_db` creates it (and its q3c index).

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
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa
from astropy_healpix import HEALPix
from sqlalchemy import event
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.associationproxy import AssociationProxy, association_proxy
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

#: HEALPix order (level) of the ``healpix`` columns: nside = 2**12 = 4096, nested
#: ordering, pixels of about 0.86 arcmin.
HEALPIX_LEVEL = 12
HEALPIX_NSIDE = 2 ** HEALPIX_LEVEL
_HP = HEALPix(nside=HEALPIX_NSIDE, order="nested")

JSONType = sa.JSON().with_variant(JSONB(), "postgresql")


def healpix_index(ra, dec) -> np.ndarray:
    """Nested HEALPix index (nside :data:`HEALPIX_NSIDE`) of positions in degrees."""
    import astropy.units as u
    ra = np.asarray(ra, dtype=float)
    dec = np.asarray(dec, dtype=float)
    return np.asarray(_HP.lonlat_to_healpix(ra * u.deg, dec * u.deg), dtype=np.int64)


class Base(DeclarativeBase):
    """Declarative base of every table."""

    type_annotation_map = {dict[str, Any]: JSONType, list[Any]: JSONType}


def _healpix_default(context) -> int:
    params = context.get_current_parameters()
    return int(healpix_index(params["ra"], params["dec"]))


class SkyPositionMixin:
    """RA/Dec (deg, ICRS) with a HEALPix index column for cone search (and q3c on PostgreSQL).

    ``healpix`` is filled from ra/dec when a row is inserted without it; bulk ingest
    computes it vectorised (:func:`healpix_index`).
    """

    ra: Mapped[float] = mapped_column(sa.Float(53), doc="Right ascension (deg)")
    dec: Mapped[float] = mapped_column(sa.Float(53), doc="Declination (deg)")
    healpix: Mapped[int] = mapped_column(sa.BigInteger, index=True, default=_healpix_default,
                                         doc=f"Nested HEALPix index, nside {HEALPIX_NSIDE}")


@event.listens_for(SkyPositionMixin, "before_update", propagate=True)
def _update_healpix(_mapper, _conn, target) -> None:
    target.healpix = int(healpix_index(target.ra, target.dec))


class FileMixin:
    """A row backed by a file: path relative to the data root, in-file key, checksum."""

    filename: Mapped[str] = mapped_column(sa.String, doc="File path relative to the data root")
    filekey: Mapped[str] = mapped_column(sa.String, doc="Key inside the file (HDF5 group)")
    checksum: Mapped[str] = mapped_column(sa.String(64), doc="sha256 of the file at ingest")

    def get_fullname(self, data_root) -> str:
        """Absolute path of the file under ``data_root``."""
        return str(Path(data_root) / self.filename)


class TimestampMixin:
    created_at: Mapped[dt.datetime] = mapped_column(
        sa.DateTime(timezone=True), server_default=sa.func.now())


class Provenance(TimestampMixin, Base):
    """What made a product: step, code version, critical parameters, upstream hashes."""

    __tablename__ = "provenances"
    __table_args__ = (sa.UniqueConstraint("step", "obs", "hash", name="uq_provenances_step_obs_hash"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    step: Mapped[str] = mapped_column(sa.String(64), index=True)
    obs: Mapped[str] = mapped_column(sa.String(32), default="", doc='Observatory; "" if none')
    hash: Mapped[str] = mapped_column(sa.String(64), index=True)
    code_version: Mapped[str] = mapped_column(sa.String(32))
    parameters: Mapped[dict[str, Any]] = mapped_column(default=dict)
    upstreams: Mapped[dict[str, Any]] = mapped_column(default=dict)
    git_commit: Mapped[str | None] = mapped_column(sa.String(64))

    def __repr__(self) -> str:
        return f"Provenance({self.step}.{self.obs or '-'}, {self.hash})"


class Source(SkyPositionMixin, TimestampMixin, Base):
    """A target: one row of one project's catalog."""

    __tablename__ = "sources"
    __table_args__ = (sa.UniqueConstraint("name", "project", name="uq_sources_name_project"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String, index=True)
    project: Mapped[str] = mapped_column(sa.String(64), index=True)
    mag: Mapped[float | None] = mapped_column(sa.Float(53), doc="Catalog magnitude")
    cat_row: Mapped[dict[str, Any]] = mapped_column(default=dict, doc="The full catalog row")

    raw_data: Mapped[list[RawPhotometry]] = relationship(back_populates="source")
    lightcurves: Mapped[list[Lightcurve]] = relationship(back_populates="source")
    detections: Mapped[list[Detection]] = relationship(back_populates="source")

    def __repr__(self) -> str:
        return f"Source({self.name!r}, {self.project}, ra={self.ra:.5f}, dec={self.dec:.5f})"


class RawPhotometry(FileMixin, TimestampMixin, Base):
    """Raw photometry of one source from one observatory (a group of the shared raw store)."""

    __tablename__ = "raw_photometry"
    __table_args__ = (sa.UniqueConstraint("source_id", "obs", name="uq_raw_photometry_source_obs"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    source_id: Mapped[int] = mapped_column(sa.ForeignKey("sources.id", ondelete="CASCADE"), index=True)
    obs: Mapped[str] = mapped_column(sa.String(32))
    n_rows: Mapped[int] = mapped_column(sa.Integer, doc="Rows (epochs) in the raw table")
    download_params_hash: Mapped[str | None] = mapped_column(sa.String(64))

    source: Mapped[Source] = relationship(back_populates="raw_data")
    source_name: AssociationProxy[str] = association_proxy("source", "name")


class Lightcurve(FileMixin, TimestampMixin, Base):
    """A reduced light curve: one source, one observatory, one filter, one season."""

    __tablename__ = "lightcurves"
    __table_args__ = (sa.UniqueConstraint("provenance_id", "filename", "filekey",
                                          name="uq_lightcurves_prov_file_key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    source_id: Mapped[int] = mapped_column(sa.ForeignKey("sources.id", ondelete="CASCADE"), index=True)
    provenance_id: Mapped[int] = mapped_column(sa.ForeignKey("provenances.id"), index=True)
    obs: Mapped[str] = mapped_column(sa.String(32))
    filter: Mapped[str] = mapped_column(sa.String(32))
    season: Mapped[int | None]
    reduction_number: Mapped[int]
    reduction_total: Mapped[int]
    n_epochs: Mapped[int]
    flux_mean: Mapped[float | None] = mapped_column(sa.Float(53), doc="Clipped mean flux (uJy)")
    flux_rms: Mapped[float | None] = mapped_column(sa.Float(53), doc="Clipped flux rms (uJy)")
    mag_mean: Mapped[float | None] = mapped_column(sa.Float(53), doc="Magnitude of flux_mean (AB)")
    mjd_start: Mapped[float | None] = mapped_column(sa.Float(53), doc="First epoch (MJD)")
    mjd_end: Mapped[float | None] = mapped_column(sa.Float(53), doc="Last epoch (MJD)")

    source: Mapped[Source] = relationship(back_populates="lightcurves")
    provenance: Mapped[Provenance] = relationship()
    source_name: AssociationProxy[str] = association_proxy("source", "name")


class Detection(TimestampMixin, Base):
    """An event found in a light curve (``simulated`` for injected events)."""

    __tablename__ = "detections"
    __table_args__ = (sa.UniqueConstraint("provenance_id", "source_id", "obs", "filter", "simulated",
                                          "time_peak", name="uq_detections_natural"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    source_id: Mapped[int] = mapped_column(sa.ForeignKey("sources.id", ondelete="CASCADE"), index=True)
    lightcurve_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("lightcurves.id", ondelete="SET NULL"), index=True)
    provenance_id: Mapped[int] = mapped_column(sa.ForeignKey("provenances.id"), index=True)
    obs: Mapped[str] = mapped_column(sa.String(32))
    filter: Mapped[str] = mapped_column(sa.String(32), default="", doc='"" when all filters')
    time_start: Mapped[float | None] = mapped_column(sa.Float(53), doc="MJD")
    time_peak: Mapped[float] = mapped_column(sa.Float(53), doc="MJD")
    time_end: Mapped[float | None] = mapped_column(sa.Float(53), doc="MJD")
    peak_snr: Mapped[float | None] = mapped_column(sa.Float(53))
    peak_mag: Mapped[float | None] = mapped_column(sa.Float(53), doc="AB mag")
    dmag: Mapped[float | None] = mapped_column(sa.Float(53), doc="Peak minus mean (mag)")
    n_epochs: Mapped[int | None]
    simulated: Mapped[bool] = mapped_column(sa.Boolean, default=False, index=True)
    sim_type: Mapped[str | None] = mapped_column(sa.String(64))
    sim_params: Mapped[dict[str, Any] | None] = mapped_column(JSONType)

    source: Mapped[Source] = relationship(back_populates="detections")
    lightcurve: Mapped[Lightcurve | None] = relationship()
    provenance: Mapped[Provenance] = relationship()
    source_name: AssociationProxy[str] = association_proxy("source", "name")


#: Natural key of each table: the columns of its unique constraint, used by the upserts.
NATURAL_KEYS: dict[str, tuple[str, ...]] = {
    Provenance.__tablename__: ("step", "obs", "hash"),
    Source.__tablename__: ("name", "project"),
    RawPhotometry.__tablename__: ("source_id", "obs"),
    Lightcurve.__tablename__: ("provenance_id", "filename", "filekey"),
    Detection.__tablename__: ("provenance_id", "source_id", "obs", "filter", "simulated", "time_peak"),
}


def spatial_tables() -> list[sa.Table]:
    """Tables with sky positions (ra, dec, healpix): they get a q3c index on PostgreSQL."""
    return [m.local_table for m in Base.registry.mappers if issubclass(m.class_, SkyPositionMixin)]
