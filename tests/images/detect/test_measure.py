"""Measurements and analytic cuts (vo.images.detect.measure) on the synthetic scene of test_detect.py.

Each candidate is labelled by the truth table (real transient, fading source, misalignment
dipole, cosmic-ray hot pixel, source at the CCD edge, bad column) and the features and cuts are
checked against what the label requires: PSF fluxes of S/N > 20 sources within a few per cent
(pulls ~1), dipoles and hot pixels dropped for the right reason, bad columns marked bad, no
real source dropped.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from scipy.spatial import cKDTree

from test_detect import (BAD_COLUMN, BAD_COLUMN_FLAGGED, BAD_ROWS, FWHM, NAN_COLUMNS, SIGMA,
                         synthetic_scene)
from vo import config as vconfig
from vo.images import flags as pixflags
from vo.images.detect.cutouts import make_cutouts
from vo.images.detect import detect_candidates
from vo.images.detect.measure import (FEATURES, MeasureError, apply_cuts, check_cuts, measure,
                               measure_features, stamp_fwhm, read_measurements, shift_stamp,
                               write_measurements)
from vo.io.fits import FitsError

ZP = 25.0


def label(cands: Table, truth: Table) -> np.ndarray:
    """Truth kind of each candidate (within 3 pix), 'column' on a bad column, else 'none'."""
    dist, i = cKDTree(np.column_stack([truth["x"], truth["y"]])).query(np.column_stack([cands["x"], cands["y"]]))
    kind = np.where(dist < 3, np.asarray(truth["kind"])[i], "none").astype(object)
    on_rows = (cands["y"] > BAD_ROWS.start - 3) & (cands["y"] < BAD_ROWS.stop + 3)
    kind[(kind == "none") & on_rows & (np.abs(cands["x"] - BAD_COLUMN) < 3)] = "column"
    kind[(kind == "none") & on_rows & (np.abs(cands["x"] - BAD_COLUMN_FLAGGED) < 3)] = "column_flagged"
    return kind


@pytest.fixture(scope="module")
def scene():
    d, new, ref, truth, psf, wcs = synthetic_scene()
    cands = detect_candidates(d, wcs=wcs)
    cut = make_cutouts(cands, new, ref, d)
    refsrc = truth[truth["kind"] == "real"]["ra", "dec", "x", "y"]   # e.g. host galaxies
    m = measure(cut, cands, d.psf, ZP, ref_sources=refsrc, keep_dropped=True)
    dist, i = cKDTree(np.column_stack([truth["x"], truth["y"]])).query(np.column_stack([cands["x"], cands["y"]]))
    return {"d": d, "new": new, "ref": ref, "truth": truth, "psf": psf, "cands": cands, "cut": cut,
            "m": m, "kind": label(cands, truth), "match": i}


def rows(s, *kinds):
    sel = np.isin(s["kind"], kinds)
    return s["m"][sel], s["truth"][s["match"][sel]]


def test_every_candidate_is_labelled(scene):
    assert not np.any(scene["kind"] == "none")
    for k in ("real", "negative", "dipole", "cr", "edge", "column", "column_flagged"):
        assert np.any(scene["kind"] == k), k
    assert scene["m"].colnames[:6] == ["id", "x", "y", "ra", "dec", "is_negative"]
    assert all(f in scene["m"].colnames for f in FEATURES)


def test_psf_flux_of_point_sources(scene):
    m, t = rows(scene, "real", "negative", "edge")
    bright = t["snr"] > 20
    ratio = m["flux_psf"] / t["flux"]
    # within 4 sigma + 1% each, median unbiased to 2% (30 scenes: mean ratio 1.001 +- 0.002 at
    # S/N 20-40, 0.997 +- 0.001 above)
    assert np.all(np.abs(ratio[bright] - 1) < 4 / t["snr"][bright] + 0.01), ratio[bright]
    assert abs(np.median(ratio[bright]) - 1) < 0.02
    # errors are right: pulls have unit scatter, errors match sigma / sqrt(sum P^2)
    pull = (m["flux_psf"] - t["flux"]) / m["flux_psf_err"]
    assert 0.7 < np.std(pull) < 1.3 and abs(np.mean(pull)) < 0.5  # ~50 sources: mean +- 0.15
    sel = t["kind"] != "edge"   # the edge sources lose pixels: larger errors
    expected_err = np.abs(t["flux"]) / t["snr"]
    assert np.allclose(m["flux_psf_err"][sel], expected_err[sel], rtol=0.05)
    # signs and S/N
    assert np.all(np.sign(m["flux_psf"]) == np.where(m["is_negative"], -1, 1))
    assert np.allclose(m["snr_psf"], m["flux_psf"] / m["flux_psf_err"])
    # magnitudes of |flux| with the zero point
    mag_true = ZP - 2.5 * np.log10(np.abs(t["flux"]))
    assert np.all(np.abs(m["mag"] - mag_true)[bright] < 4 * m["mag_err"][bright] + 0.01)
    assert np.allclose(m["mag_err"], 2.5 / np.log(10) * m["flux_psf_err"] / np.abs(m["flux_psf"]))


def test_aperture_flux(scene):
    m, t = rows(scene, "real", "negative")
    bright = t["snr"] > 20
    # enclosed flux of the Moffat (beta 3, FWHM 3 pix) within the aperture radius (1 FWHM)
    beta, r = 3.0, 1.0 * np.asarray(m["fwhm_psf"])   # aper_radius = 1 FWHM of the difference PSF
    a = 4 * (2 ** (1 / beta) - 1) / FWHM ** 2
    frac = 1 - (1 + a * r * r) ** (1 - beta)
    ratio = m["flux_aper"] / (t["flux"] * frac)
    tol = 4 * m["flux_aper_err"] / np.abs(t["flux"] * frac) + 0.03
    assert np.all(np.abs(ratio - 1)[bright] < tol[bright])
    # sigma sqrt(sum of squared pixel fractions): a little under sigma sqrt(area)
    full = SIGMA * np.sqrt(np.pi) * r
    assert np.all((m["flux_aper_err"] > 0.9 * full) & (m["flux_aper_err"] <= full))


def test_real_sources_are_kept_and_clean(scene):
    m, t = rows(scene, "real", "negative")
    assert not np.any(m["is_dropped"]), list(m["drop_reasons"][m["is_dropped"]])
    assert np.mean(m["is_bad"]) <= 0.1, list(m["bad_reasons"][m["is_bad"]])
    assert np.mean((m["fwhm_ratio"] > 0.75) & (m["fwhm_ratio"] < 1.4)) >= 0.95
    assert np.all(m["negative_flux_fraction"] < 0.2)
    bright = t["snr"] > 20
    assert np.all(m["centroid_offset"][bright] < 0.15) and np.all(m["elongation"][bright] < 2.0)
    assert np.all(m["bad_pixels"] == 0) and np.all(m["flags"] == 0)


def test_dipoles_are_dropped(scene):
    m, _ = rows(scene, "dipole")
    assert len(m) >= 10  # both lobes of 8 dipoles (a weak lobe may stay below threshold)
    assert np.all(m["negative_flux_fraction"] > 0.6)
    assert np.all(m["is_dropped"]) and np.all(m["is_bad"])
    assert all("negative_flux_fraction>0.6" in r for r in m["drop_reasons"])
    assert np.all(m["negative_pixel_fraction"] > np.max(rows(scene, "real")[0]["negative_pixel_fraction"]))


def test_cosmic_rays_are_dropped(scene):
    m, _ = rows(scene, "cr")
    assert len(m) == 8
    assert np.all(m["fwhm_ratio"] < 0.45)
    assert np.all(m["is_dropped"]) and all("fwhm_ratio<0.5" in r for r in m["drop_reasons"])


def test_bad_columns_are_marked_bad(scene):
    m, _ = rows(scene, "column")
    assert np.all(m["is_bad"]) and np.all(m["elongation"] > 2)
    assert all("elongation>2" in r for r in m["bad_reasons"])
    mf, _ = rows(scene, "column_flagged")
    assert np.all(mf["is_bad"]) and np.all(mf["bad_pixels"] > 0)
    assert all("bad_pixels>0" in r for r in mf["bad_reasons"])


def test_edge_sources_flagged_not_lost(scene):
    m, t = rows(scene, "edge")
    assert len(m) == 2
    near_nan = t["x"] < NAN_COLUMNS + 6
    assert np.all(m["bad_pixels"][near_nan] > 0) and np.all(m["is_bad"][near_nan])
    assert np.all(m["flags"][near_nan] & pixflags.NAN)
    assert not np.any(m["is_dropped"])
    assert np.all(np.abs(m["flux_psf"] / t["flux"] - 1) < 4 / t["snr"] + 0.01)
    for f in FEATURES:
        if f != "ref_distance":
            assert np.all(np.isfinite(np.asarray(m[f], float))), f


def test_masked_pixel_at_the_peak(scene):
    """A bright source whose peak pixel is flagged: excluded from the fit, flux still right."""
    s = scene
    m0, t0 = rows(s, "real")
    j = int(np.argmax(t0["snr"]))
    i = int(np.flatnonzero(np.asarray(s["cands"]["id"]) == m0["id"][j])[0])
    cut = s["cut"]
    nf = cut.new_flags.copy()
    nf[i, 20, 20] |= pixflags.COSMIC_RAY
    masked = replace(cut, new_flags=nf)
    m = measure(masked, s["cands"], s["d"].psf, ZP, keep_dropped=True)
    assert m["bad_pixels"][i] == 1 and m["is_bad"][i] and "bad_pixels>0" in m["bad_reasons"][i]
    assert abs(m["flux_psf"][i] / t0["flux"][j] - 1) < 3 / t0["snr"][j] + 0.01
    assert m["flux_psf_err"][i] > s["m"]["flux_psf_err"][i]
    assert 0.8 < m["fwhm_ratio"][i] < 1.2
    # the flag bits that count are configurable
    m2 = measure(masked, s["cands"], s["d"].psf, ZP, keep_dropped=True,
                 pars={"bad_flags": 0xFFFF & ~pixflags.COSMIC_RAY})
    assert m2["bad_pixels"][i] == 0


def test_psf_model_and_stamp_agree(scene):
    s = scene
    sel = np.isin(s["kind"], ["real", "negative"])
    cands = s["cands"][sel]
    cut = make_cutouts(cands, s["new"], s["ref"], s["d"])
    a = measure_features(cut, cands, s["psf"], ZP)           # PSFModel evaluated at each position
    b = measure_features(cut, cands, s["d"].psf, ZP)         # difference PSF stamp, Fourier-shifted
    assert np.allclose(a["flux_psf"], b["flux_psf"], rtol=0.01, atol=0.1 * np.asarray(a["flux_psf_err"]))
    assert np.allclose(a["fwhm_psf"], FWHM, rtol=1e-3)
    bright = np.abs(a["snr_psf"]) > 20
    assert np.allclose(a["fwhm_ratio"][bright], b["fwhm_ratio"][bright], atol=0.05)


def test_shift_stamp_and_stamp_fwhm(scene):
    psf = scene["psf"]
    stamp = psf.evaluate(100.0, 100.0, 25)
    moved = shift_stamp(stamp / stamp.sum(), np.array([0.3, -0.45]), np.array([-0.2, 0.5]), 12)
    direct = psf.evaluate(np.array([100.3, 99.55]), np.array([99.8, 100.5]), 25)
    direct = direct / stamp.sum()
    assert np.max(np.abs(moved - direct)) < 2e-3 * direct.max()
    # FWHM of a sampled Gaussian; of the pixel-integrated Moffat: slightly above the intrinsic one
    yy, xx = np.mgrid[-15:16, -15:16]
    for sig in (1.0, 2.0):
        g = np.exp(-(xx ** 2 + yy ** 2) / (2 * sig ** 2))
        assert abs(stamp_fwhm(g) / (2.3548 * sig) - 1) < 0.01
    assert 1.0 < stamp_fwhm(stamp) / FWHM < 1.06


def test_ref_distance(scene):
    s = scene
    m, t = rows(s, "real")
    assert np.all(m["ref_distance"][t["snr"] > 20] < 0.2)   # 0.4 pix at 0.5"/pix
    assert np.all(m["ref_distance"] < 0.6)
    mc, _ = rows(s, "cr")
    assert np.all(mc["ref_distance"] > 5)
    # x, y reference positions with a pixel scale give the same distances
    refsrc = s["truth"][s["truth"]["kind"] == "real"]["x", "y"]
    m2 = measure_features(s["cut"], s["cands"], s["d"].psf, ZP, ref_sources=refsrc, pixel_scale=0.5)
    assert np.allclose(m2["ref_distance"], s["m"]["ref_distance"], rtol=1e-3, atol=1e-3)
    assert np.all(np.isnan(measure_features(s["cut"], s["cands"], s["d"].psf, ZP)["ref_distance"]))
    with pytest.raises(MeasureError, match="pixel_scale"):
        measure_features(s["cut"], s["cands"], s["d"].psf, ZP, ref_sources=refsrc)


def test_measure_drops_and_counts(scene):
    s = scene
    kept = measure(s["cut"], s["cands"], s["d"].psf, ZP)
    full = s["m"]
    assert len(kept) == np.sum(~full["is_dropped"]) and not np.any(kept["is_dropped"])
    assert kept.meta["N_DROP"] == np.sum(full["is_dropped"]) > 0
    assert kept.meta["N_BAD"] == np.sum(kept["is_bad"]) and kept.meta["ZP"] == ZP
    # without cuts nothing is dropped or bad
    none = {f: [None, None] for f in FEATURES}
    m = measure(s["cut"], s["cands"], s["d"].psf, ZP, pars={"bad": none, "drop": none})
    assert len(m) == len(s["cands"]) and not np.any(m["is_bad"])
    # no zero point: magnitudes are NaN, nothing else changes
    m = measure(s["cut"], s["cands"], s["d"].psf, None, keep_dropped=True)
    assert np.all(np.isnan(m["mag"])) and np.allclose(m["flux_psf"], full["flux_psf"])


def test_cut_logic_and_validation():
    t = Table({"fwhm_ratio": [1.0, 0.3, np.nan, 3.0], "bad_pixels": [0, 9, 0, 2],
               "negative_flux_fraction": [0.0, np.inf, 0.1, 0.0]})
    out = apply_cuts(t, {}, {"fwhm_ratio": [0.5, 2.5], "bad_pixels": [None, 8],
                             "negative_flux_fraction": [None, 0.6]})
    assert out["is_dropped"].tolist() == [False, True, False, True]   # NaN never cuts
    assert out["drop_reasons"][1] == "fwhm_ratio<0.5,bad_pixels>8,negative_flux_fraction>0.6"
    assert out["drop_reasons"][3] == "fwhm_ratio>2.5" and out["drop_reasons"][0] == ""
    assert not np.any(out["is_bad"])
    with pytest.raises(MeasureError, match=r"measurements\.drop\.sharpness: unknown feature"):
        check_cuts({"sharpness": [0, 1]}, "drop")
    with pytest.raises(MeasureError, match=r"measurements\.bad\.fwhm_ratio.*\[min, max\]"):
        check_cuts({"fwhm_ratio": [0.5]}, "bad")
    with pytest.raises(MeasureError, match="min 2.0 > max 1.0"):
        check_cuts({"fwhm_ratio": [2, 1]}, "bad")
    # the schema checks the shape of a cut in a config file too
    with pytest.raises(vconfig.ConfigError, match="measurements.drop.fwhm_ratio"):
        vconfig.load_config(overrides={"measurements": {"drop": {"fwhm_ratio": [1, 2, 3]}}})
    # defaults are sensible: every default cut names a feature
    d = vconfig.defaults()["measurements"]
    check_cuts(d["bad"], "bad"), check_cuts(d["drop"], "drop")


def test_empty_and_mismatched_input(scene, tmp_path):
    s = scene
    cut0 = make_cutouts(s["cands"][:0], s["new"], s["ref"], s["d"])
    m = measure(cut0, s["cands"][:0], s["d"].psf, ZP)
    assert len(m) == 0 and all(f in m.colnames for f in (*FEATURES, "is_bad", "bad_reasons"))
    write_measurements(tmp_path / "e.fits", m)
    assert len(read_measurements(tmp_path / "e.fits")) == 0
    with pytest.raises(MeasureError, match="cutouts for"):
        measure(cut0, s["cands"], s["d"].psf, ZP)
    with pytest.raises(MeasureError, match="odd size"):
        measure(s["cut"], s["cands"], np.ones((4, 4)), ZP)
    with pytest.raises(MeasureError, match="is_negative"):
        measure(s["cut"], s["cands"]["x", "y"], s["d"].psf, ZP)


def test_write_read_roundtrip(scene, tmp_path):
    m = scene["m"]
    path = tmp_path / "d" / "m.fits"
    write_measurements(path, m, {"step": "measurements", "provenance_hash": "ff00", "code_version": "1"})
    back = read_measurements(path)
    assert back.colnames == m.colnames and len(back) == len(m)
    for c in m.colnames:
        a, b = np.asarray(m[c]), np.asarray(back[c])
        if a.dtype.kind in "US":
            assert a.tolist() == b.tolist(), c
        else:
            assert np.array_equal(a, b, equal_nan=True), c
    assert back.meta["N_DROP"] == m.meta["N_DROP"] and back["mag"].unit == "mag"
    with fits.open(path) as h:
        assert h[0].header["VO_STEP"] == "measurements"
    with pytest.raises(FitsError, match="nope.fits"):
        read_measurements(tmp_path / "nope.fits")
    with pytest.raises(MeasureError, match="lacks columns"):
        write_measurements(tmp_path / "x.fits", m["id", "x"])
    assert not (tmp_path / "x.fits").exists()
