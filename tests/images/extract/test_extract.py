"""Extraction (vo.images.extract): completeness, PSF-flux accuracy and errors on synthetic images
with a truth table, SExtractor agreement on real data (tests/data/sep_ntt), files and errors."""

from __future__ import annotations


import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from scipy.spatial import cKDTree

from vo.images import flags as pixflags
from vo.images.extract.background import read_background, write_background
from vo.images.extract import (PIXFLAG_SHIFT, ExtractionError, extract, read_sources,
                               write_sources)
from vo.images.image import Image
from vo.io.fits import FitsError
from testdata import DATA as TEST_DATA

NTT = TEST_DATA / "sep_ntt"


def moffat_pixels(dx, dy, alpha1, alpha2, phi, beta, sub=5):
    """Elliptical Moffat (unit flux) averaged over sub x sub points per pixel (test's own code)."""
    o = (np.arange(sub) + 0.5) / sub - 0.5
    X = dx[..., None, None] + o[:, None]
    Y = dy[..., None, None] + o[None, :]
    c, s = (f(phi)[:, None, None, None, None] for f in (np.cos, np.sin))
    u, v = c * X + s * Y, -s * X + c * Y
    a1, a2, b = (q[:, None, None, None, None] for q in (alpha1, alpha2, beta))
    prof = (b - 1) / (np.pi * a1 * a2) * (1 + (u / a1) ** 2 + (v / a2) ** 2) ** (-b)
    return prof.mean(axis=(-2, -1))


