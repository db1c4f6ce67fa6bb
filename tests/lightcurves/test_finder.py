"""Tests of the event finder (vo.lightcurves.finder) against hand-made cases and a plain loop."""

import numpy as np
import pytest

from vo.lightcurves import finder as vfinder

OPTS = dict(snr_threshold=5.0, snr_sideband=2.5, min_epochs_event=1, detect_positive=True,
            detect_negative=True)


def reference_events(mjd, dsnr, lc, good, thr, side, min_above, pos=True, neg=True):
    """The documented rule, one epoch at a time: (lc, start, peak, end, peak_snr, n_epochs)."""
    out = []
    for sign, wanted in ((1, pos), (-1, neg)):
        if not wanted:
            continue
        for k in np.unique(lc):
            idx = [i for i in np.flatnonzero(lc == k) if good[i] and np.isfinite(dsnr[i])]
            run = []
            for i in idx + [None]:
                if i is not None and sign * dsnr[i] >= min(side, thr):
                    run.append(i)
                    continue
                if run and sum(sign * dsnr[j] >= thr for j in run) >= max(1, min_above):
                    peak = max(run, key=lambda j: (sign * dsnr[j], -j))
                    out.append((k, mjd[run[0]], mjd[peak], mjd[run[-1]], dsnr[peak], len(run)))
                run = []
    return sorted(out, key=lambda e: (e[0], e[1]))


def as_tuples(ev):
    return [(int(a), b, c, d, e, int(f)) for a, b, c, d, e, f in
            zip(ev["lc"], ev["time_start"], ev["time_peak"], ev["time_end"], ev["peak_snr"], ev["n_epochs"])]


def test_hand_made_events():
    dsnr = np.array([0, 1, 3, 6, 8, 3, 2, 0, -3, -7, -2.6, 1, 5.5, -6, 0.0])
    mjd = np.arange(dsnr.size, dtype=float) + 59000
    flux = 100 + 10 * dsnr
    lc = np.zeros(dsnr.size, int)
    ev = vfinder.find_events(mjd, dsnr, flux, lc, None, mag_mean=np.array([18.9]), **OPTS)
    assert list(ev["peak_snr"]) == [8, -7, 5.5, -6]
    assert list(ev["time_start"] - 59000) == [2, 8, 12, 13]
    assert list(ev["time_end"] - 59000) == [5, 10, 12, 13]
    assert list(ev["time_peak"] - 59000) == [4, 9, 12, 13]
    assert list(ev["n_epochs"]) == [4, 3, 1, 1]
    assert list(ev["n_above"]) == [2, 1, 1, 1]
    np.testing.assert_allclose(ev["peak_flux"], [180, 30, 155, 40])
    np.testing.assert_allclose(ev["dmag"], 23.9 - 2.5 * np.log10([180, 30, 155, 40]) - 18.9)
    assert ev["dmag"][0] < 0 < ev["dmag"][1]  # brightening has negative dmag

    only_pos = vfinder.find_events(mjd, dsnr, flux, lc, None, **dict(OPTS, detect_negative=False))
    assert list(only_pos["peak_snr"]) == [8, 5.5]
    only_neg = vfinder.find_events(mjd, dsnr, flux, lc, None, **dict(OPTS, detect_positive=False))
    assert list(only_neg["peak_snr"]) == [-7, -6]
    two = vfinder.find_events(mjd, dsnr, flux, lc, None, **dict(OPTS, min_epochs_event=2))
    assert list(two["peak_snr"]) == [8]


def test_symmetry_and_bad_epochs():
    rng = np.random.default_rng(0)
    dsnr = rng.normal(0, 3, 500)
    mjd = np.arange(500.0)
    lc = np.repeat(np.arange(5), 100)
    ev_p = vfinder.find_events(mjd, dsnr, dsnr, lc, None, **OPTS)
    ev_n = vfinder.find_events(mjd, -dsnr, -dsnr, lc, None, **OPTS)
    np.testing.assert_array_equal(ev_p["time_start"], ev_n["time_start"])
    np.testing.assert_array_equal(ev_p["peak_snr"], -ev_n["peak_snr"])
    # a bad epoch is skipped: the event runs across it, and a bad peak is never reported
    d = np.array([0, 6, 0.0, 6, 0])
    good = np.array([True, True, False, True, True])
    ev = vfinder.find_events(np.arange(5.0), d, d, np.zeros(5, int), good, **OPTS)
    assert list(ev["n_epochs"]) == [2] and list(ev["time_end"]) == [3.0]
    ev = vfinder.find_events(np.arange(5.0), d, d, np.zeros(5, int), ~good, **OPTS)
    assert ev["lc"].size == 0


def test_events_never_cross_light_curves():
    d = np.array([6, 6, 6, 6.0])
    ev = vfinder.find_events(np.arange(4.0), d, d, np.array([0, 0, 1, 1]), None, **OPTS)
    assert list(ev["lc"]) == [0, 1] and list(ev["n_epochs"]) == [2, 2]


@pytest.mark.parametrize("thr,side,min_above,pos,neg", [(5, 2.5, 1, True, True), (3, 1, 2, True, True),
                                                       (4, 4, 1, False, True), (3, 6, 1, True, False)])
def test_matches_plain_loop(thr, side, min_above, pos, neg):
    rng = np.random.default_rng(int(thr * 10 + side))
    n_lc, n = 40, 120
    lc = np.repeat(np.arange(n_lc), n)
    mjd = np.tile(np.sort(rng.uniform(0, 300, n)), n_lc)
    dsnr = rng.normal(0, 2.5, lc.size)
    dsnr[rng.random(lc.size) < 0.01] = np.nan
    good = rng.random(lc.size) > 0.05
    ev = vfinder.find_events(mjd, dsnr, dsnr, lc, good, snr_threshold=thr, snr_sideband=side,
                             min_epochs_event=min_above, detect_positive=pos, detect_negative=neg)
    ref = reference_events(mjd, dsnr, lc, good, thr, side, min_above, pos, neg)
    assert len(ref) > 5
    assert as_tuples(ev) == ref
