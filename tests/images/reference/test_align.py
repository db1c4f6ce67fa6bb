"""vo.images.reference.align: resampling onto another pixel grid (geometry, flux, weights, flags).

A synthetic star field (Moffat stars rendered with the simulator's pixel-integrated renderer,
Poisson + read noise) on a TAN-SIP grid is resampled onto a grid shifted by a non-integer
number of pixels, rotated by 0.3 deg and 0.1% finer; the truth is the star list mapped
through both WCS.  ``reproject.reproject_interp`` is the independent reference for the geometry.
"""

from __future__ import annotations

import numpy as np
import pytest
from astropy.wcs import WCS
from scipy.spatial import cKDTree

from vo.images import flags as pixflags
from vo.images.reference.align import align_image, pixel_map, replace_wcs, with_wcs
from vo.images.extract import extract
from vo.images.image import Image
from vo.images.extract.psf import PSFModel
from vo.images.instruments.democam.render import render_point_sources

SHAPE = (400, 360)  # ny, nx
SKY = 200.0         # e-/pix
RN = 5.0            # e-
FWHM = 2.6          # pix
BETA = 3.0


def make_wcs(crpix, rot_deg=0.0, scale=0.5, sip=True) -> WCS:
    """TAN (optionally SIP with a cubic radial-like distortion) at (150, 2) deg."""
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN-SIP", "DEC--TAN-SIP"] if sip else ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [150.0, 2.0]
    w.wcs.crpix = crpix
    t = np.deg2rad(rot_deg)
    s = scale / 3600
    w.wcs.cd = [[-s * np.cos(t), s * np.sin(t)], [s * np.sin(t), s * np.cos(t)]]
    if sip:
        from astropy.wcs import Sip
        a = np.zeros((4, 4))
        b = np.zeros((4, 4))
        k = 2e-9  # ~0.1 pix at 300 pix from crpix
        a[3, 0], a[1, 2], b[2, 1], b[0, 3] = k, k, k, k
        w.sip = Sip(a, b, None, None, w.wcs.crpix)
    return w


SRC_WCS = make_wcs([180.5, 200.5])
TGT_WCS = make_wcs([183.87, 197.69], rot_deg=0.3, scale=0.4995, sip=False)


def star_field(rng, n=120, noise=True):
    """(Image, x, y, flux) of a star field on SRC_WCS; stars away from the edges."""
    x = rng.uniform(15, SHAPE[1] - 15, n)
    y = rng.uniform(15, SHAPE[0] - 15, n)
    flux = 10 ** rng.uniform(3.3, 5.0, n)
    img = SKY + render_point_sources(SHAPE, x, y, flux, np.full(n, FWHM), BETA).astype(np.float64)
    var = img + RN ** 2
    sci = rng.normal(img, np.sqrt(var)) if noise else img
    flags = np.zeros(SHAPE, pixflags.DTYPE)
    flags[:2], flags[-2:], flags[:, :2], flags[:, -2:] = (pixflags.EDGE,) * 4
    weight = np.where(flags == 0, 1 / var, 0).astype(np.float32)
    header = SRC_WCS.to_header(relax=True)
    header["EXPOSURE"] = "synthetic"
    return Image(sci=sci.astype(np.float32), weight=weight, flags=flags, header=header), x, y, flux


def to_target(x, y):
    return TGT_WCS.world_to_pixel_values(*SRC_WCS.pixel_to_world_values(x, y))


def test_pixel_map_matches_exact_wcs():
    pm = pixel_map(SRC_WCS, TGT_WCS, SHAPE)
    xs, ys, jac = pm.rows(0, SHAPE[0])
    rng = np.random.default_rng(3)
    iy, ix = rng.integers(0, SHAPE[0], 500), rng.integers(0, SHAPE[1], 500)
    ex, ey = SRC_WCS.world_to_pixel_values(*TGT_WCS.pixel_to_world_values(ix.astype(float), iy.astype(float)))
    err = np.hypot(xs[iy, ix] - ex, ys[iy, ix] - ey)
    assert err.max() < 1e-4, err.max()
    # area ratio vs a fine finite-difference Jacobian of the exact map
    h = 0.01

    def src(dx, dy):
        return np.array(SRC_WCS.world_to_pixel_values(*TGT_WCS.pixel_to_world_values(ix + dx, iy + dy)))

    jx, jy = (src(h, 0) - src(-h, 0)) / (2 * h), (src(0, h) - src(0, -h)) / (2 * h)
    exact = np.abs(jx[0] * jy[1] - jy[0] * jx[1])
    assert np.abs(jac[iy, ix] - exact).max() < 2e-6
    assert abs(np.median(exact) - (0.4995 / 0.5) ** 2) < 1e-3  # the 0.1% finer grid


