"""ZOGY subtraction (vo.images.subtract) on simulated pairs with a truth table, the bad-pixel
handling, the difference file, and the clear errors.

Simulated pairs: Moffat stars (vo.images.instruments.democam.simulate.render_point_sources, the DemoCam renderer)
identical in both images (reference flux-scaled x2, different seeing and sky), transients of
known flux in the new image only, Gaussian noise with the true variance (sky + read noise +
source) and the matching weight maps. Truth: transient positions and fluxes.
"""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from scipy import ndimage

from vo.images import flags as pixflags
from vo.images.image import Image
from vo.images.extract.psf import PSFModel
from vo.images.instruments.democam.render import moffat_alpha, render_point_sources
from vo.images.subtract import SubtractionError, read_difference, subtract, write_difference
from vo.images.subtract.zogy import kernel_rfft2
from vo.io.fits import FitsError

ZP_NEW = 25.0
FLUX_SCALE = 2.0  # reference / new flux ratio
ZP_REF = ZP_NEW + 2.5 * np.log10(FLUX_SCALE)


def moffat_psf(fwhm: float, beta: float, shape) -> PSFModel:
    """A constant Moffat PSFModel (the true PSF of the simulated images)."""
    a = float(moffat_alpha(fwhm, beta))
    return PSFModel.constant(1 / a ** 2, 0.0, 1 / a ** 2, beta, shape)


def make_pair(shape=(384, 384), fwhm_n=3.0, fwhm_r=2.2, beta=3.0, sky_n=300.0, sky_r=100.0,
              n_stars=200, n_trans=40, trans_flux=5000.0, seed=1, rn=5.0, wcs=True):
    """(new Image, ref Image, new PSF, ref PSF, stars Table, transients Table (x, y, flux))."""
    rng = np.random.default_rng(seed)
    ny, nx = shape
    x, y = rng.uniform(5, nx - 5, n_stars), rng.uniform(5, ny - 5, n_stars)
    f = 10 ** rng.uniform(2.5, 5, n_stars)
    # transients on integer pixels (the flux image is sampled there), away from the edges
    tx, ty = rng.integers(25, nx - 25, n_trans).astype(float), rng.integers(25, ny - 25, n_trans).astype(float)
    tf = np.full(n_trans, trans_flux)
    images = []
    for fw, sky, sc, with_trans in ((fwhm_n, sky_n, 1.0, True), (fwhm_r, sky_r, FLUX_SCALE, False)):
        xx, yy, ff = (np.r_[x, tx], np.r_[y, ty], np.r_[f, tf]) if with_trans else (x, y, f)
        m = render_point_sources(shape, xx, yy, ff * sc, fw, beta).astype(np.float64)
        var = sky + rn ** 2 + m
        sci = (m + sky + rng.normal(size=shape) * np.sqrt(var)).astype(np.float32)
        h = fits.Header()
        if wcs:
            h.update({"CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CRVAL1": 150.0, "CRVAL2": 2.0,
                      "CRPIX1": nx / 2, "CRPIX2": ny / 2, "CD1_1": -1.4e-4, "CD1_2": 0.0,
                      "CD2_1": 0.0, "CD2_2": 1.4e-4, "EXPOSURE": "sim_new" if with_trans else "sim_ref"})
        images.append(Image(sci=sci, weight=(1 / var).astype(np.float32),
                            flags=np.zeros(shape, pixflags.DTYPE), header=h))
    stars = Table({"x": x, "y": y, "flux": f})
    trans = Table({"x": tx, "y": ty, "flux": tf})
    return images[0], images[1], moffat_psf(fwhm_n, beta, shape), moffat_psf(fwhm_r, beta, shape), stars, trans


def away_from(points, shape, radius) -> np.ndarray:
    """Bool map: pixels farther than ``radius`` from every (x, y) in ``points``."""
    m = np.zeros(shape, bool)
    m[np.rint(points[:, 1]).astype(int), np.rint(points[:, 0]).astype(int)] = True
    r = int(np.ceil(radius))
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    return ~ndimage.binary_dilation(m, structure=xx ** 2 + yy ** 2 <= r * r)


