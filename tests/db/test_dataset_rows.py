"""Rows that are datasets: a RawPhotometry or Lightcurve read from the database is the same
class as one read from a file, and does what virtualobserver's README does with it."""

from __future__ import annotations

import matplotlib
import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from vo import config as vconfig
from vo.db import Lightcurve, RawPhotometry, Session, Source
from vo.lightcurves import datasets
from vo.lightcurves.observatories import get_observatory
from vo.lightcurves.rawstore import RawStore
from vo.pipeline import lightcurves as wf

matplotlib.use("Agg")


@pytest.fixture
def ingested(tmp_path, db_url):
    """One DEMO RA bin taken through targets, download, reduce, analysis and ingest."""
    cfg = vconfig.load_config(overrides={
        "project": {"data_root": str(tmp_path / "data"), "name": "ROWS"}, "database": {"url": db_url},
        "catalog": {"max_targets": 12}, "simulator": {"enabled": False}})
    from vo.catalog import Catalog
    ra_bin = Catalog.from_config(cfg).load().ra_bins()[0]
    _, out = wf.rule_io("targets", cfg, ra_bins=[ra_bin])
    wf.run_targets(cfg, out)
    for step in ("download", "reduce", "analysis", "ingest"):
        ins, outs = wf.rule_io(step, cfg, "DEMO", ra_bin)
        getattr(wf, f"run_{step}")(cfg, "DEMO", ra_bin, ins, outs)
    from vo.db import engine_from_config
    engine = engine_from_config(cfg)
    yield cfg, engine, ra_bin
    engine.dispose()


def test_the_same_class_from_files_and_from_the_database(ingested):
    assert RawPhotometry is datasets.RawPhotometry and Lightcurve is datasets.Lightcurve
    cfg, engine, ra_bin = ingested
    obs = get_observatory("DEMO", cfg)
    with Session(engine, cfg=cfg) as session:
        source = session.scalars(sa.select(Source).where(Source.project == "ROWS")).first()
        data = source.raw_data[0]
        assert isinstance(data, datasets.RawPhotometry)
        # loaded from its file: the same table the raw store holds, and plotted
        stored, _ = RawStore(data.get_fullname()).read(data.filekey)
        pd.testing.assert_frame_equal(data.data, stored)
        assert data.attrs["cat_row"]["name"] == source.name and np.isfinite(data.data["mag"]).any()
        assert data.plot().yaxis_inverted()
        row = session.scalars(sa.select(RawPhotometry).where(RawPhotometry.source_name == source.name)).one()
        assert row is data and row.filekey == data.filekey
        # reduced like a file's raw photometry: the same light curves as the workflow's
        lcs = obs.reduce(data, to="lcs")
        on_file = session.scalars(sa.select(Lightcurve).where(Lightcurve.source_id == source.id)
                                  .order_by(Lightcurve.filekey)).all()
        assert sorted(lc.filekey for lc in lcs) == [lc.filekey for lc in on_file]
        for mine, theirs in zip(sorted(lcs, key=lambda lc: lc.filekey), on_file):
            np.testing.assert_allclose(mine.data["flux"], theirs.data["flux"])   # the row loads its file
            assert theirs.attrs["source_name"] == source.name and theirs.n_epochs == len(mine)
        assert all(lc.source_id == source.id for lc in lcs)