def test_geometry_agrees_with_reproject():
    """A smooth image (wide Gaussians) resampled by us and by reproject_interp (bicubic)."""
    from reproject import reproject_interp

    yy, xx = np.mgrid[0:SHAPE[0], 0:SHAPE[1]].astype(float)
    smooth = np.zeros(SHAPE)
    for cx, cy in ((100, 120), (250, 300), (180, 60)):
        smooth += 1000 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * 6.0 ** 2))
    img = Image(sci=smooth.astype(np.float32), weight=np.ones(SHAPE, np.float32),
                flags=np.zeros(SHAPE, pixflags.DTYPE), header=SRC_WCS.to_header(relax=True))
    out = align_image(img, TGT_WCS, SHAPE)
    ref, foot = reproject_interp((smooth, SRC_WCS), TGT_WCS, shape_out=SHAPE, order="bicubic")
    jac = pixel_map(SRC_WCS, TGT_WCS, SHAPE).rows(0, SHAPE[0])[2]
    ok = (out.flags == 0) & (foot > 0)
    assert ok.mean() > 0.9
    diff = np.abs(out.sci / jac - ref)[ok]
    assert diff.max() < 2e-3 * smooth.max(), diff.max()


def test_flux_conservation_of_stars():
    """PSF fluxes (extract on both grids, each with its own PSF fit) agree within 0.5%."""
    rng = np.random.default_rng(11)
    img, x, y, flux = star_field(rng)
    out = align_image(img, TGT_WCS, SHAPE)
    pars = {"psf_poly_order": 0}
    a = extract(img, pars).sources
    b = extract(out, pars).sources
    tx, ty = to_target(x, y)
    da, ia = cKDTree(np.c_[a["x"], a["y"]]).query(np.c_[x, y])
    db, ib = cKDTree(np.c_[b["x"], b["y"]]).query(np.c_[tx, ty])
    bright = (da < 0.5) & (db < 0.5) & (flux > 5e3) & (flux < 6e4)
    assert bright.sum() > 30
    ratio = np.asarray(b["flux_psf"])[ib[bright]] / np.asarray(a["flux_psf"])[ia[bright]]
    print(f"\nflux ratio aligned/original: median {np.median(ratio):.4f}, rms {np.std(ratio):.4f} "
          f"({bright.sum()} stars)")
    assert abs(np.median(ratio) - 1) < 0.005
    # positions land on the WCS-mapped truth
    pos = np.hypot(np.asarray(b["x"])[ib[bright]] - tx[bright], np.asarray(b["y"])[ib[bright]] - ty[bright])
    assert np.median(pos) < 0.05


def test_noiseless_star_matches_direct_rendering():
    """Interpolation error: the aligned noiseless field vs the same stars rendered on the target grid."""
    rng = np.random.default_rng(5)
    img, x, y, flux = star_field(rng, n=40, noise=False)
    out = align_image(img, TGT_WCS, SHAPE)
    tx, ty = to_target(x, y)
    jac = (0.4995 / 0.5) ** 2
    direct = SKY * jac + render_point_sources(SHAPE, tx, ty, flux, np.full(x.size, FWHM / 0.999), BETA)
    ok = out.flags == 0
    resid = np.abs(out.sci - direct)[ok]
    peak = flux.max() * 0.1  # peak pixel fraction of a FWHM 2.6 Moffat beta 3 is ~0.11
    print(f"\nmax |aligned - direct| / brightest peak: {resid.max() / peak:.4f}")
    assert resid.max() < 0.03 * peak
    assert abs(out.sci[ok].sum() / direct[ok].sum() - 1) < 1e-3


