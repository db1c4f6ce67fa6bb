"""Tests of vo.lightcurves.reduce: flux conversion, selection, seasons, clipping, numbering."""

import re

import numpy as np
import pandas as pd
import pytest

from vo import config as vconfig
from vo.lightcurves import reduce as vreduce
from vo.lightcurves import segments as vseg
from vo.lightcurves.datasets import Lightcurve

PARS = vconfig.defaults()["DEMO"]["reducer"]
TARGET = {"name": "WD J1234+5678", "ra": 150.0, "dec": 30.0, "mag": 17.0}


def raw_table(rng, seasons=((58000, 58150), (58400, 58560), (58800, 58900)), filters=("g", "r"),
              per=40, mag=17.0, err=0.02):
    """Raw standard rows: ``per`` epochs per season and filter, at the target position."""
    rows = []
    for s, (t0, t1) in enumerate(seasons):
        for f in filters:
            mjd = rng.uniform(t0, t1, per)
            rows.append(pd.DataFrame({
                "mjd": mjd, "mag": mag + err * rng.standard_normal(per), "magerr": err, "filter": f,
                "flag": 0, "ra": TARGET["ra"] + rng.normal(0, 0.1 / 3600, per),
                "dec": TARGET["dec"] + rng.normal(0, 0.1 / 3600, per), "exptime": 30.0, "oid": 7,
                "true_season": s}))
    return pd.concat(rows, ignore_index=True).sample(frac=1.0, random_state=1).reset_index(drop=True)


def reference_clip(x, sigma=3.5, iters=5):
    """Plain per-array implementation of the documented clipping (median, IQR / 1.349)."""
    x = np.asarray(x, float)
    fin = np.isfinite(x)
    keep = fin.copy()
    for _ in range(iters):
        if keep.sum() < 3:
            break
        v = x[keep]
        med = np.median(v)
        q25, q75 = np.percentile(v, [25, 75])
        width = (q75 - q25) / 1.3489795003921634
        if width <= 0:
            break
        new = fin & (np.abs(x - med) <= sigma * width)
        if np.array_equal(new, keep):
            break
        keep = new
    kept = x[keep]
    return (kept.mean() if kept.size else np.nan), (kept.std(ddof=1) if kept.size > 1 else np.nan), keep


def test_mag_flux_round_trip():
    mag = np.array([10.0, 17.5, 23.9, 25.0])
    magerr = np.array([0.01, 0.05, 0.1, 0.3])
    flux, fluxerr = vseg.mag_to_flux(mag, magerr)
    assert flux[2] == pytest.approx(1.0)  # 23.9 AB mag = 1 uJy
    assert flux[0] / flux[1] == pytest.approx(10 ** (0.4 * 7.5))
    np.testing.assert_allclose(fluxerr, flux * magerr * 0.4 * np.log(10))
    np.testing.assert_allclose(vseg.flux_to_mag(flux), mag, rtol=0, atol=1e-12)
    assert np.isnan(vseg.flux_to_mag([-1.0, 0.0])).all()


def test_split_seasons():
    mjd = np.array([0, 1, 2, 50, 51, 200, 239, 280])
    np.testing.assert_array_equal(vreduce.split_seasons(mjd, 40), [0, 0, 0, 1, 1, 2, 2, 3])
    assert vreduce.split_seasons([], 40).size == 0


