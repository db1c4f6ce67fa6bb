"""Detection on difference images (vo.images.detect), on a synthetic scene with a truth table.

:func:`synthetic_scene` (also used by test_cutouts.py and test_measure.py) builds what the
subtraction step hands over for a new image and its reference: a difference image of white
Gaussian noise (sigma = 10 e-) holding real transients (point sources, positive and negative),
misalignment dipoles (a star shifted by 0.6 pix between new and reference), cosmic-ray-like
single hot pixels, an unflagged bad column and a flagged one, and NaN columns at the CCD edge;
plus the flux image alpha, its error and the score image S = alpha / sigma_alpha that ZOGY gives
for white noise (the matched filter of the difference with its PSF: Zackay+16 eqs. 12-13). The
sources are rendered with the pipeline's Moffat :class:`vo.images.extract.psf.PSFModel` (FWHM 3 pix).
The injected S/N of a point source of flux F is ``F sqrt(sum P^2) / sigma`` with P its
pixel-integrated PSF: the S/N of an optimal PSF fit.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS
from scipy.signal import fftconvolve
from scipy.spatial import cKDTree

from vo.images import flags as pixflags
from vo.images.detect import (COLUMNS, DetectionError, detect_candidates, merge_close,
                              read_candidates, write_candidates)
from vo.images.image import Image
from vo.images.extract.psf import PSFModel
from vo.images.subtract.common import Difference
from vo.io.fits import FitsError

SIGMA = 10.0          # e-, difference-image noise
FWHM = 3.0            # pix
SHAPE = (256, 384)
NAN_COLUMNS = 5       # columns 0..4 are NaN (off the detector)
PSF_SIZE = 25
DIPOLE_SHIFT = 0.6    # pix
BAD_COLUMN, BAD_COLUMN_FLAGGED = 136, 264   # x of the unflagged and the flagged bad column
BAD_ROWS = slice(40, 120)
BAD_LEVEL = 6.0       # sigma per pixel along the bad columns


def moffat(fwhm: float = FWHM, beta: float = 3.0, shape=SHAPE) -> PSFModel:
    """A constant round Moffat PSF model of the given FWHM (pix)."""
    a = 4 * (2 ** (1 / beta) - 1) / fwhm ** 2
    return PSFModel.constant(a, 0.0, a, beta, shape)


def add_psf(img: np.ndarray, psf: PSFModel, x, y, flux, half: int = 12) -> None:
    """Add point sources of ``flux`` (e-) at (x, y) to ``img`` in place (clipped at the edges)."""
    ix, iy, stamps = psf.render(np.atleast_1d(x), np.atleast_1d(y), half)
    inside = (ix >= 0) & (ix < img.shape[1]) & (iy >= 0) & (iy < img.shape[0])
    vals = np.atleast_1d(flux)[:, None, None] * stamps
    np.add.at(img, (iy[inside], ix[inside]), vals[inside])


def true_snr(psf: PSFModel, x, y, flux) -> np.ndarray:
    """S/N of an optimal PSF fit: F sqrt(sum P^2) / sigma."""
    P = psf.evaluate(np.atleast_1d(x), np.atleast_1d(y), PSF_SIZE)
    return np.atleast_1d(flux) * np.sqrt((P.astype(float) ** 2).sum(axis=(1, 2))) / SIGMA


def make_wcs(shape=SHAPE) -> WCS:
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [150.0, 2.0]
    w.wcs.crpix = [shape[1] / 2, shape[0] / 2]
    w.wcs.cdelt = [-0.5 / 3600, 0.5 / 3600]
    return w


def matched_filter(diff: np.ndarray, err: np.ndarray, psf_stamp: np.ndarray):
    """alpha, sigma_alpha and S = alpha / sigma_alpha of a white-noise difference (NaN -> 0)."""
    good = np.isfinite(diff)
    spp = float((psf_stamp.astype(float) ** 2).sum())
    flux = fftconvolve(np.where(good, diff, 0), psf_stamp[::-1, ::-1], mode="same") / spp
    flux_err = np.where(good, err, np.nan) / np.sqrt(spp)
    score = flux / flux_err
    return flux.astype(np.float32), flux_err.astype(np.float32), score.astype(np.float32)


def synthetic_scene(seed: int = 1, shape=SHAPE):
    """A difference, its new and reference images, the truth table, the PSF and the WCS.

    Truth columns: kind (real, negative, dipole, cr, edge), x, y (0-based pix), flux (e-, signed;
    for a dipole the flux of the shifted star), snr (injected S/N of a point source; for cr the
    hot pixel's value / sigma), ra, dec (deg).
    """
    rng = np.random.default_rng(seed)
    ny, nx = shape
    psf = moffat(shape=shape)
    gy, gx = np.mgrid[24:ny - 16:32, 24:nx - 16:32]
    gx = gx.ravel() + rng.uniform(-3, 3, gx.size)
    gy = gy.ravel() + rng.uniform(-3, 3, gy.size)
    cells = rng.permutation(gx.size)
    kinds = np.array(["real"] * 40 + ["negative"] * 8 + ["dipole"] * 8 + ["cr"] * 8)
    cells = cells[:kinds.size]
    x, y = gx[cells], gy[cells]
    sn = np.exp(rng.uniform(np.log(8), np.log(80), kinds.size))
    sn[kinds == "dipole"] = rng.uniform(150, 300, (kinds == "dipole").sum())  # the star's S/N
    sn[kinds == "cr"] = rng.uniform(20, 60, (kinds == "cr").sum())            # hot pixel / sigma
    unit = true_snr(psf, x, y, np.ones(x.size))       # S/N per e-
    flux = sn / unit
    flux[kinds == "negative"] *= -1
    # two sources at the CCD edges: next to the NaN columns and 2 pix from the bottom row
    x = np.r_[x, NAN_COLUMNS + 1.6, 200.3]
    y = np.r_[y, 180.4, 2.1]
    sn = np.r_[sn, 40.0, 40.0]
    flux = np.r_[flux, 40.0 / true_snr(psf, x[-2:], y[-2:], np.ones(2))]
    kinds = np.r_[kinds, ["edge", "edge"]]
    cr_val = np.where(kinds == "cr", sn * SIGMA, 0)
    x[kinds == "cr"] = np.rint(x[kinds == "cr"])
    y[kinds == "cr"] = np.rint(y[kinds == "cr"])

    signal = np.zeros(shape)
    pts = (kinds == "real") | (kinds == "negative") | (kinds == "edge")
    add_psf(signal, psf, x[pts], y[pts], flux[pts])
    dip = kinds == "dipole"
    ang = rng.uniform(0, 2 * np.pi, dip.sum())
    ddx, ddy = DIPOLE_SHIFT / 2 * np.cos(ang), DIPOLE_SHIFT / 2 * np.sin(ang)
    add_psf(signal, psf, x[dip] + ddx, y[dip] + ddy, flux[dip])
    add_psf(signal, psf, x[dip] - ddx, y[dip] - ddy, -flux[dip])
    crs = kinds == "cr"
    signal[y[crs].astype(int), x[crs].astype(int)] += cr_val[crs]
    signal[BAD_ROWS, BAD_COLUMN] += BAD_LEVEL * SIGMA
    signal[BAD_ROWS, BAD_COLUMN_FLAGGED] += BAD_LEVEL * SIGMA

    diff = signal + rng.normal(0, SIGMA, shape)
    diff[:, :NAN_COLUMNS] = np.nan
    err = np.full(shape, SIGMA)
    new_flags = np.zeros(shape, np.uint16)
    new_flags[:, :NAN_COLUMNS] = pixflags.NAN | pixflags.EDGE
    ref_flags = new_flags.copy()
    new_flags[BAD_ROWS, BAD_COLUMN_FLAGGED] |= pixflags.BAD
    psf_stamp = psf.evaluate((nx - 1) // 2, (ny - 1) // 2, PSF_SIZE)
    psf_stamp = (psf_stamp / psf_stamp.sum()).astype(np.float32)
    aflux, aerr, score = matched_filter(diff, err, psf_stamp)
    score[:, :NAN_COLUMNS] = np.nan
    d = Difference(diff=diff.astype(np.float32), diff_err=np.where(np.isfinite(diff), err, np.nan).astype(np.float32),
                       score=score, score_corr=score.copy(), flux=aflux, flux_err=aerr, psf=psf_stamp,
                       flags=new_flags | ref_flags, meta={"method": "synthetic", "fwhm": FWHM})
    wcs = make_wcs(shape)
    header = wcs.to_header()
    ref_sci = (100 + rng.normal(0, SIGMA / 2, shape)).astype(np.float32)
    new_sci = (ref_sci + np.nan_to_num(diff)).astype(np.float32)
    weight = np.where(new_flags == 0, 1 / SIGMA ** 2, 0).astype(np.float32)
    new = Image(sci=new_sci, weight=weight, flags=new_flags, header=header.copy())
    ref = Image(sci=ref_sci, weight=np.where(ref_flags == 0, 4 / SIGMA ** 2, 0).astype(np.float32),
                flags=ref_flags, header=header.copy())
    ra, dec = wcs.all_pix2world(x, y, 0)
    truth = Table({"kind": kinds, "x": x, "y": y, "flux": flux, "snr": sn, "ra": ra, "dec": dec})
    return d, new, ref, truth, psf, wcs


@pytest.fixture(scope="module")
def scene():
    return synthetic_scene()


@pytest.fixture(scope="module")
def found(scene):
    d, _, _, _, _, wcs = scene
    return detect_candidates(d, wcs=wcs)


def nearest(cands: Table, x, y, negative: bool):
    """Distance (pix) to and index of the nearest candidate of the given sign."""
    sel = np.flatnonzero(cands["is_negative"] == negative)
    dist, i = cKDTree(np.column_stack([cands["x"][sel], cands["y"][sel]])).query(np.column_stack([x, y]))
    return dist, sel[np.minimum(i, len(sel) - 1)]


def test_point_sources_found_once_at_their_positions_and_snr(scene, found):
    _, _, _, truth, _, _ = scene
    for kind, negative in (("real", False), ("negative", True)):
        t = truth[truth["kind"] == kind]
        dist, idx = nearest(found, t["x"], t["y"], negative)
        # position errors: ~0.25 pix (median) at S/N 8-12, 0.09 at 20-40 (30 scenes: max 1.06, 0.32)
        assert np.all(dist < 1.2), f"{kind}: a source with S/N >= 8 not found within 1.2 pix: {dist.max():.2f}"
        bright = t["snr"] > 20
        assert np.all(dist[bright] < 0.4), f"{kind}: bright source off by {dist[bright].max():.2f} pix"
        # no duplicates: exactly one candidate of this sign within 6 pix of each source
        for xi, yi in zip(t["x"], t["y"]):
            close = (np.hypot(found["x"] - xi, found["y"] - yi) < 6) & (found["is_negative"] == negative)
            assert close.sum() == 1, f"{kind} at ({xi:.1f}, {yi:.1f}): {close.sum()} candidates"
        snr = np.abs(found["snr"][idx])
        ratio = snr / t["snr"]
        assert abs(np.median(ratio) - 1) < 0.05, f"{kind}: median S/N ratio {np.median(ratio):.3f}"
        # each within 12% or 3 sigma of the noise (S/N errors are 1)
        assert np.all(np.abs(snr - t["snr"]) < 0.12 * t["snr"] + 3), f"{kind}: S/N {snr} vs {t['snr']}"
        assert np.all(np.sign(found["snr"][idx]) == (-1 if negative else 1))
        # flux (PSF fit at the sub-pixel peak) matches the truth within 4 sigma, unbiased
        f, fe = found["flux"][idx], found["flux_err"][idx]
        assert np.all(np.abs(f - t["flux"]) < 4 * fe)
        assert abs(np.median((f - t["flux"]) / fe)) < 0.5


@pytest.mark.parametrize("fwhm", [2.0, 3.0])
def test_bright_fluxes_unbiased_at_subpixel_positions(fwhm):
    """Bright point sources (S/N ~200) at random sub-pixel positions: the PSF-fit flux is
    within 0.5% of the truth (median, each within 1%), where the flux map interpolated at the
    peak read low by the curvature the quadratic misses."""
    rng = np.random.default_rng(3)
    shape = (300, 300)
    psf = moffat(fwhm, shape=shape)
    g = np.arange(30, 271, 40.0)
    x, y = [a.ravel() + rng.uniform(-0.5, 0.5, a.size) for a in np.meshgrid(g, g)]
    flux = 200 / true_snr(psf, x, y, np.ones(x.size))
    img = np.zeros(shape)
    add_psf(img, psf, x, y, flux)
    err = np.full(shape, 1.0)
    diff = img + rng.normal(0, 0.01, shape)  # nearly noiseless: the bias alone
    stamp = psf.evaluate(150.0, 150.0, PSF_SIZE)
    stamp = (stamp / stamp.sum()).astype(np.float32)
    aflux, aerr, score = matched_filter(diff, err, stamp)
    d = Difference(diff=diff.astype(np.float32), diff_err=err.astype(np.float32), score=score,
                   score_corr=score, flux=aflux, flux_err=aerr, psf=stamp,
                   flags=np.zeros(shape, np.uint16), meta={"fwhm": fwhm})
    found = detect_candidates(d)
    dist, idx = cKDTree(np.c_[found["x"], found["y"]]).query(np.c_[x, y])
    assert np.all(dist < 0.1)
    ratio = found["flux"][idx] / flux
    peak = aflux[np.rint(found["y"][idx]).astype(int), np.rint(found["x"][idx]).astype(int)] / flux
    print(f"\nFWHM {fwhm}: PSF-fit flux / true median {np.median(ratio):.4f} (worst {ratio.min():.4f}); "
          f"flux map at the peak pixel {np.median(peak):.4f}")
    assert abs(np.median(ratio) - 1) < 0.005 and np.all(np.abs(ratio - 1) < 0.01), ratio


def test_every_candidate_is_explained_by_the_truth(scene, found):
    """No candidate on pure noise: each lies on a source, a dipole, a hot pixel or a bad column."""
    _, _, _, truth, _, _ = scene
    d_src = cKDTree(np.column_stack([truth["x"], truth["y"]])).query(np.column_stack([found["x"], found["y"]]))[0]
    on_column = ((np.abs(found["x"] - BAD_COLUMN) < 3) | (np.abs(found["x"] - BAD_COLUMN_FLAGGED) < 3)) \
        & (found["y"] > BAD_ROWS.start - 4) & (found["y"] < BAD_ROWS.stop + 4)
    assert np.all((d_src < 3) | on_column)
    assert np.any(on_column), "the bad columns (6 sigma per pixel) must give candidates"


def test_dipoles_give_a_positive_and_a_negative_candidate(scene, found):
    _, _, _, truth, _, _ = scene
    t = truth[truth["kind"] == "dipole"]
    for negative in (False, True):
        dist, _ = nearest(found, t["x"], t["y"], negative)
        assert np.all(dist < 3), f"dipole lobe (negative={negative}) missing"


def test_nan_edges_and_edge_sources(scene, found):
    _, _, _, truth, _, _ = scene
    assert np.all(found["x"] >= NAN_COLUMNS), "candidate on the NaN columns"
    for name in ("x", "y", "flux", "flux_err", "snr", "ra", "dec"):
        assert np.all(np.isfinite(found[name])), name
    t = truth[truth["kind"] == "edge"]
    dist, idx = nearest(found, t["x"], t["y"], False)
    assert np.all(dist < 1.0)
    # their peaks are on good pixels: no flag at the peak (the stamps' flags are cutouts' business)
    assert np.all(found["flags"][idx] == 0)


def test_sky_positions_and_table_layout(scene, found):
    _, _, _, truth, _, wcs = scene
    t = truth[(truth["kind"] == "real") & (truth["snr"] > 20)]
    _, idx = nearest(found, t["x"], t["y"], False)
    sep = np.hypot((found["ra"][idx] - t["ra"]) * np.cos(np.radians(t["dec"])), found["dec"][idx] - t["dec"]) * 3600
    assert np.all(sep < 0.2), sep.max()  # 0.4 pix at 0.5"/pix
    assert list(found.colnames) == list(COLUMNS)
    assert np.array_equal(found["id"], np.arange(len(found)))
    assert np.all(np.diff(np.abs(found["snr"])) <= 0), "sorted by decreasing |S/N|"
    assert found.meta["N_CAND"] == len(found) == found.meta["N_POS"] + found.meta["N_NEG"]
    assert np.all(np.abs(found["snr"]) >= 5.0 - 1e-6)


def test_no_candidates_in_pure_noise():
    rng = np.random.default_rng(5)
    shape = (512, 512)
    diff = rng.normal(0, SIGMA, shape)
    psf = moffat(shape=shape)
    stamp = psf.evaluate(255, 255, PSF_SIZE)
    stamp = (stamp / stamp.sum()).astype(np.float32)
    f, fe, s = matched_filter(diff, np.full(shape, SIGMA), stamp)
    d = Difference(diff.astype(np.float32), np.full(shape, SIGMA, np.float32), s, s, f, fe, stamp,
                       np.zeros(shape, np.uint16))
    assert abs(np.std(s[20:-20, 20:-20]) - 1) < 0.02
    assert len(detect_candidates(d)) == 0
    # at 3.5 sigma the count of peaks is small but not zero: the threshold is applied
    low = detect_candidates(d, {"threshold": 3.5})
    assert 0 < len(low) < 100


def test_score_image_choice_and_truncation(scene):
    d = scene[0]
    blind = replace(d, score_corr=np.zeros_like(d.score_corr))
    assert len(detect_candidates(blind)) == 0
    assert len(detect_candidates(blind, {"score": "score"})) > 0
    few = detect_candidates(d, {"max_candidates": 3})
    assert len(few) == 3 and few.meta["N_TRUNC"] > 0
    full = detect_candidates(d)
    assert np.allclose(few["snr"], full["snr"][:3])


def test_min_npix_and_merge_radius(scene):
    d = scene[0]
    full = detect_candidates(d)
    cut = int(np.median(full["npix"])) + 1
    big = detect_candidates(d, {"min_npix": cut})
    assert 0 < len(big) < len(full) and np.all(big["npix"] >= cut)
    # without merging, the bad column (one noisy ridge) may split into more pieces
    assert len(detect_candidates(d, {"merge_radius": 0})) >= len(full)


def test_merge_close_groups_same_sign_only():
    x = np.array([0.0, 2.0, 3.5, 30.0, 1.0])
    y = np.zeros(5)
    strength = np.array([5.0, 9.0, 6.0, 7.0, 8.0])
    sign = np.array([1, 1, 1, 1, -1])
    keep, group = merge_close(x, y, strength, sign, 2.0)
    # 0-1-2 chain (friends of friends) -> keep 1; 3 alone; 4 has the other sign
    assert sorted(keep.tolist()) == [1, 3, 4]
    assert group[0] == group[1] == group[2] and len(set(group.tolist())) == 3


def test_bad_input_is_named(scene):
    d = scene[0]
    with pytest.raises(DetectionError, match="diff_err"):
        detect_candidates(replace(d, diff_err=d.diff_err[:10]))
    with pytest.raises(DetectionError, match="psf"):
        detect_candidates(replace(d, psf=None))
    with pytest.raises(DetectionError, match="score_corr"):
        detect_candidates(replace(d, score_corr=None))
    with pytest.raises(DetectionError, match="threshold"):
        detect_candidates(d, {"threshold": 0})
    all_nan = replace(d, score_corr=np.full_like(d.score_corr, np.nan))
    assert len(detect_candidates(all_nan)) == 0


def test_write_read_roundtrip(tmp_path, found):
    path = tmp_path / "sub" / "c.cand.fits"
    attrs = {"step": "detection", "provenance_hash": "abc123", "code_version": "1",
             "parameters": {"threshold": 5.0}}
    write_candidates(path, found, attrs)
    back = read_candidates(path)
    assert back.colnames == found.colnames and len(back) == len(found)
    for c in found.colnames:
        assert back[c].dtype == found[c].dtype, c
        assert np.array_equal(np.asarray(back[c]), np.asarray(found[c])), c
    assert back.meta["N_CAND"] == len(found) and back.meta["SCOREIMG"] == "score_corr"
    with fits.open(path) as h:
        assert h[0].header["VO_STEP"] == "detection" and h[0].header["VO_HASH"] == "abc123"
    # an empty table round-trips with every column
    empty = found[:0]
    write_candidates(tmp_path / "e.fits", empty)
    e = read_candidates(tmp_path / "e.fits")
    assert len(e) == 0 and e.colnames == found.colnames


def test_write_and_read_errors(tmp_path, found):
    bad = found.copy()
    bad.remove_column("snr")
    with pytest.raises(DetectionError, match="snr"):
        write_candidates(tmp_path / "x.fits", bad)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(FitsError, match="missing.fits"):
        read_candidates(tmp_path / "missing.fits")
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU(Table({"x": [1.0]}), name="CANDIDATES")]).writeto(
        tmp_path / "short.fits")
    with pytest.raises(FitsError, match="lacks columns"):
        read_candidates(tmp_path / "short.fits")