def test_weights_pull_and_correlated_noise():
    """Pure noise with a variance gradient: the per-pixel pull std is 1 and large-area sums have
    NCORR times the summed pixel variance."""
    rng = np.random.default_rng(2)
    ny, nx = SHAPE
    sigma = np.linspace(5, 15, nx)[None, :] * np.ones((ny, 1))
    img = Image(sci=rng.normal(0, sigma).astype(np.float32), weight=(1 / sigma ** 2).astype(np.float32),
                flags=np.zeros(SHAPE, pixflags.DTYPE), header=SRC_WCS.to_header(relax=True))
    out = align_image(img, TGT_WCS, SHAPE)
    ok = out.flags == 0
    pull = out.sci[ok] * np.sqrt(out.weight[ok])
    ncorr = out.header["NCORR"]
    print(f"\npixel pull std {pull.std():.4f} (input 1); NCORR {ncorr:.3f}")
    assert abs(pull.std() - 1) < 0.02
    assert 1.2 < ncorr < 1.8  # interpolation lowers the pixel variance by ~1/NCORR on average
    # 16x16 block sums: variance = NCORR x sum of pixel variances
    b = 16
    cy, cx = (ny - 40) // b, (nx - 40) // b
    sl = (slice(20, 20 + cy * b), slice(20, 20 + cx * b))
    assert ok[sl].all()
    sums = out.sci[sl].reshape(cy, b, cx, b).sum(axis=(1, 3))
    var = (1 / out.weight[sl]).reshape(cy, b, cx, b).sum(axis=(1, 3))
    r = np.mean(sums ** 2 / var)
    print(f"block-sum variance / sum of pixel variances {r:.3f}")
    assert abs(r / ncorr - 1) < 0.15


def test_flags_propagate_and_bad_values_do_not_leak():
    rng = np.random.default_rng(4)
    img, *_ = star_field(rng, n=30)
    clean = align_image(img, TGT_WCS, SHAPE)
    sci, flags, weight = img.sci.copy(), img.flags.copy(), img.weight.copy()
    sci[:, 100] = 1e6
    flags[:, 100] |= pixflags.BAD
    sci[250, 200] = np.nan
    flags[250, 200] |= pixflags.NAN
    sci[150, 50] = 5e5
    flags[150, 50] |= pixflags.COSMIC_RAY
    weight[flags != 0] = 0
    out = align_image(Image(sci=sci, weight=weight, flags=flags, header=img.header), TGT_WCS, SHAPE)
    assert np.all(out.weight[out.flags != 0] == 0) and np.all(out.weight[out.flags == 0] > 0)
    # every output pixel whose 2x2 source footprint contains a flagged pixel carries its bit
    xs, ys, _ = pixel_map(SRC_WCS, TGT_WCS, SHAPE).rows(0, SHAPE[0])
    x0, y0 = np.floor(xs), np.floor(ys)
    touches_col = (x0 <= 100) & (x0 + 1 >= 100) & (ys >= 2) & (ys <= SHAPE[0] - 3)
    assert np.all(out.flags[touches_col] & pixflags.BAD)
    touches_cr = (x0 <= 50) & (x0 + 1 >= 50) & (y0 <= 150) & (y0 + 1 >= 150)
    assert touches_cr.sum() >= 1 and np.all(out.flags[touches_cr] & pixflags.COSMIC_RAY)
    touches_nan = (x0 <= 200) & (x0 + 1 >= 200) & (y0 <= 250) & (y0 + 1 >= 250)
    assert np.all(out.flags[touches_nan] & pixflags.NAN)
    # the flagged area is only the footprint (a column is 2-3 output pixels wide)
    assert (out.flags & pixflags.BAD).astype(bool).sum(axis=1)[50:350].max() <= 3
    # unflagged pixels next to the hot column/CR are unchanged vs the clean image
    both = (out.flags == 0) & (clean.flags == 0)
    assert np.all(np.isfinite(out.sci))
    leak = np.abs(out.sci - clean.sci)[both].max()
    assert leak < 0.5 * np.median(1 / np.sqrt(clean.weight[both])), leak  # a 1e6 e- value is not seen
    # bits of the input survive: EDGE from the 2-pix input margin reaches the output border
    assert (out.flags & pixflags.EDGE).any()


def test_no_coverage_is_flagged_and_zero_weight():
    rng = np.random.default_rng(6)
    img, *_ = star_field(rng, n=10)
    shifted = make_wcs([180.5 + 150.3, 200.5 - 80.6], sip=False)  # target grid hangs off the image
    out = align_image(img, shifted, SHAPE)
    xs, ys, _ = pixel_map(SRC_WCS, shifted, SHAPE).rows(0, SHAPE[0])
    outside = (xs < -0.5) | (xs > SHAPE[1] - 0.5) | (ys < -0.5) | (ys > SHAPE[0] - 0.5)
    assert 0.2 < outside.mean() < 0.8
    nc = pixflags.EDGE | pixflags.NAN
    assert np.all(out.flags[outside] & nc == nc)
    assert np.all(out.weight[outside] == 0) and np.all(out.sci[outside] == 0)
    assert (out.flags == 0).mean() > 0.15


