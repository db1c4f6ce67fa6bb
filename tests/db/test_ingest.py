"""Ingest on SQLite and PostgreSQL: contents, idempotency, transactions, concurrent jobs."""

from __future__ import annotations

import multiprocessing as mp
import re
import traceback

import h5py
import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from vo import provenance as vprov
from vo.db import Session, get_engine, init_db
from vo.ingest import lightcurves as ing
from vo.ingest.populate import populate
from vo.db import models as m
from vo.io import hdf5 as vh5
from vo.io.atomic import checksum
from vo.lightcurves.datasets import Lightcurve, read_lightcurves, write_lightcurves
from vo.lightcurves.keys import sanitize_key

PROJECT = "TESTPROJ"
OBS = "DEMO"
FILTERS = ("g", "r")


def make_provenances() -> list[vprov.Provenance]:
    t = vprov.Provenance("targets", None, "1", {"catalog.default": "demo"}, {})
    d = vprov.Provenance("download", OBS, "1", {"DEMO.seed": 42}, {t.key: t.hash})
    r = vprov.Provenance("reduce", OBS, "1", {"DEMO.reducer.gap": 40.0}, {d.key: d.hash})
    a = vprov.Provenance("analysis", OBS, "1", {"analysis.snr_threshold": 5.0}, {r.key: r.hash})
    return [t, d, r, a]


