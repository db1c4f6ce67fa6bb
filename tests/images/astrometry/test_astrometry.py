"""Astrometric solutions on synthetic fields with a known true TAN-SIP WCS.

Each field: a true WCS with distortion (several pixels at the corners), a Gaia-like catalog
with proper motions (positions at 2016.0), sources = true pixel positions at the image epoch +
centroid noise (~0.025" for bright stars), missing stars, spurious sources, and a header WCS
(pure TAN, no distortion) off by tens of arcsec and rotated.  Accuracy is measured against
the TRUE WCS over the whole image.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table, vstack
from astropy.wcs import WCS

from vo.images.astrometry import catalog_at_epoch, read_wcs, solve_wcs, write_wcs
from vo.io.fits import FitsError
from vo.sky import gnomonic, inverse_gnomonic

SCALE = 0.263  # arcsec / pix


def true_wcs(nx, ny, ra=150.0, dec=2.0, rot=12.0):
    h = fits.Header()
    h["NAXIS"], h["NAXIS1"], h["NAXIS2"] = 2, nx, ny
    h["CTYPE1"], h["CTYPE2"] = "RA---TAN-SIP", "DEC--TAN-SIP"
    h["CRPIX1"], h["CRPIX2"] = nx / 2 + 30.5, ny / 2 - 20.5
    h["CRVAL1"], h["CRVAL2"] = ra, dec
    t, s = np.radians(rot), SCALE / 3600
    h["CD1_1"], h["CD1_2"], h["CD2_1"], h["CD2_2"] = -s * np.cos(t), s * np.sin(t), s * np.sin(t), s * np.cos(t)
    h["A_ORDER"] = h["B_ORDER"] = 3
    h["A_2_0"], h["A_1_1"], h["A_0_2"] = 1.2e-6, -0.6e-6, 0.9e-6
    h["B_2_0"], h["B_1_1"], h["B_0_2"] = -0.5e-6, 1.0e-6, 0.8e-6
    h["A_3_0"], h["A_1_2"], h["B_0_3"], h["B_2_1"] = 8e-10, 4e-10, 5e-10, 3e-10
    return WCS(h), h


def make_field(seed=1, n_cat=3000, nx=2048, ny=4096, mjd=60000.0, offset=(40.0, -30.0),
               rot=0.1, spurious=300, missing=0.1, centroid=0.025, ra=150.0, dec=2.0):
    """Synthetic field; returns sources, excerpt, header, true WCS, mjd, shape."""
    rng = np.random.default_rng(seed)
    w, h = true_wcs(nx, ny, ra, dec)
    pad = 400
    px, py = rng.uniform(-pad, nx + pad, n_cat), rng.uniform(-pad, ny + pad, n_cat)
    g = 21.0 - rng.exponential(1.6, n_cat).clip(0, 7.5)
    pmra, pmdec = rng.normal(0, 8, n_cat), rng.normal(0, 8, n_cat)
    fast = rng.random(n_cat) < 0.03
    pmra[fast] *= 15
    pmdec[fast] *= 15
    ra_t, dec_t = w.all_pix2world(px, py, 0)  # true positions at the image epoch
    dt = 2000.0 + (mjd - 51544.5) / 365.25 - 2016.0
    cat = Table()
    cat["source_id"] = np.arange(n_cat, dtype=np.int64) + 10 ** 15
    cat["ra"] = ra_t - pmra * dt / 3.6e6 / np.cos(np.radians(dec_t))
    cat["dec"] = dec_t - pmdec * dt / 3.6e6
    cat["ra_error"] = cat["dec_error"] = (0.02 + 0.5 * 10 ** (0.4 * (g - 21))).astype(np.float32)
    cat["pmra"], cat["pmdec"] = pmra, pmdec
    cat["pmra_error"] = cat["pmdec_error"] = cat["ra_error"]
    cat["ref_epoch"] = 2016.0
    cat["phot_g_mean_mag"] = g
    detected = (px > 0) & (px < nx - 1) & (py > 0) & (py < ny - 1) & (g < 20.7) & \
        (rng.random(n_cat) > missing)
    idx = np.flatnonzero(detected)
    sig_arcsec = centroid * np.sqrt(1 + 10 ** (0.8 * (g[idx] - 19)))
    sig = sig_arcsec / SCALE
    src = Table()
    src["x"] = px[idx] + rng.normal(0, 1, len(idx)) * sig
    src["y"] = py[idx] + rng.normal(0, 1, len(idx)) * sig
    src["xerr"] = src["yerr"] = sig
    src["snr"] = 10 * 10 ** (-0.4 * (g[idx] - 21))
    src["flags"] = np.zeros(len(idx), np.int16)
    src["truth"] = idx
    if spurious:
        sp = Table()
        sp["x"], sp["y"] = rng.uniform(0, nx - 1, spurious), rng.uniform(0, ny - 1, spurious)
        sp["xerr"] = sp["yerr"] = np.full(spurious, 0.3)
        sp["snr"] = rng.uniform(5, 50, spurious)  # artefacts, galaxies: mostly faint
        sp["flags"] = np.zeros(spurious, np.int16)
        sp["truth"] = -1
        src = vstack([src, sp])
    h0 = fits.Header()
    h0["NAXIS"], h0["NAXIS1"], h0["NAXIS2"] = 2, nx, ny
    h0["CTYPE1"], h0["CTYPE2"] = "RA---TAN", "DEC--TAN"
    h0["CRPIX1"], h0["CRPIX2"] = h["CRPIX1"], h["CRPIX2"]
    h0["CRVAL1"] = ra + offset[0] / 3600 / np.cos(np.radians(dec))
    h0["CRVAL2"] = dec + offset[1] / 3600
    t = np.radians(rot)
    cd = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]]) @ \
        np.array([[h["CD1_1"], h["CD1_2"]], [h["CD2_1"], h["CD2_2"]]])
    h0["CD1_1"], h0["CD1_2"], h0["CD2_1"], h0["CD2_2"] = cd.ravel()
    return dict(sources=src, excerpt=cat, header=h0, true_wcs=w, mjd=mjd, shape=(ny, nx))


def sky_error(wcs, true, shape, n=30):
    """Median and max |true - fitted| sky position (arcsec) over a grid covering the image."""
    ny, nx = shape
    gx, gy = np.meshgrid(np.linspace(0, nx - 1, n), np.linspace(0, ny - 1, 2 * n))
    r1, d1 = true.all_pix2world(gx.ravel(), gy.ravel(), 0)
    r2, d2 = wcs.all_pix2world(gx.ravel(), gy.ravel(), 0)
    sep = np.hypot((r1 - r2) * np.cos(np.radians(d1)), d1 - d2) * 3600
    return float(np.median(sep)), float(np.max(sep))


def solve(f, **pars):
    return solve_wcs(f["sources"], f["excerpt"], f["header"], f["mjd"], pars, shape=f["shape"])


@pytest.fixture(scope="module")
def field():
    return make_field()


def test_gnomonic_roundtrip():
    ra = np.array([359.9, 0.05, 10.0])
    dec = np.array([-1.0, 0.5, 1.0])
    xi, eta = gnomonic(ra, dec, 0.0, 0.0)
    r2, d2 = inverse_gnomonic(xi, eta, 0.0, 0.0)
    np.testing.assert_allclose(((r2 - ra + 180) % 360) - 180, 0, atol=1e-10)
    np.testing.assert_allclose(d2, dec, atol=1e-10)


def test_proper_motion_to_epoch():
    cat = Table({"ra": [10.0, 10.0], "dec": [60.0, 60.0], "pmra": [1000.0, np.nan],
                 "pmdec": [-500.0, np.nan], "ref_epoch": [2016.0, 2016.0]})
    mjd_2026 = 51544.5 + 26 * 365.25
    ra, dec, _ = catalog_at_epoch(cat, mjd_2026)
    # 10 yr x 1"/yr along RA (on the sky), x 0.5"/yr south
    assert (ra[0] - 10.0) * np.cos(np.radians(60.0)) * 3600 == pytest.approx(10.0, rel=1e-3)
    assert (dec[0] - 60.0) * 3600 == pytest.approx(-5.0, rel=1e-6)
    assert ra[1] == 10.0 and dec[1] == 60.0  # no proper motion: stays


def test_solution_accuracy_and_matches(field):
    sol = solve(field)
    assert sol.ok, sol.reason
    med, worst = sky_error(sol.wcs, field["true_wcs"], field["shape"])
    assert med < 0.05 and worst < 0.15, (med, worst)
    assert sol.meta["sip_order"] == 3
    assert 0 < sol.rms_arcsec < 0.2
    truth = np.asarray(field["sources"]["truth"])[sol.matches[:, 0]]
    assert sol.n_stars == len(sol.matches) > 800
    assert np.mean(truth == sol.matches[:, 1]) > 0.99  # matched to the right Gaia star
    # the vote found the header's pointing error (true centre - header centre ~ 50")
    assert np.hypot(*sol.meta["offset_arcsec"]) == pytest.approx(50.0, abs=5.0)


def test_header_wcs_alone_is_far_off(field):
    """The starting point really is wrong by tens of arcsec (the test is not trivial)."""
    med, _ = sky_error(WCS(field["header"]), field["true_wcs"], field["shape"])
    assert med > 30


def test_proper_motions_matter(field):
    """Ignoring proper motions (catalog at its own epoch) makes the solution worse."""
    cat = field["excerpt"].copy()
    cat["pmra"][:] = 0.0
    cat["pmdec"][:] = 0.0
    sol = solve_wcs(field["sources"], cat, field["header"], field["mjd"], {}, shape=field["shape"])
    good = solve(field)
    assert sol.rms_arcsec > 1.2 * good.rms_arcsec
    pm = np.hypot(field["excerpt"]["pmra"], field["excerpt"]["pmdec"])
    fast_kept = [np.sum(pm[s.matches[:, 1]] > 60) for s in (good, sol)]
    assert fast_kept[1] < 0.5 * fast_kept[0]  # fast movers are lost without propagation


@pytest.mark.parametrize("offset,rot", [((60.0, 0.0), 0.0), ((-35.0, 45.0), -0.2),
                                        ((0.0, -55.0), 0.2)])
def test_robust_to_pointing_and_rotation(offset, rot):
    f = make_field(seed=3, n_cat=1500, offset=offset, rot=rot, ra=359.95, dec=-30.0)
    sol = solve(f)
    assert sol.ok, sol.reason
    assert sky_error(sol.wcs, f["true_wcs"], f["shape"])[0] < 0.05


def test_small_ccd_few_stars():
    f = make_field(seed=5, n_cat=120, nx=512, ny=1024, spurious=30, missing=0.2)
    sol = solve(f)
    assert sol.ok, sol.reason
    assert sol.meta["sip_order"] <= 3
    assert sky_error(sol.wcs, f["true_wcs"], f["shape"])[0] < 0.05


def test_excerpt_of_another_field_fails_cleanly(field):
    other = make_field(seed=2, ra=152.0, dec=5.0)["excerpt"]
    sol = solve_wcs(field["sources"], other, field["header"], field["mjd"], {}, shape=field["shape"])
    assert not sol.ok and "no overlap" in sol.reason


def test_unrelated_stars_give_no_significant_match(field):
    """An excerpt covering the field but with stars that are not the image's (shuffled)."""
    cat = field["excerpt"].copy()
    rng = np.random.default_rng(9)
    cat["ra"] = rng.uniform(cat["ra"].min(), cat["ra"].max(), len(cat))
    cat["dec"] = rng.uniform(cat["dec"].min(), cat["dec"].max(), len(cat))
    sol = solve_wcs(field["sources"], cat, field["header"], field["mjd"], {}, shape=field["shape"])
    assert not sol.ok and "no significant match" in sol.reason