def make_image(seed=1, shape=(1024, 1024), n=1500, sky=300.0, rn=5.0, beta=3.0, fmin=150.0,
               fmax=5e6, R=20):
    """Stars (Moffat beta, FWHM 2.3-3.9 pix varying across the image, mild ellipticity), sky with a
    gradient, Poisson + read noise, a bad column, bad pixels and cosmic rays (flagged).

    Fluxes follow dN/dlogF ~ F**-0.6 (faint stars outnumber bright ones). Returns the Image and the
    truth table (x, y, flux (e-), snr = optimal S/N with the true PSF and variances, fwhm).
    """
    rng = np.random.default_rng(seed)
    ny, nx = shape
    x, y = rng.uniform(10, nx - 11, n), rng.uniform(10, ny - 11, n)
    g = 0.6
    flux = (fmin ** -g - rng.uniform(0, 1, n) * (fmin ** -g - fmax ** -g)) ** (-1 / g)
    fwhm = 2.3 + 1.2 * x / nx + 0.4 * y / ny
    alpha = fwhm / (2 * np.sqrt(2 ** (1 / beta) - 1))
    q = 0.92 + 0.05 * y / ny
    alpha1, alpha2, phi = alpha / np.sqrt(q), alpha * np.sqrt(q), 0.3 + 0.8 * x / nx
    skymap = sky * (1 + 0.1 * np.arange(nx)[None, :] / nx + 0.05 * np.arange(ny)[:, None] / ny)
    model = np.zeros(ny * nx)
    snr = np.zeros(n)
    k = np.arange(-R, R + 1)
    for lo in range(0, n, 100):
        sl = slice(lo, lo + 100)
        ix = np.rint(x[sl]).astype(int)[:, None, None] + k[None, None, :]
        iy = np.rint(y[sl]).astype(int)[:, None, None] + k[None, :, None]
        P = moffat_pixels(ix - x[sl, None, None], iy - y[sl, None, None], alpha1[sl], alpha2[sl],
                          phi[sl], np.full(ix.shape[0], beta))
        inside = (ix >= 0) & (ix < nx) & (iy >= 0) & (iy < ny)
        ixc, iyc = np.clip(ix, 0, nx - 1), np.clip(iy, 0, ny - 1)
        var = skymap[iyc, ixc] + rn ** 2 + flux[sl, None, None] * P
        snr[sl] = flux[sl] * np.sqrt((inside * P * P / var).sum(axis=(1, 2)))
        np.add.at(model, (iyc * nx + ixc)[inside], (flux[sl, None, None] * P)[inside])
    sci = (rng.poisson(skymap + model.reshape(ny, nx)) + rng.normal(0, rn, shape)).astype(np.float32)
    flags = np.zeros(shape, np.uint16)
    flags[:, nx // 3] |= pixflags.BAD
    flags.flat[rng.integers(0, nx * ny, 60)] |= pixflags.BAD
    cr = rng.integers(0, nx * ny, 40)
    sci.flat[cr] += 3000
    flags.flat[cr] |= pixflags.COSMIC_RAY
    sci[:, nx // 3] = np.nan
    weight = np.where(flags == 0, 1 / (rn ** 2 + np.maximum(np.nan_to_num(sci), 0)), 0).astype(np.float32)
    header = fits.Header({"INSTRUME": "TestCam", "EXPOSURE": f"synth{seed}", "CCD": "C1",
                          "SATURATE": 1e7})
    truth = Table({"x": x, "y": y, "flux": flux, "snr": snr, "fwhm": fwhm})
    return Image(sci=sci, weight=weight, flags=flags, header=header), truth


@pytest.fixture(scope="module")
def synthetic():
    image, truth = make_image()
    ex = extract(image, {})
    d, i = cKDTree(np.c_[ex.sources["x"], ex.sources["y"]]).query(np.c_[truth["x"], truth["y"]])
    return image, truth, ex, d < 1.0, i


def test_completeness_at_snr10(synthetic):
    _, truth, _, matched, _ = synthetic
    sel = truth["snr"] >= 10
    assert sel.sum() > 300
    assert matched[sel].mean() >= 0.95


def test_psf_fluxes_unbiased_and_errors(synthetic):
    _, truth, ex, matched, i = synthetic
    s = ex.sources[i]
    sel = matched & (truth["snr"] >= 20)
    assert sel.sum() > 200
    ratio = s["flux_psf"][sel] / truth["flux"][sel] - 1
    assert abs(np.median(ratio)) < 0.01
    bright = matched & (truth["snr"] >= 200)  # no model-mismatch bias at the bright end either
    assert abs(np.median(s["flux_psf"][bright] / truth["flux"][bright] - 1)) < 0.01
    # pulls: robust width over all S/N >= 10 (blends give a few outliers), plain std for S/N 10-100
    sel = matched & (truth["snr"] >= 10)
    pull = (s["flux_psf"][sel] - truth["flux"][sel]) / s["fluxerr_psf"][sel]
    robust = 1.4826 * np.median(np.abs(pull - np.median(pull)))
    assert 0.8 <= robust <= 1.3
    mid = matched & (truth["snr"] >= 10) & (truth["snr"] < 100) & (s["flags"] == 0)
    pull = (s["flux_psf"][mid] - truth["flux"][mid]) / s["fluxerr_psf"][mid]
    pull = pull[np.abs(pull) < 5]
    assert 0.8 <= np.std(pull) <= 1.3
    np.testing.assert_allclose(s["snr"], s["flux_psf"] / s["fluxerr_psf"])


def test_positions_errors_fwhm_and_background(synthetic):
    image, truth, ex, matched, i = synthetic
    s = ex.sources[i]
    sel = matched & (truth["snr"] >= 20)
    dx, dy = s["x"][sel] - truth["x"][sel], s["y"][sel] - truth["y"][sel]
    assert abs(np.median(dx)) < 0.02 and abs(np.median(dy)) < 0.02
    pull = np.r_[dx / s["xerr"][sel], dy / s["yerr"][sel]]
    assert 0.7 <= 1.4826 * np.median(np.abs(pull)) <= 1.5
    # per-source fwhm of point sources and the PSF FWHM in the header follow the true FWHM
    bright = matched & (truth["snr"] >= 50)
    assert abs(np.median(s["fwhm"][bright] / truth["fwhm"][bright]) - 1) < 0.05
    assert ex.sources.meta["FWHM"] == pytest.approx(ex.psf.fwhm())
    assert ex.psf.fwhm() == pytest.approx(2.3 + 0.6 + 0.2, rel=0.03)
    # background: sky is 300-345 e-, noise sqrt(sky + rn^2)
    ny, nx = image.sci.shape
    sky = 300 * (1 + 0.1 * np.arange(nx)[None, :] / nx + 0.05 * np.arange(ny)[:, None] / ny)
    assert np.median(np.abs(ex.background.bg / sky - 1)) < 0.005
    assert np.median(ex.background.rms / np.sqrt(sky + 25)) == pytest.approx(1, abs=0.03)
    assert ex.background.bg.dtype == np.float32 and ex.background.rms.dtype == np.float32
    assert ex.sources.meta["APER_R"] == pytest.approx(ex.psf.fwhm())
    # aperture fluxes: the big aperture holds 99% of a Moffat beta=3 star
    assert np.median(s["flux_aper_big"][bright] / truth["flux"][bright]) == pytest.approx(0.99, abs=0.01)


def test_pixel_flags_in_apertures(synthetic):
    image, _, ex, _, _ = synthetic
    s = ex.sources
    col = image.sci.shape[1] // 3
    on_column = np.abs(s["x"] - col) < 0.5 * ex.meta["aper_r"]
    assert on_column.any()
    assert np.all(s["flags"][on_column] & (pixflags.BAD << PIXFLAG_SHIFT))
    far = np.abs(s["x"] - col) > ex.meta["aper_r"] + 2
    assert np.mean(s["flags"][far] & (pixflags.BAD << PIXFLAG_SHIFT) > 0) < 0.05  # random bad pixels only
    assert np.isfinite(s["flux_psf"][on_column]).all()


def test_files_round_trip(synthetic, tmp_path):
    _, _, ex, _, _ = synthetic
    attrs = {"step": "extraction", "provenance_hash": "abc123", "code_version": "1"}
    path = tmp_path / "x.sources.fits"
    write_sources(path, ex.sources, attrs)
    with fits.open(path) as hdul:
        assert hdul[0].header["VO_STEP"] == "extraction"
        h = hdul["SOURCES"].header
        assert h["N_SRC"] == len(ex.sources) and h["FWHM"] == pytest.approx(ex.meta["fwhm"])
        assert h["APER_R"] > 0 and h["APER_RB"] > h["APER_R"]
        np.testing.assert_array_equal(hdul["SOURCES"].data["flux_psf"], ex.sources["flux_psf"])
    back = read_sources(path)
    assert back.colnames == ex.sources.colnames and back.meta["N_SRC"] == len(ex.sources)
    assert str(back["x"].unit) == "pix"
    bpath = tmp_path / "x.bkg.fits"
    write_background(bpath, ex.background, attrs)
    with fits.open(bpath) as hdul:
        assert hdul["BACKGROUND"].data.dtype.name == "float32" and "RMS" in hdul
    b = read_background(bpath)
    np.testing.assert_array_equal(b.rms, ex.background.rms)
    assert not list(tmp_path.glob(".*tmp*"))
    with pytest.raises(FitsError, match="SOURCES"):
        read_sources(bpath)
    with pytest.raises(FitsError, match="x.missing.fits"):
        read_background(tmp_path / "x.missing.fits")


def test_image_with_no_stars_raises_naming_it():
    rng = np.random.default_rng(3)
    sci = (100 + rng.normal(0, 10, (256, 256))).astype(np.float32)
    header = fits.Header({"INSTRUME": "TestCam", "EXPOSURE": "blank_001", "CCD": "C7"})
    image = Image(sci=sci, weight=np.full(sci.shape, 0.01, np.float32),
                  flags=np.zeros(sci.shape, np.uint16), header=header)
    with pytest.raises(ValueError, match="blank_001 C7"):
        extract(image, {"threshold": 5.0})
    flagged = Image(sci=sci, weight=np.zeros_like(sci), flags=np.full(sci.shape, 1, np.uint16),
                    header=header)
    with pytest.raises(ExtractionError, match="blank_001.*every pixel is flagged"):
        extract(flagged, {})


@pytest.mark.filterwarnings("ignore:The following header keyword is invalid")
def test_sep_ntt_matches_sextractor():
    """Real NTT image: background/RMS maps vs SExtractor's to 1%, >= 95% of SExtractor's objects
    found within 1 pix (windowed positions; the catalog's are 1-based)."""
    data = fits.getdata(NTT / "image.fits").astype(np.float32)
    ref_back = fits.getdata(NTT / "back.fits")
    ref_rms = fits.getdata(NTT / "rms.fits")
    cat = np.loadtxt(NTT / "image.cat")
    noise = 1.4826 * np.median(np.abs(data - np.median(data)))
    image = Image(sci=data, weight=np.full(data.shape, 1 / noise ** 2, np.float32),
                  flags=np.zeros(data.shape, np.uint16), header=fits.Header({"EXPOSURE": "ntt"}))
    ex = extract(image, {})  # defaults = SExtractor's (mesh 64, filter 3, threshold 1.5, minarea 5)
    assert np.max(np.abs(ex.background.bg / ref_back - 1)) < 0.01
    assert np.max(np.abs(ex.background.rms / ref_rms - 1)) < 0.01
    d, _ = cKDTree(np.c_[ex.sources["x"], ex.sources["y"]]).query(np.c_[cat[:, 3] - 1, cat[:, 4] - 1])
    assert len(cat) == 65
    assert np.mean(d < 1.0) >= 0.95


@pytest.mark.parametrize("fwhm", [1.8, 3.5])
def test_psf_fluxes_unbiased_on_democam_stars_at_both_seeing_extremes(fwhm):
    """Isolated stars rendered by DemoCam (pixel-integrated Moffat beta 3) on a bright sky, at
    the best and worst seeing of the demo: the PSF model recovers FWHM and beta (the local sky
    of the PSF-star fits absorbs the background map's excess from the stars' wings) and PSF
    fluxes are unbiased to 0.5%."""
    from vo.images.instruments.democam.render import render_point_sources

    rng = np.random.default_rng(7)
    sky, rn, beta, spacing = 1000.0, 5.0, 3.0, 42
    g = (np.arange(20) + 1) * spacing
    x, y = [a.ravel() + rng.uniform(-0.5, 0.5, a.size) for a in np.meshgrid(g, g)]
    shape = (int(g[-1] + spacing),) * 2
    flux = 10 ** rng.uniform(3.3, 5.5, x.size)
    model = render_point_sources(shape, x, y, flux, np.full(x.size, fwhm), beta)
    sci = (rng.poisson(model + sky) + rng.normal(0, rn, shape)).astype(np.float32)
    weight = (1 / (rn ** 2 + np.maximum(sci, 0))).astype(np.float32)
    image = Image(sci=sci, weight=weight, flags=np.zeros(shape, np.uint16),
                  header=fits.Header({"EXPOSURE": f"grid{fwhm}", "SATURATE": 1e7}))
    ex = extract(image, {})
    s = ex.sources
    d, i = cKDTree(np.c_[s["x"], s["y"]]).query(np.c_[x, y])
    sel = (d < 1) & (s["snr"][i] >= 20)
    assert sel.sum() > 250
    assert ex.psf.fwhm() == pytest.approx(fwhm, rel=0.01)
    used = np.asarray(ex.psf.stars["used"], bool)
    assert np.median(ex.psf.stars["beta"][used]) == pytest.approx(beta, abs=0.05)
    assert abs(np.median(s["flux_psf"][i][sel] / flux[sel] - 1)) < 0.005


def test_truncated_file_error_closes_it(synthetic, tmp_path):
    """A truncated source list fails with a FitsError naming it and closes the file (an
    unclosed file object warns ResourceWarning when it is collected)."""
    import gc
    import warnings

    _, _, ex, _, _ = synthetic
    path = tmp_path / "t.sources.fits"
    write_sources(path, ex.sources)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 3000])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        try:
            read_sources(path)
        except FitsError as exc:
            assert "t.sources.fits" in str(exc)
        else:
            raise AssertionError("a truncated file was read")
        gc.collect()
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]
