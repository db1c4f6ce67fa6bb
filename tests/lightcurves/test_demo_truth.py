"""Intrinsic variability of the DEMO survey: its truth, and the event finder checked against it.

The end-to-end tests run the workflow's rule bodies (targets -> download -> reduce ->
analysis, :mod:`vo.pipeline.lightcurves`) on the first RA bins of the demo catalog in a temporary data
root, then compare the real detections of the analysis with the truth stored in the raw
store.  ``variable_fraction`` is raised to 0.8 there so that a few bins hold enough events;
the injections (tested in test_simulator/test_analysis) are switched off to keep it fast.
"""

from __future__ import annotations

import h5py
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from vo import config as vconfig
from vo.pipeline import lightcurves as wf
from vo.catalog import Catalog
from vo.io import hdf5 as vh5
from vo.lightcurves import simulator as vsim
from vo.lightcurves.analysis import read_analysis
from vo.lightcurves.datasets import read_lightcurves
from vo.lightcurves.observatories.demo import (FLARE_COLOUR, VirtualDemoObs, event_flux_factor,
                                               truth_events)
from vo.lightcurves.segments import mag_to_flux
from vo.paths import Paths

N_BINS = 4
VARIABLE_FRACTION = 0.8
MIN_TRUTH_SNR = 10.0


def demo_pars(**demo) -> dict:
    return vconfig.load_config(overrides={"DEMO": demo})["DEMO"]


def cat_row(name, mag=17.0) -> dict:
    return {"name": name, "ra": 100.5, "dec": 20.0, "mag": mag}


def find_source(pars, want, n=3000):
    """First name ``src{i}`` whose truth event satisfies ``want(event)``."""
    for i in range(n):
        events = truth_events({"name": f"src{i}"}, pars)
        if events and want(events[0]):
            return f"src{i}", events[0]
    pytest.fail(f"no source with the wanted event among {n}")


# -- the truth itself --------------------------------------------------------------------

def test_truth_events_are_deterministic_and_drawn_as_configured():
    pars = demo_pars()
    names = [f"s{i}" for i in range(3000)]
    truth = [truth_events({"name": n}, pars) for n in names]
    assert truth == [truth_events({"name": n}, pars) for n in names]
    variable = np.array([bool(t) for t in truth])
    frac = pars["variable_fraction"]
    assert abs(variable.mean() - frac) < 4 * np.sqrt(frac * (1 - frac) / len(names))
    events = [t[0] for t in truth if t]
    assert all(len(t) <= 1 for t in truth)
    types = pd.Series([e["type"] for e in events])
    assert set(types) == {"flare", "dip"} and abs((types == "flare").mean() - 0.5) < 0.15
    season_start = [pars["start_mjd"] + e["season"] * (pars["season_length"] + pars["season_gap"])
                    for e in events]
    for e, start in zip(events, season_start):
        assert start <= e["t_peak"] <= start + pars["season_length"]
        assert e["t_start"] < e["t_peak"] < e["t_end"]
        assert pars["event_duration"][0] <= e["duration"] <= pars["event_duration"][1]
        assert pars["event_amplitude"][0] <= e["amplitude"] <= min(pars["event_amplitude"][1], 1.0)
        amps = e["amplitude_by_filter"]
        if e["type"] == "dip":
            assert e["sign"] == -1 and set(amps.values()) == {e["amplitude"]}  # achromatic
        else:
            assert e["sign"] == 1 and amps["g"] == e["amplitude"] > amps["r"] > amps["i"]
            assert amps["r"] == pytest.approx(e["amplitude"] * FLARE_COLOUR["r"])
    # log-uniform amplitudes: half of them below the geometric mean of the range
    lo, hi = pars["event_amplitude"]
    below = np.mean([e["amplitude"] < np.sqrt(lo * hi) for e in events])
    assert abs(below - 0.5) < 4 * np.sqrt(0.25 / len(events))
    # raising the fraction only adds variable sources: the others keep their events
    more = demo_pars(variable_fraction=0.5)
    for n, t in zip(names[:500], truth[:500]):
        if t:
            assert truth_events({"name": n}, more) == t
    assert truth_events({"name": names[0]}, demo_pars(variable_fraction=0.0)) == []
    other_seed = [truth_events({"name": n}, demo_pars(seed=7)) for n in names[:200]]
    assert other_seed != truth[:200]
    only_dips = [truth_events({"name": n}, demo_pars(event_types=["dip"], variable_fraction=1.0))
                 for n in names[:50]]
    assert {t[0]["type"] for t in only_dips} == {"dip"}


def test_bad_event_parameters_are_named():
    with pytest.raises(ValueError, match="DEMO.event_amplitude"):
        truth_events({"name": "x"}, {**demo_pars(), "event_amplitude": [0.5, 0.1]})
    with pytest.raises(ValueError, match="DEMO.event_types"):
        truth_events({"name": "x"}, {**demo_pars(), "event_types": ["supernova"]})
    with pytest.raises(vconfig.ConfigError, match="event_duration"):
        vconfig.load_config(overrides={"DEMO": {"event_duration": [1.0]}})


