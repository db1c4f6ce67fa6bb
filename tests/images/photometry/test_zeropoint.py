"""Zero points on synthetic images whose star fluxes come from a true zero point and the Gaia
transformations, plus the transformations themselves."""

from __future__ import annotations

import time

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from vo.images.astrometry import WCSSolution
from vo.images.photometry.photometric import (RELATIONS, PhotometricError, band, gaia_to_filter,
                                               in_valid_range, supported_filters, system_for,
                                               transformation_sigma)
from vo.images.photometry.zeropoint import (fit_zero_point, limiting_flux,
                                 noise_equivalent_area, read_zp, write_zp)
from vo.io.fits import FitsError

ZP_TRUE = 30.0
RMS, FWHM = 12.0, 4.0           # background noise (e-/pix), seeing (pix)
NEA = 4 * np.pi * (FWHM / 2.3548) ** 2  # Gaussian PSF noise-equivalent area (pix)
APER_FRAC, BIG_FRAC = 0.90, 0.99  # fraction of the flux in the small / big aperture


def image_wcs(nx=2048, ny=1024):
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crpix = [nx / 2, ny / 2]
    w.wcs.crval = [30.0, -20.0]
    w.wcs.cd = np.array([[-0.263, 0], [0, 0.263]]) / 3600
    w.pixel_shape = (nx, ny)
    return w


def make_image(seed=0, n=1500, filt="r", colour_term=0.0, bad_fraction=0.05, nx=2048, ny=1024):
    """Sources + excerpt of a synthetic image; star fluxes from ZP_TRUE and gaia_to_filter."""
    rng = np.random.default_rng(seed)
    w = image_wcs(nx, ny)
    x, y = rng.uniform(5, nx - 5, n), rng.uniform(5, ny - 5, n)
    ra, dec = w.all_pix2world(x, y, 0)
    g = rng.uniform(14.0, 21.5, n)
    bp_rp = rng.normal(1.0, 0.5, n).clip(-0.3, 3.5)
    cat = Table({"source_id": np.arange(n, dtype=np.int64), "ra": ra, "dec": dec,
                 "phot_g_mean_mag": g, "phot_bp_mean_mag": g + 0.35 * bp_rp,
                 "phot_rp_mean_mag": g - 0.65 * bp_rp,
                 "phot_g_mean_flux_over_error": np.full(n, 2000.0)})
    m = gaia_to_filter(g, bp_rp, filt) + colour_term * (bp_rp - 1.0)
    flux = 10 ** (-0.4 * (m - ZP_TRUE))
    bad = rng.random(n) < bad_fraction  # variables / blends: wrong by 0.2-1 mag
    flux[bad] *= 10 ** (0.4 * rng.uniform(0.2, 1.0, bad.sum()))
    err = np.sqrt(NEA * RMS ** 2 + flux)
    aerr = np.sqrt(np.pi * 9 * RMS ** 2 + APER_FRAC * flux)
    src = Table()
    src["x"] = x + rng.normal(0, 0.08, n)
    src["y"] = y + rng.normal(0, 0.08, n)
    src["flux_psf"] = flux + rng.normal(0, 1, n) * err
    src["fluxerr_psf"] = err
    src["flux_aper"] = APER_FRAC * flux + rng.normal(0, 1, n) * aerr
    src["fluxerr_aper"] = aerr
    src["flux_aper_big"] = BIG_FRAC * flux + rng.normal(0, 1, n) * 2 * aerr
    src["flags"] = np.where(flux > 3e5, 2 << 8, 0).astype(np.int32)  # "saturated"
    src["flux_psf"][src["flags"] > 0] *= 0.7  # saturated stars lose flux: must be ignored
    return src, cat, w


# -- the Gaia transformations ----------------------------------------------------------------
def test_gaia_to_filter_polynomials():
    x = np.array([0.5, 1.0, 1.5])
    for filt in ("g", "r", "i"):
        expected = 17.0 + np.polynomial.polynomial.polyval(x, RELATIONS["gaia_dr3", "sdss"][filt][0])
        np.testing.assert_allclose(gaia_to_filter(17.0, x, filt), expected)
    assert set(supported_filters()) == {"g", "r", "i"}
    assert set(supported_filters("decam", "gaia_dr2")) == {"g", "r", "i", "z"}
    assert transformation_sigma("r") < transformation_sigma("g") < 0.1


