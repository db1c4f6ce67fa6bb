"""Tables of the light-curve half: provenances, sources, raw photometry, light curves, detections."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.ext.associationproxy import association_proxy
from sqlalchemy.orm import Mapped, mapped_column, relationship

from vo.db.models.base import _BULK_PROVENANCE, Base, JSONType, TimestampMixin, sky_position_columns, update_healpix
from vo.lightcurves import datasets
from vo.lightcurves import detections as vdetections
from vo.lightcurves import sources as vsources


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


# -- raw photometry and light curves: the datasets themselves, mapped onto their tables ------
# A row read from the database *is* a vo.lightcurves.datasets.RawPhotometry or Lightcurve (one
# class per concept, as virtualobserver users expect): it loads its data, is reduced, plotted,
# saved and deleted like one read from a file. The science classes stay free of the database;
# this module maps them (imperatively) and :mod:`vo.db.datasets` keeps their files and rows in
# step (data root on load, relative paths and checksums on insert).
def _file_columns() -> list[sa.Column]:
    return [sa.Column("filename", sa.String, nullable=False, doc="File path relative to the data root"),
            sa.Column("filekey", sa.String, nullable=False, doc="Key inside the file (HDF5 group)"),
            sa.Column("checksum", sa.String(64), nullable=False, doc="sha256 of the file at ingest"),
            sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False)]


raw_photometry_table = sa.Table(
    "raw_photometry", Base.metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("source_id", sa.Integer, sa.ForeignKey("sources.id", ondelete="CASCADE"), nullable=False),
    sa.Column("obs", sa.String(32), nullable=False),
    sa.Column("n_rows", sa.Integer, nullable=False, doc="Rows (epochs) in the raw table"),
    sa.Column("download_params_hash", sa.String(64)),
    *_file_columns(),
    sa.UniqueConstraint("source_id", "obs", name="uq_raw_photometry_source_obs"))

lightcurves_table = sa.Table(
    "lightcurves", Base.metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("source_id", sa.Integer, sa.ForeignKey("sources.id", ondelete="CASCADE"), nullable=False, index=True),
    sa.Column("provenance_id", sa.Integer, nullable=False, doc=_BULK_PROVENANCE),
    sa.Column("obs", sa.String(32), nullable=False),
    sa.Column("filter", sa.String(32), nullable=False),
    sa.Column("season", sa.Integer),
    sa.Column("reduction_number", sa.Integer, nullable=False),
    sa.Column("reduction_total", sa.Integer, nullable=False),
    sa.Column("n_epochs", sa.Integer, nullable=False),
    sa.Column("flux_mean", sa.Float(53), doc="Clipped mean flux (uJy)"),
    sa.Column("flux_rms", sa.Float(53), doc="Clipped flux rms (uJy)"),
    sa.Column("mag_mean", sa.Float(53), doc="Magnitude of flux_mean (AB)"),
    sa.Column("mjd_start", sa.Float(53), doc="First epoch (MJD)"),
    sa.Column("mjd_end", sa.Float(53), doc="Last epoch (MJD)"),
    *_file_columns(),
    sa.UniqueConstraint("provenance_id", "filename", "filekey", name="uq_lightcurves_prov_file_key"))

sources_table = sa.Table(
    "sources", Base.metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String, nullable=False),
    sa.Column("project", sa.String(64), nullable=False, index=True),
    sa.Column("mag", sa.Float(53), doc="Catalog magnitude"),
    sa.Column("cat_row", JSONType, nullable=False, default=dict, doc="The full catalog row"),
    *sky_position_columns(),
    sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.UniqueConstraint("name", "project", name="uq_sources_name_project"))

Source = vsources.Source
RawPhotometry = datasets.RawPhotometry
Lightcurve = datasets.Lightcurve


def _map(cls, table, **properties) -> None:
    """Map a light-curve class onto ``table`` (``__table__``/``__tablename__`` as declarative
    classes have them, for the bulk writers); a row with a ``source`` gets ``source_name``; a
    dataset's ``filekey`` column is its ``_filekey`` (the dataset derives ``filekey`` from its
    attributes when the row does not set it)."""
    if "_sa_class_manager" in cls.__dict__:  # mapped already (a module reloaded)
        return
    if "filekey" in table.c:
        properties["_filekey"] = table.c.filekey
    Base.registry.map_imperatively(cls, table, properties=properties)
    cls.__table__, cls.__tablename__ = table, table.name
    if "source" in properties:
        cls.source_name = association_proxy("source", "name")


_map(Source, sources_table)
event.listen(Source, "before_update", update_healpix)


detections_table = sa.Table(
    "detections", Base.metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("source_id", sa.Integer, sa.ForeignKey("sources.id", ondelete="CASCADE"), nullable=False, index=True),
    sa.Column("lightcurve_id", sa.Integer, sa.ForeignKey("lightcurves.id", ondelete="SET NULL"), index=True),
    sa.Column("provenance_id", sa.Integer, sa.ForeignKey("provenances.id"), nullable=False),
    sa.Column("obs", sa.String(32), nullable=False),
    sa.Column("filter", sa.String(32), nullable=False, default="", doc='"" when all filters'),
    sa.Column("time_start", sa.Float(53), doc="MJD"),
    sa.Column("time_peak", sa.Float(53), nullable=False, doc="MJD"),
    sa.Column("time_end", sa.Float(53), doc="MJD"),
    sa.Column("peak_snr", sa.Float(53)),
    sa.Column("peak_mag", sa.Float(53), doc="AB mag"),
    sa.Column("dmag", sa.Float(53), doc="Peak minus mean (mag)"),
    sa.Column("n_epochs", sa.Integer),
    sa.Column("simulated", sa.Boolean, nullable=False, default=False, index=True),
    sa.Column("sim_type", sa.String(64)),
    sa.Column("sim_params", JSONType),
    sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.UniqueConstraint("provenance_id", "source_id", "obs", "filter", "simulated", "time_peak",
                        name="uq_detections_natural"))

#: An event found in a light curve (``simulated`` for injected events): virtualobserver's
#: DetectionInTime, the class :mod:`vo.lightcurves.detections` defines.
Detection = DetectionInTime = vdetections.DetectionInTime


_map(RawPhotometry, raw_photometry_table, source=relationship(Source, back_populates="raw_data"))
_map(Lightcurve, lightcurves_table, source=relationship(Source, back_populates="lightcurves"),
     provenance=relationship(Provenance, primaryjoin=sa.orm.foreign(lightcurves_table.c.provenance_id) == Provenance.id))

_map(Detection, detections_table, source=relationship(Source, back_populates="detections"),
     lightcurve=relationship(Lightcurve), provenance=relationship(Provenance))

for _name, _cls in (("raw_data", RawPhotometry), ("lightcurves", Lightcurve), ("detections", Detection)):
    if not sa.inspect(Source).has_property(_name):
        sa.inspect(Source).add_property(_name, relationship(_cls, back_populates="source"))
