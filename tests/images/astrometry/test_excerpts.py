"""Catalog excerpts: HEALPix tile cache, concurrency, the Gaia archive fetcher against local
HTTP servers, the DemoCam fetcher, and the archive's JSON format (real file)."""

from __future__ import annotations

import gzip
import io
import multiprocessing
import socket
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from astropy import units as u
from astropy.io.votable import from_table
from astropy.table import Table

from vo import config as vconfig
from vo.images.astrometry.excerpts import (COLUMNS, SOURCE_ID_SHIFT, CatalogOfflineError, TableFetcher,
                                ExcerptError, GaiaArchiveFetcher, Tile, footprint_mask,
                                get_excerpt, get_tile, healpix_of, read_gaia_json, read_tile,
                                tile_uniq, tiles_for_footprint)
from vo.paths import Paths
from testdata import DATA as TEST_DATA

DATA = TEST_DATA / "gaia_dr3" / "cone_search.json"
FOOTPRINT = np.array([[150.0, 2.0], [150.15, 2.0], [150.15, 2.3], [150.0, 2.3]])


@pytest.fixture(autouse=True)
def _no_data_root_override(monkeypatch):
    monkeypatch.delenv("VO_DATA", raising=False)


def config(tmp_path, **pars):
    cfg = vconfig.defaults()
    cfg["project"]["name"] = "test"
    cfg["project"]["data_root"] = str(tmp_path / "data")
    cfg["catalog_excerpts"].update(pars)
    return cfg


def fake_catalog(n=4000, seed=0, center=(150.07, 2.15), size=1.0) -> Table:
    rng = np.random.default_rng(seed)
    t = Table()
    t["source_id"] = np.arange(n, dtype=np.int64)
    t["ra"] = center[0] + rng.uniform(-size, size, n)
    t["dec"] = center[1] + rng.uniform(-size, size, n)
    t["pmra"] = rng.normal(0, 5, n)
    t["pmdec"] = rng.normal(0, 5, n)
    t["ref_epoch"] = np.full(n, 2016.0)
    t["phot_g_mean_mag"] = rng.uniform(12, 22, n)
    t["phot_bp_mean_mag"] = t["phot_g_mean_mag"] + 0.4
    t["phot_rp_mean_mag"] = t["phot_g_mean_mag"] - 0.6
    return t


class CountingFetcher:
    """Cuts tiles from a catalog and counts its calls in a file (works across processes)."""

    name = "counting test fetcher"
    mag_limit = np.inf

    def __init__(self, catalog: Table, counter: Path, delay: float = 0.0):
        self.inner = TableFetcher(catalog)
        self.counter, self.delay = counter, delay

    def fetch(self, tile):
        with open(self.counter, "a") as f:  # O_APPEND: one line per call, atomic
            f.write(f"{tile.uniq}\n")
        time.sleep(self.delay)
        return self.inner.fetch(tile)


def calls(counter: Path) -> list[int]:
    return [int(x) for x in counter.read_text().split()] if counter.exists() else []


# -- the archive JSON (real file) --------------------------------------------------------------
def test_read_gaia_json_real_file():
    t = read_gaia_json(DATA)
    assert len(t) == 50 and len(t.colnames) == 153
    assert t["source_id"].dtype == np.int64 and t["source_id"][0] == 6636090334814214528
    assert t["designation"][0] == "Gaia DR3 6636090334814214528"
    assert t["ra"].unit == u.deg and t["ra_error"].unit == u.mas
    assert t["pmra"].unit == u.mas / u.yr and t["parallax"].unit == u.mas
    assert t["phot_g_mean_mag"].unit == u.mag and t["ref_epoch"].unit == u.yr
    assert t["astrometric_primary_flag"].dtype == bool
    assert t["ra"][0] == pytest.approx(280.0002534562339, abs=0)
    # nulls are masked: 2-parameter solutions have no parallax nor proper motion
    no_pm = t["parallax"].mask
    assert 0 < no_pm.sum() < 50
    assert np.array_equal(no_pm, t["pmra"].mask) and np.array_equal(no_pm, t["pmdec"].mask)
    assert t["rv_template_fe_h"].mask.all()  # a column null for every row
    assert not t["phot_g_mean_mag"].mask.any()
    assert t["ref_epoch"][0] == 2016.0