def test_make_lightcurves_split_and_numbering():
    rng = np.random.default_rng(1)
    raw = raw_table(rng)
    lcs = vreduce.make_lightcurves(raw, TARGET, PARS, "DEMO")
    assert len(lcs) == 6
    assert all(isinstance(lc, Lightcurve) for lc in lcs)
    keys = [lc.filekey for lc in lcs]
    assert keys == [f"WD~20J1234+5678_reduction_{i:02d}_of_06" for i in range(1, 7)]
    expected = [(s, f) for s in range(3) for f in ("g", "r")]
    assert [(lc.attrs["season"], lc.attrs["filter"]) for lc in lcs] == expected
    for lc in lcs:
        data = lc.data
        assert list(data.columns) == vreduce.LIGHTCURVE_COLUMNS
        assert len(data) == 40 and lc.attrs["n_epochs"] == 40
        assert np.all(np.diff(data["mjd"]) >= 0)
        assert (data["filter"] == lc.attrs["filter"]).all()
        truth = raw[(raw.true_season == lc.attrs["season"]) & (raw["filter"] == lc.attrs["filter"])]
        np.testing.assert_array_equal(np.sort(truth["mjd"]), data["mjd"].to_numpy())
        assert lc.attrs["mag_mean"] == pytest.approx(17.0, abs=0.01)
        assert lc.attrs["mjd_start"] == data["mjd"].min() and lc.attrs["mjd_end"] == data["mjd"].max()
        assert np.sqrt(np.mean(data["dsnr"] ** 2)) == pytest.approx(1.0, abs=0.3)


def test_radius_flag_and_magnitude_selection():
    rng = np.random.default_rng(2)
    raw = raw_table(rng, seasons=((58000, 58100),), filters=("g",), per=60)
    far = np.zeros(len(raw), bool)
    far[:5] = True  # 5 epochs 4 arcsec north: outside the 3 arcsec radius
    raw.loc[far, "dec"] += 4.0 / 3600
    flagged = np.zeros(len(raw), bool)
    flagged[10:13] = True
    raw.loc[flagged, "flag"] = 4
    neighbour = raw.iloc[:20].copy()  # another survey object, 2 mag fainter, inside the radius
    neighbour["oid"] = 99
    neighbour["mag"] += 2.0
    raw = pd.concat([raw, neighbour], ignore_index=True)
    (lc,) = vreduce.make_lightcurves(raw, TARGET, PARS, "DEMO")
    assert lc.attrs["n_epochs"] == 60 - 5 - 3
    assert (lc.data["oid"] == 7).all() and (lc.data["flag"] == 0).all()
    kept = set(lc.data["mjd"])
    assert not kept & set(raw.loc[:59][far | flagged]["mjd"])

    loose = dict(PARS, mag_range=None, drop_flagged=False, radius=10.0)
    (lc,) = vreduce.make_lightcurves(raw, TARGET, loose, "DEMO")
    assert lc.attrs["n_epochs"] == 80
    assert (lc.data["flag"] != 0).sum() == 3 + 3  # the flagged rows and their copies in the neighbour


def test_min_epochs_and_missing_columns():
    rng = np.random.default_rng(3)
    raw = raw_table(rng, per=4)
    assert vreduce.make_lightcurves(raw, TARGET, PARS, "DEMO") == []
    with pytest.raises(KeyError, match="exptime"):
        vreduce.make_lightcurves(raw.drop(columns=["exptime"]), TARGET, PARS, "DEMO")


def test_sigma_clip_robust_to_outliers():
    rng = np.random.default_rng(4)
    x = rng.normal(100.0, 2.0, 2000)
    x[:200] = rng.uniform(150, 1000, 200)  # 10 % wild outliers
    x[200:205] = np.nan
    mean, rms, keep = vseg.sigma_clipped_stats(x)
    assert mean == pytest.approx(100.0, abs=0.2)
    assert rms == pytest.approx(2.0, rel=0.1)
    assert not keep[:205].any()
    assert np.nanmean(x) > 120  # the plain mean is far off


