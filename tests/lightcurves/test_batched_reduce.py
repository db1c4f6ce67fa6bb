"""Batched reduction (many sources in one call) gives exactly the per-source results.

Also: light curves backed by shared numpy columns, the analysis of such blocks, HDF5 column
reading/writing without DataFrames, the batched JSON of simulated-event parameters, and
``VirtualObservatory.reduce_store`` reading a real raw store.
"""

import json

import h5py
import numpy as np
import pandas as pd
import pytest

from vo import config as vconfig
from vo.io import hdf5 as vh5
from vo.lightcurves import analysis as van
from vo.lightcurves import reduce as vreduce
from vo.lightcurves import segments as vseg
from vo.lightcurves import simulator as vsim
from vo.lightcurves.datasets import Lightcurve, read_lightcurves, write_lightcurves
from vo.lightcurves.rawstore import RawStore

CFG = vconfig.load_config(overrides={"simulator": {"enabled": True, "injections_per_lightcurve": 2}})
PARS = CFG["DEMO"]["reducer"]


def source_table(rng, k: int, n: int | None = None) -> tuple[pd.DataFrame, dict]:
    """Raw standard rows of one source in random time order: 3 filters, 3 seasons, flagged
    rows, outliers, a neighbour 2 arcsec away with another oid, some NaN magnitudes."""
    ra, dec, mag = rng.uniform(10, 11), rng.uniform(-20, 40), rng.uniform(15, 19.5)
    n = rng.integers(60, 400) if n is None else n
    season = rng.integers(0, 3, n)
    mjd = 58000.0 + 365.0 * season + rng.uniform(0, 150, n)
    filt = np.array(["r", "g", "i"], dtype=object)[rng.integers(0, 3, n)]
    err = np.full(n, 0.02) * 10 ** (0.2 * (mag - 15))
    obs = mag + err * rng.standard_normal(n)
    obs[rng.random(n) < 0.01] += 1.5
    obs[rng.random(n) < 0.01] = np.nan
    oid = np.full(n, 100 + k, dtype=np.int64)
    neighbour = rng.random(n) < 0.1
    oid[neighbour] += 10_000
    obs[neighbour] += 1.0
    ra_rows = ra + rng.normal(0, 0.2 / 3600, n) + neighbour * 2.0 / 3600 / np.cos(np.radians(dec))
    df = pd.DataFrame({"mjd": mjd, "mag": obs, "magerr": err, "filter": filt,
                       "flag": (rng.random(n) < 0.05).astype(np.int64), "ra": ra_rows,
                       "dec": dec + rng.normal(0, 0.2 / 3600, n), "exptime": 30.0, "oid": oid})
    return df, {"name": f"SRC {k}", "ra": ra, "dec": dec, "mag": mag}


def make_sources(seed: int = 3, n: int = 40):
    rng = np.random.default_rng(seed)
    sources = [source_table(rng, k) for k in range(n)]
    # edge cases: no rows, too few rows, ties in time, a target without position or magnitude
    sources[1] = (sources[1][0].iloc[:0], sources[1][1])
    sources[2] = (sources[2][0].iloc[:4], sources[2][1])
    tied = sources[3][0].copy()
    tied.loc[tied.index[:30], "mjd"] = tied["mjd"].iloc[0]
    sources[3] = (tied, sources[3][1])
    sources[4] = (sources[4][0], {**sources[4][1], "ra": None, "dec": None})
    sources[5] = (sources[5][0], {**sources[5][1], "mag": np.nan})
    return sources


