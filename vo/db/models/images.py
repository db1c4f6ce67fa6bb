"""Tables of the image half: exposures, images and their calibration products, catalog excerpts,
references, subtractions, cutouts, measurements, scores and sky objects."""

from __future__ import annotations

import numpy as np
import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from vo.db.models.base import (_BULK_PROVENANCE, Base, BadnessMixin, FileMixin, SkyPositionMixin, TimestampMixin,
                               _nonneg)
from vo.db.models.lightcurves import Provenance


# -- image pipeline ---------------------------------------------------------------------------
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
    """A deep reference coadd (``{exposure}/{ccd}.ref.image.fits``): the reference images that
    overlap one new image, coadded over its footprint.

    ``field`` is the new exposure it was made for (with ``ccd``: the new image), so the pipeline
    finds the reference of a new image by ``(instrument, field, filter, ccd)`` and the references
    step's provenance; ``ra``/``dec`` are the centre of its grid (no
    cone-search index: ``references`` is an SQL keyword, which the raw q3c index DDL of
    :func:`vo.db.migrate.init_db` does not quote).
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

    ``name`` (``VO{yy}{aaaa}``, :mod:`vo.sky`) is unique; the position is fixed
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