class Products:
    """Real files of one RA bin under a data root, with their truth."""

    def __init__(self, root, n=60, seed=0):
        rng = np.random.default_rng(seed)
        self.root = root
        self.provs = make_provenances()
        self.reduce_hash, self.analysis_hash = self.provs[2].hash, self.provs[3].hash
        names = [f"J123.{i:03d}+10 x" for i in range(n)]  # a space: keys are sanitised
        self.targets = pd.DataFrame({
            "name": names, "ra": 123 + rng.uniform(0, 1, n), "dec": rng.uniform(-30, 30, n),
            "mag": rng.uniform(15, 20, n), "pmra": np.where(np.arange(n) % 7 == 0, np.nan, 1.5)})
        # raw store: one group per source, written with the project's HDF5 helpers
        self.store = root / OBS / f"{OBS}_photometry_RA123.h5"
        self.store.parent.mkdir(parents=True)
        with h5py.File(self.store, "w") as f:
            for name in names:
                vh5.write_table(f, sanitize_key(name), pd.DataFrame({"mjd": rng.uniform(58000, 59000, 5)}))
        entries = [{"name": nm, "key": sanitize_key(nm), "n_rows": 5, "status": "downloaded", "error": None}
                   for nm in names]
        entries[3].update(status="failed", error="HTTP 500", n_rows=0)
        self.manifest = {"obs": OBS, "store": f"{OBS}/{self.store.name}", "download_params": {"seed": 42},
                         "download_params_hash": "0123456789", "sources": entries}
        # reduced light curves: two filters per source, one season each
        lcs = []
        for name in names:
            for k, flt in enumerate(FILTERS):
                mjd = np.sort(rng.uniform(58000, 58100, 20))
                data = pd.DataFrame({"mjd": mjd, "flux": rng.normal(100, 5, 20), "filter": flt})
                lcs.append(Lightcurve(data=data, attrs={
                    "source_name": name, "obs": OBS, "filter": flt, "season": 0,
                    "reduction_number": k + 1, "reduction_total": len(FILTERS), "n_epochs": 20,
                    "flux_mean": float(data.flux.mean()), "flux_rms": float(data.flux.std()),
                    "mag_mean": 18.9, "mjd_start": float(mjd[0]), "mjd_end": float(mjd[-1])}))
        self.reduced = root / PROJECT / f"reduce-{self.reduce_hash}" / f"{OBS}_photometry_RA123_reduced.h5"
        write_lightcurves(self.reduced, lcs, {"step": "reduce", "provenance_hash": self.reduce_hash})
        self.lcs = read_lightcurves(self.reduced)
        # detections: a real event in some light curves, an injected one in others
        det = []
        for i, lc in enumerate(self.lcs[: 2 * n // 3]):
            sim = i % 2 == 1
            det.append({"source_name": lc.attrs["source_name"], "obs": OBS, "filter": lc.attrs["filter"],
                        "time_start": lc.attrs["mjd_start"] + 1, "time_peak": lc.attrs["mjd_start"] + 2,
                        "time_end": lc.attrs["mjd_start"] + 3, "peak_snr": 7.5 + i, "peak_mag": 17.0,
                        "dmag": -1.2, "n_epochs": 3, "simulated": sim,
                        "sim_type": "flare" if sim else None,
                        "sim_params": {"amplitude": 0.1 * i, "t0": 58001.5} if sim else None,
                        "filekey": lc.filekey})
        self.detections = pd.DataFrame(det)

    def share(self, lo: int, hi: int):
        """(targets, manifest, light curves, detections) of the sources ``lo:hi``: one job's share."""
        names = set(self.targets.name[lo:hi])
        manifest = {**self.manifest, "sources": [e for e in self.manifest["sources"] if e["name"] in names]}
        return (self.targets[self.targets.name.isin(names)], manifest,
                [lc for lc in self.lcs if lc.attrs["source_name"] in names],
                self.detections[self.detections.source_name.isin(names)])

    def ingest_all(self, engine, batch_size=ing.DEFAULT_BATCH, lcs=None, targets=None, detections=None):
        ing.in_transaction(engine, ing.ingest_provenances, self.provs)
        ing.in_transaction(engine, ing.ingest_sources, self.targets if targets is None else targets, PROJECT,
                           batch_size)
        ing.in_transaction(engine, ing.ingest_raw, self.manifest, self.root, PROJECT, batch_size)
        ing.in_transaction(engine, ing.ingest_lightcurves, self.lcs if lcs is None else lcs, self.reduced,
                           self.root, self.reduce_hash, PROJECT, batch_size)
        ing.in_transaction(engine, ing.ingest_detections,
                           self.detections if detections is None else detections,
                           self.analysis_hash, PROJECT, batch_size)


@pytest.fixture
def products(tmp_path):
    return Products(tmp_path / "data")


def snapshot(engine) -> dict:
    """Every row of every table (without creation times), sorted."""
    out = {}
    with engine.connect() as conn:
        for name, table in m.Base.metadata.tables.items():
            cols = [c for c in table.c if c.name != "created_at"]
            rows = conn.execute(sa.select(*cols).order_by(table.c.id)).all()
            out[name] = [tuple(r) for r in rows]
    return out


def counts(engine) -> dict:
    with engine.connect() as conn:
        return {name: conn.scalar(sa.select(sa.func.count()).select_from(t))
                for name, t in m.Base.metadata.tables.items() if name in m.LIGHTCURVE_TABLES}


def test_ingest_contents(engine, products):
    products.ingest_all(engine, batch_size=7)
    p = products
    assert counts(engine) == {"provenances": 4, "sources": 60, "raw_photometry": 59,
                              "lightcurves": 120, "detections": 40}
    with Session(engine) as s:
        src = s.scalars(sa.select(m.Source).where(m.Source.name == p.targets.name[7])).one()
        assert src.ra == pytest.approx(p.targets.ra[7]) and src.mag == pytest.approx(p.targets.mag[7])
        assert src.cat_row["pmra"] is None and src.cat_row["name"] == p.targets.name[7]  # NaN -> null
        assert src.healpix == m.healpix_index(src.ra, src.dec)
        raw = s.scalars(sa.select(m.RawPhotometry).where(m.RawPhotometry.source_name == p.targets.name[5])).one()
        assert (raw.filename, raw.filekey, raw.n_rows) == (f"{OBS}/{p.store.name}",
                                                           sanitize_key(p.targets.name[5]), 5)
        assert raw.checksum == checksum(p.store) and raw.download_params_hash == "0123456789"
        assert s.scalar(sa.select(sa.func.count()).select_from(m.RawPhotometry).join(m.Source)
                        .where(m.Source.name == p.targets.name[3])) == 0  # failed download
        lc = s.scalars(sa.select(m.Lightcurve).where(m.Lightcurve.filekey == p.lcs[9].filekey)).one()
        assert lc.filename == p.reduced.relative_to(p.root).as_posix()
        assert lc.checksum == checksum(p.reduced)
        assert lc.source.name == p.lcs[9].attrs["source_name"] and lc.filter == p.lcs[9].attrs["filter"]
        assert lc.flux_mean == pytest.approx(p.lcs[9].attrs["flux_mean"])
        assert (lc.provenance.step, lc.provenance.hash) == ("reduce", p.reduce_hash)
        dets = s.scalars(sa.select(m.Detection).order_by(m.Detection.peak_snr)).all()
        assert [d.simulated for d in dets] == list(p.detections.simulated)
        assert all(d.lightcurve is not None and d.lightcurve.filekey == k
                   for d, k in zip(dets, p.detections.filekey))
        assert dets[1].sim_params == {"amplitude": pytest.approx(0.1), "t0": 58001.5}
        assert dets[0].sim_params is None and dets[0].provenance.step == "analysis"
        prov = s.scalars(sa.select(m.Provenance).where(m.Provenance.step == "targets")).one()
        assert prov.obs == "" and prov.parameters == {"catalog.default": "demo"}


def test_ingest_twice_changes_nothing(engine, products):
    products.ingest_all(engine)
    first = snapshot(engine)
    products.ingest_all(engine, batch_size=11)
    assert snapshot(engine) == first


def test_reingest_updates_only_changed_rows(engine, products):
    products.ingest_all(engine)
    before = snapshot(engine)
    targets = products.targets.copy()
    targets.loc[10, "mag"] = 12.25
    products.ingest_all(engine, targets=targets)
    after = snapshot(engine)
    changed = [(a, b) for a, b in zip(before["sources"], after["sources"]) if a != b]
    assert len(changed) == 1 and 12.25 in changed[0][1]
    assert {k: v for k, v in after.items() if k != "sources"} == \
        {k: v for k, v in before.items() if k != "sources"}


def test_error_mid_file_leaves_no_rows(engine, products):
    products.ingest_all(engine, lcs=[])
    assert counts(engine)["lightcurves"] == 0
    bad = [Lightcurve(data=lc.data, attrs=dict(lc.attrs), filekey=lc.filekey) for lc in products.lcs]
    bad[-1].attrs["n_epochs"] = None  # NOT NULL: refused before anything is written
    with pytest.raises(ing.IngestError, match=re.escape(f"{bad[-1].filekey}' has no attribute 'n_epochs'")):
        ing.in_transaction(engine, ing.ingest_lightcurves, bad, products.reduced, products.root,
                           products.reduce_hash, PROJECT, 10)
    assert counts(engine)["lightcurves"] == 0
    if engine.dialect.name == "postgresql":  # SQLite takes any integer
        bad[-1].attrs["n_epochs"] = 2 ** 40  # out of range: fails in the last batch, after 11 good ones
        with pytest.raises(sa.exc.DataError):
            ing.in_transaction(engine, ing.ingest_lightcurves, bad, products.reduced, products.root,
                               products.reduce_hash, PROJECT, 10)
        assert counts(engine)["lightcurves"] == 0
    unknown = products.lcs[:5] + [Lightcurve(data=products.lcs[0].data,
                                             attrs={**products.lcs[0].attrs, "source_name": "nobody"})]
    with pytest.raises(ing.IngestError, match="nobody"):
        ing.in_transaction(engine, ing.ingest_lightcurves, unknown, products.reduced, products.root,
                           products.reduce_hash, PROJECT)
    assert counts(engine)["lightcurves"] == 0


def test_bad_input_errors_name_the_problem(engine, products, tmp_path):
    ing.in_transaction(engine, ing.ingest_sources, products.targets, PROJECT)
    with pytest.raises(ing.IngestError, match="provenance reduce.DEMO"):
        ing.in_transaction(engine, ing.ingest_lightcurves, products.lcs, products.reduced, products.root,
                           products.reduce_hash, PROJECT)
    with pytest.raises(ing.IngestError, match="lacks column"):
        ing.in_transaction(engine, ing.ingest_sources, products.targets.drop(columns="dec"), PROJECT)
    bad = products.targets.copy()
    bad.loc[4, "dec"] = 95.0
    with pytest.raises(ing.IngestError, match=re.escape(products.targets.name[4])):
        ing.in_transaction(engine, ing.ingest_sources, bad, PROJECT)
    with pytest.raises(ing.IngestError, match="same"):
        ing.in_transaction(engine, ing.ingest_sources, pd.concat([products.targets] * 2), PROJECT)
    manifest = {**products.manifest, "store": str(tmp_path / "elsewhere.h5")}
    (tmp_path / "elsewhere.h5").write_bytes(b"x")
    with pytest.raises(ing.IngestError, match="not under the data root"):
        ing.in_transaction(engine, ing.ingest_raw, manifest, products.root, PROJECT)
    path = tmp_path / "broken_manifest.json"
    path.write_text("{not json")
    with pytest.raises(ing.IngestError, match="broken_manifest.json"):
        ing.ingest_manifest_file(engine, path, products.root, PROJECT)
    assert counts(engine)["raw_photometry"] == 0


# -- concurrency ----------------------------------------------------------------------------
N_PROC = 8


def _worker(url, products, lo, hi, barrier, errors):
    """One ingest job: init the database, then ingest its (overlapping) share of the bin."""
    try:
        engine = get_engine(url)
        barrier.wait(timeout=60)
        init_db(engine)
        targets, manifest, lcs, dets = products.share(lo, hi)
        for _ in range(2):
            ing.in_transaction(engine, ing.ingest_provenances, products.provs)
            ing.in_transaction(engine, ing.ingest_sources, targets, PROJECT, 5)
            ing.in_transaction(engine, ing.ingest_raw, manifest, products.root, PROJECT, 5)
            ing.in_transaction(engine, ing.ingest_lightcurves, lcs, products.reduced, products.root,
                               products.reduce_hash, PROJECT, 5)
            ing.in_transaction(engine, ing.ingest_detections, dets, products.analysis_hash, PROJECT, 5)
        engine.dispose()
    except BaseException:  # noqa: BLE001 - report everything to the parent
        errors.put(traceback.format_exc())


def test_concurrent_ingest_jobs(db_url, products):
    """8 processes ingest overlapping shares at once into one fresh database: no errors, no
    duplicates, nothing lost (the database starts without tables: init_db races too)."""
    ctx = mp.get_context("fork")
    barrier, errors = ctx.Barrier(N_PROC), ctx.Queue()
    n = len(products.targets)
    step = n // N_PROC
    procs = [ctx.Process(target=_worker, args=(db_url, products, i * step, i * step + 3 * step, barrier, errors))
             for i in range(N_PROC)]  # windows of 3 steps: every source is shared by 2-3 jobs
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    messages = []
    while not errors.empty():
        messages.append(errors.get())
    assert not messages, "\n".join(messages)
    assert [p.exitcode for p in procs] == [0] * N_PROC
    engine = get_engine(db_url)
    try:
        covered = set(products.targets.name[: (N_PROC - 1) * step + 3 * step])
        n_lcs = sum(lc.attrs["source_name"] in covered for lc in products.lcs)
        assert counts(engine) == {"provenances": 4, "sources": len(covered), "raw_photometry": len(covered) - 1,
                                  "lightcurves": n_lcs, "detections": len(products.detections)}
        with Session(engine) as s:
            got = dict(s.execute(sa.select(m.Lightcurve.filekey, m.Lightcurve.flux_mean)).tuples().all())
        assert got == {lc.filekey: pytest.approx(lc.attrs["flux_mean"]) for lc in products.lcs
                       if lc.attrs["source_name"] in covered}
    finally:
        engine.dispose()


# -- files of a real workflow run: ingest_bin and populate ---------------------------------
@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """One RA bin of the demo project made by the workflow's rule bodies (real files)."""
    from vo import config as vconfig
    from vo.pipeline import lightcurves as wf
    from vo.catalog import Catalog

    root = tmp_path_factory.mktemp("demo") / "data"
    with pytest.MonkeyPatch.context() as mpatch:
        mpatch.delenv("VO_DATA", raising=False)
        cfg = vconfig.load_config(overrides={"project": {"data_root": str(root)}, "images": {"enabled": False}})
        ra_bin = Catalog.from_config(cfg).load().ra_bins()[0]
        wf.run_targets(cfg, wf.rule_io("targets", cfg, ra_bins=[ra_bin])[1])
        for step in ("download", "reduce", "analysis"):
            getattr(wf, f"run_{step}")(cfg, OBS, ra_bin, *wf.rule_io(step, cfg, OBS, ra_bin))
        wf.run_config(cfg, wf.rule_io("run_config", cfg)[1])
    return cfg, ra_bin


def content(engine) -> dict:
    """Table contents by natural keys (names instead of ids), comparable across databases."""
    src, lc, det, prov = m.Source, m.Lightcurve, m.Detection, m.Provenance
    q = {
        "provenances": sa.select(prov.step, prov.obs, prov.hash, prov.code_version),
        "sources": sa.select(src.name, src.project, src.ra, src.dec, src.mag, src.healpix),
        "raw_photometry": sa.select(src.name, m.RawPhotometry.filename, m.RawPhotometry.filekey,
                                    m.RawPhotometry.n_rows).join(m.RawPhotometry.source),
        "lightcurves": sa.select(src.name, prov.hash, lc.filename, lc.filekey, lc.checksum, lc.n_epochs,
                                 lc.flux_mean).join(lc.source).join(lc.provenance),
        "detections": sa.select(src.name, prov.hash, det.filter, det.simulated, det.time_peak, det.sim_type,
                                lc.filekey).join(det.source).join(det.provenance).outerjoin(det.lightcurve),
    }
    with engine.connect() as conn:
        return {k: sorted(tuple(r) for r in conn.execute(s)) for k, s in q.items()}


def test_ingest_bin_and_populate_rebuild_the_same_rows(demo_run, db_url, tmp_path, monkeypatch):
    from vo.lightcurves.analysis import read_analysis
    from vo.lightcurves.datasets import read_lightcurves
    from vo.paths import Paths

    monkeypatch.delenv("VO_DATA", raising=False)
    monkeypatch.delenv("VO_DB_URL", raising=False)
    cfg, ra_bin = demo_run
    paths = Paths(cfg)
    engine = get_engine(db_url)
    first = ing.ingest_bin(engine, cfg, OBS, ra_bin)
    n_lcs = len(read_lightcurves(paths.product("reduce", OBS, ra_bin)))
    n_det = len(read_analysis(paths.product("analysis", OBS, ra_bin)).detections)
    assert first["lightcurves"] == n_lcs > 0 and first["detections"] == n_det > 0
    assert ing.ingest_bin(engine, cfg, OBS, ra_bin) == first
    expected = content(engine)
    assert {k: len(v) for k, v in expected.items()} == {**first, "provenances": 6}
    assert all(row[-1] is not None for row in expected["detections"])  # linked to light curves
    engine.dispose()

    # a second, empty database rebuilt from the files alone
    other = f"sqlite:///{tmp_path / 'populated.sqlite'}"
    counts_ = populate({**cfg, "database": {**cfg["database"], "url": other}})
    assert counts_["lightcurves"] == n_lcs and counts_["detections"] == n_det
    populated = get_engine(other)
    assert content(populated) == expected
    populated.dispose()
