"""Tests of vo.lightcurves.analysis: false positives, recovery, real events, the HDF5 file."""

import json
import os

import h5py
import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

from vo import config as vconfig
from vo.lightcurves import analysis as van
from vo.lightcurves import histograms as vhist
from vo.lightcurves.datasets import Lightcurve
from vo.lightcurves.reduce import make_lightcurves

BASE = vconfig.defaults()


def cfg(**sections):
    return vconfig.complete(sections)


def noise_lcs(rng, n_src, days=150, mag=16.0, err=0.02, bump=None):
    """Constant sources observed daily in two filters with exact Gaussian errors.

    ``bump=(day, dmag, n_days)`` brightens source 0, filter g, by ``dmag`` for ``n_days``.
    """
    lcs = []
    for k in range(n_src):
        mjd = np.concatenate([59000.0 + np.arange(days)] * 2)
        filt = np.repeat(["g", "r"], days)
        flux_true = np.full(mjd.size, 10 ** (-0.4 * (mag - 23.9)))
        if bump is not None and k == 0:
            day, dm, n = bump
            flux_true[day:day + n] *= 10 ** (-0.4 * dm)
        fluxerr = 10 ** (-0.4 * (mag - 23.9)) * err / 1.0857362047581294
        flux = flux_true + fluxerr * rng.standard_normal(mjd.size)
        magv = 23.9 - 2.5 * np.log10(flux)
        raw = pd.DataFrame({"mjd": mjd, "mag": magv, "magerr": 1.0857362047581294 * fluxerr / flux,
                            "filter": filt, "flag": 0, "ra": 100.0, "dec": -20.0, "exptime": 30.0,
                            "oid": 1})
        lcs += make_lightcurves(raw, {"name": f"N{k}", "ra": 100.0, "dec": -20.0, "mag": mag},
                                BASE["DEMO"]["reducer"], "DEMO")
    return lcs


def test_false_positive_rate_matches_gaussian_tails():
    lcs = noise_lcs(np.random.default_rng(1), 150)
    n_epochs = sum(len(lc) for lc in lcs)
    res5 = van.analyse_lightcurves(lcs, cfg(simulator={"enabled": False}), "DEMO")
    assert len(res5.detections) <= 2  # expected 2 * Phi(-5) * 45000 = 0.03
    assert res5.summary["chi2_dof"].median() == pytest.approx(1.0, abs=0.05)
    res3 = van.analyse_lightcurves(
        lcs, cfg(simulator={"enabled": False}, analysis={"snr_threshold": 3.0, "snr_sideband": 3.0}), "DEMO")
    expected = 2 * norm.sf(3.0) * n_epochs
    found = len(res3.detections)
    assert abs(found - expected) < 5 * np.sqrt(expected), (found, expected)
    assert (res3.detections["peak_snr"] > 0).sum() == pytest.approx(found / 2, abs=4 * np.sqrt(found))
    assert not res3.detections["simulated"].any()
    counts = res3.detections.groupby("filekey").size()
    summary = res3.summary.set_index("filekey")
    assert (summary.loc[counts.index, "n_detections"] == counts).all()
    assert summary["n_detections"].sum() == found


def test_large_injections_are_recovered():
    lcs = noise_lcs(np.random.default_rng(2), 40, mag=15.0, err=0.01)
    c = cfg(simulator={"min_amplitude": 0.3, "max_amplitude": 1.0, "min_duration": 3.0,
                       "max_duration": 10.0, "injections_per_lightcurve": 2})
    res = van.analyse_lightcurves(lcs, c, "DEMO")
    inj = res.injections
    assert len(inj) == 2 * len(lcs)
    strong = inj[inj["injected_snr"] > 20]
    assert len(strong) > 0.8 * len(inj) and strong["recovered"].mean() > 0.95
    sim = res.detections[res.detections["simulated"]]
    assert len(sim) == inj["recovered"].sum()
    for _, row in sim.iterrows():
        p = json.loads(row["sim_params"])
        assert p["sim_type"] == row["sim_type"]
        assert p["window_start"] <= row["time_peak"] <= p["window_end"]
        assert np.sign(row["peak_snr"]) == (-1 if row["sim_type"] == "dip" else 1)
        if np.isfinite(row["dmag"]):  # a total occultation leaves no flux: no magnitude
            assert np.sign(row["dmag"]) == (1 if row["sim_type"] == "dip" else -1)
        else:
            assert row["sim_type"] == "dip" and row["peak_flux"] <= 0
    eff = res.efficiency
    assert eff["n_injected"].sum() == len(inj) and eff["n_recovered"].sum() == len(sim)
    assert (eff.loc[eff["n_injected"] > 0, "efficiency"] > 0.8).all()
    # the summary counts injections per light curve
    assert res.summary["n_injected"].sum() == len(inj)


