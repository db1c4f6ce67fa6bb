"""Tables of the light-curve half: provenances, sources, raw photometry, light curves, detections."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.associationproxy import AssociationProxy, association_proxy
from sqlalchemy.orm import Mapped, mapped_column, relationship

from vo.db.models.base import _BULK_PROVENANCE, Base, FileMixin, JSONType, SkyPositionMixin, TimestampMixin


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