def assert_same_attrs(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key, value in a.items():
        assert value == b[key] or (value != value and b[key] != b[key]), key  # NaN == NaN


def assert_same_lightcurves(a: list, b: list) -> None:
    assert [lc.filekey for lc in a] == [lc.filekey for lc in b]
    for x, y in zip(a, b):
        assert_same_attrs(x.attrs, y.attrs)
        cx = x.column_arrays(vreduce.LIGHTCURVE_COLUMNS)
        cy = y.column_arrays(vreduce.LIGHTCURVE_COLUMNS)
        for c in vreduce.LIGHTCURVE_COLUMNS:
            assert cx[c].dtype == cy[c].dtype, c
            np.testing.assert_array_equal(cx[c], cy[c], err_msg=f"{x.filekey} {c}")


def test_batched_equals_source_by_source():
    sources = make_sources()
    one_by_one = [lc for std, row in sources for lc in vreduce.make_lightcurves(std, row, PARS, "DEMO")]
    std, starts = vreduce.concat_sources([s for s, _ in sources])
    batched = vreduce.make_lightcurves_many(std, starts, [r for _, r in sources], PARS, "DEMO")
    assert len(batched) > 100
    assert_same_lightcurves(one_by_one, batched)
    # the edge cases did what they should
    names = {lc.attrs["source_name"] for lc in batched}
    assert "SRC 1" not in names and "SRC 2" not in names
    assert {"SRC 3", "SRC 4", "SRC 5"} <= names
    # the reduction really selected: no neighbour rows (but for the targets without a
    # position or a magnitude), no NaN, no flagged row
    for lc in batched:
        d = lc.column_arrays(["oid", "mag", "flag", "mjd", "filter"])
        assert lc.attrs["source_name"] in ("SRC 4", "SRC 5") or (d["oid"] < 10_000).all()
        assert np.isfinite(d["mag"]).all() and (d["flag"] == 0).all()
        assert np.all(np.diff(d["mjd"]) >= 0) and (d["filter"] == lc.attrs["filter"]).all()
    # numbering per source: 1..total, seasons then sorted filters
    by_source = {}
    for lc in batched:
        by_source.setdefault(lc.attrs["source_name"], []).append(lc)
    for lcs in by_source.values():
        assert [lc.attrs["reduction_number"] for lc in lcs] == list(range(1, len(lcs) + 1))
        assert {lc.attrs["reduction_total"] for lc in lcs} == {len(lcs)}
        order = [(lc.attrs["season"], lc.attrs["filter"]) for lc in lcs]
        assert order == sorted(order)


def test_batched_results_do_not_depend_on_the_other_sources():
    sources = make_sources(seed=8, n=30)
    rows = [r for _, r in sources]
    std, starts = vreduce.concat_sources([s for s, _ in sources])
    full = vreduce.make_lightcurves_many(std, starts, rows, PARS, "DEMO")
    pick = [0, 7, 11, 29]
    std2, starts2 = vreduce.concat_sources([sources[i][0] for i in pick])
    part = vreduce.make_lightcurves_many(std2, starts2, [rows[i] for i in pick], PARS, "DEMO")
    wanted = {rows[i]["name"] for i in pick}
    assert_same_lightcurves([lc for lc in full if lc.attrs["source_name"] in wanted], part)


def test_batched_reduction_matches_a_plain_reference():
    """Selection, splitting and statistics against straightforward per-source pandas/numpy."""
    sources = make_sources(seed=5, n=12)
    std, starts = vreduce.concat_sources([s for s, _ in sources])
    lcs = vreduce.make_lightcurves_many(std, starts, [r for _, r in sources], PARS, "DEMO")
    for df, row in sources[6:]:
        df = df[np.isfinite(df["mag"]) & (df["flag"] == 0)]
        dra = (df["ra"] - row["ra"]) * np.cos(np.radians(row["dec"]))
        df = df[3600 * np.hypot(dra, df["dec"] - row["dec"]) <= PARS["radius"]]
        med = df.groupby("oid")["mag"].transform("median")
        df = df[np.abs(med - row["mag"]) <= PARS["mag_range"]].sort_values("mjd", kind="stable")
        season = np.concatenate([[0], np.cumsum(np.diff(df["mjd"]) > PARS["gap"])])
        mine = [lc for lc in lcs if lc.attrs["source_name"] == row["name"]]
        expected = [(s, f) for s in np.unique(season) for f in sorted(set(df["filter"][season == s]))
                    if ((season == s) & (df["filter"] == f)).sum() >= PARS["min_epochs"]]
        assert [(lc.attrs["season"], lc.attrs["filter"]) for lc in mine] == expected
        for lc in mine:
            part = df[(season == lc.attrs["season"]) & (df["filter"] == lc.attrs["filter"])]
            np.testing.assert_array_equal(lc.column_arrays(["mjd"])["mjd"], part["mjd"].to_numpy())
            flux = 10 ** (-0.4 * (part["mag"].to_numpy() - 23.9))
            mean, _, _ = vseg.sigma_clipped_stats(flux, PARS["sigma_clip"])
            assert lc.attrs["flux_mean"] == pytest.approx(mean, rel=1e-12)


def test_bad_batched_input_is_named():
    sources = make_sources(n=8)
    std, starts = vreduce.concat_sources([s for s, _ in sources])
    rows = [r for _, r in sources]
    with pytest.raises(ValueError, match="starts"):
        vreduce.make_lightcurves_many(std, starts[::-1], rows, PARS, "DEMO")
    with pytest.raises(ValueError, match="starts"):
        vreduce.make_lightcurves_many(std, starts[:-1], rows, PARS, "DEMO")
    with pytest.raises(KeyError, match="oid"):
        vreduce.concat_sources([sources[0][0], sources[3][0].drop(columns=["oid"])])
    std = dict(std)
    std["filter"] = std["filter"].copy()
    std["filter"][starts[3]] = None
    with pytest.raises(ValueError, match="SRC 3.*without a filter"):
        vreduce.make_lightcurves_many(std, starts, rows, PARS, "DEMO")


def test_block_lightcurves_share_columns_until_data_is_used():
    sources = make_sources(n=8)
    std, starts = vreduce.concat_sources([s for s, _ in sources])
    lcs = vreduce.make_lightcurves_many(std, starts, [r for _, r in sources], PARS, "DEMO")
    a, b = lcs[0], lcs[1]
    cols_a, start_a, stop_a = a.block()
    assert cols_a is b.block()[0] and stop_a == b.block()[1] and len(a) == stop_a - start_a
    flux = a.column_arrays(["flux"])["flux"]
    assert np.shares_memory(flux, cols_a["flux"])
    df = a.data  # builds the DataFrame, a copy: the light curve leaves the block
    assert list(df.columns) == vreduce.LIGHTCURVE_COLUMNS and len(df) == len(flux)
    assert a.block() is None and not np.shares_memory(df["flux"].to_numpy(), cols_a["flux"])
    a.data["flux"] = 0.0
    assert (a.column_arrays(["flux"])["flux"] == 0).all() and (flux != 0).all()  # b's block untouched
    assert repr(b).endswith(f"{len(b)} epochs)")
    with pytest.raises(ValueError, match="data or columns"):
        Lightcurve(data=df, columns={"mjd": np.zeros(1)})


def test_analysis_of_a_block_equals_analysis_of_copies():
    sources = make_sources(seed=11, n=25)
    std, starts = vreduce.concat_sources([s for s, _ in sources])
    lcs = vreduce.make_lightcurves_many(std, starts, [r for _, r in sources], PARS, "DEMO")
    assert van._shared_block(lcs) is not None
    copies = [Lightcurve(data=lc.data.copy(), attrs=dict(lc.attrs)) for lc in
              vreduce.make_lightcurves_many(std, starts, [r for _, r in sources], PARS, "DEMO")]
    assert van._shared_block(copies) is None
    res_block = van.analyse_lightcurves(lcs, CFG, "DEMO")
    res_copy = van.analyse_lightcurves(copies, CFG, "DEMO")
    for name in van.TABLES:
        pd.testing.assert_frame_equal(getattr(res_block, name), getattr(res_copy, name), check_exact=True)
    assert res_block.histograms.identical(res_copy.histograms)
    assert len(res_block.injections) == 2 * len(lcs)
    # a subset in another order is not a block and is still analysed correctly
    subset = lcs[5:0:-1]
    assert van._shared_block(subset) is None
    res_sub = van.analyse_lightcurves(subset, CFG, "DEMO")
    assert res_sub.summary["filekey"].tolist() == [lc.filekey for lc in subset]


def test_sim_params_json_many_equals_json_dumps():
    rng = np.random.default_rng(2)
    n = 200
    table = pd.DataFrame({
        "sim_type": np.array(vsim.SIM_TYPES, dtype=object)[rng.integers(0, 3, n)],
        "injection": rng.integers(0, 4, n), "amplitude": rng.lognormal(0, 3, n),
        "duration": rng.uniform(0, 1e4, n), "peak_time": 58000 + rng.random(n),
        "window_start": rng.normal(0, 1e-7, n), "window_end": rng.normal(0, 1e8, n),
        "injected_snr": rng.normal(0, 10, n)})
    table.loc[3, "injected_snr"] = np.nan
    table.loc[4, "amplitude"] = np.inf
    table.loc[5, "window_end"] = -0.0
    many = vsim.sim_params_json_many(table)
    assert many == [vsim.sim_params_json(r) for r in table.to_dict("records")]
    assert json.loads(many[0])["sim_type"] == table["sim_type"][0]
    assert vsim.sim_params_json_many(table.iloc[:0]) == []


def test_hdf5_columns_round_trip(tmp_path):
    path = tmp_path / "t.h5"
    cols = {"mjd": np.arange(4.0), "filter": np.array(["g", "r", "g", "i"], dtype=object),
            "ok": np.array([True, False, True, True]), "n": np.arange(4, dtype=np.int64),
            "band": np.array(["u", "v", "w", "x"])}
    with h5py.File(path, "w") as f:
        vh5.write_table(f, "a", cols, attrs={"x": 1})
        vh5.write_table(f, "b", pd.DataFrame(cols))
        with pytest.raises(ValueError, match="'n' has 3 rows"):
            vh5.write_table(f, "c", {"mjd": np.arange(4.0), "n": np.arange(3)})
    with h5py.File(path, "r") as f:
        back, attrs = vh5.read_columns(f["a"])
        assert list(back) == list(cols) and attrs == {"x": 1}
        for c in cols:
            np.testing.assert_array_equal(back[c], cols[c])
        assert back["filter"].dtype == object and back["band"].dtype == object
        df, _ = vh5.read_table(f["b"])
        pd.testing.assert_frame_equal(df, pd.DataFrame(back), check_dtype=False)


def test_write_and_read_block_lightcurves(tmp_path):
    sources = make_sources(n=8)
    std, starts = vreduce.concat_sources([s for s, _ in sources])
    lcs = vreduce.make_lightcurves_many(std, starts, [r for _, r in sources], PARS, "DEMO")
    path = tmp_path / "reduced.h5"
    write_lightcurves(path, lcs, {"step": "reduce"})
    back = read_lightcurves(path)
    by_key = {lc.filekey: lc for lc in back}
    assert len(back) == len(lcs)
    for lc in lcs:
        other = by_key[lc.filekey]
        assert_same_attrs(other.attrs, lc.attrs)
        assert other.get_fullname() == path
        assert list(other.data.columns) == vreduce.LIGHTCURVE_COLUMNS
        pd.testing.assert_frame_equal(other.data, lc.data, check_dtype=False)
    # a loaded light curve analyses like the original
    res_a = van.analyse_lightcurves(lcs, CFG, "DEMO").summary.set_index("filekey").sort_index()
    res_b = van.analyse_lightcurves(back, CFG, "DEMO").summary.set_index("filekey").sort_index()
    pd.testing.assert_frame_equal(res_a, res_b, check_exact=True)


def test_reduce_store_equals_reduce_source(tmp_path):
    from vo.lightcurves.observatories import get_observatory

    sources = make_sources(seed=13, n=15)
    store = tmp_path / "DEMO_photometry_RA010.h5"
    obs = get_observatory("DEMO", CFG)
    attrs = {"obs": "DEMO", "download_params": obs.download_params()}  # what a download records
    RawStore(store).write_many({vreduce_key(r): (df, {"cat_row": r, **attrs}) for df, r in sources})
    targets = pd.DataFrame([r for _, r in sources] + [{"name": "MISSING", "ra": 10.0, "dec": 0.0, "mag": 17.0}])
    with pytest.warns(UserWarning, match="1 targets have no raw photometry.*MISSING"):
        from_store = obs.reduce_store(store, targets)
    one_by_one = [lc for df, r in sources for lc in obs.reduce_source(df, r)]
    assert_same_lightcurves(one_by_one, from_store)
    # mixed column sets are standardised source by source, with the same result
    mixed = [df.assign(extra=1.0) if i % 2 else df for i, (df, _) in enumerate(sources)]
    assert_same_lightcurves(one_by_one, obs.reduce_many(mixed, [r for _, r in sources]))
    assert obs.reduce_many([], []) == []


def vreduce_key(row: dict) -> str:
    from vo.lightcurves.keys import sanitize_key
    return sanitize_key(row["name"])