def check_subtraction(d, trans, stars, shape, label):
    """The accuracy bars shared by ZOGY and Alard-Lupton (returns the figures)."""
    ix, iy = trans["x"].astype(int), trans["y"].astype(int)
    ratio = d.flux[iy, ix] / trans["flux"]
    pull_flux = (d.flux[iy, ix] - trans["flux"]) / d.flux_err[iy, ix]
    snr_expected = trans["flux"] / d.flux_err[iy, ix]
    tpos = np.c_[trans["x"], trans["y"]]
    blank = (d.flags == 0) & away_from(tpos, shape, 4 * d.meta["fwhm"])
    sky = blank & away_from(np.c_[stars["x"], stars["y"]], shape, 4 * d.meta["fwhm"])
    chi2 = float(np.mean((d.diff[sky] / d.diff_err[sky]) ** 2))
    print(f"\n{label}: flux/true median {np.median(ratio):.4f} (scatter {np.std(ratio):.3f}), flux pull "
          f"std {np.std(pull_flux):.2f}, S/N {np.median(d.score_corr[iy, ix]):.1f} vs expected "
          f"{np.median(snr_expected):.1f}; sky reduced chi2 {chi2:.3f}; score_corr std (no transients) "
          f"{d.score_corr[blank].std():.3f}, max |score_corr| {np.abs(d.score_corr[blank]).max():.2f}")
    # fluxes unbiased to 1% (40 transients at S/N ~30: the median's error is ~0.5%)
    assert abs(np.median(ratio) - 1) < 0.01
    # errors right: pulls of the flux have unit scatter, S/N at the transient what its flux gives
    assert 0.75 < np.std(pull_flux) < 1.3
    np.testing.assert_allclose(np.median(d.score_corr[iy, ix]), np.median(snr_expected), rtol=0.1)
    # the difference noise matches its error map on the sky
    assert abs(chi2 - 1) < 0.05
    # constant stars (fluxes up to 1e5 e-) leave no significant residual; noise is N(0, 1)
    assert 0.93 < d.score_corr[blank].std() < 1.07
    assert np.sum(np.abs(d.score_corr[blank]) > 5) <= 2
    return ratio


@pytest.mark.parametrize("fwhm_n, fwhm_r", [(3.0, 2.2), (2.2, 3.0)], ids=["ref-sharper", "new-sharper"])
def test_zogy_truth(fwhm_n, fwhm_r):
    new, ref, pn, pr, stars, trans = make_pair(fwhm_n=fwhm_n, fwhm_r=fwhm_r)
    d = subtract(new, ref, pn, pr, ZP_NEW, ZP_REF, method="zogy")
    assert d.meta["method"] == "zogy" and d.meta["flux_ratio"] == pytest.approx(FLUX_SCALE)
    for name in ("diff", "diff_err", "score", "score_corr", "flux", "flux_err"):
        arr = getattr(d, name)
        assert arr.dtype == np.float32 and arr.shape == new.shape and np.all(np.isfinite(arr)), name
    assert d.psf.sum() == pytest.approx(1, abs=1e-5)
    check_subtraction(d, trans, stars, new.shape, f"zogy {fwhm_n}/{fwhm_r}")
    # the difference PSF: transients in diff have PSF d.psf and flux in e- of the new image
    ix, iy = trans["x"].astype(int), trans["y"].astype(int)
    h = d.psf.shape[0] // 2
    inner = (ix > h) & (iy > h) & (ix < new.shape[1] - h - 1) & (iy < new.shape[0] - h - 1)
    stamps = np.stack([d.diff[y - h:y + h + 1, x - h:x + h + 1] for x, y in zip(ix[inner], iy[inner])])
    amp = (stamps * d.psf).sum(axis=(1, 2)) / (d.psf ** 2).sum()
    assert np.median(amp / trans["flux"][inner]) == pytest.approx(1, abs=0.02)


