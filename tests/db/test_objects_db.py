"""Transient tables and race-free object association, on SQLite and on a real PostgreSQL
server (``db_url`` / ``engine`` fixtures of conftest.py)."""

from __future__ import annotations

import multiprocessing as mp

import astropy.units as u
import numpy as np
import pytest
import sqlalchemy as sa
from astropy_healpix import HEALPix

from vo.db import Session, get_engine, init_db
from vo.db import models as m
from vo.db.objects import associate_measurements, associate_objects, lock_cells, lock_level
from vo.sky import object_name

N_WORKERS = 8
MJD = 60310.3  # 2024-01-05


def _provenance(engine, step="objects", hash_="a1b2c3") -> int:
    with engine.begin() as conn:
        conn.execute(sa.insert(m.Provenance).values(step=step, obs="DemoCam", hash=hash_, code_version="1",
                                                    parameters={"radius": 1.0}, upstreams={}))
        return conn.scalar(sa.select(m.Provenance.id).where(m.Provenance.hash == hash_))


def _sky(seed=3, n=25):
    """New transients: random positions, plus pairs closer than the radius (one object each)."""
    rng = np.random.default_rng(seed)
    ra = rng.uniform(150.0, 150.2, n)
    dec = rng.uniform(2.0, 2.2, n)
    return ra, dec


def _worker(url, prov_id, ra, dec, seed, barrier, queue):
    """One ingest job: its own measurements of the same objects (scatter 0.05 arcsec per axis)."""
    rng = np.random.default_rng(seed)
    jitter = rng.normal(0, 0.05 / 3600, (2, ra.size))
    eng = get_engine(url)
    barrier.wait(timeout=120)  # all jobs start their transactions together
    try:
        res = associate_objects(eng, ra + jitter[0] / np.cos(np.radians(dec)), dec + jitter[1],
                                MJD + seed * 1e-3, prov_id, 1.0)
        queue.put((seed, res.names.tolist(), len(res.created)))
    except Exception as exc:  # noqa: BLE001 - reported to the test
        queue.put((seed, f"{type(exc).__name__}: {exc}", -1))
    eng.dispose()


def test_concurrent_jobs_create_one_object_per_sky_object(engine, db_url):
    prov = _provenance(engine)
    ra, dec = _sky()
    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(N_WORKERS), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(db_url, prov, ra, dec, s, barrier, queue))
             for s in range(N_WORKERS)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=240) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    errors = [n for _, n, c in results if c < 0]
    assert not errors, errors
    names = {seed: n for seed, n, _ in results}
    # every job associated each position to the same object ...
    first = names[0]
    for seed, n in names.items():
        assert n == first, (seed, [(i, a, b) for i, (a, b) in enumerate(zip(first, n)) if a != b])
    assert len(set(first)) == ra.size
    # ... exactly one job created all of them (or several jobs disjoint parts), no duplicates
    assert sum(c for _, _, c in results) == ra.size
    with Session(engine) as s:
        rows = s.execute(sa.select(m.SkyObject.name, m.SkyObject.ra, m.SkyObject.dec)).all()
        counter = s.scalar(sa.select(m.ObjectCounter.next_counter).where(m.ObjectCounter.year == 2024))
    assert len(rows) == ra.size and counter == ra.size
    assert {r.name for r in rows} == set(first)
    assert sorted(r.name for r in rows) == [object_name(2024, i) for i in range(ra.size)]
    # each object lies within the radius of its true position
    by_name = {r.name: (r.ra, r.dec) for r in rows}
    sep = np.array([np.hypot((by_name[n][0] - a) * np.cos(np.radians(d)), by_name[n][1] - d) * 3600
                    for n, a, d in zip(first, ra, dec)])
    assert sep.max() < 1.0


def test_association_reuses_objects_and_names_are_sequential(engine):
    prov = _provenance(engine)
    r1 = associate_objects(engine, [10.0, 10.0 + 0.5 / 3600, 20.0], [5.0, 5.0, -3.0],
                           [60000.0, 60001.0, 60400.0], prov, 1.0)
    # 2023 object with both nearby epochs; 2024 object alone
    assert r1.names.tolist() == ["VO23aaaa", "VO23aaaa", "VO24aaaa"]
    assert r1.object_ids[0] == r1.object_ids[1] != r1.object_ids[2]
    r2 = associate_objects(engine, [10.0 + 0.3 / 3600, 20.0 + 1.5 / 3600, 30.0], [5.0, -3.0, -3.0],
                           [60002.0, 60401.0, 60400.0], prov, 1.0)
    assert r2.names[0] == "VO23aaaa" and r2.object_ids[0] == r1.object_ids[0]
    # 1.5 arcsec (cos dec ~ 1) is outside the radius: a new object; earlier mjd named first
    assert r2.names[1:].tolist() == ["VO24aaac", "VO24aaab"]
    # same call again: idempotent, nothing new
    r3 = associate_objects(engine, [10.0 + 0.3 / 3600, 20.0 + 1.5 / 3600, 30.0], [5.0, -3.0, -3.0],
                           [60002.0, 60401.0, 60400.0], prov, 1.0)
    assert r3.created == [] and r3.names.tolist() == r2.names.tolist()
    # objects of another association provenance are separate
    other = _provenance(engine, hash_="ffff00")
    r4 = associate_objects(engine, [10.0], [5.0], [60000.0], other, 1.0)
    assert r4.created == ["VO23aaab"]