def test_segment_clip_matches_reference_and_is_independent():
    rng = np.random.default_rng(5)
    segs = [rng.standard_t(3, size=rng.integers(0, 400)) * (1 + i) + i for i in range(60)]
    for sg in segs[::5]:
        if sg.size > 2:
            sg[:2] = [np.nan, 1e4]
    segs[3] = np.full(10, 5.0)  # zero width: nothing clipped
    starts = np.cumsum([0] + [len(s) for s in segs[:-1]])
    mean, rms, keep = vseg.segment_clipped_stats(np.concatenate(segs), starts)
    for i, sg in enumerate(segs):
        m, s, k = reference_clip(sg)
        np.testing.assert_allclose(mean[i], m, rtol=1e-12, equal_nan=True)
        np.testing.assert_allclose(rms[i], s, rtol=1e-9, equal_nan=True)
        np.testing.assert_array_equal(keep[starts[i]:starts[i] + len(sg)], k)
    # a segment's result does not depend on the others (bit for bit)
    m2, s2, _ = vseg.segment_clipped_stats(np.concatenate(segs[7:]), starts[7:] - starts[7])
    np.testing.assert_array_equal(mean[7:], m2)
    np.testing.assert_array_equal(rms[7:], s2)


def test_add_snr_columns_rescales_underestimated_errors():
    rng = np.random.default_rng(6)
    flux = 1000 + 20 * rng.standard_normal(3000)
    df = pd.DataFrame({"flux": flux, "fluxerr": np.full(3000, 10.0)})  # errors 2x too small
    df, stats = vseg.add_snr_columns(df)
    assert stats["err_scale"] == pytest.approx(2.0, rel=0.05)
    assert stats["flux_mean"] == pytest.approx(1000, abs=1.5)
    np.testing.assert_allclose(df["snr"], flux / 10.0)
    assert np.std(df["dsnr"]) == pytest.approx(1.0, rel=0.05)


def test_array_lightcurve_data_is_the_truth_once_built():
    rng = np.random.default_rng(7)
    (lc, *_) = vreduce.make_lightcurves(raw_table(rng), TARGET, PARS, "DEMO")
    cols = vreduce.lightcurve_columns(lc, ["flux"])
    assert len(cols["flux"]) == len(lc)
    lc.data["flux"] = lc.data["flux"] * 2  # a change made to the DataFrame is seen
    np.testing.assert_allclose(vreduce.lightcurve_columns(lc, ["flux"])["flux"], 2 * cols["flux"])
    with pytest.raises(KeyError, match=re.escape(lc.filekey)):
        vreduce.lightcurve_columns(lc, ["nope"])


def test_segment_clip_is_independent_with_nonfinite_and_unclipped_segments():
    """Segments that are never clipped (fewer than 3 values, or zero width) and hold NaNs give
    the same result alone as next to segments that are clipped, and ignore the NaNs; very
    unequal lengths (several sorting grids) change nothing either."""
    rng = np.random.default_rng(9)
    segs = [np.array([1.0, np.nan, 2.0]), np.array([np.nan, 3.0, 3.0, 3.0, 3.0, np.inf]),
            rng.normal(0, 1, 5000), np.array([np.nan]), rng.normal(5, 2, 7), np.zeros(0),
            np.append(rng.normal(0, 1, 300), [50.0, np.nan])]
    starts = np.cumsum([0] + [len(s) for s in segs[:-1]])
    mean, rms, keep = vseg.segment_clipped_stats(np.concatenate(segs), starts)
    for i, sg in enumerate(segs):
        m, s, k = vseg.segment_clipped_stats(sg, [0])
        np.testing.assert_array_equal(mean[i], m[0])
        np.testing.assert_array_equal(rms[i], s[0])
        np.testing.assert_array_equal(keep[starts[i]:starts[i] + len(sg)], k)
        if sg.size:
            rm, rs, rk = reference_clip(sg)
            np.testing.assert_allclose(mean[i], rm, rtol=1e-12, equal_nan=True)
            np.testing.assert_allclose(rms[i], rs, rtol=1e-9, equal_nan=True)
            np.testing.assert_array_equal(keep[starts[i]:starts[i] + len(sg)], rk)
    assert mean[0] == 1.5 and mean[1] == 3.0 and rms[1] == 0.0 and np.isnan(mean[3])
    assert not keep[starts[6] + 300]  # the outlier was clipped
