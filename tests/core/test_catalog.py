"""Catalog: reading FITS/CSV/parquet, column mapping, proper motions, RA bins, WD download."""

from __future__ import annotations

import functools
import gzip
import http.server
import socket
import threading

import astropy.units as u
import h5py
import numpy as np
import pandas as pd
import pytest
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.table import Table
from astropy.time import Time

from vo import config as vconfig
from vo.catalog import (CATALOG_DIR, Catalog, CatalogDownloadError, make_demo_catalog,
                        propagate_positions, read_targets, split_by_ra_bin, write_targets)
from vo.config import ConfigError


@pytest.fixture(autouse=True)
def _data_root(tmp_path, monkeypatch):
    """Nothing a test writes lands in the repository's default data root."""
    monkeypatch.setenv("VO_DATA", str(tmp_path / "vo_data"))


def sample_table(n=20, seed=1) -> pd.DataFrame:
    """A small catalog with non-standard column names (truth for the mapping tests)."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "SrcName": [f"star{i:02d}" for i in range(n)],
        "RAdeg": rng.uniform(0, 360, n), "DEdeg": rng.uniform(-60, 60, n),
        "Gmag": rng.uniform(12, 20, n), "e_Gmag": rng.uniform(0.001, 0.01, n),
        "pmRA": rng.normal(0, 100, n), "pmDE": rng.normal(0, 100, n), "Plx": rng.uniform(1, 50, n),
    })


MAPPING = {"name": "SrcName", "ra": "RAdeg", "dec": "DEdeg", "mag": "Gmag", "magerr": "e_Gmag",
           "pmra": "pmRA", "pmdec": "pmDE", "parallax": "Plx", "filter": "G"}


def write_as(df: pd.DataFrame, path) -> None:
    if str(path).endswith(".csv"):
        df.to_csv(path, index=False)
    elif str(path).endswith(".parquet"):
        df.to_parquet(path)
    else:
        Table.from_pandas(df).write(path)


@pytest.mark.parametrize("ext", ["csv", "parquet", "fits", "fits.gz"])
def test_read_formats_with_column_mapping(tmp_path, ext):
    truth = sample_table()
    path = tmp_path / f"cat.{ext}"
    write_as(truth, path)
    cat = Catalog(default=None, filename=str(path), columns=MAPPING, obs_epoch=None,
                  data_root=tmp_path / "data").load()
    df = cat.data
    assert list(df["name"]) == list(truth["SrcName"])
    np.testing.assert_allclose(df["ra"], truth["RAdeg"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(df["mag"], truth["Gmag"])
    np.testing.assert_allclose(df["magerr"], truth["e_Gmag"])
    np.testing.assert_allclose(df["pmdec"], truth["pmDE"])
    np.testing.assert_allclose(df["parallax"], truth["Plx"])
    assert set(df["filter"]) == {"G"}
    assert (df["epoch"] == 2016.0).all()
    assert df["ra"].dtype == float and df["name"].map(type).eq(str).all()


def test_case_insensitive_standard_names_and_missing_optional(tmp_path):
    df = pd.DataFrame({"NAME": ["a", "b"], "RA": [10.5, 20.5], "Dec": [1.0, -2.0]})
    path = tmp_path / "plain.csv"
    df.to_csv(path, index=False)
    data = Catalog(default=None, filename=str(path)).load().data
    assert list(data["name"]) == ["a", "b"]
    for col in ("mag", "magerr", "pmra", "pmdec", "parallax"):
        assert data[col].isna().all()
    np.testing.assert_allclose(data["ra"], [10.5, 20.5])  # NaN proper motion: position kept


def test_missing_required_column_names_file_and_column(tmp_path):
    truth = sample_table().drop(columns=["DEdeg"])
    path = tmp_path / "nodec.fits"
    write_as(truth, path)
    mapping = {k: v for k, v in MAPPING.items() if k != "dec"}
    with pytest.raises(ConfigError) as err:
        Catalog(default=None, filename=str(path), columns=mapping, data_root=tmp_path).load()
    assert str(path) in str(err.value) and "'dec'" in str(err.value)


def test_explicitly_mapped_missing_column_is_an_error(tmp_path):
    path = tmp_path / "cat.csv"
    write_as(sample_table(), path)
    with pytest.raises(ConfigError) as err:
        Catalog(default=None, filename=str(path), columns={**MAPPING, "mag": "phot_r_mag"}).load()
    assert str(path) in str(err.value) and "phot_r_mag" in str(err.value)


def test_duplicate_names_rejected(tmp_path):
    path = tmp_path / "dup.csv"
    pd.DataFrame({"name": ["x", "x"], "ra": [1.0, 2.0], "dec": [0.0, 0.0]}).to_csv(path, index=False)
    with pytest.raises(ConfigError, match="duplicate"):
        Catalog(default=None, filename=str(path)).load()


@pytest.mark.parametrize("ra, dec, col, value", [(400.5, 10.0, "ra", 400.5), (-10.25, 10.0, "ra", -10.25),
                                                 (120.0, 95.0, "dec", 95.0), (120.0, -90.5, "dec", -90.5)])
def test_impossible_positions_are_refused_naming_file_row_and_value(tmp_path, ra, dec, col, value):
    path = tmp_path / "bad.csv"
    pd.DataFrame({"name": ["ok", "bad"], "ra": [10.0, ra], "dec": [0.0, dec]}).to_csv(path, index=False)
    with pytest.raises(ConfigError) as err:
        Catalog(default=None, filename=str(path)).load()
    assert str(path) in str(err.value) and "row 2" in str(err.value) and "'bad'" in str(err.value)
    assert f"{col} = {value!r}" in str(err.value)


def test_positions_on_the_limits_are_kept(tmp_path):
    path = tmp_path / "edges.csv"
    pd.DataFrame({"name": ["a", "b", "c"], "ra": [0.0, 360.0, 180.0], "dec": [-90.0, 90.0, 0.0]}).to_csv(
        path, index=False)
    assert len(Catalog(default=None, filename=str(path)).load().data) == 3


def test_proper_motion_against_astropy():
    ra = np.array([10.0, 123.4, 250.0, 300.0, 45.0, 359.9999])
    dec = np.array([0.0, 45.0, -60.0, 85.0, -89.5, 10.0])
    pmra = np.array([1000.0, -800.0, 3000.0, 5000.0, 2000.0, 1000.0])
    pmdec = np.array([0.0, 500.0, -2000.0, 100.0, 700.0, 0.0])
    start = SkyCoord(ra=ra * u.deg, dec=dec * u.deg, pm_ra_cosdec=pmra * u.mas / u.yr,
                     pm_dec=pmdec * u.mas / u.yr, obstime=Time(2016.0, format="jyear"))
    with pytest.warns(Warning):  # erfa: no distance given, a large one is assumed
        moved = start.apply_space_motion(new_obstime=Time(2020.0, format="jyear"))
    new_ra, new_dec = propagate_positions(ra, dec, pmra, pmdec, 2016.0, 2020.0)
    ours = SkyCoord(new_ra * u.deg, new_dec * u.deg)
    assert np.all(ours.separation(moved).to_value(u.mas) < 1.0)
    # 1000 mas/yr for 4 years is 4 arcsec
    assert start[0].separation(ours[0]).to_value(u.arcsec) == pytest.approx(4.0, abs=1e-6)
    assert 0 <= new_ra[-1] < 360


def test_catalog_propagates_and_keeps_catalog_positions(tmp_path):
    path = tmp_path / "pm.csv"
    pd.DataFrame({"name": ["fast", "still"], "ra": [100.0, 200.0], "dec": [20.0, -20.0],
                  "pmra": [0.0, np.nan], "pmdec": [1000.0, np.nan],
                  "epoch": [2015.5, 2016.0]}).to_csv(path, index=False)
    data = Catalog(default=None, filename=str(path), obs_epoch=2020.0).load().data
    np.testing.assert_allclose(data["ra_cat"], [100.0, 200.0])
    assert (data["dec"][0] - 20.0) * 3600 == pytest.approx(4.5, abs=1e-6)  # epoch column used
    assert data["dec"][1] == -20.0 and data["ra"][1] == 200.0


def test_mag_limit_and_max_targets(tmp_path):
    truth = sample_table(50)
    path = tmp_path / "c.parquet"
    write_as(truth, path)
    cat = Catalog(default=None, filename=str(path), columns=MAPPING, mag_limit=17.0, max_targets=5).load()
    expected = truth.loc[truth["Gmag"] <= 17.0, "SrcName"].iloc[:5]
    assert list(cat.data["name"]) == list(expected)


def test_demo_catalog_is_shipped_and_reproducible():
    shipped = pd.read_csv(CATALOG_DIR / "demo.csv")
    made = make_demo_catalog()
    assert list(shipped.columns) == list(made.columns)
    assert list(shipped["name"]) == list(made["name"])
    pd.testing.assert_frame_equal(shipped.drop(columns="name"), made.drop(columns="name"), check_exact=False)
    cat = Catalog("demo").load()
    assert len(cat.data) == 300
    bins = cat.ra_bins()
    assert len(bins) == 12 and bins == sorted(bins)
    sizes = [len(cat.targets_in_bin(b)) for b in bins]
    assert sum(sizes) == 300 and min(sizes) >= 10
    assert cat.data["mag"].between(12, 20).all()
    assert np.ptp(cat.data["dec"]) > 30  # fields at a range of declinations
    row = cat.get_row(0)
    assert isinstance(row["ra"], float) and row["name"].startswith("DEMO_J") and row["filter"] == "G"


def test_split_by_ra_bin_and_targets_roundtrip(tmp_path):
    df = pd.DataFrame({"name": ["a", "b", "c", "d"], "ra": [359.99, 0.2, 123.7, 123.1],
                       "dec": [0.0, 1.0, 2.0, 3.0], "mag": [15.0, 16.0, np.nan, 18.0]})
    parts = split_by_ra_bin(df)
    assert sorted(parts) == [0, 123, 359]
    assert list(parts[123]["name"]) == ["c", "d"]
    path = tmp_path / "t" / "targets_RA123.h5"
    write_targets(path, parts[123], {"step": "targets", "parameters": {"a": 1}})
    back, attrs = read_targets(path)
    pd.testing.assert_frame_equal(back, parts[123], check_dtype=False)
    assert attrs["parameters"] == {"a": 1}
    with h5py.File(path) as f:  # plain h5py reads it
        assert list(f["targets/name"].asstr()[...]) == ["c", "d"]
    assert [p.name for p in path.parent.iterdir()] == ["targets_RA123.h5"]  # no temp file


def test_fits_columns_are_cached(tmp_path):
    path = tmp_path / "cat.fits"
    write_as(sample_table(), path)
    root = tmp_path / "data"
    first = Catalog(default=None, filename=str(path), columns=MAPPING, data_root=root).load().data
    assert len(list((root / "catalogs").glob(".cat.fits.*.parquet"))) == 1
    cached = Catalog(default=None, filename=str(path), columns=MAPPING, data_root=root).load().data
    pd.testing.assert_frame_equal(first, cached)
    write_as(sample_table(seed=2), path.with_name("new.fits"))
    path.with_name("new.fits").replace(path)  # a new file under the same name is read again
    fresh = Catalog(default=None, filename=str(path), columns=MAPPING, data_root=root).load().data
    np.testing.assert_allclose(fresh["mag"], sample_table(seed=2)["Gmag"])


def test_from_config():
    cfg = vconfig.load_config(overrides={"catalog": {"max_targets": 7, "obs_epoch": None}})
    cat = Catalog.from_config(cfg).load()
    assert len(cat.data) == 7
    np.testing.assert_array_equal(cat.data["ra"], cat.data["ra_cat"])


# -- WD download against a real local HTTP server ------------------------------------------
def tiny_wd_fits(path) -> pd.DataFrame:
    """A FITS catalog with the Gentile Fusillo et al. 2021 column names (mixed case)."""
    df = pd.DataFrame({"WDJ_name": ["WDJ000001.00+000001.00", "WDJ123456.78-123456.7"],
                       "source_id": [1, 2], "RA": [0.0042, 188.7366], "Dec": [0.0003, -12.582],
                       "phot_g_mean_mag": [18.1, 16.2], "PMRA": [10.0, -300.0], "pmdec": [5.0, 200.0],
                       "parallax": [4.0, 25.0], "Pwd": [0.99, 0.95]})
    hdul = fits.HDUList([fits.PrimaryHDU(), fits.table_to_hdu(Table.from_pandas(df))])
    with gzip.open(path, "wb") as f:
        hdul.writeto(f)
    return df


@pytest.fixture
def http_server(tmp_path):
    served = tmp_path / "www"
    served.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_wd_download_from_local_server(tmp_path, http_server):
    served, base = http_server
    truth = tiny_wd_fits(served / "gaiaedr3_wd_main.fits.gz")
    root = tmp_path / "data"
    url = f"{base}/gaiaedr3_wd_main.fits.gz"
    cat = Catalog(default="WD", url=url, data_root=root, obs_epoch=None).load()
    target = root / "catalogs" / "gaiaedr3_wd_main.fits.gz"
    assert target.exists()
    assert target.read_bytes() == (served / "gaiaedr3_wd_main.fits.gz").read_bytes()
    assert list(cat.data["name"]) == list(truth["WDJ_name"])
    np.testing.assert_allclose(cat.data["pmra"], truth["PMRA"])
    np.testing.assert_allclose(cat.data["mag"], truth["phot_g_mean_mag"])
    assert cat.ra_bins() == [0, 188]
    # once downloaded the file is used without the server
    (served / "gaiaedr3_wd_main.fits.gz").unlink()
    again = Catalog(default="WD", url=url, data_root=root).load()
    assert len(again.data) == 2


def test_wd_missing_on_server_leaves_no_file(tmp_path, http_server):
    _, base = http_server
    root = tmp_path / "data"
    with pytest.raises(CatalogDownloadError, match="404"):
        Catalog(default="WD", url=f"{base}/nothing.fits.gz", data_root=root).load()
    assert not [p for p in root.rglob("*") if p.is_file()]


def test_wd_offline_error_names_url_and_path(tmp_path):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    url = f"http://127.0.0.1:{port}/gaiaedr3_wd_main.fits.gz"
    root = tmp_path / "data"
    with pytest.raises(RuntimeError) as err:
        Catalog(default="WD", url=url, data_root=root).load()
    msg = str(err.value)
    assert url in msg and str(root / "catalogs" / "gaiaedr3_wd_main.fits.gz") in msg
    assert not (root / "catalogs" / "gaiaedr3_wd_main.fits.gz").exists()


def test_unknown_default_and_format(tmp_path):
    with pytest.raises(ConfigError, match="unknown built-in"):
        Catalog(default="nope")
    path = tmp_path / "cat.txt"
    path.write_text("x")
    with pytest.raises(ConfigError, match="unknown catalog format"):
        Catalog(default=None, filename=str(path)).load()


def test_builtin_names_in_any_case_and_the_wd_probability_cut(tmp_path):
    """``default: wd`` is the WD catalog; its targets with Pwd < 0.75 (or none) are dropped."""
    root = tmp_path / "vo_data"  # VO_DATA (the autouse fixture): the config's data root
    (root / "catalogs").mkdir(parents=True)
    path = root / "catalogs" / "gaiaedr3_wd_main.fits.gz"
    df = pd.DataFrame({"WDJ_name": [f"WDJ{i:02d}" for i in range(6)], "RA": np.arange(6) * 10.0, "Dec": 0.0,
                       "phot_g_mean_mag": 18.0, "pmra": 0.0, "pmdec": 0.0, "parallax": 5.0,
                       "Pwd": [0.99, 0.75, 0.7499, 0.1, np.nan, 0.8]})
    fits.HDUList([fits.PrimaryHDU(), fits.table_to_hdu(Table.from_pandas(df))]).writeto(path)
    for name in ("wd", "Wd", " WD "):
        cat = Catalog(default=name, data_root=root).load()
        assert cat.default == "WD" and list(cat.data["name"]) == ["WDJ00", "WDJ01", "WDJ05"]
    assert len(Catalog(default="wd", data_root=root, min_probability=None).load().data) == 6
    assert list(Catalog(default="wd", data_root=root, min_probability=0.05).load().data["name"]) == \
        ["WDJ00", "WDJ01", "WDJ02", "WDJ03", "WDJ05"]
    with pytest.raises(ConfigError, match="unknown built-in catalog 'gaia'.*any case"):
        Catalog(default="gaia")
    # the config accepts any case and the Project keyword argument of virtualobserver's README
    cfg = vconfig.load_config(None, {"catalog": {"default": "wd", "min_probability": 0.9}})
    assert list(Catalog.from_config(cfg).load().data["name"]) == ["WDJ00"]
    with pytest.raises(ConfigError, match="catalog.default"):
        vconfig.load_config(None, {"catalog": {"default": "wdx"}})
    # a user's catalog with a probability column mapped by name
    user = tmp_path / "mine.csv"
    pd.DataFrame({"name": ["a", "b"], "ra": [1.0, 2.0], "dec": [0.0, 0.0], "P_member": [0.2, 0.9]}).to_csv(user, index=False)
    got = Catalog(default=None, filename=str(user), columns={"probability": "P_member"}, min_probability=0.5).load()
    assert list(got.data["name"]) == ["b"]
