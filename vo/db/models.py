"""SQLAlchemy 2.0 models: the database indexes the files, it is never the only copy.

Tables are keyed by natural keys (unique constraints) so that ingest can upsert with
``INSERT ... ON CONFLICT`` and several ingest jobs can run at once.  To add a table: subclass
:class:`Base` (plus :class:`SkyPositionMixin` for RA/Dec with cone search, :class:`FileMixin`
for file-backed rows), declare its natural key as a ``UniqueConstraint`` and list it in
:data:`NATURAL_KEYS`; :func:`vo.db.engine.init_db` creates it (and its q3c index) in a
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
* Every change to the models needs a migration (:mod:`vo.db.migrate`: ``vo db revision``).
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


#: Doc of ``provenance_id`` in the bulk tables, which have no foreign key to ``provenances``.
_BULK_PROVENANCE = "provenances.id (no foreign key: ingest checks it once per batch)"


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
    step: Mapped[str] = mapped_column(sa.String(64))
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
    name: Mapped[str] = mapped_column(sa.String)
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
    source_id: Mapped[int] = mapped_column(sa.ForeignKey("sources.id", ondelete="CASCADE"))
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
    provenance_id: Mapped[int] = mapped_column(sa.Integer, doc=_BULK_PROVENANCE)
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
    provenance: Mapped[Provenance] = relationship(primaryjoin="foreign(Lightcurve.provenance_id) == Provenance.id")
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
    provenance_id: Mapped[int] = mapped_column(sa.ForeignKey("provenances.id"))
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


# -- image pipeline ---------------------------------------------------------------------------
class BadnessMixin:
    """Quality flag of a product.  Badness propagates downstream at ingest: a product whose
    upstream row is bad is bad too, with a reason naming the upstream failure
    (:func:`vo.db.ingest_images.propagate_badness`)."""

    bad: Mapped[bool] = mapped_column(sa.Boolean, default=False, index=True)
    bad_reason: Mapped[str | None] = mapped_column(sa.Text, doc="Why the product is bad")


def _nonneg(table: str, *columns: str) -> tuple[sa.CheckConstraint, ...]:
    return tuple(sa.CheckConstraint(f"{c} IS NULL OR {c} >= 0", name=f"ck_{table}_{c}_nonneg")
                 for c in columns)


class Exposure(TimestampMixin, Base):
    """A raw exposure of a camera (all its CCDs): shared raw data, no provenance.

    ``ra``/``dec`` are the telescope pointing (may be unknown); the sky positions of the
    data are those of the :class:`Image` rows.
    """

    __tablename__ = "exposures"
    __table_args__ = (sa.UniqueConstraint("instrument", "name", name="uq_exposures_instrument_name"),
                      *_nonneg("exposures", "exptime", "airmass"))

    id: Mapped[int] = mapped_column(primary_key=True)
    instrument: Mapped[str] = mapped_column(sa.String(32))
    name: Mapped[str] = mapped_column(sa.String(128), index=True, doc="Exposure name")
    filter: Mapped[str] = mapped_column(sa.String(32), index=True)
    mjd: Mapped[float] = mapped_column(sa.Float(53), index=True, doc="Start of the exposure (MJD)")
    exptime: Mapped[float] = mapped_column(sa.Float(53), doc="Exposure time (s)")
    ra: Mapped[float | None] = mapped_column(sa.Float(53), doc="Pointing right ascension (deg)")
    dec: Mapped[float | None] = mapped_column(sa.Float(53), doc="Pointing declination (deg)")
    airmass: Mapped[float | None] = mapped_column(sa.Float(53))
    filename: Mapped[str] = mapped_column(sa.String, doc="Raw file path relative to the data root")
    checksum: Mapped[str] = mapped_column(sa.String(64), doc="sha256 of the raw file at ingest")

    images: Mapped[list[Image]] = relationship(back_populates="exposure")

    def __repr__(self) -> str:
        return f"Exposure({self.instrument}, {self.name!r}, {self.filter}, mjd={self.mjd:.5f})"


class Image(FileMixin, SkyPositionMixin, BadnessMixin, TimestampMixin, Base):
    """A preprocessed CCD image (file ``{exposure}/{ccd}.image.fits``).

    ``ra``/``dec`` are the sky position of the CCD centre and ``ra_corner_k``/``dec_corner_k``
    (k = 1..4, pixel order (0, 0), (nx, 0), (nx, ny), (0, ny)) those of its outer pixel
    corners, from the fitted WCS when astrometry succeeded, else from the header WCS.
    """

    __tablename__ = "images"
    __table_args__ = (sa.UniqueConstraint("exposure_id", "ccd", "provenance_id",
                                          name="uq_images_exposure_ccd_prov"),
                      sa.Index("ix_images_filename", "filename"),
                      *_nonneg("images", "fwhm_arcsec", "sky_rms", "nx", "ny"))

    id: Mapped[int] = mapped_column(primary_key=True)
    exposure_id: Mapped[int] = mapped_column(sa.ForeignKey("exposures.id", ondelete="CASCADE"))
    ccd: Mapped[str] = mapped_column(sa.String(32))
    provenance_id: Mapped[int] = mapped_column(sa.ForeignKey("provenances.id"), index=True)
    nx: Mapped[int] = mapped_column(sa.Integer, doc="Width (pixels)")
    ny: Mapped[int] = mapped_column(sa.Integer, doc="Height (pixels)")
    pixel_scale: Mapped[float | None] = mapped_column(sa.Float(53), doc="arcsec/pixel (from the WCS)")
    ra_corner_1: Mapped[float] = mapped_column(sa.Float(53), doc="deg")
    dec_corner_1: Mapped[float] = mapped_column(sa.Float(53), doc="deg")
    ra_corner_2: Mapped[float] = mapped_column(sa.Float(53), doc="deg")
    dec_corner_2: Mapped[float] = mapped_column(sa.Float(53), doc="deg")
    ra_corner_3: Mapped[float] = mapped_column(sa.Float(53), doc="deg")
    dec_corner_3: Mapped[float] = mapped_column(sa.Float(53), doc="deg")
    ra_corner_4: Mapped[float] = mapped_column(sa.Float(53), doc="deg")
    dec_corner_4: Mapped[float] = mapped_column(sa.Float(53), doc="deg")
    wcs_solved: Mapped[bool] = mapped_column(sa.Boolean, default=False,
                                             doc="Positions from the fitted WCS (else the header's)")
    fwhm_arcsec: Mapped[float | None] = mapped_column(sa.Float(53), doc="Seeing FWHM (arcsec)")
    sky_level: Mapped[float | None] = mapped_column(sa.Float(53), doc="Median background (e-/pixel)")
    sky_rms: Mapped[float | None] = mapped_column(sa.Float(53), doc="Median background RMS (e-/pixel)")
    saturation: Mapped[float | None] = mapped_column(sa.Float(53), doc="Saturation level (e-)")
    read_noise: Mapped[float | None] = mapped_column(sa.Float(53), doc="Read noise (e-)")

    exposure: Mapped[Exposure] = relationship(back_populates="images")
    provenance: Mapped[Provenance] = relationship()
    source_lists: Mapped[list[SourceList]] = relationship(back_populates="image")

    @property
    def corners(self) -> np.ndarray:
        """Footprint corners as a (4, 2) array of (ra, dec) in degrees."""
        return np.array([[getattr(self, f"ra_corner_{k}"), getattr(self, f"dec_corner_{k}")]
                         for k in range(1, 5)])

    def __repr__(self) -> str:
        return f"Image({self.exposure_id}, {self.ccd}, ra={self.ra:.5f}, dec={self.dec:.5f})"


class SourceList(FileMixin, BadnessMixin, TimestampMixin, Base):
    """Sources extracted from an image (``{ccd}.sources.fits``) with its background file."""

    __tablename__ = "source_lists"
    __table_args__ = (sa.UniqueConstraint("image_id", "provenance_id", name="uq_source_lists_image_prov"),
                      *_nonneg("source_lists", "n_sources", "fwhm"))

    id: Mapped[int] = mapped_column(primary_key=True)
    image_id: Mapped[int] = mapped_column(sa.ForeignKey("images.id", ondelete="CASCADE"))
    provenance_id: Mapped[int] = mapped_column(sa.ForeignKey("provenances.id"), index=True)
    n_sources: Mapped[int] = mapped_column(sa.Integer)
    fwhm: Mapped[float | None] = mapped_column(sa.Float(53), doc="Median FWHM (pixels)")
    aper_radius: Mapped[float | None] = mapped_column(sa.Float(53), doc="Aperture radius (pixels)")
    background_filename: Mapped[str | None] = mapped_column(
        sa.String, doc="Background file path relative to the data root")
    background_checksum: Mapped[str | None] = mapped_column(sa.String(64))

    image: Mapped[Image] = relationship(back_populates="source_lists")
    provenance: Mapped[Provenance] = relationship()
    psfs: Mapped[list[PSF]] = relationship(back_populates="source_list")
    world_coordinates: Mapped[list[WorldCoordinates]] = relationship(back_populates="source_list")
    zero_points: Mapped[list[ZeroPoint]] = relationship(back_populates="source_list")


class PSF(FileMixin, BadnessMixin, TimestampMixin, Base):
    """The PSF model of an image (``{ccd}.psf.fits``), made with its source list."""

    __tablename__ = "psfs"
    __table_args__ = (sa.UniqueConstraint("source_list_id", "provenance_id", name="uq_psfs_sl_prov"),
                      *_nonneg("psfs", "fwhm", "n_stars"))

    id: Mapped[int] = mapped_column(primary_key=True)
    source_list_id: Mapped[int] = mapped_column(sa.ForeignKey("source_lists.id", ondelete="CASCADE"))
    provenance_id: Mapped[int] = mapped_column(sa.ForeignKey("provenances.id"), index=True)
    fwhm: Mapped[float | None] = mapped_column(sa.Float(53), doc="FWHM of the model (pixels)")
    n_stars: Mapped[int | None] = mapped_column(sa.Integer, doc="Stars used to build the model")

    source_list: Mapped[SourceList] = relationship(back_populates="psfs")
    provenance: Mapped[Provenance] = relationship()


class WorldCoordinates(FileMixin, BadnessMixin, TimestampMixin, Base):
    """The WCS fitted to a source list (``{ccd}.wcs.fits``); ``bad`` when the fit failed."""

    __tablename__ = "world_coordinates"
    __table_args__ = (sa.UniqueConstraint("source_list_id", "provenance_id", name="uq_world_coordinates_sl_prov"),
                      *_nonneg("world_coordinates", "rms_arcsec", "n_stars"))

    id: Mapped[int] = mapped_column(primary_key=True)
    source_list_id: Mapped[int] = mapped_column(sa.ForeignKey("source_lists.id", ondelete="CASCADE"))
    provenance_id: Mapped[int] = mapped_column(sa.ForeignKey("provenances.id"), index=True)
    rms_arcsec: Mapped[float | None] = mapped_column(sa.Float(53), doc="RMS of matched stars (arcsec)")
    n_stars: Mapped[int | None] = mapped_column(sa.Integer, doc="Matched reference stars")

    source_list: Mapped[SourceList] = relationship(back_populates="world_coordinates")
    provenance: Mapped[Provenance] = relationship()


class ZeroPoint(FileMixin, BadnessMixin, TimestampMixin, Base):
    """Photometric zero point of a source list (``{ccd}.zp.fits``): m = -2.5 log10(flux_e) + zp."""

    __tablename__ = "zero_points"
    __table_args__ = (sa.UniqueConstraint("source_list_id", "provenance_id", name="uq_zero_points_sl_prov"),
                      sa.Index("ix_zero_points_filename", "filename"),
                      *_nonneg("zero_points", "zp_err", "n_stars"))

    id: Mapped[int] = mapped_column(primary_key=True)
    source_list_id: Mapped[int] = mapped_column(sa.ForeignKey("source_lists.id", ondelete="CASCADE"))
    world_coordinates_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("world_coordinates.id", ondelete="SET NULL"), index=True)
    provenance_id: Mapped[int] = mapped_column(sa.ForeignKey("provenances.id"), index=True)
    zp: Mapped[float | None] = mapped_column(sa.Float(53), doc="Zero point (AB mag, counts in e-)")
    zp_err: Mapped[float | None] = mapped_column(sa.Float(53), doc="mag")
    apcor: Mapped[float | None] = mapped_column(sa.Float(53), doc="Aperture correction (mag)")
    limmag5: Mapped[float | None] = mapped_column(sa.Float(53), doc="5-sigma limiting magnitude (AB)")
    n_stars: Mapped[int | None] = mapped_column(sa.Integer, doc="Stars in the fit")

    source_list: Mapped[SourceList] = relationship(back_populates="zero_points")
    world_coordinates: Mapped[WorldCoordinates | None] = relationship()
    provenance: Mapped[Provenance] = relationship()


class CatalogExcerpt(FileMixin, SkyPositionMixin, TimestampMixin, Base):
    """A cached tile of a reference catalog: HEALPix pixel ``tile`` at ``nside`` (shared by
    all projects, no provenance); ``ra``/``dec`` are the tile centre."""

    __tablename__ = "catalog_excerpts"
    __table_args__ = (sa.UniqueConstraint("catalog", "nside", "tile", name="uq_catalog_excerpts_tile"),
                      *_nonneg("catalog_excerpts", "n_stars"))

    id: Mapped[int] = mapped_column(primary_key=True)
    catalog: Mapped[str] = mapped_column(sa.String(32))
    nside: Mapped[int] = mapped_column(sa.Integer)
    ordering: Mapped[str] = mapped_column(sa.String(8), default="nested", doc="HEALPix ordering")
    tile: Mapped[int] = mapped_column(sa.BigInteger, doc="HEALPix index of the tile")
    n_stars: Mapped[int] = mapped_column(sa.Integer)


# -- image pipeline II: references, subtractions, detections, objects -------------------------
class Reference(FileMixin, BadnessMixin, TimestampMixin, Base):
    """A deep reference coadd of one field, filter and CCD (``{ccd}.ref.fits``).

    The pipeline finds the reference of a new image by ``(instrument, field, filter, ccd)``
    and the references step's provenance; ``ra``/``dec`` are the centre of its grid (no
    cone-search index: ``references`` is an SQL keyword, which the raw q3c index DDL of
    :func:`vo.db.engine.init_db` does not quote).
    """

    __tablename__ = "references"
    __table_args__ = (sa.UniqueConstraint("provenance_id", "instrument", "field", "filter", "ccd",
                                          name="uq_references_natural"),
                      sa.Index("ix_references_filename", "filename"),
                      *_nonneg("references", "n_images", "fwhm", "nx", "ny"))

    id: Mapped[int] = mapped_column(primary_key=True)
    provenance_id: Mapped[int] = mapped_column(sa.ForeignKey("provenances.id"))
    instrument: Mapped[str] = mapped_column(sa.String(32), index=True)
    field: Mapped[str] = mapped_column(sa.String(64), index=True, doc="Survey field name")
    filter: Mapped[str] = mapped_column(sa.String(32), index=True)
    ccd: Mapped[str] = mapped_column(sa.String(32))
    n_images: Mapped[int] = mapped_column(sa.Integer, doc="Images in the coadd")
    zp: Mapped[float | None] = mapped_column(sa.Float(53), doc="Zero point (AB mag, counts in e-)")
    fwhm: Mapped[float | None] = mapped_column(sa.Float(53), doc="PSF FWHM of the coadd (pixels)")
    limmag5: Mapped[float | None] = mapped_column(sa.Float(53), doc="5-sigma limiting magnitude (AB)")
    mjd_start: Mapped[float | None] = mapped_column(sa.Float(53), doc="First input image (MJD)")
    mjd_end: Mapped[float | None] = mapped_column(sa.Float(53), doc="Last input image (MJD)")
    nx: Mapped[int | None] = mapped_column(sa.Integer, doc="Width (pixels)")
    ny: Mapped[int | None] = mapped_column(sa.Integer, doc="Height (pixels)")
    ra: Mapped[float | None] = mapped_column(sa.Float(53), doc="Grid centre right ascension (deg)")
    dec: Mapped[float | None] = mapped_column(sa.Float(53), doc="Grid centre declination (deg)")

    provenance: Mapped[Provenance] = relationship()


class Subtraction(FileMixin, BadnessMixin, TimestampMixin, Base):
    """A difference image of a new image and its reference (``{ccd}.sub.fits``)."""

    __tablename__ = "subtractions"
    __table_args__ = (sa.UniqueConstraint("image_id", "reference_id", "provenance_id",
                                          name="uq_subtractions_natural"),
                      sa.Index("ix_subtractions_filename", "filename"),
                      *_nonneg("subtractions", "fwhm", "noise_rms", "n_candidates"))

    id: Mapped[int] = mapped_column(primary_key=True)
    image_id: Mapped[int] = mapped_column(sa.ForeignKey("images.id", ondelete="CASCADE"))
    reference_id: Mapped[int] = mapped_column(sa.ForeignKey("references.id", ondelete="CASCADE"),
                                              index=True)
    zero_point_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("zero_points.id", ondelete="SET NULL"), index=True)
    provenance_id: Mapped[int] = mapped_column(sa.ForeignKey("provenances.id"), index=True)
    method: Mapped[str] = mapped_column(sa.String(32), doc='"zogy" or "alard_lupton"')
    fwhm: Mapped[float | None] = mapped_column(sa.Float(53), doc="FWHM of the difference PSF (pixels)")
    noise_rms: Mapped[float | None] = mapped_column(sa.Float(53), doc="Median difference noise (e-)")
    limmag5: Mapped[float | None] = mapped_column(sa.Float(53), doc="5-sigma limit of the difference (AB)")
    n_candidates: Mapped[int | None] = mapped_column(sa.Integer, doc="Candidates detected on it")

    image: Mapped[Image] = relationship()
    reference: Mapped[Reference] = relationship()
    zero_point: Mapped[ZeroPoint | None] = relationship()
    provenance: Mapped[Provenance] = relationship()


class Cutouts(FileMixin, BadnessMixin, TimestampMixin, Base):
    """The new/ref/sub stamps of the candidates of one subtraction (``{ccd}.cutouts.h5``)."""

    __tablename__ = "cutouts"
    __table_args__ = (sa.UniqueConstraint("subtraction_id", "provenance_id", name="uq_cutouts_sub_prov"),
                      sa.Index("ix_cutouts_filename", "filename"),
                      *_nonneg("cutouts", "n_cutouts", "size"))

    id: Mapped[int] = mapped_column(primary_key=True)
    subtraction_id: Mapped[int] = mapped_column(sa.ForeignKey("subtractions.id", ondelete="CASCADE"))
    provenance_id: Mapped[int] = mapped_column(sa.ForeignKey("provenances.id"), index=True)
    n_cutouts: Mapped[int] = mapped_column(sa.Integer)
    size: Mapped[int] = mapped_column(sa.Integer, doc="Stamp side (pixels)")

    subtraction: Mapped[Subtraction] = relationship()
    provenance: Mapped[Provenance] = relationship()
    measurements: Mapped[list[Measurement]] = relationship(back_populates="cutouts")


class SkyObject(SkyPositionMixin, TimestampMixin, Base):
    """A sky object: measurements within the association radius of it belong to it.

    ``name`` (``VO{yy}{aaaa}``, :mod:`vo.images.associate`) is unique; the position is fixed
    at creation (mean of the creating measurements).  Created only by
    :func:`vo.db.objects.associate_objects`, which is race-free.
    """

    __tablename__ = "objects"
    __table_args__ = (sa.UniqueConstraint("name", name="uq_objects_name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(32), doc="VO{yy}{aaaa}")
    provenance_id: Mapped[int] = mapped_column(sa.ForeignKey("provenances.id"), index=True)
    mjd_first: Mapped[float] = mapped_column(sa.Float(53), doc="First detection (MJD)")

    provenance: Mapped[Provenance] = relationship()
    measurements: Mapped[list[Measurement]] = relationship(back_populates="object")

    def __repr__(self) -> str:
        return f"SkyObject({self.name!r}, ra={self.ra:.6f}, dec={self.dec:.6f})"


class ObjectCounter(Base):
    """Next name counter of each year (one row per year, incremented under a row lock)."""

    __tablename__ = "object_counters"
    __table_args__ = (sa.UniqueConstraint("year", name="uq_object_counters_year"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    year: Mapped[int] = mapped_column(sa.Integer)
    next_counter: Mapped[int] = mapped_column(sa.BigInteger, default=0)


class Measurement(FileMixin, SkyPositionMixin, BadnessMixin, TimestampMixin, Base):
    """One measured candidate: row ``row_index`` of the measurements file (``filekey`` is the
    row index as text); ``bad`` is the analytic cuts' verdict, ``object_id`` its object."""

    __tablename__ = "measurements"
    __table_args__ = (sa.UniqueConstraint("cutouts_id", "provenance_id", "row_index",
                                          name="uq_measurements_natural"),
                      *_nonneg("measurements", "flux_err", "mag_err"))

    id: Mapped[int] = mapped_column(primary_key=True)
    cutouts_id: Mapped[int] = mapped_column(sa.ForeignKey("cutouts.id", ondelete="CASCADE"))
    provenance_id: Mapped[int] = mapped_column(sa.Integer, index=True, doc=_BULK_PROVENANCE)
    row_index: Mapped[int] = mapped_column(sa.Integer, doc="Row of the measurement in its file")
    object_id: Mapped[int | None] = mapped_column(sa.ForeignKey("objects.id", ondelete="SET NULL"),
                                                  index=True)
    mjd: Mapped[float] = mapped_column(sa.Float(53), index=True, doc="Exposure start (MJD)")
    filter: Mapped[str] = mapped_column(sa.String(32))
    x: Mapped[float | None] = mapped_column(sa.Float(53), doc="Column (0-based pix)")
    y: Mapped[float | None] = mapped_column(sa.Float(53), doc="Row (0-based pix)")
    flux: Mapped[float | None] = mapped_column(sa.Float(53), doc="PSF flux on the difference (e-)")
    flux_err: Mapped[float | None] = mapped_column(sa.Float(53), doc="e-")
    mag: Mapped[float | None] = mapped_column(sa.Float(53), doc="AB mag")
    mag_err: Mapped[float | None] = mapped_column(sa.Float(53), doc="mag")
    snr: Mapped[float | None] = mapped_column(sa.Float(53), doc="Signed S/N")
    is_negative: Mapped[bool] = mapped_column(sa.Boolean, default=False)

    cutouts: Mapped[Cutouts] = relationship(back_populates="measurements")
    provenance: Mapped[Provenance] = relationship(primaryjoin="foreign(Measurement.provenance_id) == Provenance.id")
    object: Mapped[SkyObject | None] = relationship(back_populates="measurements")
    scores: Mapped[list[Score]] = relationship(back_populates="measurement")


