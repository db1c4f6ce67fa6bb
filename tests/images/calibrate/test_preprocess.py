"""Preprocessing (vo.images.calibrate.preprocess) and image files (vo.images.image).

Raw sections are built here from synthetic arrays with a truth table (:func:`make_section`):
two amplifiers with overscan strips, a bias level with row structure and a fixed 2-D bias
pattern, per-amplifier gains, a flat pattern with a vignetted corner, sky, stars (Gaussian
PSF, pixel-integrated), cosmic rays, a bad column, a saturated star with a bleed trail,
Poisson and read noise, and integer ADU like a real ADC.  The real-data test preprocesses
a DECam stamp with a TPV WCS.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from scipy.special import erf

from vo import config as vconfig
from vo.images import flags as pixflags
from vo.images.image import Image, read_image, write_image
from vo.images.instruments.base import RawSection
from vo.images.calibrate.flagging import detect_cosmic_rays
from vo.images.calibrate.preprocess import preprocess
from vo.io.fits import FitsError
from testdata import REPO

DECAM_STAMP = "DEC-OBS04a.mini.fits"
PARS = vconfig.defaults()["preprocessing"]
CAL = vconfig.defaults()["calibration"]

NO = 24          # overscan columns per amplifier
PRE = 3          # prescan rows below the data section (not in datasec)
GAINS = (4.0, 4.4)
READ_NOISE = 6.0
SATURATION = 40000.0  # raw ADU


def _wcs_header(ny, nx):
    """A TAN-SIP WCS over the raw grid (0.26 arcsec/pix)."""
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN-SIP", "DEC--TAN-SIP"]
    w.wcs.crval = [150.0, 2.0]
    w.wcs.crpix = [nx / 2 + 10.5, ny / 2 - 3.25]
    s = 0.26 / 3600
    w.wcs.cd = [[-s * np.cos(0.01), s * np.sin(0.01)], [s * np.sin(0.01), s * np.cos(0.01)]]
    h = w.to_header(relax=True)
    for k, v in {"A_ORDER": 2, "B_ORDER": 2, "A_2_0": 2e-6, "A_0_2": -1e-6, "B_1_1": 3e-6}.items():
        h[k] = v
    return h


def gaussian_stamp(flux, x, y, fwhm, ny, nx):
    """Pixel-integrated Gaussian PSF (e-) on an (ny, nx) grid; also its bounding slices."""
    s = fwhm / 2.3548
    r = int(np.ceil(5 * s)) + 1
    y0, y1 = max(int(y) - r, 0), min(int(y) + r + 1, ny)
    x0, x1 = max(int(x) - r, 0), min(int(x) + r + 1, nx)
    ex = np.diff(erf((np.arange(x0, x1 + 1) - 0.5 - x) / (s * np.sqrt(2)))) / 2
    ey = np.diff(erf((np.arange(y0, y1 + 1) - 0.5 - y) / (s * np.sqrt(2)))) / 2
    return flux * np.outer(ey, ex), (slice(y0, y1), slice(x0, x1))


def true_flat(ny, nx, rng, vignette=True):
    yy, xx = np.mgrid[0:ny, 0:nx] / np.array([ny, nx])[:, None, None]
    flat = (1 + 0.08 * (xx - 0.5) + 0.1 * (yy - 0.5) ** 2) * (1 + 0.01 * rng.standard_normal((ny, nx)))
    if vignette:  # a dark corner below low_flat
        flat *= np.clip(((xx - 0.0) ** 2 + (yy - 0.0) ** 2) / 0.01, 0.2, 1.0)
    return (flat / np.median(flat)).astype(np.float32)


def bias_pattern(ny, nx, rng):
    """Fixed 2-D bias structure (ADU): column offsets and a faint ramp."""
    cols = rng.normal(0, 1.5, nx)
    return (cols[None, :] + 0.5 * np.linspace(-1, 1, ny)[:, None]).astype(np.float32)


def make_section(rng, ny=512, nx=384, sky=800.0, n_stars=60, n_cr=40, fwhm=3.0, flat=None,
                 pattern=None, bad_column=True, saturated_star=True, read_noise=READ_NOISE,
                 noise=True, level_offset=0.0, nan_pixels=0, quantize=True, wcs=True):
    """A raw 2-amplifier section (ADU) and its truth.

    Layout (columns): [overscan A | data A | data B | overscan B]; ``PRE`` prescan rows at
    the bottom are outside the data section.  Truth (data-section grid): ``signal`` (e-
    before the flat incl. cosmic rays), ``image`` (e- after the flat: sky + stars, what
    preprocessing should give), ``cr`` (cosmic-ray deposit, e-), ``star`` (star signal, e-),
    ``bleed`` (bleed-trail mask), ``satmask`` (saturated in raw ADU), ``bad`` (bad column).
    """
    flat = np.ones((ny, nx), np.float32) if flat is None else flat
    pattern = np.zeros((ny, nx), np.float32) if pattern is None else pattern
    star = np.zeros((ny, nx))
    xs = rng.uniform(8, nx - 8, n_stars)
    ys = rng.uniform(8, ny - 8, n_stars)
    fluxes = 10 ** rng.uniform(3.0, 5.3, n_stars)
    for f, x, y in zip(fluxes, xs, ys):
        st, sl = gaussian_stamp(f, x, y, fwhm, ny, nx)
        star[sl] += st
    bleed = np.zeros((ny, nx), bool)
    full_well_e = (SATURATION - 1100) * min(GAINS)
    if saturated_star:
        sx, sy = nx * 0.7, ny * 0.6
        st, sl = gaussian_stamp(5e7, sx, sy, fwhm, ny, nx)
        star[sl] += st
        cols = np.nonzero((star > full_well_e).any(axis=0))[0]
        for c in cols:  # charge spills along the column, with tapered ends
            rows = np.nonzero(star[:, c] > full_well_e)[0]
            lo, hi = rows.min() - 12, rows.max() + 12
            star[lo:hi + 1, c] = np.maximum(star[lo:hi + 1, c], 1.5 * full_well_e)
            for k, frac in enumerate((0.7, 0.4)):
                star[lo - 1 - k, c] += frac * full_well_e
                star[hi + 1 + k, c] += frac * full_well_e
                bleed[lo - 1 - k, c] = bleed[hi + 1 + k, c] = True
            bleed[lo:hi + 1, c] = True
    cr = np.zeros((ny, nx))
    for _ in range(n_cr):  # straight tracks, 1 (sometimes 2) pixels wide, 5% of the charge
        x0, y0 = rng.uniform(3, nx - 3), rng.uniform(3, ny - 3)  # in each side neighbour
        length, ang = rng.choice([0.0, rng.exponential(4.0)]), rng.uniform(0, np.pi)
        t = np.arange(0, length + 0.01, 0.5)
        px = np.clip(np.rint(x0 + t * np.cos(ang)).astype(int), 0, nx - 1)
        py = np.clip(np.rint(y0 + t * np.sin(ang)).astype(int), 0, ny - 1)
        hit = np.zeros((ny, nx), bool)
        hit[py, px] = True
        if rng.uniform() < 0.2:
            horizontal = abs(np.cos(ang)) > abs(np.sin(ang))
            hit[np.clip(py + horizontal, 0, ny - 1), np.clip(px + (not horizontal), 0, nx - 1)] = True
        core = np.where(hit, rng.uniform(300, 4000), 0.0)
        halo = 0.05 * (np.roll(core, 1, 0) + np.roll(core, -1, 0) + np.roll(core, 1, 1) + np.roll(core, -1, 1))
        cr += core + np.where(hit, 0, halo)
    image = sky + star                       # e- after the flat
    signal = image * flat + cr               # detected e- (cosmic rays are not flat-fielded)
    e = rng.poisson(np.maximum(signal, 0)).astype(np.float64) if noise else signal.copy()
    if noise:
        e += rng.normal(0, read_noise, e.shape)
    gain = np.where(np.arange(nx) < nx // 2, GAINS[0], GAINS[1])[None, :]
    rows = np.arange(ny + PRE)
    levels = [1000 + level_offset + 3 * np.sin(rows / 97.0) + 0.004 * rows,
              1060 + level_offset - 2 * np.cos(rows / 61.0) - 0.002 * rows]
    raw = np.empty((ny + PRE, nx + 2 * NO))
    rn_adu = [read_noise / g for g in GAINS] if noise else [0, 0]
    raw[:, :NO] = levels[0][:, None] + rng.normal(0, rn_adu[0], (ny + PRE, NO))
    raw[:, -NO:] = levels[1][:, None] + rng.normal(0, rn_adu[1], (ny + PRE, NO))
    raw[:PRE, NO:-NO] = 1030.0
    data = e / gain + pattern
    data[:, :nx // 2] += levels[0][PRE:, None]
    data[:, nx // 2:] += levels[1][PRE:, None]
    bad = np.zeros((ny, nx), bool)
    if bad_column:
        bad[:, nx // 3] = True
        data[:, nx // 3] += 800.0
    raw[PRE:, NO:-NO] = data
    if quantize:
        raw = np.floor(raw + 0.5)
    satmask = raw[PRE:, NO:-NO] >= SATURATION
    raw = np.minimum(raw, SATURATION)
    if nan_pixels:
        iy, ix = rng.integers(0, ny, nan_pixels), rng.integers(0, nx, nan_pixels)
        raw[PRE + iy, NO + ix] = np.nan
    header = _wcs_header(ny + PRE, nx + 2 * NO) if wcs else fits.Header()
    header.update({"EXPOSURE": "synth_001", "FILTER": "r", "MJD-OBS": 60000.25, "EXPTIME": 30.0,
                   "AIRMASS": 1.2, "INSTRUME": "Synth"})
    amp_a = (slice(PRE, ny + PRE), slice(NO, NO + nx // 2))
    amp_b = (slice(PRE, ny + PRE), slice(NO + nx // 2, NO + nx))
    section = RawSection(
        data=raw.astype(np.float32), header=header, ccd="S1",
        datasec=(slice(PRE, PRE + ny), slice(NO, NO + nx)),
        overscans=[(amp_a, (slice(0, ny + PRE), slice(0, NO))),
                   (amp_b, (slice(0, ny + PRE), slice(nx + NO, nx + 2 * NO)))],
        gain=list(GAINS), read_noise=read_noise, saturation=SATURATION,
        bad_pixel_mask=bad if bad_column else None, path=Path("synthetic/synth_001.fits"))
    truth = {"signal": signal, "image": image, "cr": cr, "star": star, "bleed": bleed,
             "satmask": satmask, "bad": bad, "flat": flat, "pattern": pattern,
             "xy": np.column_stack([xs, ys]), "flux": fluxes}
    return section, truth


@pytest.fixture(scope="module")
def scene():
    rng = np.random.default_rng(42)
    flat = true_flat(512, 384, rng)
    pattern = bias_pattern(512, 384, rng)
    raw, truth = make_section(rng, flat=flat, pattern=pattern, n_stars=80, n_cr=60)
    return raw, truth, preprocess(raw, pattern, flat, PARS, CAL)


# -- levels, gain, flat, weights ----------------------------------------------------------
def test_bias_and_overscan_removed_to_01_electron():
    rng = np.random.default_rng(1)
    pattern = bias_pattern(512, 384, rng)
    raw, truth = make_section(rng, sky=0.0, n_stars=0, n_cr=0, pattern=pattern,
                              bad_column=False, saturated_star=False)
    img = preprocess(raw, pattern, None, PARS, CAL)
    good = img.flags == 0
    for amp in (np.s_[:, :192], np.s_[:, 192:]):  # each amplifier, gains 4.0 and 4.4
        assert abs(img.sci[amp][good[amp]].mean()) < 0.1
    # the row structure (several ADU) is gone: 32-row bands average to ~0
    bands = img.sci[:, 4:-4].reshape(16, 32, -1).mean(axis=(1, 2))
    assert np.abs(bands).max() < 0.6  # noise of a band mean: ~0.2 e-
    # without the bias pattern the column structure stays: the test can see a missing bias
    img_nobias = preprocess(raw, None, None, PARS, CAL)
    cols = img_nobias.sci.mean(axis=0)
    assert np.std(cols) > 3 * np.std(img.sci.mean(axis=0))


def test_overscan_methods():
    """row follows the row structure (sines of a few ADU), a cubic partly, one mean not."""
    rng = np.random.default_rng(2)
    raw, truth = make_section(rng, sky=0.0, n_stars=0, n_cr=0, bad_column=False, saturated_star=False)
    worst = {}
    for method in ("row", "polynomial", "mean"):
        img = preprocess(raw, None, None, PARS, {**CAL, "overscan_method": method})
        assert abs(img.sci[img.flags == 0].mean()) < 0.5
        worst[method] = np.abs(img.sci[:, 4:-4].reshape(16, 32, -1).mean(axis=(1, 2))).max()
    assert worst["row"] < 0.6 < worst["polynomial"] < worst["mean"]
    assert worst["mean"] > 5


def test_gain_conversion_is_exact():
    rng = np.random.default_rng(3)
    flat = true_flat(256, 192, rng, vignette=False)
    raw, truth = make_section(rng, ny=256, nx=192, sky=500.0, n_stars=10, n_cr=0, flat=flat,
                              noise=False, quantize=False, bad_column=False, saturated_star=False)
    img = preprocess(raw, None, flat, {**PARS, "cosmic_rays": False}, CAL)
    np.testing.assert_allclose(img.sci, truth["image"], rtol=2e-5, atol=2e-3)
    # the per-amplifier gains matter: one gain for both amplifiers is visibly wrong
    wrong = RawSection(**{**raw.__dict__, "gain": GAINS[0]})
    img2 = preprocess(wrong, None, flat, {**PARS, "cosmic_rays": False}, CAL)
    assert np.abs(img2.sci[:, 100:] / truth["image"][:, 100:] - GAINS[0] / GAINS[1]).max() < 1e-4


def test_flat_pattern_divided_out():
    rng = np.random.default_rng(4)
    flat = true_flat(512, 384, rng)
    raw, truth = make_section(rng, sky=5000.0, n_stars=0, n_cr=0, flat=flat,
                              bad_column=False, saturated_star=False)
    img = preprocess(raw, None, flat, PARS, CAL)
    good = img.flags == 0
    rel = np.where(good, img.sci / 5000.0 - 1, np.nan)
    blocks = np.nanmean(rel[:, :].reshape(16, 32, 12, 32), axis=(1, 3))
    assert np.nanmax(np.abs(blocks)) < 0.005
    # pixel-to-pixel: the residual no longer follows the flat (it would, slope 1, without it)
    slope = np.polyfit((flat - 1)[good], rel[good], 1)[0]
    assert abs(slope) < 0.05
    raw_rel = preprocess(raw, None, None, PARS, CAL).sci / 5000.0 - 1
    assert np.polyfit((flat - 1)[good], raw_rel[good], 1)[0] > 0.9
    # the vignetted corner is flagged LOW_FLAT and has no weight
    low = flat < PARS["low_flat"]
    assert low.sum() > 20
    assert np.all(img.flags[low] & pixflags.LOW_FLAT) and np.all(img.weight[low] == 0)


@pytest.mark.parametrize("sky", [30.0, 3000.0])
def test_weights_are_inverse_variance(sky):
    rng = np.random.default_rng(5)
    flat = true_flat(512, 384, rng, vignette=False)
    pattern = bias_pattern(512, 384, rng)
    raw, truth = make_section(rng, sky=sky, n_stars=0, n_cr=0, flat=flat, pattern=pattern,
                              bad_column=False, saturated_star=False)
    img = preprocess(raw, pattern, flat, PARS, CAL)
    good = img.weight > 0
    pull = (img.sci - truth["image"])[good] * np.sqrt(img.weight[good])
    assert good.mean() > 0.97
    assert abs(np.std(pull) - 1) < 0.02
    assert abs(np.mean(pull)) < 0.02
    assert img.header["NOISEMOD"] == "model" and abs(img.header["NOISEQ"] - 1) < 0.1
    # a weight with a wrong read noise fails this test
    bad = RawSection(**{**raw.__dict__, "read_noise": READ_NOISE * (1.5 if sky < 100 else 5)})
    img2 = preprocess(bad, pattern, flat, PARS, CAL)
    pull2 = (img2.sci - truth["image"])[good] * np.sqrt(img2.weight[good])
    assert img2.header["NOISEMOD"] == "model" and abs(np.std(pull2) - 1) > 0.05


def test_weights_from_measured_noise_when_the_model_fails():
    """A gain 10x too high in the metadata: the model variance is far off, so the weights
    come from the measured sky noise (and still give unit pulls)."""
    rng = np.random.default_rng(11)
    raw, truth = make_section(rng, sky=400.0, n_stars=0, n_cr=0, bad_column=False, saturated_star=False)
    wrong = RawSection(**{**raw.__dict__, "gain": [g / 10 for g in GAINS]})
    img = preprocess(wrong, None, None, PARS, CAL)
    assert img.header["NOISEMOD"] == "empirical" and img.header["NOISEQ"] < 0.2
    good = img.weight > 0
    pull = (img.sci - truth["image"] / 10)[good] * np.sqrt(img.weight[good])
    assert abs(np.std(pull) - 1) < 0.05
    assert ((img.flags & pixflags.COSMIC_RAY) != 0).mean() < 1e-3


# -- flags --------------------------------------------------------------------------------
def test_cosmic_rays_flagged_not_star_cores(scene):
    raw, truth, img = scene
    noise = np.sqrt(truth["signal"] + READ_NOISE ** 2)
    unflagged_otherwise = (img.flags & (0xFFFF ^ pixflags.COSMIC_RAY)) == 0
    cr_true = (truth["cr"] > 5 * noise) & unflagged_otherwise
    assert cr_true.sum() > 200
    found = (img.flags & pixflags.COSMIC_RAY) != 0
    assert found[cr_true].mean() > 0.95
    # star pixels (signal above 5 sigma, no cosmic ray near) are not cosmic rays
    near_cr = np.zeros_like(cr_true)
    ys, xs = np.nonzero(truth["cr"] > 0)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            near_cr[np.clip(ys + dy, 0, 511), np.clip(xs + dx, 0, 383)] = True
    star_px = (truth["star"] > 5 * noise) & ~near_cr & unflagged_otherwise
    assert star_px.sum() > 500
    assert found[star_px].mean() < 0.01
    # few false flags elsewhere
    assert found[~near_cr & ~star_px].mean() < 1e-4
    assert np.all(img.weight[found] == 0)


@pytest.mark.parametrize("fwhm", [1.8, 2.5, 4.0])
def test_cosmic_ray_detector_spares_stars(fwhm):
    rng = np.random.default_rng(6)
    raw, truth = make_section(rng, n_stars=150, n_cr=0, fwhm=fwhm, bad_column=False, saturated_star=False)
    img = preprocess(raw, None, None, PARS, CAL)
    noise = np.sqrt(truth["signal"] + READ_NOISE ** 2)
    star_px = truth["star"] > 5 * noise
    assert ((img.flags & pixflags.COSMIC_RAY) != 0)[star_px].mean() < 0.01


def test_saturated_star_and_bleed_trail_flagged(scene):
    raw, truth, img = scene
    sat = (img.flags & pixflags.SATURATED) != 0
    assert truth["bleed"].sum() > 30 and truth["satmask"].sum() > 30
    assert sat[truth["satmask"]].all()
    assert sat[truth["bleed"]].all()
    assert np.all(img.weight[sat] == 0)
    # the saturated area stays local: grown by bleed_grow along columns, 1 pixel around
    assert sat.sum() < 3 * (truth["bleed"] | truth["satmask"]).sum() + 200
    assert float(img.header["SATURATE"]) == pytest.approx((SATURATION - 1000) * GAINS[0], rel=0.03)


def test_bad_edge_and_nan_flags():
    rng = np.random.default_rng(7)
    raw, truth = make_section(rng, n_stars=5, n_cr=0, nan_pixels=25, saturated_star=False)
    img = preprocess(raw, None, None, PARS, CAL)
    f = img.flags
    assert np.all(f[truth["bad"]] & pixflags.BAD)
    m = PARS["edge_margin"]
    edge = np.zeros(f.shape, bool)
    edge[:m], edge[-m:], edge[:, :m], edge[:, -m:] = True, True, True, True
    assert np.all(f[edge] & pixflags.EDGE) and not np.any(f[~edge] & pixflags.EDGE)
    nan = np.isnan(raw.data[raw.datasec])
    assert nan.sum() >= 20
    assert np.all(f[nan] & pixflags.NAN) and not np.any(f[~nan] & pixflags.NAN)
    assert np.all(img.sci[nan] == 0) and np.all(np.isfinite(img.sci))
    assert np.all(img.weight[f != 0] == 0) and np.all(img.weight[f == 0] > 0)


def test_all_nan_and_all_saturated_are_errors():
    rng = np.random.default_rng(8)
    raw, _ = make_section(rng, ny=64, nx=64, n_stars=0, n_cr=0, saturated_star=False)
    data = raw.data.copy()
    data[raw.datasec] = np.nan
    with pytest.raises(ValueError, match=r"synth_001\.fits: exposure synth_001 ccd S1: .*NaN"):
        preprocess(RawSection(**{**raw.__dict__, "data": data}), None, None, PARS, CAL)
    data = raw.data.copy()
    data[raw.datasec] = SATURATION
    with pytest.raises(ValueError, match=r"synth_001\.fits: exposure synth_001 ccd S1: .*saturated"):
        preprocess(RawSection(**{**raw.__dict__, "data": data}), None, None, PARS, CAL,
                   meta={"exposure": "synth_001"})
    with pytest.raises(ValueError, match="master flat shape"):
        preprocess(raw, None, np.ones((10, 10), np.float32), PARS, CAL)


def test_detect_cosmic_rays_on_pure_noise_is_quiet():
    rng = np.random.default_rng(9)
    sci = rng.normal(100, 10, (1024, 1024)).astype(np.float32)
    weight = np.full(sci.shape, 0.01, np.float32)
    assert detect_cosmic_rays(sci, weight).sum() < 20
    sci[500, 500] += 200  # one 20-sigma hit
    assert detect_cosmic_rays(sci, weight)[500, 500]


# -- WCS and files ------------------------------------------------------------------------
def test_wcs_follows_the_trim(scene):
    raw, truth, img = scene
    w_raw, w_img = WCS(raw.header), img.wcs
    assert img.header["A_2_0"] == raw.header["A_2_0"] and "SIP" in img.header["CTYPE1"]
    y0, x0 = raw.datasec[0].start, raw.datasec[1].start
    x, y = np.array([0.0, 100.3, 383.0]), np.array([0.0, 200.7, 511.0])
    a = np.array(w_raw.all_pix2world(x + x0, y + y0, 0))
    b = np.array(w_img.all_pix2world(x, y, 0))
    assert np.abs(a - b).max() * 3.6e6 < 0.01  # mas


def test_image_round_trip(tmp_path, scene):
    raw, truth, img = scene
    path = tmp_path / "S1.image.fits"
    attrs = {"step": "preprocessing", "provenance_hash": "abc1234567", "code_version": "1",
             "parameters": {"preprocessing.flat": True}, "upstreams": {}, "project": "T", "obs": "SYNTH"}
    write_image(path, img, attrs)
    with fits.open(path) as hdul:
        assert [h.name for h in hdul] == ["PRIMARY", "SCI", "WEIGHT", "FLAGS"]
        p = hdul[0].header
        assert p["EXPOSURE"] == "synth_001" and p["CCD"] == "S1" and p["FILTER"] == "r"
        assert p["GAIN"] == 1.0 and p["RDNOISE"] == READ_NOISE and p["VO_HASH"] == "abc1234567"
        assert p["MJD-OBS"] == 60000.25 and p["EXPTIME"] == 30.0 and p["AIRMASS"] == 1.2
        assert hdul["FLAGS"].data.dtype == np.uint16 and hdul["SCI"].data.dtype.kind == "f"
    back = read_image(path)
    np.testing.assert_array_equal(back.sci, img.sci)
    np.testing.assert_array_equal(back.weight, img.weight)
    np.testing.assert_array_equal(back.flags, img.flags)
    assert back.sci.dtype == np.float32 and back.flags.dtype == np.uint16
    assert back.header["CRPIX1"] == img.header["CRPIX1"]
    xy = np.array([[10.0, 20.0], [300.0, 400.0]])
    np.testing.assert_allclose(back.wcs.all_pix2world(xy, 0), img.wcs.all_pix2world(xy, 0), rtol=0, atol=1e-12)


def test_read_image_errors(tmp_path, scene):
    img = scene[2]
    small = Image(img.sci[:64, :64].copy(), img.weight[:64, :64].copy(), img.flags[:64, :64].copy(), img.header)
    path = tmp_path / "ok.fits"
    write_image(path, small)
    truncated = tmp_path / "truncated.fits"
    truncated.write_bytes(path.read_bytes()[:-5000])
    with pytest.raises(FitsError, match="truncated.fits"):
        read_image(truncated)
    with fits.open(path) as hdul:
        fits.HDUList([hdul[0].copy(), hdul["SCI"].copy(), hdul["FLAGS"].copy()]).writeto(tmp_path / "nowt.fits")
    with pytest.raises(FitsError, match=r"nowt\.fits: missing HDU.*WEIGHT"):
        read_image(tmp_path / "nowt.fits")
    with pytest.raises(FitsError, match="absent.fits"):
        read_image(tmp_path / "absent.fits")
    # a failed write leaves nothing behind
    bad = Image(small.sci, small.weight[:10], small.flags, small.header)
    with pytest.raises(ValueError, match="WEIGHT shape"):
        write_image(tmp_path / "bad.fits", bad)
    assert not (tmp_path / "bad.fits").exists()


def _decam_stamp() -> Path:
    local = REPO / "tests" / "data" / "decam" / DECAM_STAMP
    if local.exists():
        return local
    pytest.fail(f"{local} missing (copy of ../shared/data/real/decam_stamps/{DECAM_STAMP})")


def _centroids(data, peaks, half=3):
    """Background-subtracted first moments in (2*half+1)^2 boxes around integer peaks."""
    bkg = np.median(data)
    out = []
    for y, x in peaks:
        box = data[y - half:y + half + 1, x - half:x + half + 1] - bkg
        yy, xx = np.mgrid[y - half:y + half + 1, x - half:x + half + 1]
        out.append([(box * xx).sum() / box.sum(), (box * yy).sum() / box.sum()])
    return np.array(out)


def test_decam_stamp_keeps_tpv_wcs(tmp_path):
    """Real data: a DECam stamp (TPV WCS), trimmed by 5 pixels per side, keeps its sky mapping."""
    path = _decam_stamp()
    with fits.open(path) as hdul:
        data, header = hdul[0].data.astype(np.float32), hdul[0].header.copy()
    assert header["CTYPE1"] == "RA---TPV" and "PV1_7" in header
    t = 5
    raw = RawSection(data=data, header=header, ccd="N6", datasec=(slice(t, 256 - t), slice(t, 256 - t)),
                     overscans=[], gain=float(header["GAIN"]), read_noise=float(header["RDNOISE"]),
                     saturation=float(header["SATURATE"]), bad_pixel_mask=None, path=path)
    img = preprocess(raw, None, None, PARS, CAL)
    write_image(tmp_path / "N6.image.fits", img)
    back = read_image(tmp_path / "N6.image.fits")
    assert back.header["CTYPE1"] == "RA---TPV"
    assert all(back.header[f"PV{i}_{j}"] == header[f"PV{i}_{j}"] for i in (1, 2) for j in range(11)
               if f"PV{i}_{j}" in header)
    # stars: the brightest local maxima, away from the edges and from saturation
    from scipy import ndimage
    smooth = ndimage.gaussian_filter(data, 1.5)
    peaks = np.argwhere((smooth == ndimage.maximum_filter(smooth, 9)) & (smooth > np.median(data) + 300))
    peaks = peaks[(peaks.min(axis=1) > 15) & (peaks.max(axis=1) < 240)]
    peaks = peaks[data[peaks[:, 0], peaks[:, 1]] < 0.5 * header["SATURATE"]]
    assert len(peaks) >= 5
    xy_raw = _centroids(data, peaks)
    xy_img = _centroids(back.sci, peaks - t)
    np.testing.assert_allclose(xy_img + t, xy_raw, atol=1e-3)  # the same star, trimmed grid
    sky_raw = WCS(header).all_pix2world(xy_raw, 0)
    sky_img = back.wcs.all_pix2world(xy_img, 0)
    dra = (sky_img[:, 0] - sky_raw[:, 0]) * np.cos(np.radians(sky_raw[:, 1]))
    sep_mas = np.hypot(dra, sky_img[:, 1] - sky_raw[:, 1]) * 3.6e6
    assert sep_mas.max() < 1.0
    # and a one-pixel error in the trim would be noticed (0.26 arcsec = 260 mas)
    wrong = WCS(header).all_pix2world(xy_img, 0)
    assert (np.abs(wrong - sky_raw) * 3.6e6).max() > 100


def test_speed_full_ccd():
    """One 2048x4096 CCD with two overscan strips: well under a second on one core."""
    rng = np.random.default_rng(10)
    ny, nx = 4096, 2048
    data = (1000 + rng.normal(0, 1.5, (ny, nx + 2 * NO))).astype(np.float32)
    data[:, NO:-NO] += (rng.poisson(800.0, (ny, nx)) / 4.0).astype(np.float32)
    amp_a = (slice(0, ny), slice(NO, NO + nx // 2))
    amp_b = (slice(0, ny), slice(NO + nx // 2, NO + nx))
    raw = RawSection(data=data, header=_wcs_header(ny, nx + 2 * NO), ccd="S1",
                     datasec=(slice(0, ny), slice(NO, NO + nx)),
                     overscans=[(amp_a, (slice(0, ny), slice(0, NO))),
                                (amp_b, (slice(0, ny), slice(nx + NO, nx + 2 * NO)))],
                     gain=[4.0, 4.2], read_noise=6.0, saturation=SATURATION)
    bias = np.zeros((ny, nx), np.float32)
    flat = np.ones((ny, nx), np.float32)
    preprocess(raw, bias, flat, PARS, CAL)  # warm-up
    times = []
    for _ in range(2):
        t0 = time.perf_counter()
        img = preprocess(raw, bias, flat, PARS, CAL)
        times.append(time.perf_counter() - t0)
    print(f"preprocess 2048x4096: {min(times):.3f} s")
    assert img.sci.dtype == np.float32 and img.weight.dtype == np.float32
    assert min(times) < 1.5
