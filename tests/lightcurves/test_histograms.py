"""Tests of vo.lightcurves.histograms: all vs good epochs, additivity, netCDF files."""

import os

import netCDF4
import numpy as np
import pandas as pd
import pytest
import xarray as xr

from vo import config as vconfig
from vo.lightcurves import histograms as vhist
from vo.lightcurves.analysis import analyse_lightcurves
from vo.lightcurves.reduce import make_lightcurves

CFG = vconfig.complete({"DEMO": {"reducer": {"drop_flagged": False}},
                        "simulator": {"injections_per_lightcurve": 1}})


def make_lcs(rng, n_src, filters):
    """Light curves keeping flagged epochs; each source has some far and some flagged epochs.

    Returns the light curves and the truth: number of flagged epochs and of epochs placed
    2 arcsec from the target (beyond analysis.max_offset but inside the reduction radius).
    """
    lcs, n_flag, n_far = [], 0, 0
    for k in range(n_src):
        m = 300
        mjd = 59000 + np.sort(rng.uniform(0, 150, m))
        flag = (rng.random(m) < 0.05).astype(int)
        far = rng.random(m) < 0.03
        mag0 = rng.uniform(14, 20)
        dec = 20 + rng.normal(0, 0.1 / 3600, m) + np.where(far, 2.0 / 3600, 0.0)
        raw = pd.DataFrame({"mjd": mjd, "mag": mag0 + 0.02 * rng.standard_normal(m), "magerr": 0.02,
                            "filter": rng.choice(filters, m), "flag": flag, "ra": 30.0, "dec": dec,
                            "exptime": rng.choice([30.0, 60.0], m), "oid": 1})
        new = make_lightcurves(raw, {"name": f"H{k}", "ra": 30.0, "dec": 20.0, "mag": mag0},
                               CFG["DEMO"]["reducer"], "DEMO")
        lcs += new
        n_flag += int(flag.sum())
        n_far += int(far.sum())
    return lcs, n_flag, n_far


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(11)
    lcs_a, fa, ra = make_lcs(rng, 8, ["g", "r"])
    lcs_b, fb, rb = make_lcs(rng, 6, ["i", "r"])
    return lcs_a, lcs_b, fa + fb, ra + rb


def test_all_and_good_really_differ(data):
    lcs_a, lcs_b, n_flag, n_far = data
    res = analyse_lightcurves(lcs_a + lcs_b, CFG, "DEMO")
    h = res.histograms
    n_epochs = sum(len(lc) for lc in lcs_a + lcs_b)
    n_good = int(res.summary["n_good"].sum())
    assert n_epochs == int(res.summary["n_epochs"].sum())
    for axis in ("snr", "dmag", "offset"):
        assert int(h[f"all_{axis}"].sum()) == n_epochs
        assert int(h[f"good_{axis}"].sum()) == n_good
    assert n_epochs - n_good >= n_flag  # flags and far epochs (and a few offset outliers)
    assert n_epochs - n_good <= n_flag + n_far + 0.01 * n_epochs
    # epochs 2 arcsec away land in the [1.5, 3) offset bins for all, never for good
    far_bins = [1.75, 2.5]
    assert int(h["all_offset"].sel(offset=far_bins).sum()) == n_far
    assert int(h["good_offset"].sel(offset=far_bins).sum()) == 0
    assert list(h["filter"].values) == ["g", "i", "r"]
    assert int(h["lightcurves"].sum()) == len(lcs_a + lcs_b)
    assert int(h["all_snr"].sel(exptime=[23.0, 46.0]).sum()) == n_epochs  # 30 s and 60 s bins


def test_histograms_are_additive(data, tmp_path):
    lcs_a, lcs_b, _, _ = data
    h_all = analyse_lightcurves(lcs_a + lcs_b, CFG, "DEMO").histograms
    h_a = analyse_lightcurves(lcs_a, CFG, "DEMO").histograms
    h_b = analyse_lightcurves(lcs_b, CFG, "DEMO").histograms
    assert list(h_a["filter"].values) == ["g", "r"] and list(h_b["filter"].values) == ["i", "r"]
    total = vhist.add(h_a, h_b)
    assert set(total.data_vars) == set(h_all.data_vars)
    for name in h_all.data_vars:
        assert total[name].dtype == np.int64
        xr.testing.assert_identical(total[name].transpose(*h_all[name].dims), h_all[name])
    assert int(total["sim_injected"].sum()) == len(lcs_a + lcs_b)

    paths = [tmp_path / "RA001.nc", tmp_path / "RA002.nc"]
    vhist.write_netcdf(h_a.assign_attrs(step="analysis", provenance={"hash": "abc"}), paths[0])
    vhist.write_netcdf(h_b, paths[1])
    assert sorted(os.listdir(tmp_path)) == ["RA001.nc", "RA002.nc"]  # no temporary files left
    combined = vhist.combine(paths)
    for name in h_all.data_vars:
        np.testing.assert_array_equal(combined[name].transpose(*h_all[name].dims).values, h_all[name].values)
    assert combined.attrs["provenance"] == {"hash": "abc"}
    eff = vhist.efficiency_table(combined)
    assert eff["n_injected"].sum() == len(lcs_a + lcs_b)
    assert list(eff.columns[-2:]) == ["efficiency", "efficiency_error"]
    by_type = eff.groupby("sim_type")["n_injected"].sum()
    for t in by_type.index:
        assert by_type[t] == int(combined["sim_injected"].sel(sim_type=t).sum())

    with netCDF4.Dataset(paths[0]) as nc:  # readable by plain netCDF4
        assert nc.variables["good_snr"].dimensions == ("snr", "mag", "exptime", "filter")
        np.testing.assert_array_equal(nc.variables["good_snr"][:], h_a["good_snr"].values)
        np.testing.assert_array_equal(nc.variables["offset"][:], h_a["offset"].values)
        np.testing.assert_array_equal(nc.getncattr("snr_edges"), CFG["histograms"]["snr_bins"])
        assert list(nc.variables["filter"][:]) == ["g", "r"]


def test_incompatible_and_missing_files(data, tmp_path):
    lcs_a, _, _, _ = data
    h = analyse_lightcurves(lcs_a[:3], CFG, "DEMO").histograms
    other_cfg = vconfig.complete({"histograms": {"snr_bins": [-5, 0, 5]}})
    h2 = analyse_lightcurves(lcs_a[:3], other_cfg, "DEMO").histograms
    with pytest.raises(ValueError, match="snr"):
        vhist.add(h, h2)
    vhist.write_netcdf(h, tmp_path / "a.nc")
    vhist.write_netcdf(h2, tmp_path / "b.nc")
    with pytest.raises(ValueError, match="b.nc"):
        vhist.combine([tmp_path / "a.nc", tmp_path / "b.nc"])
    with pytest.raises(FileNotFoundError, match="c.nc"):
        vhist.combine([tmp_path / "c.nc"])
    with pytest.raises(ValueError, match="no histogram files"):
        vhist.combine([])
    with pytest.raises(ValueError, match="mag_bins"):
        vhist.edges_from_config(dict(CFG["histograms"], mag_bins=[18, 17]))


def test_bin_index_edges():
    edges = np.array([0.0, 1.0, 2.0, 3.0])
    np.testing.assert_array_equal(vhist.bin_index([-5, 0, 0.5, 1.0, 2.99, 3.0, 100, np.nan], edges),
                                  [0, 0, 0, 1, 2, 2, 2, -1])
