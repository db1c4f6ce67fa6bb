"""Alard-Lupton subtraction (vo.images.subtract.alard_lupton) on simulated pairs with a truth
table (the pairs and bars of tests/images/subtract/test_zogy.py), its kernel, direction choice and errors."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.table import Table
from scipy import signal

from test_zogy import ZP_NEW, ZP_REF, FLUX_SCALE, check_subtraction, make_pair
from vo.images.subtract import SubtractionError, stamp_fwhm, subtract
from vo.images.subtract.alard_lupton import basis


@pytest.mark.parametrize("fwhm_n, fwhm_r", [(3.0, 2.2), (2.2, 3.0)], ids=["ref-sharper", "new-sharper"])
def test_alard_lupton_truth(fwhm_n, fwhm_r):
    new, ref, pn, pr, stars, trans = make_pair(fwhm_n=fwhm_n, fwhm_r=fwhm_r)
    d = subtract(new, ref, pn, pr, ZP_NEW, ZP_REF, method="alard_lupton", stars=stars)
    # the sharper image is convolved; the kernel sum is the flux ratio target / convolved
    if fwhm_r < fwhm_n:
        assert d.meta["convolved"] == "reference"
        assert d.meta["kernel_sum"] == pytest.approx(1 / FLUX_SCALE, rel=0.01)
    else:
        assert d.meta["convolved"] == "new"
        assert d.meta["kernel_sum"] == pytest.approx(FLUX_SCALE, rel=0.01)
    assert d.meta["n_stars_used"] >= 0.8 * d.meta["n_stars"]
    broad = (pn if fwhm_n > fwhm_r else pr).evaluate(191.0, 191.0, 31)
    print(f"\ndifference PSF FWHM {d.meta['fwhm']:.3f}, broader input PSF {stamp_fwhm(broad):.3f} (pix)")
    assert d.meta["fwhm"] == pytest.approx(stamp_fwhm(broad), rel=0.1)
    check_subtraction(d, trans, stars, new.shape, f"alard_lupton {fwhm_n}/{fwhm_r}")


def test_kernel_matches_the_psfs():
    """The fitted kernel convolved with the sharper PSF reproduces the broader PSF (x flux ratio):
    checked through the difference of a bright star, which must vanish."""
    new, ref, pn, pr, stars, trans = make_pair(n_trans=0, seed=9)
    d = subtract(new, ref, pn, pr, ZP_NEW, ZP_REF, method="alard_lupton", stars=stars)
    bright = stars[(stars["flux"] > 3e4) & (stars["x"] > 20) & (stars["x"] < 364) & (stars["y"] > 20)
                   & (stars["y"] < 364)]
    ix, iy = np.rint(bright["x"]).astype(int), np.rint(bright["y"]).astype(int)
    resid = np.array([d.diff[y - 4:y + 5, x - 4:x + 5].sum() for x, y in zip(ix, iy)])
    err = np.array([np.sqrt((d.diff_err[y - 4:y + 5, x - 4:x + 5] ** 2).sum()) for x, y in zip(ix, iy)])
    print(f"\nbright-star residual sums / flux: {np.round(resid / bright['flux'], 4)}")
    assert np.all(np.abs(resid) < 5 * err + 0.005 * bright["flux"])


def test_basis_zero_sum_and_separable():
    factors, corr, stamps = basis([0.8, 1.6], [2, 1], 6)
    assert len(factors) == 6 + 3 and stamps.shape == (9, 13, 13)
    assert stamps[0].sum() == pytest.approx(1)
    np.testing.assert_allclose(stamps[1:].sum(axis=(1, 2)), 0, atol=1e-12)
    img = np.random.default_rng(0).normal(size=(40, 40))
    from vo.images.subtract.alard_lupton import convolve_basis

    full = signal.convolve(img, np.outer(factors[4][1], factors[4][0]), mode="same")
    np.testing.assert_allclose(convolve_basis(img, factors, 4)[8:-8, 8:-8], full[8:-8, 8:-8], atol=1e-10)


def test_too_few_stars_is_a_clear_error():
    new, ref, pn, pr, stars, _ = make_pair(n_trans=0, seed=2, shape=(128, 128), n_stars=30)
    with pytest.raises(SubtractionError, match="Alard-Lupton: 2 usable stars"):
        subtract(new, ref, pn, pr, ZP_NEW, ZP_REF, method="alard_lupton", stars=Table(stars[:2]))
    with pytest.raises(SubtractionError, match="al_sigmas"):
        subtract(new, ref, pn, pr, ZP_NEW, ZP_REF, method="alard_lupton", stars=stars,
                 pars={"al_sigmas": [1.0], "al_degrees": [2, 2]})


def test_residual_background_is_fitted_on_the_sky_not_the_stamps():
    """The differential background is the whole image's sky (clipped polynomial), so a pedestal
    or gradient left by the stamp fit is removed and sources do not pull it."""
    from vo.images.subtract.alard_lupton import residual_background

    rng = np.random.default_rng(4)
    ny, nx = 400, 300
    yy, xx = np.mgrid[0:ny, 0:nx]
    plane = -2.6 + 1.5 * (2 * xx / (nx - 1) - 1) - 0.8 * (2 * yy / (ny - 1) - 1)
    diff = (plane + rng.normal(0, 18.0, (ny, nx))).astype(np.float32)
    for x, y in rng.uniform(10, 290, (60, 2)):  # bright residuals, both signs
        diff[int(y) - 2:int(y) + 3, int(x) - 2:int(x) + 3] += rng.choice([-1, 1]) * 400
    mask = np.zeros((ny, nx), bool)
    mask[:50, :50] = True
    diff[mask] = 1e4  # masked pixels never enter
    info = {}
    bg = residual_background(diff, mask, 1, info)
    assert bg.shape == diff.shape and bg.dtype == np.float32
    assert np.max(np.abs(bg - plane)) < 0.5  # 0.03 sigma of the sky
    assert info["residual_background"] == pytest.approx(-2.6, abs=0.2)
    flat = residual_background(diff, mask, 0)
    assert np.all(flat == flat[0, 0]) and abs(flat[0, 0] + 2.6) < 0.3


def test_difference_has_no_pedestal():
    """On the sky, the Alard-Lupton difference averages zero for both directions."""
    for fwhm_n, fwhm_r in ((3.0, 2.2), (2.2, 3.0)):
        new, ref, pn, pr, stars, trans = make_pair(n_trans=0, seed=9, fwhm_n=fwhm_n, fwhm_r=fwhm_r)
        d = subtract(new, ref, pn, pr, ZP_NEW, ZP_REF, method="alard_lupton", stars=stars)
        sky = (d.flags == 0) & (np.abs(d.diff) < 3 * d.diff_err)
        level = float(np.median(d.diff[sky])) / float(np.median(d.diff_err[sky]))
        print(f"\n{fwhm_n}/{fwhm_r}: sky median {level:+.4f} sigma, fitted {d.meta['residual_background']:+.3f} e-")
        assert abs(level) < 0.03