def test_real_brightening_is_found_where_it_is():
    lcs = noise_lcs(np.random.default_rng(3), 3, bump=(40, -1.0, 3))
    res = van.analyse_lightcurves(lcs, cfg(simulator={"enabled": False}), "DEMO")
    det = res.detections
    assert len(det) == 1
    d = det.iloc[0]
    assert d["filekey"] == "N0_reduction_01_of_02" and d["filter"] == "g"
    assert (d["time_start"], d["time_end"]) == (59040.0, 59042.0) and d["n_epochs"] == 3
    assert 59040.0 <= d["time_peak"] <= 59042.0
    assert d["peak_snr"] > 20 and d["dmag"] == pytest.approx(-1.0, abs=0.1)
    assert d["peak_mag"] == pytest.approx(15.0, abs=0.1)


def test_write_and_read_analysis(tmp_path):
    lcs = noise_lcs(np.random.default_rng(4), 5, bump=(20, -1.5, 2))
    res = van.analyse_lightcurves(lcs, BASE, "DEMO")
    path = tmp_path / "DEMO_RA100_analysis.h5"
    van.write_analysis(path, res, {"step": "analysis", "provenance": {"hash": "x1"}})
    vhist.write_netcdf(res.histograms, tmp_path / "DEMO_RA100_histograms.nc")
    assert sorted(os.listdir(tmp_path)) == ["DEMO_RA100_analysis.h5", "DEMO_RA100_histograms.nc"]
    with h5py.File(path, "r") as f:
        assert set(f) == set(van.TABLES)
        assert f["detections"].attrs["nrows"] == len(res.detections)
        assert f["detections/simulated"].dtype == bool
        np.testing.assert_array_equal(f["summary/n_good"][...], res.summary["n_good"].to_numpy())
    back = van.read_analysis(path, tmp_path / "DEMO_RA100_histograms.nc")
    for name in van.TABLES:
        pd.testing.assert_frame_equal(getattr(back, name), getattr(res, name), check_dtype=False)
    assert back.summary.attrs["provenance"] == {"hash": "x1"}
    assert int(back.histograms["good_snr"].sum()) == int(res.histograms["good_snr"].sum())
    assert back.detections["simulated"].any() and not back.detections["simulated"].all()
    with pytest.raises(FileNotFoundError, match="nope.h5"):
        van.read_analysis(tmp_path / "nope.h5")


def test_empty_and_bad_input(tmp_path):
    res = van.analyse_lightcurves([], BASE, "DEMO")
    assert len(res.summary) == 0 and len(res.detections) == 0 and len(res.injections) == 0
    van.write_analysis(tmp_path / "empty.h5", res)
    assert len(van.read_analysis(tmp_path / "empty.h5").detections) == 0
    (lc, *_) = noise_lcs(np.random.default_rng(5), 1)
    broken = Lightcurve(data=lc.data.drop(columns=["dsnr"]), attrs=lc.attrs)
    with pytest.raises(KeyError, match="N0_reduction_01_of_02.*dsnr"):
        van.analyse_lightcurves([broken], BASE, "DEMO")
    with pytest.raises(KeyError, match="NOPE"):
        van.analyse_lightcurves([lc], BASE, "NOPE")