class Score(FileMixin, TimestampMixin, Base):
    """Real/bogus score of a measurement (row ``filekey`` of the CCD's score table); the
    algorithm is also in the provenance's parameters."""

    __tablename__ = "scores"
    __table_args__ = (sa.UniqueConstraint("measurement_id", "provenance_id", name="uq_scores_meas_prov"),
                      sa.CheckConstraint("score >= 0 AND score <= 1", name="ck_scores_score_range"))

    id: Mapped[int] = mapped_column(primary_key=True)
    measurement_id: Mapped[int] = mapped_column(sa.ForeignKey("measurements.id", ondelete="CASCADE"))
    provenance_id: Mapped[int] = mapped_column(sa.Integer, index=True, doc=_BULK_PROVENANCE)
    algorithm: Mapped[str] = mapped_column(sa.String(64), doc='e.g. "democam_rb", "braai_d6_m7"')
    score: Mapped[float] = mapped_column(sa.Float(53), doc="Probability of a real source, in [0, 1]")

    measurement: Mapped[Measurement] = relationship(back_populates="scores")
    provenance: Mapped[Provenance] = relationship(primaryjoin="foreign(Score.provenance_id) == Provenance.id")


#: Natural key of each table: the columns of its unique constraint, used by the upserts.
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
    return [m.local_table for m in Base.registry.mappers if issubclass(m.class_, SkyPositionMixin)]
