"""Point-spread function: an elliptical Moffat profile whose shape varies over the image.

Why an analytic model (and not a pixelated one): survey CCDs in good seeing are close to
undersampled (FWHM 2-3 pix), where shifting a pixel-grid PSF to a star's sub-pixel position
(Fourier or bicubic) aliases and biases fluxes at the percent level; and a pixel grid stops at its
edge, losing the few per cent of the light in the Moffat wings. The analytic profile is integrated
over each pixel (``subsample`` x ``subsample`` Gauss-Legendre points), is exactly normalised to unit total
flux (so PSF fluxes are total fluxes), and has analytic derivatives, so every star is fitted at
once with a batched Levenberg-Marquardt in numpy. Shape differences from a real PSF scale every
star's flux by the same factor, which the zero point's aperture correction absorbs.

Profile (``d`` = pixel position minus source position, pix; ``A`` = symmetric 2x2 matrix with
entries ``a11, a12, a22`` in 1/pix^2)::

    P(d) = (beta - 1) / pi * sqrt(det A) * (1 + d^T A d) ** -beta

Spatial variation: each of ``a11, a12, a22, beta`` is a polynomial of total degree ``order`` in the
image position scaled to [-1, 1], fitted (with sigma clipping) to the parameters of single-star
fits of bright isolated unsaturated stars.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import numpy as np
from astropy.io import fits
from astropy.table import Table

from vo.io.fits import FitsError, open_fits, write_fits

PARAMS = ("a11", "a12", "a22", "beta")
BETA_RANGE = (1.2, 25.0)  # Moffat beta kept in this range while fitting (beta -> inf is Gaussian)
CHUNK = 1024  # sources per chunk when rendering stamps (bounds the temporary memory)


class PSFError(ValueError):
    """No PSF can be built (too few usable stars); the message names the image."""


# --------------------------------------------------------------------------- profile


def quadrature(subsample: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Legendre nodes (offsets from the pixel centre, pix) and weights (sum 1) over a pixel.

    Why Gauss-Legendre (and not the mean of ``subsample`` evenly spaced points): at FWHM 1.8 pix
    2x2 points integrate a Moffat beta = 3 over the pixels 4x more accurately than 3x3 evenly
    spaced ones (0.2% vs 0.7% of the flux misplaced), and 3x3 points to 5e-5.
    """
    x, w = np.polynomial.legendre.leggauss(int(subsample))
    return (x / 2).astype(np.float32), (w / 2).astype(np.float32)


def moffat_pixels(dx, dy, a11, a12, a22, beta, subsample: int = 3, derivs: bool = False):
    """Pixel-integrated unit-flux Moffat on stamps.

    Parameters
    ----------
    dx, dy : (N, S, S) arrays
        Pixel-centre position minus source position (pix).
    a11, a12, a22, beta : (N,) arrays
        Shape matrix entries (1/pix^2) and Moffat index.
    subsample : int
        Gauss-Legendre points per pixel side (``subsample**2`` points per pixel).
    derivs : bool or "xy"
        Also return the derivatives with respect to (x0, y0, a11, a12, a22, beta); with "xy"
        only those with respect to the position (x0, y0) (what PSF photometry needs).

    Returns
    -------
    m : (N, S, S) float32 array (fraction of the source flux in each pixel)
    dm : (6, N, S, S) (or (2, N, S, S) with "xy") float32 array, only with ``derivs``
    """
    o, w = quadrature(subsample)
    W = w[:, None] * w[None, :]                                   # (s, s) weights, sum 1
    shape4 = (-1, 1, 1, 1, 1)
    a11, a12, a22, beta = (np.asarray(v, np.float32).reshape(shape4) for v in (a11, a12, a22, beta))
    X = np.asarray(dx, np.float32)[..., None, None] + o[:, None]   # (N, S, S, s, 1)
    Y = np.asarray(dy, np.float32)[..., None, None] + o[None, :]   # (N, S, S, 1, s)
    q = a11 * X * X + 2 * a12 * X * Y + a22 * Y * Y
    det = a11 * a22 - a12 * a12
    norm = (beta - 1) / np.pi * np.sqrt(det)
    lt = np.log1p(q)
    m = (norm * W) * np.exp(-beta * lt)  # profile times the quadrature weight of each point
    out = m.sum(axis=(-2, -1))
    if not derivs:
        return out
    mt = (2 * beta) * m / (1 + q)
    d = np.empty((2 if derivs == "xy" else 6,) + out.shape, np.float32)
    d[0] = (mt * (a11 * X + a12 * Y)).sum(axis=(-2, -1))
    d[1] = (mt * (a12 * X + a22 * Y)).sum(axis=(-2, -1))
    if derivs == "xy":
        return out, d
    mt *= 0.5
    d[2] = (m * (0.5 * a22 / det) - mt * X * X).sum(axis=(-2, -1))
    d[3] = (-m * (a12 / det) - 2 * mt * X * Y).sum(axis=(-2, -1))
    d[4] = (m * (0.5 * a11 / det) - mt * Y * Y).sum(axis=(-2, -1))
    d[5] = (m * (1 / (beta - 1) - lt)).sum(axis=(-2, -1))
    return out, d