def test_gaia_to_filter_gives_solar_colours():
    """A solar-type star (BP-RP = 0.82) has SDSS g-r ~ 0.44 and r-i ~ 0.11-0.15."""
    g, r, i = (float(gaia_to_filter(10.0, 0.82, f)) for f in "gri")
    assert 0.35 < g - r < 0.50
    assert 0.05 < r - i < 0.20
    assert abs(r - 10.0) < 0.1  # G is close to r for such stars


def test_gaia_to_filter_validity_and_errors():
    assert in_valid_range([-0.5, 1.0, 2.5, np.nan], "i").tolist() == [False, True, False, False]
    # clamped outside the range: finite and continuous at the edge
    assert gaia_to_filter(15.0, 5.0, "r") == pytest.approx(gaia_to_filter(15.0, 3.0, "r"))
    assert np.isnan(gaia_to_filter(15.0, np.nan, "r"))
    assert gaia_to_filter(15.0, 1.0, "SDSS_R") == gaia_to_filter(15.0, 1.0, "r")
    with pytest.raises(PhotometricError, match="gaia_dr3 relation to sdss band 'z'.*bands: g, r, i"):
        gaia_to_filter(15.0, 1.0, "z")
    with pytest.raises(PhotometricError, match="upper-case R is Johnson-Cousins"):
        gaia_to_filter(15.0, 1.0, "R")
    with pytest.raises(PhotometricError, match="no published gaia_dr2 -> sdss"):
        gaia_to_filter(15.0, 1.0, "r", "sdss", "gaia_dr2")


def test_dr2_fits_on_dr3_tables_say_so():
    """DECam and BASS/MzLS have DR2 fits only: on a DR3 table they are used as legacypipe uses them
    on EDR3, with a larger scatter, and the zero point (and its file) name the relation."""
    from vo.images.photometry.photometric import DR2_ON_DR3_EXTRA_SIGMA

    z = "z DECam SDSS c0004 9260.0 1520.0"
    assert gaia_to_filter(15.0, 1.0, z, "decam", "gaia_dr3") == gaia_to_filter(15.0, 1.0, z, "decam", "gaia_dr2")
    assert transformation_sigma(z, "decam", "gaia_dr3") == pytest.approx(
        np.hypot(transformation_sigma(z, "decam", "gaia_dr2"), DR2_ON_DR3_EXTRA_SIGMA))
    src, cat, w = make_image(seed=11)
    zp = fit_zero_point(src, cat, w, "r DECam SDSS", 60.0, {}, system="decam", release="gaia_dr3")
    assert zp.ok and "gaia_dr2 fit" in zp.meta["relation"]
    plain = fit_zero_point(src, cat, w, "r", 60.0, {})
    assert plain.meta["relation"] == "gaia_dr3 -> sdss"


def test_camera_systems_and_filter_names():
    """DECam, BASS and MzLS header filter names map to their bands; each camera's system is
    chosen from INSTRUME; the DECam z of a solar star lies ~0.4 mag below its G."""
    assert system_for("DECam") == "decam" and system_for("90prime") == "bass_mzls"
    assert system_for("mosaic3") == "bass_mzls" and system_for("DemoCam") == "sdss"
    assert band("r DECam SDSS c0002 6415.0 1480.0", "decam") == "r"
    assert band("bokr", "bass_mzls") == "r" and band("zd", "bass_mzls") == "z"
    z = float(gaia_to_filter(15.0, 0.82, "z DECam SDSS c0004 9260.0 1520.0", "decam", "gaia_dr2"))
    assert -0.6 < z - 15.0 < -0.2


# -- zero points -----------------------------------------------------------------------------
def test_zero_point_recovered():
    src, cat, w = make_image()
    zp = fit_zero_point(src, cat, w, "r", 60.0, {})
    assert zp.ok, zp.reason
    assert abs(zp.zp - ZP_TRUE) < 0.01
    assert 0.0005 < zp.zp_err < 0.01
    assert zp.n_stars > 300
    assert zp.colour_term == 0.0
    assert zp.zp_per_second == pytest.approx(zp.zp - 2.5 * np.log10(60.0))
    assert zp.apcor == pytest.approx(-2.5 * np.log10(BIG_FRAC / APER_FRAC), abs=0.01)