def _chain(session) -> int:
    """provenance -> exposure -> image -> reference -> subtraction -> cutouts rows."""
    p = m.Provenance(step="subtraction", obs="DemoCam", hash="s1", code_version="1")
    e = m.Exposure(instrument="DemoCam", name="dc_f00_r_003", filter="r", mjd=MJD, exptime=30.0,
                   filename="DemoCam/raw/dc_f00_r_003.fits", checksum="0" * 64)
    img = m.Image(exposure=e, ccd="c00", provenance=p, nx=64, ny=64, ra=150.1, dec=2.1,
                  **{f"{c}_corner_{k}": 0.0 for c in ("ra", "dec") for k in range(1, 5)},
                  filename="x.image.fits", filekey="", checksum="1" * 64)
    ref = m.Reference(provenance=p, instrument="DemoCam", field="f00", filter="r", ccd="c00", n_images=5,
                      filename="r.ref.fits", filekey="", checksum="2" * 64, ra=150.1, dec=2.1)
    sub = m.Subtraction(image=img, reference=ref, provenance=p, method="zogy", filename="s.sub.fits",
                        filekey="", checksum="3" * 64)
    cut = m.Cutouts(subtraction=sub, provenance=p, n_cutouts=3, size=41, filename="c.cutouts.h5",
                    filekey="", checksum="4" * 64)
    session.add(cut)
    session.flush()
    return cut.id, p.id


def test_transient_tables_and_measurement_association(engine):
    prov = _provenance(engine)
    with Session(engine) as s, s.begin():
        cut_id, p_id = _chain(s)
        meas = [m.Measurement(cutouts_id=cut_id, provenance_id=p_id, row_index=i, mjd=MJD, filter="r",
                              ra=150.1 + i * 1e-3, dec=2.1, flux=100.0 * (i + 1), flux_err=10.0,
                              filename="c.meas.fits", filekey=str(i), checksum="5" * 64)
                for i in range(3)]
        s.add_all(meas)
        s.flush()
        s.add(m.Score(measurement_id=meas[0].id, provenance_id=p_id, algorithm="democam_rb", score=0.9,
                      filename="c.scores.fits", filekey="0", checksum="6" * 64))
        ids = [x.id for x in meas]
    with Session(engine) as s:  # natural keys are enforced
        s.add(m.Measurement(cutouts_id=cut_id, provenance_id=p_id, row_index=0, mjd=MJD, filter="r", ra=1.0,
                            dec=1.0, filename="c", filekey="0", checksum="7"))
        with pytest.raises(sa.exc.IntegrityError):
            s.commit()
    with Session(engine) as s:  # scores outside [0, 1] are refused
        s.add(m.Score(measurement_id=ids[1], provenance_id=p_id, algorithm="x", score=1.5, filename="c",
                      filekey="1", checksum="7"))
        with pytest.raises(sa.exc.IntegrityError):
            s.commit()
    res = associate_measurements(engine, ids, prov, 1.0)
    assert len(res.created) == 3
    with Session(engine) as s:
        got = dict(s.execute(sa.select(m.Measurement.id, m.Measurement.object_id)).all())
        assert [got[i] for i in ids] == res.object_ids.tolist()
        obj = s.get(m.SkyObject, int(res.object_ids[0]))
        assert obj.healpix == m.healpix_index(obj.ra, obj.dec)
        assert [x.row_index for x in obj.measurements] == [0]
    with pytest.raises(ValueError, match="not in the database"):
        associate_measurements(engine, [999999], prov, 1.0)


def test_lock_cells_cover_every_pair_within_radius():
    """Two positions within the radius always share a locked cell (the lock is what makes
    the association race-free on PostgreSQL), and the cells objects are read from around a
    position hold every object within the radius of it."""
    rng = np.random.default_rng(7)
    radius = 1.0
    n = 3000
    ra = rng.uniform(0, 360, n)
    dec = np.degrees(np.arcsin(rng.uniform(-1, 1, n)))
    ang = rng.uniform(0, 2 * np.pi, n)
    sep = rng.uniform(0, radius, n) / 3600
    ra2 = ra + sep * np.sin(ang) / np.cos(np.radians(dec))
    dec2 = np.clip(dec + sep * np.cos(ang), -90, 90)
    for level in (lock_level(radius), lock_level(radius, m.HEALPIX_LEVEL)):
        for i in range(n):
            a = lock_cells(ra[i:i + 1], dec[i:i + 1], level)
            b = lock_cells(ra2[i:i + 1] % 360, dec2[i:i + 1], level)
            assert np.intersect1d(a, b).size > 0
            hp = HEALPix(nside=2 ** level, order="nested")
            assert hp.lonlat_to_healpix(ra2[i] % 360 * u.deg, dec2[i] * u.deg) in a


def test_init_db_creates_transient_tables(engine):
    insp = sa.inspect(engine)
    assert set(m.TRANSIENT_TABLES) <= set(insp.get_table_names())
    for t in ("objects", "measurements"):
        assert any(ix["column_names"] == ["healpix"] for ix in insp.get_indexes(t))
    assert {"filename", "checksum", "provenance_id"} <= {c["name"] for c in insp.get_columns("subtractions")}
    init_db(engine)  # idempotent
