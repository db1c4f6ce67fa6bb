"""Periods of the DEMO survey's periodic sources recovered by the analysis (Lomb-Scargle and
box least squares), against the truth the simulation stores."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.timeseries import LombScargle

from vo import config as vconfig
from vo.lightcurves.analysis import analyse_lightcurves
from vo.lightcurves.observatories.demo import VirtualDemoObs, truth_periodic
from vo.lightcurves.periodicity import fap_baluev, source_periods

N_SOURCES = 48


@pytest.fixture(scope="module")
def analysed():
    """DEMO sources that all vary periodically (sine or eclipse, 0.05-50 d), reduced and analysed."""
    cfg = vconfig.load_config(overrides={"DEMO": {"periodic_fraction": 1.0, "variable_fraction": 0.0},
                                         "simulator": {"enabled": False}, "analysis": {"periodicity": {"enabled": True}}})
    obs = VirtualDemoObs.from_config(cfg)
    rng = np.random.default_rng(11)
    lcs, truth, noise = [], {}, {}
    for i in range(N_SOURCES):
        row = {"name": f"PER{i:03d}", "ra": 100.5, "dec": 20.0, "mag": float(rng.uniform(14.5, 18.5))}
        raw, alt = obs.fetch_data_from_observatory(row)
        assert alt["truth"]["periodic"] == truth_periodic(row, cfg["DEMO"])
        mine = obs.reduce(raw, cat_row=row)
        lcs += mine
        truth[row["name"]] = alt["truth"]["periodic"]
        frac_err = np.concatenate([lc.data["fluxerr"] / lc.attrs["flux_mean"] for lc in mine])
        noise[row["name"]] = float(np.median(frac_err))          # per-epoch error (fractional flux)
    return analyse_lightcurves(lcs, cfg, "DEMO"), truth, noise


def test_periods_recovered_to_a_thousandth(analysed):
    """Of the sources whose amplitude is >= 5 sigma of one epoch, >= 90 % get their period
    within 0.1 %, eclipses and sinusoids alike."""
    result, truth, noise = analysed
    periods = result.periods.set_index("source_name")
    assert len(periods) == N_SOURCES
    strong = [n for n, t in truth.items() if t["amplitude"] / noise[n] >= 5]
    err = {n: abs(periods.loc[n, "period"] / truth[n]["period"] - 1) for n in strong}
    good = [n for n in strong if err[n] < 1e-3]
    kinds = {t["type"] for n, t in truth.items() if n in strong}
    print(f"\n{len(good)} of {len(strong)} periods within 0.1 % (types {sorted(kinds)}, periods "
          f"{min(truth[n]['period'] for n in strong):.3f}-{max(truth[n]['period'] for n in strong):.1f} d)")
    assert len(strong) >= 20 and kinds == {"sine", "eclipse"}
    assert len(good) >= 0.9 * len(strong)
    assert periods.loc[good, "is_periodic"].all()
    # eclipses found by BLS have a depth near the truth
    ecl = [n for n in good if truth[n]["type"] == "eclipse" and periods.loc[n, "period_method"] == "bls"]
    assert ecl
    for n in ecl:
        assert periods.loc[n, "bls_depth"] == pytest.approx(truth[n]["amplitude"], rel=0.3, abs=3 * noise[n])
    # the histograms count the searched and the periodic sources by period and magnitude
    h = result.histograms
    assert int(h["sources_searched"].sum()) == N_SOURCES
    assert int(h["sources_periodic"].sum()) == int(periods["is_periodic"].sum())
    edges = h.attrs["period_edges"]
    assert edges[0] == pytest.approx(0.05) and edges[-1] == pytest.approx(50.0)
    by_bin = h["sources_periodic"].sum("mag").to_numpy()
    want = np.bincount(np.clip(np.searchsorted(edges[1:-1], periods.loc[periods["is_periodic"], "period"],
                                               side="right"), 0, len(edges) - 2), minlength=len(edges) - 1)
    np.testing.assert_array_equal(by_bin, want)
    # the summary repeats the source's period on each of its light curves
    s = result.summary
    assert np.allclose(s["period"], s["source_name"].map(periods["period"]), equal_nan=True)


def test_constant_sources_are_not_periodic():
    cfg = vconfig.load_config(overrides={"DEMO": {"periodic_fraction": 0.0, "variable_fraction": 0.0},
                                         "simulator": {"enabled": False}, "analysis": {"periodicity": {"enabled": True}}})
    obs = VirtualDemoObs.from_config(cfg)
    lcs = []
    for i in range(12):
        row = {"name": f"FLAT{i:03d}", "ra": 100.5, "dec": 20.0, "mag": 16.0 + 0.2 * i}
        lcs += obs.reduce(obs.fetch_data_from_observatory(row)[0], cat_row=row)
    periods = analyse_lightcurves(lcs, cfg, "DEMO").periods
    assert len(periods) == 12 and not periods["is_periodic"].any()
    assert (periods["ls_fap"] > 1e-3).all()


def test_baluev_fap_is_astropys():
    rng = np.random.default_rng(2)
    t = np.sort(rng.uniform(0, 600, 400))
    dy = rng.uniform(0.5, 2, t.size)
    y = rng.normal(0, dy)
    ls = LombScargle(t, y, dy)
    for z in (0.02, 0.05, 0.1):
        want = ls.false_alarm_probability(z, minimum_frequency=0.02, maximum_frequency=20, method="baluev")
        # 1e-5: astropy takes the variance of t as E[t^2] - E[t]^2 (rounding), ours centred
        assert fap_baluev(z, 20.0, t, dy) == pytest.approx(float(want), rel=1e-5)


def test_periodicity_is_off_by_default():
    cfg = vconfig.load_config(overrides={"simulator": {"enabled": False}})
    obs = VirtualDemoObs.from_config(cfg)
    row = {"name": "PER000", "ra": 100.5, "dec": 20.0, "mag": 16.0}
    result = analyse_lightcurves(obs.reduce(obs.fetch_data_from_observatory(row)[0], cat_row=row), cfg, "DEMO")
    assert result.periods.empty and list(result.periods.columns)[:2] == ["source_name", "obs"]
    assert "sources_periodic" not in result.histograms
    assert result.summary["period"].isna().all() and not result.summary["is_periodic"].any()


def test_too_few_epochs_are_not_searched():
    t = np.linspace(0, 100, 10)
    res = source_periods(t, np.sin(t), np.full(10, 0.1), ["g"] * 10)
    assert res["n_epochs"] == 10 and np.isnan(res["period"]) and not res["is_periodic"]
