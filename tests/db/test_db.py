"""Models, engines and cone search on SQLite and on a temporary PostgreSQL server."""

from __future__ import annotations

import astropy.units as u
import numpy as np
import pytest
import sqlalchemy as sa
from astropy.coordinates import SkyCoord

from vo.db import Session, Source, get_engine, init_db
from vo.db import models as m
from vo.db.engine import has_q3c, normalise_url, url_from_config
from vo.db.spatial import cone_search, great_circle_deg, healpix_ranges

TABLES = {"provenances", "sources", "raw_photometry", "lightcurves", "detections"}


def test_init_db_creates_tables_and_is_idempotent(engine):
    init_db(engine)  # second call: nothing changes, nothing fails
    insp = sa.inspect(engine)
    assert TABLES <= set(insp.get_table_names())
    cols = {c["name"] for c in insp.get_columns("lightcurves")}
    assert {"filename", "filekey", "checksum", "provenance_id", "source_id", "flux_mean",
            "mjd_start", "mjd_end", "reduction_number", "reduction_total"} <= cols
    uniques = {tuple(u["column_names"]) for u in insp.get_unique_constraints("sources")}
    assert ("name", "project") in uniques
    assert any(ix["column_names"] == ["healpix"] for ix in insp.get_indexes("sources"))
    with engine.connect() as conn:
        if has_q3c(conn):
            ix = conn.execute(sa.text(
                "SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_sources_q3c'")).scalar()
            assert "q3c_ang2ipix" in ix


def test_sqlite_engine_settings(tmp_path):
    eng = get_engine(f"sqlite:///{tmp_path / 'x.sqlite'}")
    with eng.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar().lower() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 60_000
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_url_helpers(tmp_path, monkeypatch):
    assert normalise_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    monkeypatch.delenv("VO_DB_URL", raising=False)
    monkeypatch.delenv("VO_DATA", raising=False)
    cfg = {"project": {"data_root": str(tmp_path)}, "database": {"url": None}}
    assert url_from_config(cfg) == f"sqlite:///{tmp_path / 'vo.sqlite'}"
    monkeypatch.setenv("VO_DB_URL", "postgresql://x@y/z")
    assert url_from_config(cfg) == "postgresql://x@y/z"


def test_orm_add_fills_healpix_and_unique_name_project(engine):
    with Session(engine) as session:
        session.add_all([Source(name="a", project="P", ra=123.4, dec=-32.1),
                         Source(name="a", project="Q", ra=10.0, dec=5.0)])
        session.commit()
        src = session.scalars(sa.select(Source).where(Source.project == "P")).one()
        assert src.healpix == m.healpix_index(123.4, -32.1)
        src.ra, src.dec = 200.0, 60.0
        session.commit()
        assert session.scalar(sa.select(Source.healpix).where(Source.id == src.id)) == \
            m.healpix_index(200.0, 60.0)
        session.add(Source(name="a", project="P", ra=1.0, dec=1.0))
        with pytest.raises(sa.exc.IntegrityError):
            session.commit()


# -- cone search ----------------------------------------------------------------------------
CENTRES = [(123.0, 45.0), (0.02, 3.0), (359.97, -10.0), (45.0, 89.95), (250.0, -89.9), (0.0, 90.0)]
RADII = [0.005, 0.3, 3.0]