def test_zero_point_error_bar_is_honest():
    """Over independent images the pulls (zp - truth) / zp_err have unit-ish scatter."""
    pulls = []
    for seed in range(25):
        src, cat, w = make_image(seed=100 + seed, n=600, bad_fraction=0.0)
        zp = fit_zero_point(src, cat, w, "r", 30.0, {"sys_error": 0.0})
        pulls.append((zp.zp - ZP_TRUE) / zp.zp_err)
    pulls = np.array(pulls)
    assert 0.6 < np.std(pulls) < 1.6 and abs(np.mean(pulls)) < 0.7
    assert np.max(np.abs(pulls)) < 4


def test_colour_errors_weight_the_stars():
    """Three bright stars and one faint one whose Gaia colour is noisy (BP, RP S/N 8: 0.2 mag) and
    off by 0.5 mag: the colour's error through the relation's slope makes its weight small, as
    on the real mzlsbass2 cutouts (it pulled g by 0.035 mag there); with good colours it counts."""
    from vo.images.photometry.photometric import colour_slope

    slope = colour_slope(np.array([0.5, 1.0, 9.0]), "g")
    step = (gaia_to_filter(18.0, 1.0 + 1e-4, "g") - gaia_to_filter(18.0, 1.0 - 1e-4, "g")) / 2e-4
    assert slope[1] == pytest.approx(step, rel=1e-4) and slope[2] == 0  # clamped outside the range
    src, cat, w = make_image(seed=7, n=4, filt="g", bad_fraction=0.0)
    src["flux_psf"] = np.abs(src["flux_psf"])
    cat["phot_g_mean_mag"] = [17.0, 17.5, 18.0, 20.9]
    c = np.array([0.9, 1.1, 1.0, 1.4])
    cat["phot_bp_mean_mag"], cat["phot_rp_mean_mag"] = cat["phot_g_mean_mag"] + 0.35 * c, cat["phot_g_mean_mag"] - 0.65 * c
    m = gaia_to_filter(cat["phot_g_mean_mag"], c, "g")
    m[3] = gaia_to_filter(20.9, 0.9, "g")  # its true colour is 0.9
    src["flux_psf"] = 10 ** (-0.4 * (m - ZP_TRUE))
    src["fluxerr_psf"] = src["flux_psf"] / np.array([500, 500, 500, 60])
    src["flags"] = 0
    noisy = Table(cat, copy=True)
    noisy["phot_bp_mean_flux_over_error"] = [400.0, 400.0, 400.0, 8.0]
    noisy["phot_rp_mean_flux_over_error"] = [600.0, 600.0, 600.0, 8.0]
    zp = fit_zero_point(src, noisy, w, "g", 60.0, {"min_stars": 1, "sigma_clip": 100.0})
    blind = fit_zero_point(src, cat, w, "g", 60.0, {"min_stars": 1, "sigma_clip": 100.0})
    assert zp.n_stars == blind.n_stars == 4
    assert abs(zp.zp - ZP_TRUE) < 0.3 * abs(blind.zp - ZP_TRUE)
    assert abs(blind.zp - ZP_TRUE) > 0.02


def test_colour_term_fit():
    src, cat, w = make_image(seed=4, filt="g", colour_term=0.08)
    zp = fit_zero_point(src, cat, w, "g", 60.0, {"colour_term": True, "colour_pivot": 1.0})
    assert zp.ok
    # the camera's g is redder than SDSS g: m_inst + zp = m_cat + 0.08 (c - 1), so the
    # calibration m_cat = m_inst + zp + k (c - 1) needs k = -0.08
    assert zp.colour_term == pytest.approx(-0.08, abs=0.01)
    assert abs(zp.zp - ZP_TRUE) < 0.01
    plain = fit_zero_point(src, cat, w, "g", 60.0, {})
    assert plain.meta["scatter_mag"] > zp.meta["scatter_mag"]  # the term explains scatter