def test_kernel_rfft2_equals_full_rfft2():
    rng = np.random.default_rng(3)
    stamp = rng.normal(size=(11, 11))
    shape = (64, 48)
    full = np.zeros(shape)
    k = np.arange(-5, 6)
    full[np.ix_(k % 64, k % 48)] = stamp
    np.testing.assert_allclose(kernel_rfft2(stamp, shape), np.fft.rfft2(full), atol=1e-4)


def test_bad_column_does_not_ring():
    """A flagged bad column with absurd values in the new image changes the score nowhere
    outside the grown flags (compared with the same pair without the column)."""
    new, ref, pn, pr, stars, trans = make_pair(n_trans=5, seed=5)
    clean = subtract(new, ref, pn, pr, ZP_NEW, ZP_REF)
    col = 150
    bad = Image(sci=new.sci.copy(), weight=new.weight.copy(), flags=new.flags.copy(), header=new.header)
    bad.sci[:, col] = 1e7
    bad.sci[100:110, col] = np.nan
    bad.flags[:, col] |= pixflags.BAD
    bad.weight[:, col] = 0
    d = subtract(bad, ref, pn, pr, ZP_NEW, ZP_REF)
    grow = int(np.ceil(1.5 * max(pn.fwhm(), pr.fwhm())))
    assert np.all(d.flags[:, col - grow:col + grow + 1] & pixflags.BAD)
    assert np.all(d.flags[100:110, col] & pixflags.BAD)
    assert not np.any(d.flags[:, col + grow + 1:-grow - 1] & pixflags.BAD)
    for name in ("diff", "score", "score_corr", "flux"):
        assert np.all(np.isfinite(getattr(d, name))), name
    outside = (d.flags == 0) & (clean.flags == 0)
    change = np.abs(d.score_corr - clean.score_corr)[outside]
    print(f"\nbad column: max |score_corr change| outside the grown flags {change.max():.3f} sigma; "
          f"next to it {np.abs(d.score_corr - clean.score_corr)[:, col + grow + 1].max():.3f}")
    assert change.max() < 0.5
    assert np.abs(d.diff - clean.diff)[outside].max() < 0.5 * np.median(d.diff_err)


def test_unflagged_zero_weight_and_nan_get_flags():
    new, ref, pn, pr, _, _ = make_pair(n_trans=0, seed=2, shape=(128, 128), n_stars=30)
    ref.sci[40, 40] = np.nan
    ref.weight[60, 70] = 0
    d = subtract(new, ref, pn, pr, ZP_NEW, ZP_REF)
    assert d.flags[40, 40] & pixflags.NAN and d.flags[60, 70] & pixflags.BAD
    assert np.all(d.flags[:2] & pixflags.EDGE) and np.all(d.flags[:, -2:] & pixflags.EDGE)
    assert np.all(np.isfinite(d.score_corr))


def test_write_read_difference(tmp_path):
    new, ref, pn, pr, _, _ = make_pair(n_trans=3, seed=4, shape=(128, 160), n_stars=30)
    d = subtract(new, ref, pn, pr, ZP_NEW, ZP_REF)
    path = tmp_path / "diff.fits"
    write_difference(path, d, {"step": "subtraction", "provenance_hash": "abc123", "code_version": "1"})
    with fits.open(path) as hdul:
        names = [h.name for h in hdul]
        assert names == ["PRIMARY", "DIFF", "ERROR", "SCORE", "SCORR", "FLUX", "FLUXERR", "FLAGS", "PSF",
                         "KERNGRID"]
        assert hdul["DIFF"].data.dtype.name == "float32" and hdul["FLAGS"].data.dtype.name == "uint16"
        assert hdul[0].header["VO_HASH"] == "abc123" and hdul[0].header["METHOD"] == "zogy"
        assert hdul["DIFF"].header["CRVAL1"] == 150.0 and hdul["SCORR"].header["BUNIT"] == "sigma"
        np.testing.assert_array_equal(hdul["SCORR"].data, d.score_corr)
    back = read_difference(path)
    for name in ("diff", "diff_err", "score", "score_corr", "flux", "flux_err", "flags", "psf", "kernel_grid"):
        np.testing.assert_array_equal(getattr(back, name), getattr(d, name))
    assert back.psf_grid is None and [list(e) for e in back.tile_edges] == [[0, 128], [0, 160]]
    assert back.meta["F_S"] == pytest.approx(d.meta["F_S"]) and back.header["CRVAL2"] == 2.0
    assert not list(tmp_path.glob("*.tmp*"))


