"""Forced PSF photometry: simulated difference images with a truth table, and real DECam noise."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from scipy import ndimage

from vo.images import flags as pixflags
from vo.images.detect.forced import forced_photometry, forced_photometry_sky, shifted_stamps
from vo.images.extract.psf import PSFModel
from testdata import DATA as TEST_DATA

DECAM = TEST_DATA / "decam" / "DEC-OBS04a.mini.fits"


def moffat_model(fwhm: float, shape, beta: float = 3.0) -> PSFModel:
    """A constant circular Moffat PSF model."""
    alpha = fwhm / (2 * np.sqrt(2 ** (1 / beta) - 1))
    return PSFModel.constant(alpha ** -2, 0.0, alpha ** -2, beta, shape)


def grid_positions(shape, step, margin, rng):
    """Sub-pixel positions on a grid (no two sources blend)."""
    ny, nx = shape
    gy, gx = np.mgrid[margin:ny - margin:step, margin:nx - margin:step]
    return gx.ravel() + rng.uniform(-0.5, 0.5, gx.size), gy.ravel() + rng.uniform(-0.5, 0.5, gx.size)


def add_sources(img, psf, x, y, flux, half=12):
    stamps = psf.evaluate(x, y, 2 * half + 1)
    for xi, yi, f, s in zip(x, y, flux, stamps):
        cx, cy = int(np.rint(xi)), int(np.rint(yi))
        img[cy - half:cy + half + 1, cx - half:cx + half + 1] += f * s
    return img


def test_simulated_difference_fluxes_unbiased_with_correct_errors():
    rng = np.random.default_rng(5)
    shape, sigma, zp = (400, 400), 12.0, 28.0
    psf = moffat_model(3.5, shape)
    x, y = grid_positions(shape, 30, 20, rng)
    flux = 10 ** rng.uniform(2.5, 4.0, x.size)  # S/N ~ 4 to 130
    truth_mag = -2.5 * np.log10(flux) + zp
    err = np.full(shape, sigma, np.float32)
    pulls, mags = [], []
    for _ in range(4):  # independent noise realisations
        img = add_sources(rng.normal(0, sigma, shape), psf, x, y, flux).astype(np.float32)
        t = forced_photometry(img, err, psf, x, y, zp=zp, size=15)
        assert t["ok"].all() and (t["flags"] == 0).all()
        pulls.append((t["flux"] - flux) / t["flux_err"])
        mags.append(np.array(t["mag"]))
    pulls = np.concatenate(pulls)
    assert abs(pulls.mean()) < 0.1 and 0.9 < pulls.std() < 1.1
    mags = np.array(mags)
    bright = flux > 5000
    assert np.nanmedian(np.abs(mags[:, bright] - truth_mag[bright])) < 0.01
    # the quoted error is the optimal one: sigma / sqrt(sum P^2)
    p = psf.evaluate(x[0], y[0], 15)
    assert t["flux_err"][0] == pytest.approx(sigma / np.sqrt((p ** 2).sum()), rel=1e-4)
    # the 5-sigma limit and magnitudes only above detect_snr
    assert np.allclose(t["limmag"], -2.5 * np.log10(5 * t["flux_err"]) + zp)
    assert np.all(np.isnan(t["mag"][t["snr"] < 3]))


def test_empty_positions_give_unit_normal_snr_and_stamp_psf_matches_model():
    rng = np.random.default_rng(8)
    shape = (300, 300)
    psf = moffat_model(4.0, shape)
    img = rng.normal(0, 5.0, shape).astype(np.float32)
    x, y = grid_positions(shape, 12, 10, rng)
    a = forced_photometry(img, np.full(shape, 5.0, np.float32), psf, x, y)
    assert abs(np.mean(a["snr"])) < 0.15 and 0.9 < np.std(a["snr"]) < 1.1
    # a centred stamp (a difference image's PSF) shifted by Fourier phase gives the same fluxes
    stamp = psf.evaluate(150.0, 150.0, 31)
    b = forced_photometry(img, np.full(shape, 5.0, np.float32), stamp, x, y)
    assert np.allclose(a["flux"], b["flux"], atol=0.02 * np.median(a["flux_err"]))
    shifted = shifted_stamps(stamp, [0.3], [-0.4])[0]
    assert np.allclose(shifted, psf.evaluate(150.3, 149.6, 31), atol=2e-4 * stamp.max())


def test_flagged_edge_and_off_image_positions():
    rng = np.random.default_rng(2)
    shape = (100, 120)
    psf = moffat_model(3.0, shape)
    img = add_sources(rng.normal(0, 3.0, shape), psf, [60.2], [50.7], [4000.0]).astype(np.float32)
    err = np.full(shape, 3.0, np.float32)
    flags = np.zeros(shape, np.uint16)
    flags[:, 61] = pixflags.BAD  # a bad column through the source
    t = forced_photometry(img, err, psf, [60.2, 0.3, 119.4], [50.7, 50.0, 99.6], flags=flags, zp=25.0)
    assert t["flags"][0] & pixflags.BAD and t["ok"][0]
    assert t["flux"][0] == pytest.approx(4000.0, abs=4 * t["flux_err"][0])  # bad pixels excluded, unbiased
    assert t["flags"][1] & pixflags.EDGE and t["ok"][1]  # half the PSF on the image: still measured
    assert not t["ok"][2] and np.isnan(t["flux"][2])  # a corner: too little of the PSF
    img_nan = img.copy()
    img_nan[45:56, 55:66] = np.nan  # NaN stamp: no crash, not ok
    t = forced_photometry(img_nan, err, psf, [60.2], [50.7])
    assert not t["ok"][0] and np.isnan(t["flux"][0])
    with pytest.raises(ValueError, match="odd"):
        forced_photometry(img, err, psf, [1.0], [1.0], size=10)
    with pytest.raises(ValueError, match="shape"):
        forced_photometry(img, err[:50], psf, [1.0], [1.0])


def test_sky_positions_through_wcs():
    rng = np.random.default_rng(4)
    shape = (200, 200)
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [150.0, 2.0]
    w.wcs.crpix = [100.5, 100.5]
    w.wcs.cdelt = [-0.27 / 3600, 0.27 / 3600]
    psf = moffat_model(3.0, shape)
    x, y = np.array([40.3, 150.8]), np.array([60.6, 120.1])
    img = add_sources(rng.normal(0, 2.0, shape), psf, x, y, [3000.0, 1500.0]).astype(np.float32)
    diff = SimpleNamespace(diff=img, diff_err=np.full(shape, 2.0, np.float32),
                           psf=psf.evaluate(100.0, 100.0, 25), flags=np.zeros(shape, np.uint16))
    ra, dec = w.all_pix2world(np.r_[x, 500.0], np.r_[y, 10.0], 0)
    t = forced_photometry_sky(diff, w, ra, dec, zp=27.0)
    assert t["ok"].tolist() == [True, True, False]  # the third is off the image
    assert np.allclose(t["flux"][:2], [3000.0, 1500.0], atol=5 * np.max(t["flux_err"][:2]))
    assert np.allclose(t["x"][:2], x) and t["flags"][2] & pixflags.EDGE


def test_real_decam_noise():
    """Fakes injected into the real noise of a DECam i-band stamp (GAIN, FWHM from its header)
    are recovered with unbiased fluxes and errors that match the scatter."""
    with fits.open(DECAM) as hdul:
        data = hdul[0].data.astype(float)
        hdr = hdul[0].header
    gain, fwhm = hdr["GAIN"], hdr["FWHM"]
    e = data * gain  # e-
    sky = np.median(e)
    mad_sigma = 1.4826 * np.median(np.abs(e - sky))
    # pixels of real sources (grown) are not "blank"; the sky level is that of the blank pixels
    src = ndimage.binary_dilation(e - sky > 3 * mad_sigma, iterations=6)
    sky = np.median(e[~src])
    mad_sigma = 1.4826 * np.median(np.abs(e[~src] - sky))
    err = np.sqrt(mad_sigma ** 2 + np.clip(e - sky, 0, None)).astype(np.float32)
    psf = moffat_model(fwhm, e.shape)
    rng = np.random.default_rng(1)
    x, y = grid_positions(e.shape, 22, 16, rng)
    blank = ~src[np.rint(y).astype(int), np.rint(x).astype(int)]
    ix = ndimage.maximum_filter(src.astype(np.uint8), size=15)[np.rint(y).astype(int), np.rint(x).astype(int)] == 0
    x, y = x[ix & blank], y[ix & blank]
    assert x.size >= 40
    base = forced_photometry((e - sky).astype(np.float32), err, psf, x, y)
    assert abs(np.mean(base["snr"])) < 0.35 and 0.75 < np.std(base["snr"]) < 1.3
    flux = np.full(x.size, 25 * mad_sigma * np.sqrt(4 * np.pi) * fwhm / 2.355)  # S/N ~ 25
    img = add_sources(e - sky, psf, x, y, flux, half=15).astype(np.float32)
    t = forced_photometry(img, err, psf, x, y)
    dflux = t["flux"] - base["flux"]  # the real noise cancels: exact injected flux
    assert np.allclose(dflux, flux, rtol=1e-3)
    pulls = (t["flux"] - flux) / t["flux_err"]
    assert abs(np.median(pulls)) < 0.4 and 0.7 < np.std(pulls) < 1.35