def test_fetch_stores_the_truth_and_applies_it_before_the_noise():
    pars = demo_pars(variable_fraction=1.0, event_types=["dip"], event_amplitude=[0.6, 0.6],
                     event_duration=[15.0, 20.0], flag_fraction=0.0)
    obs = VirtualDemoObs(pars)
    row = cat_row("deep-dip", mag=18.0)
    raw, alt = obs.fetch_data_from_observatory(row)
    raw2, alt2 = VirtualDemoObs(pars).fetch_data_from_observatory(row)
    pd.testing.assert_frame_equal(raw, raw2, check_exact=True)
    assert alt == alt2 and alt["truth"]["events"] == truth_events(row, pars)
    (ev,) = alt["truth"]["events"]
    own = raw.loc[raw["oid"].isin(list(alt["oid"].values()))]
    mjd, filt = own["mjd"].to_numpy(), own["filter"].to_numpy()
    true = own["filter"].map(alt["true_mag"]).to_numpy() - 2.5 * np.log10(event_flux_factor([ev], mjd, filt))
    pull = (own["mag"].to_numpy() - true) / own["magerr"].to_numpy()
    assert abs(pull.mean()) < 4 / np.sqrt(pull.size) and abs(pull.std() - 1) < 0.1
    inside = np.abs(mjd - ev["t_peak"]) < 0.4 * ev["duration"]
    assert inside.sum() >= 5
    assert np.all(own["mag"].to_numpy()[inside] - own["filter"].map(alt["true_mag"]).to_numpy()[inside]
                  > 0.99 - 6 * own["magerr"].to_numpy()[inside])  # 60% less flux: +0.99 mag
    for f in pars["filters"]:  # fainter in the dip: larger errors (same noise model)
        sel = filt == f
        assert np.median(own["magerr"][sel & inside]) > 1.5 * np.median(own["magerr"][sel & ~inside])
    # a total eclipse: the source drops below detection, nothing is reported inside it
    total = VirtualDemoObs({**pars, "event_amplitude": [1.0, 1.0]})
    raw_t, alt_t = total.fetch_data_from_observatory(row)
    (ev_t,) = alt_t["truth"]["events"]
    own_t = raw_t.loc[raw_t["oid"].isin(list(alt_t["oid"].values()))]
    assert not (np.abs(own_t["mjd"] - ev_t["t_peak"]) < 0.4 * ev_t["duration"]).any()
    assert len(own_t) > len(own) - 2 * inside.sum() - 10
    # a non-variable configuration reports no events
    _, alt_q = VirtualDemoObs({**pars, "variable_fraction": 0.0}).fetch_data_from_observatory(row)
    assert alt_q["truth"]["events"] == []


# -- end to end: download -> reduce -> analysis against the truth ------------------------

@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    root = tmp_path_factory.mktemp("truth")
    cfg = vconfig.load_config(overrides={
        "project": {"data_root": str(root), "name": "TRUTH"},
        "DEMO": {"variable_fraction": VARIABLE_FRACTION, "periodic_fraction": 0.0},  # events only
        "simulator": {"enabled": False}, "analysis": {"periodicity": {"enabled": False}}})
    bins = Catalog.from_config(cfg).load().ra_bins()[:N_BINS]
    _, out = wf.rule_io("targets", cfg, ra_bins=bins)
    wf.run_targets(cfg, out)
    detections, lcs, truth = [], [], {}
    for b in bins:
        for step in ("download", "reduce", "analysis"):
            inputs, outputs = wf.rule_io(step, cfg, "DEMO", b)
            getattr(wf, f"run_{step}")(cfg, "DEMO", b, inputs, outputs)
        det = read_analysis(outputs["analysis"]).detections
        detections.append(det.loc[~det["simulated"]])
        lcs += read_lightcurves(inputs["reduced"])
        with h5py.File(Paths(cfg).raw_photometry("DEMO", b), "r") as f:
            for key in f:
                attrs = vh5.read_attrs(f[key])
                truth[attrs["cat_row"]["name"]] = attrs
    return cfg, pd.concat(detections, ignore_index=True), lcs, truth


def test_truth_lands_in_the_raw_store(pipeline):
    cfg, _, _, truth = pipeline
    assert len(truth) > 80
    n_var = 0
    for name, attrs in truth.items():
        events = attrs["altdata"]["truth"]["events"]
        assert events == truth_events(attrs["cat_row"], cfg["DEMO"])
        n_var += bool(events)
    assert abs(n_var / len(truth) - VARIABLE_FRACTION) < 4 * np.sqrt(0.25 / len(truth))


