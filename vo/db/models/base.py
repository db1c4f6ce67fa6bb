"""The declarative base, HEALPix index and the mixins every table is made of."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa
from astropy_healpix import HEALPix
from sqlalchemy import event
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

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
def update_healpix(_mapper, _conn, target) -> None:
    """Keep ``healpix`` in step with a changed ra/dec."""
    target.healpix = int(healpix_index(target.ra, target.dec))


def sky_position_columns() -> list[sa.Column]:
    """The columns of :class:`SkyPositionMixin` for an imperatively mapped table (listen to
    ``before_update`` with :func:`update_healpix` too)."""
    return [sa.Column("ra", sa.Float(53), nullable=False, doc="Right ascension (deg)"),
            sa.Column("dec", sa.Float(53), nullable=False, doc="Declination (deg)"),
            sa.Column("healpix", sa.BigInteger, nullable=False, index=True, default=_healpix_default,
                      doc=f"Nested HEALPix index, nside {HEALPIX_NSIDE}")]


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


class BadnessMixin:
    """Quality flag of a product.  Badness propagates downstream at ingest: a product whose
    upstream row is bad is bad too, with a reason naming the upstream failure
    (:func:`vo.ingest.images.propagate_badness`)."""

    bad: Mapped[bool] = mapped_column(sa.Boolean, default=False, index=True)
    bad_reason: Mapped[str | None] = mapped_column(sa.Text, doc="Why the product is bad")


def _nonneg(table: str, *columns: str) -> tuple[sa.CheckConstraint, ...]:
    return tuple(sa.CheckConstraint(f"{c} IS NULL OR {c} >= 0", name=f"ck_{table}_{c}_nonneg")
                 for c in columns)