def test_bad_input_errors():
    rng = np.random.default_rng(7)
    img, *_ = star_field(rng, n=5)
    far = make_wcs([5000.0, 5000.0], sip=False)
    with pytest.raises(ValueError, match="no overlap"):
        align_image(img, far, SHAPE)
    broken = Image(sci=img.sci, weight=img.weight[:-1], flags=img.flags, header=img.header)
    with pytest.raises(ValueError, match="WEIGHT shape"):
        align_image(broken, TGT_WCS, SHAPE)


def test_replace_wcs_and_with_wcs():
    rng = np.random.default_rng(8)
    img, *_ = star_field(rng, n=5)
    img.header["MJD-OBS"] = 60001.5
    moved = with_wcs(img, TGT_WCS)
    assert moved.header["MJD-OBS"] == 60001.5 and moved.header["EXPOSURE"] == "synthetic"
    assert "A_ORDER" not in moved.header  # SIP terms of the old WCS are gone
    assert np.allclose(moved.wcs.wcs.crpix, TGT_WCS.wcs.crpix)
    back = replace_wcs(moved.header, SRC_WCS)
    p = SRC_WCS.pixel_to_world_values(10.0, 20.0)
    assert np.allclose(WCS(back).pixel_to_world_values(10.0, 20.0), p, atol=1e-10)


def test_align_psf_matches_resampled_star():
    """An elongated PSF rotated by 30 deg: the aligned model vs a resampled noiseless star."""
    a11, a12, a22, beta = 0.12, 0.06, 0.05, 3.0  # FWHM 4.6 pix, axis ratio ~3
    psf = PSFModel.constant(a11, a12, a22, beta, SHAPE, subsample=3)
    rot = make_wcs([180.5, 200.5], rot_deg=30.0, sip=False)
    src = make_wcs([180.5, 200.5], sip=False)
    xc, yc = 180.3, 200.6
    sci = np.zeros(SHAPE, np.float32)
    stamp = psf.evaluate(xc, yc, 31)
    sci[201 - 15:201 + 16, 180 - 15:180 + 16] = 1e5 * stamp
    img = Image(sci=sci, weight=np.ones(SHAPE, np.float32), flags=np.zeros(SHAPE, pixflags.DTYPE),
                header=src.to_header())
    out, apsf = align_image(img, rot, SHAPE, psf=psf)
    tx, ty = rot.world_to_pixel_values(*src.pixel_to_world_values(xc, yc))
    model = 1e5 * apsf.evaluate(float(tx), float(ty), 21)
    cx, cy = int(np.rint(tx)), int(np.rint(ty))
    got = out.sci[cy - 10:cy + 11, cx - 10:cx + 11]
    assert abs(got.sum() / model.sum() - 1) < 0.01
    # the resampling blurs the core by ~1% of the peak; the unrotated model
    # (wrong orientation) is off by much more
    wrong = 1e5 * psf.evaluate(float(tx), float(ty), 21)
    print(f"\nmax residual / peak: aligned PSF {np.abs(got - model).max() / model.max():.3f}, "
          f"unrotated PSF {np.abs(got - wrong).max() / model.max():.3f}")
    assert np.abs(got - model).max() < 0.03 * model.max()
    assert np.abs(got - wrong).max() > 2 * np.abs(got - model).max()
    assert abs(apsf.fwhm() - psf.fwhm()) < 1e-6  # a rotation keeps the FWHM


def _measured_acf(img: np.ndarray, var: np.ndarray, lag: int) -> np.ndarray:
    """Sample autocorrelation of ``img / sqrt(var)`` (normalised at lag 0)."""
    z = img / np.sqrt(var)
    h, w = z.shape
    out = np.zeros((2 * lag + 1, 2 * lag + 1))
    for dy in range(-lag, lag + 1):
        for dx in range(-lag, lag + 1):
            a = z[max(0, dy):h + min(0, dy), max(0, dx):w + min(0, dx)]
            b = z[max(0, -dy):h - max(0, dy), max(0, -dx):w - max(0, dx)]
            out[lag + dy, lag + dx] = np.mean(a * b)
    return out / out[lag, lag]