def truth_snr(lc, event, true_mag) -> float:
    """Peak S/N of a truth event in one reduced light curve: the event's true flux change at
    each epoch over the epoch's flux error (times the light curve's error scale, as the
    finder sees it), the largest over the epochs inside [t_start, t_end]."""
    mjd, err = lc.data["mjd"].to_numpy(), lc.data["fluxerr"].to_numpy()
    inside = (mjd >= event["t_start"]) & (mjd <= event["t_end"])
    if not inside.any():
        return 0.0
    flt = lc.attrs["filter"]
    quiet, _ = mag_to_flux(true_mag[flt], 0.0)
    change = vsim.excess(vsim.SIM_TYPES.index(event["type"]), mjd[inside] - event["t_peak"],
                         event["amplitude_by_filter"][flt], event["duration"]) * quiet
    return float(np.max(np.abs(change) / (err[inside] * lc.attrs["err_scale"])))


def matches(det: pd.DataFrame, event) -> np.ndarray:
    """Detections (of the event's source) whose peak lies in the event with the right sign."""
    return ((det["time_peak"] >= event["t_start"]) & (det["time_peak"] <= event["t_end"])
            & (np.sign(det["peak_snr"]) == event["sign"])).to_numpy()


def test_finder_recovers_the_truth_events(pipeline):
    """Of the (event, light curve) pairs with truth peak S/N >= 10, at least 90 % give a real
    detection in that light curve peaking inside the event with the right sign."""
    _, det, lcs, truth = pipeline
    rows = []
    for lc in lcs:
        attrs = truth[lc.attrs["source_name"]]
        for ev in attrs["altdata"]["truth"]["events"]:
            snr = truth_snr(lc, ev, attrs["altdata"]["true_mag"])
            mine = det.loc[(det["source_name"] == lc.attrs["source_name"])
                           & (det["filter"] == lc.attrs["filter"]) & (det["season"] == lc.attrs["season"])]
            rows.append({"type": ev["type"], "snr": snr, "found": bool(matches(mine, ev).any())})
    table = pd.DataFrame(rows)
    strong = table.loc[table["snr"] >= MIN_TRUTH_SNR]
    assert len(strong) >= 40 and set(strong["type"]) == {"flare", "dip"}
    assert strong["found"].mean() >= 0.9, strong.loc[~strong["found"]]
    # the finder is no oracle: events far below its threshold are rarely found
    weak = table.loc[(table["snr"] > 0) & (table["snr"] < 2.0)]
    assert len(weak) >= 10 and weak["found"].mean() < 0.2


def expected_false_positives(lcs, threshold: float, events: dict) -> float:
    """Expected number of noise detections (|dsnr| >= threshold) in ``lcs`` outside their
    sources' truth ``events`` (source name -> events) under the DEMO noise model.

    The DEMO survey scatters *magnitudes* with Gaussian errors ``magerr``; the reduction turns
    them into fluxes with ``fluxerr = flux * 0.921 magerr``.  A magnitude deviation of ``z``
    sigmas gives a pull ``(1 - 10**(0.4 z magerr)) / (0.921 magerr)``, so a pull of
    ``-threshold * err_scale`` (a dimming detection) needs only
    ``z = log10(1 + 0.921 magerr T) / (0.4 magerr)`` sigmas (3.5 for magerr = 0.2 at T = 5)
    while a brightening one needs many more: faint sources have a heavier dimming tail than a
    Gaussian in flux (which would give 5.7e-7 per epoch at 5 sigma).
    """
    quiet = []
    for lc in lcs:
        mjd = lc.data["mjd"].to_numpy()
        inside = np.zeros(mjd.size, dtype=bool)
        for ev in events[lc.attrs["source_name"]]:
            inside |= (mjd >= ev["t_start"]) & (mjd <= ev["t_end"])
        quiet.append(~inside)
    sig = np.concatenate([lc.data["magerr"].to_numpy()[q] for lc, q in zip(lcs, quiet)])
    t = threshold * np.concatenate([np.full(q.sum(), lc.attrs["err_scale"]) for lc, q in zip(lcs, quiet)])
    k = 0.4 * np.log(10.0)
    z_dim = np.log10(1.0 + k * sig * t) / (0.4 * sig)
    bright = 1.0 - k * sig * t
    with np.errstate(divide="ignore", invalid="ignore"):
        z_bright = np.where(bright > 0, -np.log10(bright) / (0.4 * sig), np.inf)
    return float(np.sum(stats.norm.sf(z_dim) + stats.norm.sf(z_bright)))


def test_few_real_detections_without_a_truth_event(pipeline):
    """Real detections that match no truth event are noise: their number stays within the
    Poisson 99.9 % bound of the noise model's expectation (``expected_false_positives``)."""
    cfg, det, lcs, truth = pipeline
    events = {name: a["altdata"]["truth"]["events"] for name, a in truth.items()}
    unmatched = [i for i, d in det.iterrows()
                 if not any(matches(det.loc[[i]], ev)[0] for ev in events[d["source_name"]])]
    mu = expected_false_positives(lcs, cfg["analysis"]["snr_threshold"], events)
    bound = int(stats.poisson.isf(1e-3, mu))  # P(more than bound | mu) <= 0.1 %
    assert 0.1 < mu < 2.0  # ~120 sources at 5 sigma: mu ~ 0.9, bound 5
    assert len(unmatched) <= bound, det.loc[unmatched]
    assert len(det) - len(unmatched) >= 30  # and most real detections are real events