def test_gaia_source_id_encodes_healpix_of_real_rows():
    """The archive query relies on source_id // 2**35 = level-12 nested HEALPix pixel."""
    t = read_gaia_json(DATA)
    pix12 = np.asarray(t["source_id"]) // SOURCE_ID_SHIFT
    np.testing.assert_array_equal(pix12 // 4 ** 6, healpix_of(t["ra"], t["dec"], 64))
    fetcher = GaiaArchiveFetcher()
    tile = Tile("gaia_dr3", 64, int(pix12[0] // 4 ** 6), Path("x.fits"))
    q = fetcher.adql(tile)
    lo, hi = (int(v) for v in q.split("BETWEEN ")[1].split(" AND phot")[0].split(" AND "))
    inside = (np.asarray(t["source_id"]) >= lo) & (np.asarray(t["source_id"]) <= hi)
    np.testing.assert_array_equal(inside, pix12 // 4 ** 6 == tile.ipix)
    assert "gaiadr3.gaia_source" in q and "phot_g_mean_mag < 21" in q


def test_read_gaia_json_errors(tmp_path):
    with pytest.raises(ExcerptError, match="file not found"):
        read_gaia_json(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"rows": []}')
    with pytest.raises(ExcerptError, match="bad.json.*metadata"):
        read_gaia_json(bad)


# -- geometry ---------------------------------------------------------------------------------
def test_footprint_tiles_cover_footprint():
    cat = fake_catalog()
    inside = footprint_mask(cat["ra"], cat["dec"], FOOTPRINT, margin_arcsec=60.0)
    strictly = footprint_mask(cat["ra"], cat["dec"], FOOTPRINT)
    assert 0 < strictly.sum() < inside.sum() < len(cat)
    ra, dec = np.asarray(cat["ra"]), np.asarray(cat["dec"])
    in_box = (ra > 150.0) & (ra < 150.15) & (dec > 2.0) & (dec < 2.3)
    np.testing.assert_array_equal(strictly, in_box)
    for nside in (16, 64, 256):
        tiles = tiles_for_footprint(FOOTPRINT, nside, 60.0)
        assert set(healpix_of(ra[inside], dec[inside], nside)) <= set(tiles)
    assert tile_uniq(64, [0, 5]).tolist() == [16384, 16389]


# -- cache and fetchers -------------------------------------------------------------------------
def test_get_excerpt_from_cache(tmp_path):
    cfg = config(tmp_path, nside=64, mag_limit=20.0, margin=30.0)
    cat = fake_catalog()
    counter = tmp_path / "calls.txt"
    fetcher = CountingFetcher(cat, counter)
    ex = get_excerpt(Paths(cfg), cfg, FOOTPRINT, fetcher)
    expected = footprint_mask(cat["ra"], cat["dec"], FOOTPRINT, 30.0) & (cat["phot_g_mean_mag"] < 20)
    assert sorted(ex["source_id"]) == sorted(cat["source_id"][expected])
    assert ex["ra"].unit is None or ex["ra"].unit == u.deg
    n_tiles = len(ex.meta["tiles"])
    assert sorted(calls(counter)) == sorted(ex.meta["tiles"])
    for path in ex.meta["tile_files"]:
        table, header = read_tile(path)
        assert header["NSIDE"] == 64 and header["SOURCE"] == "counting test fetcher"
        assert Path(path) == Paths(cfg).excerpt_tile("gaia_dr3", header["NUNIQ"])
    again = get_excerpt(Paths(cfg), cfg, FOOTPRINT, fetcher)  # from the cache now
    assert len(calls(counter)) == n_tiles
    assert sorted(again["source_id"]) == sorted(ex["source_id"])


def test_no_overlap_is_an_error(tmp_path):
    cfg = config(tmp_path)
    far = FOOTPRINT + [30.0, 40.0]
    with pytest.raises(ExcerptError, match="no gaia_dr3 star overlaps the footprint"):
        get_excerpt(Paths(cfg), cfg, far, TableFetcher(fake_catalog()))
    with pytest.raises(ExcerptError, match="footprint must be"):
        get_excerpt(Paths(cfg), cfg, [[1.0, 2.0]], TableFetcher(fake_catalog()))


def test_cached_tile_with_brighter_limit_is_an_error(tmp_path):
    cfg = config(tmp_path, mag_limit=19.0)
    fetcher = TableFetcher(fake_catalog())
    fetcher.mag_limit = 19.0
    get_excerpt(Paths(cfg), cfg, FOOTPRINT, fetcher)
    cfg["catalog_excerpts"]["mag_limit"] = 21.0
    with pytest.raises(ExcerptError, match="cached with phot_g_mean_mag < 19.0.*delete"):
        get_excerpt(Paths(cfg), cfg, FOOTPRINT, fetcher)


def test_table_fetcher_needs_a_catalog():
    with pytest.raises(ValueError, match="needs a catalog"):
        TableFetcher(None)


def _worker(args):
    data_root, counter, seed = args
    cfg = config(Path(data_root).parent, nside=64, margin=30.0)
    fetcher = CountingFetcher(fake_catalog(), Path(counter), delay=0.3)
    ex = get_excerpt(Paths(cfg), cfg, FOOTPRINT, fetcher)
    return sorted(int(s) for s in ex["source_id"])


def test_concurrent_jobs_fetch_each_tile_once(tmp_path):
    counter = tmp_path / "calls.txt"
    args = [(str(tmp_path / "data"), str(counter), k) for k in range(4)]
    with multiprocessing.get_context("fork").Pool(4) as pool:
        results = pool.map(_worker, args)
    assert all(r == results[0] for r in results) and len(results[0]) > 0
    fetched = calls(counter)
    assert len(fetched) == len(set(fetched)) > 0  # every tile exactly once
    assert not list((tmp_path / "data").rglob(".*.tmp*"))  # no temporary files left


# -- the Gaia archive fetcher against local servers ---------------------------------------------
class _TapHandler(BaseHTTPRequestHandler):
    mode = "ok"
    queries: list = []
    table: Table | None = None

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
        form = urllib.parse.parse_qs(body)
        type(self).queries.append((self.path, form))
        if self.mode == "slow":
            time.sleep(3)
        if self.mode == "error":
            self.send_response(500)
            self.end_headers()
            self.wfile.write(b"internal error")
            return
        buf = io.BytesIO()
        from_table(self.table).to_xml(buf)
        payload = gzip.compress(buf.getvalue())
        self.send_response(200)
        self.send_header("Content-Type", "application/x-votable+xml")
        self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


@pytest.fixture
def tap_server():
    handler = type("Handler", (_TapHandler,), {"queries": [], "mode": "ok"})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, handler
    server.shutdown()
    server.server_close()


def _tile(tmp_path):
    return Tile("gaia_dr3", 64, 12345, tmp_path / "gaia_dr3" / "gaia_dr3_tile028729.fits")


def test_archive_fetcher_runs_adql_on_tap(tmp_path, tap_server):
    server, handler = tap_server
    rows = Table({c: np.arange(3, dtype=np.int64 if c == "source_id" else float) for c in COLUMNS})
    handler.table = rows
    fetcher = GaiaArchiveFetcher(url=f"http://127.0.0.1:{server.server_port}/", timeout=5)
    table = get_tile(_tile(tmp_path), fetcher)
    assert list(table["source_id"]) == [0, 1, 2] and set(COLUMNS) <= set(table.colnames)
    path, form = handler.queries[0]
    assert path == "/tap-server/tap/sync"
    assert form["LANG"] == ["ADQL"] and "BETWEEN" in form["QUERY"][0]
    assert form["QUERY"][0] == fetcher.adql(_tile(tmp_path))
    assert _tile(tmp_path).path.exists()


def test_archive_fetcher_server_error(tmp_path, tap_server):
    server, handler = tap_server
    handler.mode = "error"
    fetcher = GaiaArchiveFetcher(url=f"http://127.0.0.1:{server.server_port}/", timeout=5)
    tile = _tile(tmp_path)
    with pytest.raises(CatalogOfflineError) as err:
        get_tile(tile, fetcher)
    msg = str(err.value)
    assert "tile 28729" in msg and str(tile.path) in msg and "SELECT" in msg
    assert not tile.path.exists()


def test_archive_fetcher_offline(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    fetcher = GaiaArchiveFetcher(url=f"http://127.0.0.1:{port}/", timeout=5)
    tile = _tile(tmp_path)
    with pytest.raises(CatalogOfflineError, match=f"failed for tile 28729.*Connection.*{tile.path}"):
        get_tile(tile, fetcher)
    assert not tile.path.exists() and not list(tile.path.parent.glob(".*tmp*"))


def test_archive_fetcher_timeout(tmp_path, tap_server):
    server, handler = tap_server
    handler.mode = "slow"
    fetcher = GaiaArchiveFetcher(url=f"http://127.0.0.1:{server.server_port}/", timeout=0.5)
    t0 = time.perf_counter()
    with pytest.raises(CatalogOfflineError, match="timed out for tile 28729"):
        get_tile(_tile(tmp_path), fetcher)
    assert time.perf_counter() - t0 < 2.5


def test_hand_placed_tile_is_used(tmp_path):
    """The offline message says where to put a file: a plain FITS table there is used."""
    cfg = config(tmp_path, nside=64, margin=0.0)
    paths = Paths(cfg)
    cat = fake_catalog(n=2000, size=0.05)
    pix = tiles_for_footprint(FOOTPRINT, 64, 0.0)
    for p in pix:
        rows = cat[healpix_of(cat["ra"], cat["dec"], 64) == p]
        path = paths.excerpt_tile("gaia_dr3", int(tile_uniq(64, p)))
        path.parent.mkdir(parents=True, exist_ok=True)
        rows.write(path, format="fits")
    offline = GaiaArchiveFetcher(url="http://127.0.0.1:9/", timeout=1)
    ex = get_excerpt(paths, cfg, FOOTPRINT, offline)
    expected = footprint_mask(cat["ra"], cat["dec"], FOOTPRINT) & (cat["phot_g_mean_mag"] < 21)
    assert sorted(ex["source_id"]) == sorted(cat["source_id"][expected])