def moffat_fwhm(a11, a12, a22, beta):
    """FWHM (pix) of the Moffat profile: geometric mean of the major and minor axes at half max."""
    det = np.asarray(a11) * a22 - np.asarray(a12) ** 2
    return 2 * np.sqrt((2 ** (1 / np.asarray(beta)) - 1) / np.sqrt(det))


def stamp_grid(x, y, half: int):
    """Integer pixel grids of stamps centred on the pixels nearest (x, y).

    Returns ``ix, iy`` (N, S, S) int arrays (image column, row; may lie outside the image) and
    ``dx, dy`` (N, S, S) float32 offsets of the pixel centres from (x, y) (pix), S = 2*half+1.
    """
    x = np.atleast_1d(np.asarray(x, np.float64))
    y = np.atleast_1d(np.asarray(y, np.float64))
    k = np.arange(-half, half + 1)
    cx, cy = np.rint(x).astype(np.int64), np.rint(y).astype(np.int64)
    ix = np.broadcast_to(cx[:, None, None] + k[None, None, :], (x.size, k.size, k.size))
    iy = np.broadcast_to(cy[:, None, None] + k[None, :, None], (x.size, k.size, k.size))
    dx = (ix - x[:, None, None]).astype(np.float32)
    dy = (iy - y[:, None, None]).astype(np.float32)
    return ix, iy, dx, dy


def cut_stamps(arrays, ix, iy, fill=0):
    """Stamps of each 2-D array in ``arrays`` at pixels (iy, ix); pixels off the image get ``fill``.

    Returns the list of (N, S, S) stamps and the boolean (N, S, S) "inside the image" mask.
    """
    ny, nx = arrays[0].shape
    inside = (ix >= 0) & (ix < nx) & (iy >= 0) & (iy < ny)
    jx, jy = np.clip(ix, 0, nx - 1), np.clip(iy, 0, ny - 1)
    stamps = []
    for a in arrays:
        s = a[jy, jx]
        stamps.append(np.where(inside, s, np.asarray(fill, s.dtype)))
    return stamps, inside


# --------------------------------------------------------------------------- model


def _design(u, v, order: int) -> np.ndarray:
    """Polynomial terms u**i * v**j with i + j <= order, shape (N, n_terms)."""
    u, v = np.atleast_1d(u).astype(np.float64), np.atleast_1d(v).astype(np.float64)
    return np.stack([u ** i * v ** (t - i) for t in range(order + 1) for i in range(t, -1, -1)], axis=1)


def n_terms(order: int) -> int:
    """Number of polynomial terms of total degree <= ``order``."""
    return (order + 1) * (order + 2) // 2


