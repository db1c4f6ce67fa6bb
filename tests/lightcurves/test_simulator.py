"""Tests of vo.lightcurves.simulator: event models, injection, recovery, determinism."""

import numpy as np
import pandas as pd
import pytest

from vo import config as vconfig
from vo.lightcurves import finder as vfinder
from vo.lightcurves import simulator as vsim
from vo.lightcurves.analysis import concat_lightcurves
from vo.lightcurves.reduce import make_lightcurves

CFG = vconfig.defaults()


def make_lcs(n_src, rng, mag=15.0, err=0.01, days=200, seed_names="SIM"):
    """Light curves with one epoch a day in two filters (constant sources, Gaussian noise)."""
    lcs = []
    for k in range(n_src):
        mjd = np.concatenate([59000 + np.arange(days) + rng.uniform(0, 0.1, days)] * 2)
        filt = np.repeat(["g", "r"], days)
        m = mjd.size
        raw = pd.DataFrame({"mjd": mjd, "mag": mag + err * rng.standard_normal(m), "magerr": err,
                            "filter": filt, "flag": 0, "ra": 10.0, "dec": 5.0, "exptime": 30.0, "oid": 1})
        lcs += make_lightcurves(raw, {"name": f"{seed_names}{k}", "ra": 10.0, "dec": 5.0, "mag": mag},
                                CFG["DEMO"]["reducer"], "DEMO")
    return lcs


def run_sim(lcs, **pars):
    sim = vsim.Simulator(dict(CFG["simulator"], **pars))
    b = concat_lightcurves(lcs)
    good = np.ones(b.cols["mjd"].size, bool)
    return sim, sim.run(b.cols, b.starts, b.meta, good, vfinder.finder_options(CFG["analysis"]), 3.5)


def test_event_models():
    dt = np.linspace(-100, 100, 200001)
    for code, sign in enumerate(vsim.SIGN):
        amp, dur = 0.7, 8.0
        ex = vsim.excess(code, dt, amp, dur)
        assert ex[np.argmax(np.abs(ex))] == pytest.approx(sign * amp, rel=1e-3)
        w0, w1 = vsim.window(code, 0.0, amp, dur)
        big = np.abs(ex) >= vsim.WINDOW_FRACTION * amp
        assert dt[big].min() >= w0 - 1e-3 and dt[big].max() <= w1 + 1e-3
        assert w1 - w0 < 3 * (dt[big].max() - dt[big].min())  # and not much wider
    flare = vsim.excess(0, np.array([-0.8, 0.0, 8.0]), 1.0, 8.0)
    np.testing.assert_allclose(flare, [np.exp(-1), 1.0, np.exp(-1)])
    dip = vsim.excess(1, np.array([-4.0, 0.0, 4.0]), 0.5, 8.0)
    np.testing.assert_allclose(dip, [-0.25, -0.5, -0.25], rtol=1e-6)
    u0 = vsim.microlensing_u0(2.0)
    assert vsim.paczynski(u0) == pytest.approx(3.0)


def test_inject_scales_errors_like_poisson_noise():
    flux = np.full(4, 100.0)
    err = np.full(4, 5.0)
    rel = np.array([0.0, 1.0, 3.0, -0.5])
    new_flux, new_err = vsim.inject(flux, err, 100.0, rel, np.zeros(4))
    np.testing.assert_allclose(new_flux, [100, 200, 400, 50])
    np.testing.assert_allclose(new_err, [5, 5 * np.sqrt(2), 10, 5])
    noisy, _ = vsim.inject(np.full(20000, 100.0), np.full(20000, 5.0), 100.0, np.full(20000, 3.0),
                           np.random.default_rng(0).standard_normal(20000))
    assert np.std(noisy) == pytest.approx(np.sqrt(100 - 25), rel=0.03)  # the extra noise only


def test_large_events_are_recovered_with_the_right_sign():
    lcs = make_lcs(40, np.random.default_rng(1))
    sim, res = run_sim(lcs, min_amplitude=0.3, max_amplitude=1.0, min_duration=3.0, max_duration=10.0,
                       injections_per_lightcurve=2)
    inj = res["injections"]
    assert len(inj) == 2 * len(lcs)
    assert set(inj["sim_type"]) == set(vsim.SIM_TYPES)
    strong = inj[inj["injected_snr"] > 20]
    assert len(strong) > 0.8 * len(inj)
    assert strong["recovered"].mean() > 0.95
    ev = res["events"]
    rec = inj[inj["recovered"]].sort_values("event")
    assert len(rec) == len(ev["lc"]) and (rec["lc"].to_numpy() == ev["lc"]).all()
    sign = np.where(rec["sim_type"] == "dip", -1, 1)
    assert (np.sign(ev["peak_snr"]) == sign).all()
    assert ((ev["time_peak"] >= rec["window_start"]) & (ev["time_peak"] <= rec["window_end"])).all()
    assert np.median(np.abs(ev["time_peak"] - rec["peak_time"])) < 1.0
    counts = res["counts"]
    assert counts["injected"].sum() == len(inj) and counts["recovered"].sum() == inj["recovered"].sum()


def test_small_events_are_missed():
    lcs = make_lcs(10, np.random.default_rng(2), mag=19.0, err=0.1)
    _, res = run_sim(lcs, min_amplitude=0.01, max_amplitude=0.02)
    assert res["injections"]["recovered"].mean() < 0.2


def test_deterministic_and_independent_of_batches():
    lcs = make_lcs(12, np.random.default_rng(3))
    _, whole = run_sim(lcs)
    _, first = run_sim(lcs[:7])
    _, second = run_sim(lcs[7:])
    a = whole["injections"].drop(columns=["lc", "event"])
    b = pd.concat([first["injections"], second["injections"]], ignore_index=True).drop(columns=["lc", "event"])
    pd.testing.assert_frame_equal(a, b)
    np.testing.assert_array_equal(whole["counts"]["injected"],
                                  first["counts"]["injected"] + second["counts"]["injected"])
    _, other_seed = run_sim(lcs, seed=99)
    assert not np.array_equal(other_seed["injections"]["peak_time"], whole["injections"]["peak_time"])


def test_efficiency_table_binomial_errors():
    counts = pd.DataFrame({"n_injected": [0, 10, 4], "n_recovered": [0, 7, 4]})
    table = vsim.efficiency_table(counts)
    assert np.isnan(table["efficiency"][0])
    assert table["efficiency"][1] == pytest.approx(0.7)
    assert table["efficiency_error"][1] == pytest.approx(np.sqrt(0.7 * 0.3 / 10))
    assert table["efficiency_error"][2] == 0


def test_bad_parameters():
    with pytest.raises(ValueError, match="supernova"):
        vsim.Simulator(dict(CFG["simulator"], event_types=["supernova"]))
    with pytest.raises(ValueError, match="min <= max"):
        vsim.Simulator(dict(CFG["simulator"], min_duration=5.0, max_duration=1.0))