def test_too_few_stars_and_rms_limit(field):
    few = field["sources"][field["sources"]["truth"] >= 0][:6]
    sol = solve_wcs(few, field["excerpt"], field["header"], field["mjd"], {}, shape=field["shape"])
    assert not sol.ok and "too few" in sol.reason
    strict = solve(field, max_rms=0.01)
    assert not strict.ok and "rms" in strict.reason and strict.n_stars > 800


def test_flagged_sources_ignored(field):
    src = field["sources"].copy()
    src["flags"][:] = 2  # e.g. saturated / truncated: nothing usable
    sol = solve_wcs(src, field["excerpt"], field["header"], field["mjd"], {}, shape=field["shape"])
    assert not sol.ok and "usable sources" in sol.reason


def test_missing_columns_raise(field):
    with pytest.raises(ValueError, match="'x'"):
        solve_wcs(Table({"y": [1.0]}), field["excerpt"], field["header"], field["mjd"], {})


def test_speed(field):
    solve(field)  # warm caches (schema, imports)
    t0 = time.perf_counter()
    sol = solve(make_field(seed=11, n_cat=3000, missing=0.0, spurious=1500))
    assert sol.ok
    assert time.perf_counter() - t0 < 0.4


def test_write_read_wcs(tmp_path, field):
    sol = solve(field)
    path = tmp_path / "a.wcs.fits"
    write_wcs(path, sol, {"step": "astrometry", "provenance_hash": "abc"})
    with fits.open(path) as hdul:
        assert len(hdul) == 1 and hdul[0].data is None
        h = hdul[0].header
        assert h["ASTR_OK"] is True and h["ASTR_N"] == sol.n_stars and h["VO_STEP"] == "astrometry"
        assert h["CTYPE1"] == "RA---TAN-SIP" and "A_2_0" in h and "AP_1_0" in h
    back = read_wcs(path)
    assert back.ok and back.n_stars == sol.n_stars
    assert back.rms_arcsec == pytest.approx(sol.rms_arcsec)
    assert sky_error(back.wcs, sol.wcs, field["shape"])[1] < 1e-4
    # inverse SIP: world -> pixel through the file's WCS recovers pixels to < 0.01 pix
    x, y = np.array([5.0, 1000.0, 2040.0]), np.array([7.0, 2000.0, 4090.0])
    r, d = back.wcs.all_pix2world(x, y, 0)
    np.testing.assert_allclose(back.wcs.all_world2pix(r, d, 0), [x, y], atol=0.01)
    np.testing.assert_allclose(np.array(back.wcs.sip_foc2pix(back.wcs.sip_pix2foc(
        np.stack([x, y], 1), 0), 0)), np.stack([x, y], 1), atol=0.05)


def test_write_read_failed_solution(tmp_path, field):
    sol = solve_wcs(field["sources"][:3], field["excerpt"], field["header"], field["mjd"], {},
                    shape=field["shape"])
    path = tmp_path / "bad.wcs.fits"
    write_wcs(path, sol)
    back = read_wcs(path)
    assert not back.ok and back.reason == sol.reason and np.isnan(back.rms_arcsec)


def test_read_wcs_errors(tmp_path):
    with pytest.raises(FitsError, match="file not found"):
        read_wcs(tmp_path / "none.fits")
    path = tmp_path / "plain.fits"
    fits.PrimaryHDU().writeto(path)
    with pytest.raises(FitsError, match="ASTR_OK"):
        read_wcs(path)