def test_new_light_curves_saved_and_added_then_deleted(ingested, tmp_path):
    """virtualobserver's ``lcs = obs.reduce(data); lc.save(); session.add(lc); commit``, then
    ``data.delete_data_from_disk(); session.delete(data)``."""
    cfg, engine, _ = ingested
    obs = get_observatory("DEMO", cfg)
    obs.pars["reducer"]["gap"] = 60.0                       # another reduction: another provenance
    root = vconfig.data_root(cfg)
    with Session(engine, cfg=cfg) as session:
        source = session.scalars(sa.select(Source).where(Source.project == "ROWS")).first()
        data = source.raw_data[0]
        lcs = obs.reduce(data, to="lcs")
        target = root / "ROWS" / "mine" / "my_reduced.h5"
        for lc in lcs:
            lc.save(target)
            session.add(lc)
        session.commit()
        added = session.scalars(sa.select(Lightcurve).where(Lightcurve.filename == "ROWS/mine/my_reduced.h5")).all()
        assert len(added) == len(lcs) and all(lc.checksum and lc.source_id == source.id for lc in added)
        assert {lc.provenance.parameters["DEMO.reducer.gap"] for lc in added} == {60.0}
        assert {lc.filter for lc in added} == {lc.attrs["filter"] for lc in lcs}
        key = data.filekey
        data.delete_data_from_disk()
        session.delete(data)
        session.commit()
        assert key not in RawStore(root / "DEMO" / data.filename.split("/")[-1]).keys()
        assert session.scalars(sa.select(RawPhotometry).where(RawPhotometry.source_id == source.id)).first() is None
    # in a fresh session the added light curves load from their file under the data root
    with Session(engine, cfg=cfg) as session:
        lc = session.scalars(sa.select(Lightcurve).where(Lightcurve.filename == "ROWS/mine/my_reduced.h5")).first()
        assert lc.get_fullname() == root / "ROWS" / "mine" / "my_reduced.h5" and len(lc.data) == lc.n_epochs


def test_adding_what_cannot_be_indexed_names_the_problem(ingested, tmp_path):
    cfg, engine, _ = ingested
    lc = datasets.Lightcurve(data=pd.DataFrame({"mjd": [1.0], "flux": [2.0]}),
                             attrs={"source_name": "x", "obs": "DEMO", "filter": "g", "reduction_number": 1,
                                    "reduction_total": 1})
    with Session(engine, cfg=cfg) as session:
        session.add(lc)
        with pytest.raises(ValueError, match="save\\(\\) it before adding"):
            session.flush()
        session.rollback()
        lc.save(tmp_path / "elsewhere.h5")
        session.add(lc)
        with pytest.raises(ValueError, match="not under the data root"):
            session.flush()
        session.rollback()
        lc.save(vconfig.data_root(cfg) / "x.h5")
        session.add(lc)
        with pytest.raises(ValueError, match="set its source"):
            session.flush()


def test_detections_are_one_class_from_the_analysis_file_and_the_database(ingested):
    from vo.db import DetectionInTime
    from vo.lightcurves.analysis import read_analysis
    from vo.lightcurves.datasets import read_lightcurves
    from vo.lightcurves.detections import detections_of

    cfg, engine, ra_bin = ingested
    ins, outs = wf.rule_io("analysis", cfg, "DEMO", ra_bin)
    table = read_analysis(outs["analysis"]).detections
    from_file = detections_of(table)
    assert len(from_file) == len(table) > 0 and isinstance(from_file[0], DetectionInTime)
    lcs = {lc.filekey: lc for lc in read_lightcurves(ins["reduced"])}
    first = from_file[0]
    ax = first.plot(lcs[table["filekey"].iloc[0]])
    assert ax.get_xlabel() == "MJD (days)" and first.name == table["source_name"].iloc[0]
    with Session(engine, cfg=cfg) as session:
        rows = session.scalars(sa.select(DetectionInTime).where(DetectionInTime.simulated.is_(False))).all()
        assert len(rows) == int((~table["simulated"].astype(bool)).sum())
        row = next(r for r in rows if r.lightcurve is not None)
        assert isinstance(row, DetectionInTime) and row.name == row.source.name
        assert row.plot().get_xlabel() == "MJD (days)"      # its light curve, loaded from its file
        match = [d for d in from_file if d.name == row.name and d.time_peak == row.time_peak]
        assert match and match[0].peak_snr == pytest.approx(row.peak_snr)