def test_limiting_magnitude():
    src, cat, w = make_image(seed=7)
    f5 = limiting_flux(NEA * RMS ** 2, 1.0)
    assert f5 == pytest.approx(5 * np.sqrt(NEA * RMS ** 2 + f5))  # S/N = 5 exactly
    truth = ZP_TRUE - 2.5 * np.log10(f5)
    exact = fit_zero_point(src, cat, w, "r", 60.0, {}, background_rms=RMS, psf_nea=NEA)
    assert exact.limmag5 == pytest.approx(truth, abs=0.01)
    empirical = fit_zero_point(src, cat, w, "r", 60.0, {})
    assert empirical.limmag5 == pytest.approx(truth, abs=0.1)
    gauss = np.exp(-0.5 * (np.hypot(*np.mgrid[-20:21, -20:21]) / (FWHM / 2.3548)) ** 2)
    assert noise_equivalent_area(gauss) == pytest.approx(NEA, rel=1e-3)


def test_mjd_and_wcs_solution_accepted():
    src, cat, w = make_image(seed=8)
    cat["pmra"] = np.zeros(len(cat))
    cat["pmdec"] = np.zeros(len(cat))
    cat["ref_epoch"] = np.full(len(cat), 2016.0)
    sol = WCSSolution(wcs=w, rms_arcsec=0.02, n_stars=100, ok=True)
    zp = fit_zero_point(src, cat, sol, "r", 60.0, {}, mjd=60000.0)
    assert zp.ok and abs(zp.zp - ZP_TRUE) < 0.01


def test_failures():
    src, cat, w = make_image(seed=9, n=40)
    few = fit_zero_point(src[:3], cat, w, "r", 60.0, {})  # computed with its error, flagged
    assert few.ok and "few calibration stars" in few.reason and few.meta["few_stars"]
    assert np.isfinite(few.zp) and few.zp_err > 0 and few.n_stars <= 3
    shifted = image_wcs()
    shifted.wcs.crval = [31.0, -20.0]  # a WCS of elsewhere: nothing matches
    none = fit_zero_point(src, cat, shifted, "r", 60.0, {})
    assert not none.ok and none.n_stars == 0
    with pytest.raises(ValueError, match="'flux_psf'"):
        fit_zero_point(src[["x", "y"]], cat, w, "r", 60.0, {})
    bad_band = fit_zero_point(src, cat, w, "Y", 60.0, {})   # no relation: flagged, not an error
    assert not bad_band.ok and "band 'y'" in bad_band.reason


def test_speed():
    src, cat, w = make_image(seed=10, n=3000, nx=2048, ny=4096)
    fit_zero_point(src, cat, w, "r", 60.0, {})
    t0 = time.perf_counter()
    fit_zero_point(src, cat, w, "r", 60.0, {})
    assert time.perf_counter() - t0 < 0.15


def test_write_read_zp(tmp_path):
    src, cat, w = make_image(seed=11)
    zp = fit_zero_point(src, cat, w, "r", 45.0, {"colour_term": True})
    path = tmp_path / "c.zp.fits"
    write_zp(path, zp, {"step": "zero_point", "provenance_hash": "abc"})
    with fits.open(path) as hdul:
        h = hdul[0].header
        assert hdul[0].data is None and h["VO_STEP"] == "zero_point"
        assert h["ZP"] == pytest.approx(zp.zp) and h["ZP_OK"] is True and h["FILTER"] == "r"
    back = read_zp(path)
    for name in ("zp", "zp_err", "colour_term", "colour_pivot", "apcor", "limmag5", "exptime"):
        assert getattr(back, name) == pytest.approx(getattr(zp, name)), name
    assert back.n_stars == zp.n_stars and back.ok and back.reason == ""
    assert back.meta["relation"] == zp.meta["relation"] == "gaia_dr3 -> sdss"
    shifted = image_wcs()
    shifted.wcs.crval = [31.0, -20.0]  # nothing matches: no zero point
    bad = fit_zero_point(src, cat, shifted, "r", 45.0, {})
    write_zp(tmp_path / "bad.fits", bad)
    back = read_zp(tmp_path / "bad.fits")
    assert not back.ok and np.isnan(back.zp) and back.reason == bad.reason
    fits.PrimaryHDU().writeto(tmp_path / "plain.fits")
    with pytest.raises(FitsError, match="ZP"):
        read_zp(tmp_path / "plain.fits")