def _sky(seed=1, n_uniform=2000, n_near=300):
    """Uniform points on the sphere plus clusters around every test centre."""
    rng = np.random.default_rng(seed)
    ra = rng.uniform(0, 360, n_uniform)
    dec = np.degrees(np.arcsin(rng.uniform(-1, 1, n_uniform)))
    parts_ra, parts_dec = [ra], [dec]
    for ra0, dec0 in CENTRES:
        for scale in (0.01, 0.5, 4.0):
            c = SkyCoord(ra0 * u.deg, dec0 * u.deg)
            pts = c.directional_offset_by(rng.uniform(0, 360, n_near // 3) * u.deg,
                                          scale * np.sqrt(rng.uniform(0, 1, n_near // 3)) * u.deg)
            parts_ra.append(pts.ra.deg)
            parts_dec.append(pts.dec.deg)
    return np.concatenate(parts_ra), np.concatenate(parts_dec)


@pytest.fixture
def sky(engine):
    ra, dec = _sky()
    rows = [{"name": f"s{i}", "project": "P", "ra": float(r), "dec": float(d), "healpix": int(h),
             "cat_row": {}} for i, (r, d, h) in enumerate(zip(ra, dec, m.healpix_index(ra, dec)))]
    with Session(engine) as session, session.begin():
        session.execute(sa.insert(Source), rows)
    return engine, ra, dec


def _check_cone(session, ra, dec, ra0, dec0, radius, use_q3c):
    truth = SkyCoord(ra * u.deg, dec * u.deg).separation(SkyCoord(ra0 * u.deg, dec0 * u.deg)).deg
    found = cone_search(session, Source, ra0, dec0, radius, use_q3c=use_q3c)
    got = {int(s.name[1:]) for s in found}
    expected = set(np.flatnonzero(truth <= radius))
    borderline = set(np.flatnonzero(np.abs(truth - radius) < 1e-9))
    assert got ^ expected <= borderline, (ra0, dec0, radius, sorted(got ^ expected)[:5])
    assert len(expected) > 0 or radius < 0.01
    d = [truth[int(s.name[1:])] for s in found]
    assert d == sorted(d)  # nearest first


@pytest.mark.parametrize("use_q3c", [False, True], ids=["healpix", "q3c"])
def test_cone_search_matches_brute_force(sky, use_q3c):
    engine, ra, dec = sky
    with Session(engine) as session:
        if use_q3c and not has_q3c(session):
            pytest.skip(f"q3c extension not available on {engine.dialect.name}")
        for ra0, dec0 in CENTRES:
            for radius in RADII:
                _check_cone(session, ra, dec, ra0, dec0, radius, use_q3c)


def test_cone_search_default_path_and_filters(sky):
    engine, ra, dec = sky
    with Session(engine) as session:
        a = cone_search(session, Source, 359.97, -10.0, 1.0)  # q3c where present
        b = cone_search(session, Source, 359.97, -10.0, 1.0, use_q3c=False)
        assert [s.id for s in a] == [s.id for s in b] and len(a) > 10
        assert cone_search(session, Source, 359.97, -10.0, 1.0, Source.project == "other") == []
        with pytest.raises(TypeError, match="no sky position"):
            cone_search(session, m.Provenance, 0, 0, 1)
        with pytest.raises(ValueError, match="bad cone"):
            cone_search(session, Source, 0, 95, 1)


def test_great_circle_matches_astropy():
    rng = np.random.default_rng(3)
    ra1, ra2 = rng.uniform(0, 360, (2, 500))
    dec1, dec2 = np.degrees(np.arcsin(rng.uniform(-1, 1, (2, 500))))
    ref = SkyCoord(ra1 * u.deg, dec1 * u.deg).separation(SkyCoord(ra2 * u.deg, dec2 * u.deg)).deg
    np.testing.assert_allclose(great_circle_deg(ra1, dec1, ra2, dec2), ref, atol=1e-10)


@pytest.mark.parametrize("ra0,dec0,radius", [(0.0, 0.0, 0.2), (359.99, 89.99, 1.0), (10, -89.5, 2.0),
                                             (180.0, 30.0, 30.0)])
def test_healpix_ranges_cover_the_cone(ra0, dec0, radius):
    """Every fine pixel touched by points inside the cone lies in one of the ranges."""
    rng = np.random.default_rng(7)
    c = SkyCoord(ra0 * u.deg, dec0 * u.deg)
    pts = c.directional_offset_by(rng.uniform(0, 360, 20000) * u.deg,
                                  radius * np.sqrt(rng.uniform(0, 1, 20000)) * u.deg)
    hp = m.healpix_index(pts.ra.deg, pts.dec.deg)
    ranges = healpix_ranges(ra0, dec0, radius)
    inside = ((hp[:, None] >= ranges[:, 0]) & (hp[:, None] <= ranges[:, 1])).any(axis=1)
    assert inside.all()
    assert len(ranges) < 64


def _open_and_init(url, barrier, errors):
    import traceback
    try:
        engine = get_engine(url)
        barrier.wait(timeout=60)
        init_db(engine)
        with engine.connect() as conn:
            conn.execute(sa.select(sa.func.count()).select_from(Source)).scalar()
        engine.dispose()
    except BaseException:  # noqa: BLE001 - report everything to the parent
        errors.put(traceback.format_exc())


def test_concurrent_jobs_create_a_new_sqlite_database(tmp_path):
    """8 jobs opening the same new SQLite file at once: WAL switch and table creation race."""
    import multiprocessing as mp
    ctx = mp.get_context("fork")
    for i in range(20):
        url = f"sqlite:///{tmp_path / f'new{i}.sqlite'}"
        barrier, errors = ctx.Barrier(8), ctx.Queue()
        procs = [ctx.Process(target=_open_and_init, args=(url, barrier, errors)) for _ in range(8)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(timeout=60)
        messages = [errors.get() for _ in range(errors.qsize())]
        assert not messages, messages[0]
        assert [p.exitcode for p in procs] == [0] * 8


def test_session_without_engine_opens_default_database(tmp_path, monkeypatch):
    """virtualobserver style: ``session = Session()`` uses the default config's database."""
    import sqlalchemy as sa

    from vo.db import Session, Source, get_engine, init_db

    monkeypatch.setenv("VO_DATA", str(tmp_path))
    monkeypatch.delenv("VO_DB_URL", raising=False)
    init_db(get_engine(f"sqlite:///{tmp_path / 'vo.sqlite'}"))
    with Session() as session:
        assert session.scalars(sa.select(Source)).all() == []
        assert str(session.get_bind().url) == f"sqlite:///{tmp_path / 'vo.sqlite'}"