@dataclass
class PSFModel:
    """Spatially varying elliptical Moffat PSF.

    Attributes
    ----------
    coeffs : (4, n_terms) array
        Polynomial coefficients of ``a11, a12, a22`` (1/pix^2) and ``beta`` in the scaled position.
    order : int
        Total polynomial degree.
    shape : (ny, nx)
        Image shape (pix); positions are scaled as ``u = 2 x / (nx - 1) - 1``, likewise ``v``.
    subsample : int
        Gauss-Legendre points per pixel side used to integrate the profile over a pixel.
    stars : astropy Table or None
        The stars the model was fitted to (x, y, flux, per-star parameters, used flag).
    """

    coeffs: np.ndarray
    order: int
    shape: tuple[int, int]
    subsample: int = 3
    stars: Table | None = field(default=None, repr=False)

    def _uv(self, x, y):
        ny, nx = self.shape
        return 2 * np.asarray(x, float) / max(nx - 1, 1) - 1, 2 * np.asarray(y, float) / max(ny - 1, 1) - 1

    def params(self, x, y) -> tuple[np.ndarray, ...]:
        """Shape parameters ``a11, a12, a22`` (1/pix^2) and ``beta`` at positions (x, y) (pix)."""
        p = _design(*self._uv(x, y), self.order) @ self.coeffs.T
        a11, a12, a22, beta = p.T
        a11, a22 = np.maximum(a11, 1e-3), np.maximum(a22, 1e-3)
        lim = 0.95 * np.sqrt(a11 * a22)  # keep A positive definite under extrapolation
        return a11, np.clip(a12, -lim, lim), a22, np.clip(beta, *BETA_RANGE)

    def fwhm(self, x=None, y=None) -> np.ndarray | float:
        """FWHM (pix) at (x, y); at the image centre by default."""
        if x is None:
            x, y = (self.shape[1] - 1) / 2, (self.shape[0] - 1) / 2
            return float(moffat_fwhm(*self.params([x], [y]))[0])
        return moffat_fwhm(*self.params(x, y))

    def render(self, x, y, half: int, derivs: bool = False, subsample: int | None = None):
        """Pixel-integrated PSF stamps around the pixels nearest (x, y) (see :func:`stamp_grid`).

        Returns ``(ix, iy, stamps)`` or, with ``derivs``, ``(ix, iy, stamps, d/dx0, d/dy0)``;
        stamps are (N, 2*half+1, 2*half+1) float32, normalised to unit total flux.
        ``subsample`` overrides the model's Gauss-Legendre points per pixel side.
        """
        x, y = np.atleast_1d(x).astype(float), np.atleast_1d(y).astype(float)
        ix, iy, dx, dy = stamp_grid(x, y, half)
        pars = self.params(x, y)
        S = 2 * half + 1
        m = np.empty((x.size, S, S), np.float32)
        if derivs:
            gx, gy = np.empty_like(m), np.empty_like(m)
        for lo in range(0, x.size, CHUNK):
            sl = slice(lo, lo + CHUNK)
            res = moffat_pixels(dx[sl], dy[sl], *(p[sl] for p in pars), subsample or self.subsample,
                                "xy" if derivs else False)
            if derivs:
                m[sl], gx[sl], gy[sl] = res[0], res[1][0], res[1][1]
            else:
                m[sl] = res
        return (ix, iy, m, gx, gy) if derivs else (ix, iy, m)

    def evaluate(self, x, y, size: int) -> np.ndarray:
        """Normalised PSF at image position (x, y) (0-based pix) on a ``size`` x ``size`` stamp.

        The stamp's central pixel is the image pixel nearest (x, y) and the profile is centred on
        the exact sub-pixel position; ``size`` must be odd. Values are the fraction of the total
        flux falling in each pixel (the stamp sums to slightly less than 1: the wings outside).
        Scalar x, y give a (size, size) array; arrays give (N, size, size).
        """
        if size < 1 or size % 2 == 0:
            raise ValueError(f"PSF stamp size must be odd and positive, got {size}")
        scalar = np.ndim(x) == 0
        stamps = self.render(x, y, size // 2)[2]
        return stamps[0] if scalar else stamps


# --------------------------------------------------------------------------- fitting


def fit_stars(sub, weight, rms, x, y, fwhm0: float, half: int, subsample: int = 3,
              n_iter: int = 40) -> Table:
    """Fit a free elliptical Moffat plus a constant local sky to each star (batched
    Levenberg-Marquardt).

    The local sky absorbs the error of the background map under the star: a map estimated
    with the stars' faint wings in its meshes (sep, SExtractor) sits a few e- above the true
    sky, which, left in, cuts the wings of every PSF star and biases beta high (3.16 for 3.0
    at FWHM 3.5 pix) and so the PSF fluxes low by 1%.

    Parameters
    ----------
    sub : 2-D float32 array
        Background-subtracted image (e-).
    weight : 2-D float32 array
        Inverse variance (1/e-^2), 0 where flagged: only where it is > 0 do pixels enter.
    rms : 2-D float32 array
        Background RMS (e-). The fit weights are ``1 / (rms**2 + model)`` (gain 1: e-), from the
        current model, not the data: weights computed from the noisy data bias the profile.
    x, y : arrays
        Starting positions (0-based pix).
    fwhm0 : float
        Starting FWHM (pix).
    half : int
        Half-size of the fitting stamps (pix).

    Returns
    -------
    Table with x, y, flux (e-), a11, a12, a22, beta, fwhm, sky (e-/pix, local level above
    ``sub``), chi2 (reduced), ok.
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    n = x.size
    ix, iy, _, _ = stamp_grid(x, y, half)
    (d, w, s), _ = cut_stamps([sub, weight, rms], ix, iy)
    d = d.astype(np.float32)
    inside = (w > 0).astype(np.float32)
    s2 = np.where(w > 0, s.astype(np.float32) ** 2, 1)
    beta0 = 3.0
    alpha0 = fwhm0 / (2 * np.sqrt(2 ** (1 / beta0) - 1))
    npar = 8  # flux, x0, y0, a11, a12, a22, beta, sky
    p = np.zeros((n, npar))
    p[:, 1], p[:, 2] = x, y
    p[:, 3], p[:, 5], p[:, 6] = 1 / alpha0 ** 2, 1 / alpha0 ** 2, beta0
    p[:, 0] = np.maximum((d * inside).sum(axis=(1, 2)), 1.0)
    ixf, iyf = ix.astype(np.float32), iy.astype(np.float32)

    def model(k, q, derivs):
        dx = ixf[k] - q[:, 1, None, None].astype(np.float32)
        dy = iyf[k] - q[:, 2, None, None].astype(np.float32)
        return moffat_pixels(dx, dy, q[:, 3], q[:, 4], q[:, 5], q[:, 6], subsample, derivs)

    def valid(k, q):
        return ((q[:, 3] > 0) & (q[:, 5] > 0) & (q[:, 3] * q[:, 5] - q[:, 4] ** 2 > 0)
                & (q[:, 6] > BETA_RANGE[0]) & (q[:, 6] < BETA_RANGE[1]) & (q[:, 0] > 0)
                & (np.abs(q[:, 1] - x[k]) < half / 2) & (np.abs(q[:, 2] - y[k]) < half / 2))

    lam = np.full(n, 1e-3)
    c = np.full(n, np.inf)
    act = np.arange(n)  # stars still iterating: only these are evaluated
    for _ in range(n_iter):
        if act.size == 0:
            break
        q = p[act]
        m, dm = model(act, q, True)
        fm = q[:, 0, None, None].astype(np.float32) * m
        u = inside[act] / (s2[act] + np.maximum(fm, 0))
        r = d[act] - fm - q[:, 7, None, None].astype(np.float32)
        c_cur = (u * r * r).sum(axis=(1, 2), dtype=np.float64)
        c[act] = c_cur
        J = np.empty((npar,) + m.shape, np.float32)
        J[0] = m
        J[1:7] = q[:, 0, None, None].astype(np.float32) * dm
        J[7] = 1
        J = J.reshape(npar, act.size, -1)
        uf, rf = u.reshape(act.size, -1), r.reshape(act.size, -1)
        H = np.einsum("inp,np,jnp->nij", J, uf, J, dtype=np.float64)
        g = np.einsum("inp,np,np->ni", J, uf, rf, dtype=np.float64)
        diag = np.einsum("nii->ni", H) + 1e-30
        H = H + (lam[act, None] * diag)[:, :, None] * np.eye(npar)
        bad_h = ~np.all(np.isfinite(H), axis=(1, 2)) | (np.linalg.det(H) <= 0)
        H[bad_h] = np.eye(npar)
        g[bad_h] = 0
        trial = q + np.linalg.solve(H, g[..., None])[..., 0]
        ok = valid(act, trial) & ~bad_h
        c_new = np.full(act.size, np.inf)
        if ok.any():
            rt = (d[act[ok]] - trial[ok, 0, None, None].astype(np.float32) * model(act[ok], trial[ok], False)
                  - trial[ok, 7, None, None].astype(np.float32))
            c_new[ok] = (u[ok] * rt * rt).sum(axis=(1, 2), dtype=np.float64)
        better = c_new < c_cur
        converged = better & ((c_cur - c_new) < 1e-5 * c_cur + 1e-2)
        p[act[better]] = trial[better]
        c[act[better]] = c_new[better]
        lam[act] = np.where(better, lam[act] / 3, lam[act] * 5)
        act = act[~converged & (lam[act] < 1e6) & ~bad_h]
    ok_all = valid(np.arange(n), p) & np.isfinite(c)
    dof = np.maximum(inside.sum(axis=(1, 2)) - npar, 1)
    t = Table()
    t["x"], t["y"], t["flux"] = p[:, 1], p[:, 2], p[:, 0]
    for k, name in enumerate(PARAMS):
        t[name] = p[:, 3 + k]
    t["fwhm"] = moffat_fwhm(p[:, 3], p[:, 4], p[:, 5], p[:, 6])
    t["sky"] = p[:, 7]
    t["chi2"] = c / dof
    t["ok"] = ok_all
    return t


def fit_psf_model(stars: Table, shape, order: int, subsample: int = 3, clip: float = 3.0,
                  n_clip: int = 5, name: str = "image") -> PSFModel:
    """Fit the polynomial spatial variation to single-star fits (sigma-clipped least squares).

    The order is lowered when there are too few stars (fewer than 3 per polynomial term).
    Stars whose parameters or reduced chi2 are outliers (galaxies, blends, cosmic rays) are dropped.
    Raises :class:`PSFError` naming ``name`` when no star is usable.
    """
    stars = stars.copy()
    use = np.asarray(stars["ok"], bool).copy()
    if use.sum() < 1:
        raise PSFError(f"{name}: no usable PSF star (of {len(stars)} candidates)")
    while order > 0 and use.sum() < 3 * n_terms(order):
        order -= 1
    ny, nx = shape
    u = 2 * np.asarray(stars["x"], float) / max(nx - 1, 1) - 1
    v = 2 * np.asarray(stars["y"], float) / max(ny - 1, 1) - 1
    D = _design(u, v, order)
    P = np.stack([np.asarray(stars[k], float) for k in PARAMS], axis=1)
    logchi = np.log(np.maximum(np.asarray(stars["chi2"], float), 1e-6))
    for _ in range(n_clip):
        coef, *_ = np.linalg.lstsq(D[use], P[use], rcond=None)
        res = P - D @ coef
        scale = 1.4826 * np.median(np.abs(res[use] - np.median(res[use], axis=0)), axis=0) + 1e-12
        chi_med = np.median(logchi[use])
        chi_mad = 1.4826 * np.median(np.abs(logchi[use] - chi_med)) + 0.05
        new = (np.asarray(stars["ok"], bool) & np.all(np.abs(res) < clip * scale, axis=1)
               & (logchi - chi_med < clip * chi_mad))
        if new.sum() < max(3, n_terms(order)) or np.array_equal(new, use):
            break
        use = new
    coef, *_ = np.linalg.lstsq(D[use], P[use], rcond=None)
    stars["used"] = use
    return PSFModel(coeffs=coef.T.copy(), order=order, shape=(int(ny), int(nx)),
                    subsample=int(subsample), stars=stars)


# --------------------------------------------------------------------------- files


def write_psf(path: str | os.PathLike, psf: PSFModel, attrs: dict | None = None) -> None:
    """Write the PSF model to FITS (atomic, provenance in the primary header).

    HDUs: PRIMARY (PSF_TYPE, POLYDEG, NX, NY, SUBSAMP, FWHM (pix) at the centre), PSF_COEF
    (float64, (4, n_terms), rows a11, a12, a22, beta), PSF_STAMP (the PSF at the image centre,
    for viewing), and PSF_STARS (the fitted stars) when known.
    """
    primary = fits.PrimaryHDU()
    h = primary.header
    h["PSF_TYPE"] = ("MOFFAT", "elliptical Moffat, polynomial spatial variation")
    h["POLYDEG"] = (psf.order, "total degree of the spatial polynomial")
    h["NX"], h["NY"] = (psf.shape[1], "image width (pix)"), (psf.shape[0], "image height (pix)")
    h["SUBSAMP"] = (psf.subsample, "Gauss-Legendre points per pixel side")
    h["FWHM"] = (psf.fwhm(), "PSF FWHM at the image centre (pix)")
    coef = fits.ImageHDU(np.asarray(psf.coeffs, np.float64), name="PSF_COEF")
    coef.header["PARAMS"] = (json.dumps(PARAMS), "rows of the coefficient array")
    half = int(np.ceil(3 * psf.fwhm()))
    stamp = fits.ImageHDU(psf.evaluate((psf.shape[1] - 1) / 2, (psf.shape[0] - 1) / 2, 2 * half + 1)
                          .astype(np.float32), name="PSF_STAMP")
    hdus = [primary, coef, stamp]
    if psf.stars is not None:
        hdus.append(fits.BinTableHDU(psf.stars, name="PSF_STARS"))
    write_fits(path, fits.HDUList(hdus), attrs)


def read_psf(path: str | os.PathLike) -> PSFModel:
    """Read a PSF model written by :func:`write_psf` (clear :class:`FitsError` on bad files)."""
    with open_fits(path, required=("PSF_COEF",)) as hdul:
        h = hdul[0].header
        try:
            if h.get("PSF_TYPE") != "MOFFAT":
                raise FitsError(f"{path}: unknown PSF_TYPE {h.get('PSF_TYPE')!r}")
            coeffs = np.array(hdul["PSF_COEF"].data, np.float64)
            order = int(h["POLYDEG"])
            if coeffs.shape != (len(PARAMS), n_terms(order)):
                raise FitsError(f"{path}: PSF_COEF has shape {coeffs.shape}, expected "
                                f"{(len(PARAMS), n_terms(order))} for POLYDEG={order}")
            stars = Table(hdul["PSF_STARS"].data) if "PSF_STARS" in hdul else None
            return PSFModel(coeffs=coeffs, order=order, shape=(int(h["NY"]), int(h["NX"])),
                            subsample=int(h["SUBSAMP"]), stars=stars)
        except KeyError as exc:
            raise FitsError(f"{path}: missing PSF header keyword {exc}") from exc