def test_clear_errors(tmp_path):
    new, ref, pn, pr, _, _ = make_pair(n_trans=0, seed=2, shape=(128, 128), n_stars=30)
    small = Image(sci=ref.sci[:100], weight=ref.weight[:100], flags=ref.flags[:100], header=ref.header)
    with pytest.raises(SubtractionError, match="differ in shape"):
        subtract(new, small, pn, pr, ZP_NEW, ZP_REF)
    with pytest.raises(SubtractionError, match="unknown subtraction method 'hotpants'"):
        subtract(new, ref, pn, pr, ZP_NEW, ZP_REF, method="hotpants")
    with pytest.raises(SubtractionError, match="ref_zp"):
        subtract(new, ref, pn, pr, ZP_NEW, float("nan"))
    dead = Image(sci=ref.sci, weight=np.zeros_like(ref.weight), flags=ref.flags, header=ref.header)
    with pytest.raises(SubtractionError, match="ref image: 100.0% of the pixels"):
        subtract(new, dead, pn, pr, ZP_NEW, ZP_REF)
    path = tmp_path / "diff.fits"
    write_difference(path, subtract(new, ref, pn, pr, ZP_NEW, ZP_REF))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(FitsError, match="diff.fits"):
        read_difference(path)
    with pytest.raises(FitsError, match="not found"):
        read_difference(tmp_path / "missing.fits")


@pytest.mark.parametrize("method", ["zogy", "alard_lupton"])
def test_resampled_reference_noise_is_accounted_for(method):
    """A reference resampled onto the new grid (subpixel shift and a small rotation) has correlated
    noise; with its NACF* header the score maps still have unit sky rms, and without it (white-noise
    assumption, the header keys removed) they are visibly too wide."""
    from astropy.wcs import WCS

    from vo.images.reference.align import align_image

    # a noisy reference (its noise matters as much as the new image's)
    new, ref, pn, pr, stars, trans = make_pair(n_stars=80, n_trans=5, seed=11, sky_r=1200.0)
    # the reference on a grid 0.43, 0.29 pix off and rotated 0.2 deg, aligned back onto the new grid
    w_new = WCS(new.header)
    w_ref = w_new.deepcopy()
    w_ref.wcs.crpix = w_ref.wcs.crpix + np.array([0.43, 0.29])
    t = np.deg2rad(0.2)
    w_ref.wcs.cd = w_ref.wcs.cd @ np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    ref_aligned = align_image(Image(sci=ref.sci, weight=ref.weight, flags=ref.flags,
                                    header=w_ref.to_header(relax=True)), w_new, new.shape)
    assert "NACF0P1" in ref_aligned.header
    d = subtract(new, ref_aligned, pn, pr, ZP_NEW, ZP_REF, method=method, stars=stars)
    white = ref_aligned.header.copy()
    for key in [k for k in white if k.startswith("NACF")]:
        del white[key]
    d_white = subtract(new, Image(sci=ref_aligned.sci, weight=ref_aligned.weight, flags=ref_aligned.flags,
                                  header=white), pn, pr, ZP_NEW, ZP_REF, method=method, stars=stars)
    tpos = np.c_[trans["x"], trans["y"]]
    blank = ((d.flags == 0) & away_from(tpos, new.shape, 4 * d.meta["fwhm"])
             & away_from(np.c_[stars["x"], stars["y"]], new.shape, 4 * d.meta["fwhm"]))
    std, std_white = d.score_corr[blank].std(), d_white.score_corr[blank].std()
    print(f"\n{method}: score_corr sky std {std:.3f} with the reference's noise correlation, {std_white:.3f} without")
    assert abs(std - 1) < 0.04
    assert std_white > std + 0.03