def test_noise_autocorrelation_in_header_matches_resampled_noise():
    """The NACF* header of an aligned image (and of an aligned image aligned again, as a coadd
    reference is) equals the measured autocorrelation of resampled white noise, and the
    correlation factor it gives predicts the variance of a PSF-sized kernel sum."""
    from scipy import signal

    from vo.images.reference.align import NOISE_LAG, read_noise_acf
    from vo.images.subtract.common import correlation_factor

    rng = np.random.default_rng(4)
    ny, nx = SHAPE
    img = Image(sci=rng.normal(0, 10, SHAPE).astype(np.float32), weight=np.full(SHAPE, 0.01, np.float32),
                flags=np.zeros(SHAPE, pixflags.DTYPE), header=SRC_WCS.to_header(relax=True))
    assert read_noise_acf(img.header) is None  # never resampled: white
    once = align_image(img, TGT_WCS, SHAPE)
    # correlated input (a coadd aligned onto a new image): the header's rho is convolved in; a third
    # grid, so the two resamplings' phases are unrelated (an exact round trip would correlate them)
    twice = align_image(once, make_wcs([181.21, 199.43], rot_deg=-0.45, scale=0.5003, sip=False), SHAPE)
    u = np.arange(-7, 8)
    kernel = np.exp(-(u[:, None] ** 2 + u[None, :] ** 2) / (2 * 1.3 ** 2))
    for label, out in (("once", once), ("twice", twice)):
        sl = (slice(30, ny - 30), slice(30, nx - 30))
        assert (out.flags[sl] == 0).all()
        var = 1 / out.weight[sl]
        rho = read_noise_acf(out.header)
        meas = _measured_acf(out.sci[sl], var, NOISE_LAG)
        z = out.sci[sl] / np.sqrt(var)
        c_meas = signal.fftconvolve(z, kernel, mode="valid").var() / (kernel ** 2).sum()
        c_pred = correlation_factor(kernel, rho)
        print(f"\n{label}: rho(0,1) {rho[NOISE_LAG, NOISE_LAG + 1]:.3f} measured {meas[NOISE_LAG, NOISE_LAG + 1]:.3f}; "
              f"max |rho - measured| {np.abs(rho - meas).max():.4f}; kernel-sum variance factor {c_pred:.3f} "
              f"predicted, {c_meas:.3f} measured")
        assert np.abs(rho - meas).max() < 0.03
        assert c_pred == pytest.approx(c_meas, rel=0.08)  # the variance of c_meas itself: ~3%
    assert correlation_factor(kernel, None) == 1.0
    assert correlation_factor(kernel, read_noise_acf(twice.header)) > correlation_factor(kernel, read_noise_acf(once.header))


def test_inpaint_fills_rings_from_the_outside_and_the_deep_part_with_the_median():
    """A large uncovered area (a coadd's margin) is filled ring by ring only where the cubic
    spline's taps reach (INPAINT_RINGS pixels), the rest with the median of the valid pixels;
    the result equals the plain ring-by-ring definition computed over every bad pixel."""
    from vo.images.reference.align import INPAINT_RINGS, _inpaint

    rng = np.random.default_rng(3)
    a = rng.normal(10, 1, (60, 50)).astype(np.float32)
    v = rng.uniform(1, 2, (60, 50)).astype(np.float32)
    bad = np.zeros(a.shape, bool)
    bad[:20] = True            # a deep margin: 20 rows
    bad[40, 10] = bad[41, 11] = True  # isolated bad pixels
    got_a, got_v = _inpaint([a, v], bad)

    def slow(arr):  # the definition: every bad pixel, ring by ring (simultaneous update per pass)
        out, todo = arr.astype(np.float64), bad.copy()
        for _ in range(INPAINT_RINGS):
            new, hit = out.copy(), []
            for y, x in zip(*np.nonzero(todo)):  # neighbours clipped to the image (edge repeated)
                nb = [(min(max(y + dy, 0), 59), min(max(x + dx, 0), 49)) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
                vals = [out[p] for p in nb if not todo[p]]
                if vals:
                    new[y, x] = np.mean(vals)
                    hit.append((y, x))
            out = new
            for y, x in hit:
                todo[y, x] = False
        out[todo] = np.median(arr[::7, ::7][~bad[::7, ::7]])
        return out

    for got, arr in ((got_a, a), (got_v, v)):
        want = slow(arr)
        assert np.allclose(got, want, rtol=1e-5)
        assert np.array_equal(got[~bad], arr[~bad])
    assert np.all(got_a[:20 - INPAINT_RINGS] == np.median(a[::7, ::7][~bad[::7, ::7]]))
