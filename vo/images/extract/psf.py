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

Spatial variation: the size matrix ``S = A^(-1/2)`` (entries ``s11, s12, s22`` in pix: for a round
profile ``s11 = s22 = alpha``, proportional to the FWHM) and ``beta`` are polynomials of total
degree ``order`` in the image position scaled to [-1, 1], fitted to the stars
(:mod:`vo.images.extract.psf_fit`). Why the size and not ``A``: optics make the FWHM grow about
as the square of the distance from the axis, which a quadratic in ``S`` follows exactly while
``A ~ 1 / FWHM^2`` needs a quartic (order 2 in ``A`` missed a 30% centre-to-corner growth by 1-3% in
FWHM, and PSF fluxes by 1-2.6%).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import numpy as np
from astropy.io import fits
from astropy.table import Table

from vo.io.fits import FitsError, open_fits, write_fits

PARAMS = ("s11", "s12", "s22", "beta")
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


def size_to_shape(s11, s12, s22):
    """Shape matrix ``A = (S S)^-1`` entries (1/pix^2) from the size matrix ``S`` entries (pix)."""
    s11, s12, s22 = (np.asarray(v, float) for v in (s11, s12, s22))
    det2 = (s11 * s22 - s12 * s12) ** 2
    return (s12 * s12 + s22 * s22) / det2, -s12 * (s11 + s22) / det2, (s11 * s11 + s12 * s12) / det2


def shape_to_size(a11, a12, a22):
    """Size matrix ``S = A^(-1/2)`` entries (pix) from the shape matrix ``A`` entries (1/pix^2)
    (the square root of the 2x2 SPD ``C = A^-1``: ``(C + sqrt(det C) I) / sqrt(tr C + 2 sqrt(det C))``)."""
    a11, a12, a22 = (np.asarray(v, float) for v in (a11, a12, a22))
    det = a11 * a22 - a12 * a12
    c11, c12, c22 = a22 / det, -a12 / det, a11 / det
    sd = np.sqrt(c11 * c22 - c12 * c12)
    t = np.sqrt(c11 + c22 + 2 * sd)
    return (c11 + sd) / t, c12 / t, (c22 + sd) / t


def shape_jacobian(s11, s12, s22) -> np.ndarray:
    """d(a11, a12, a22) / d(s11, s12, s22): (3, 3, N) array, rows a, columns s."""
    p, q, r = (np.atleast_1d(np.asarray(v, float)) for v in (s11, s12, s22))
    g = p * r - q * q
    D = g * g
    dD = np.stack([2 * g * r, -4 * g * q, 2 * g * p])          # dD / d(p, q, r)
    n11, n12, n22 = q * q + r * r, -q * (p + r), p * p + q * q
    dn11 = np.stack([np.zeros_like(p), 2 * q, 2 * r])
    dn12 = np.stack([-q, -(p + r), -q])
    dn22 = np.stack([2 * p, 2 * q, np.zeros_like(p)])
    return np.stack([(dn - n * dD / D) / D for n, dn in ((n11, dn11), (n12, dn12), (n22, dn22))])


def n_terms(order: int) -> int:
    """Number of polynomial terms of total degree <= ``order``."""
    return (order + 1) * (order + 2) // 2


@dataclass
class PSFModel:
    """Spatially varying elliptical Moffat PSF.

    Attributes
    ----------
    coeffs : (4, n_terms) array
        Polynomial coefficients of the size matrix ``s11, s12, s22`` (pix) and ``beta`` in the
        scaled position (a constant model: :meth:`constant`).
    order : int
        Total polynomial degree.
    shape : (ny, nx)
        Image shape (pix); positions are scaled as ``u = 2 x / (nx - 1) - 1``, likewise ``v``.
    subsample : int
        Gauss-Legendre points per pixel side used to integrate the profile over a pixel.
    stars : astropy Table or None
        The stars the model was fitted to (x, y, flux, per-star parameters, used flag).
    ok : bool
        False when the model failed its check against the stars' own widths
        (:func:`vo.images.extract.psf_fit.fit_psf`); ``why`` then says how. Steps that need
        an accurate PSF (subtraction) skip such an image with the reason.
    fwhm_ratio : float
        Median over bright stars of the model's FWHM at the star / the star's own (nan: unchecked).
    """

    coeffs: np.ndarray
    order: int
    shape: tuple[int, int]
    subsample: int = 3
    stars: Table | None = field(default=None, repr=False)
    ok: bool = True
    why: str = ""
    fwhm_ratio: float = float("nan")

    def _uv(self, x, y):
        ny, nx = self.shape
        return 2 * np.asarray(x, float) / max(nx - 1, 1) - 1, 2 * np.asarray(y, float) / max(ny - 1, 1) - 1

    @classmethod
    def constant(cls, a11, a12, a22, beta, shape, subsample: int = 3) -> "PSFModel":
        """A model with the same Moffat everywhere: shape matrix entries (1/pix^2) and beta."""
        s11, s12, s22 = (float(v) for v in shape_to_size(a11, a12, a22))
        return cls(coeffs=np.array([[s11], [s12], [s22], [float(beta)]]), order=0,
                   shape=tuple(int(v) for v in shape), subsample=subsample)

    @classmethod
    def round(cls, fwhm: float, beta: float, shape, subsample: int = 3) -> "PSFModel":
        """A constant round Moffat of ``fwhm`` (pix) and ``beta``."""
        a = 4 * (2 ** (1 / beta) - 1) / float(fwhm) ** 2  # 1 / alpha^2
        return cls.constant(a, 0.0, a, beta, shape, subsample)

    def sizes(self, x, y) -> tuple[np.ndarray, ...]:
        """Size matrix entries ``s11, s12, s22`` (pix) and ``beta`` at (x, y) (pix), kept
        positive definite under extrapolation."""
        p = _design(*self._uv(x, y), self.order) @ self.coeffs.T
        s11, s12, s22, beta = p.T
        s11, s22 = np.maximum(s11, 0.2), np.maximum(s22, 0.2)
        lim = 0.95 * np.sqrt(s11 * s22)
        return s11, np.clip(s12, -lim, lim), s22, np.clip(beta, *BETA_RANGE)

    def params(self, x, y) -> tuple[np.ndarray, ...]:
        """Shape parameters ``a11, a12, a22`` (1/pix^2) and ``beta`` at positions (x, y) (pix)."""
        s11, s12, s22, beta = self.sizes(x, y)
        return (*size_to_shape(s11, s12, s22), beta)

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

    def encircled(self, radius: float, x=None, y=None) -> float:
        """Fraction of a point source's total flux within ``radius`` (pix) of its centre, at
        (x, y) (the image centre by default): the aperture correction of a circular aperture."""
        import sep

        if x is None:
            x, y = (self.shape[1] - 1) / 2, (self.shape[0] - 1) / 2
        half = int(np.ceil(radius)) + 2
        stamp = np.ascontiguousarray(self.render([float(np.rint(x))], [float(np.rint(y))], half)[2][0],
                                     np.float32)
        f, _, _ = sep.sum_circle(stamp, np.array([float(half)]), np.array([float(half)]), float(radius),
                                 subpix=5)
        return float(f[0])

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


# --------------------------------------------------------------------------- files


def write_psf(path: str | os.PathLike, psf: PSFModel, attrs: dict | None = None) -> None:
    """Write the PSF model to FITS (atomic, provenance in the primary header).

    HDUs: PRIMARY (PSF_TYPE, POLYDEG, NX, NY, SUBSAMP, FWHM (pix) at the centre), PSF_COEF
    (float64, (4, n_terms), rows s11, s12, s22 (pix), beta), PSF_STAMP (the PSF at the image centre,
    for viewing), and PSF_STARS (the fitted stars) when known.
    """
    primary = fits.PrimaryHDU()
    h = primary.header
    h["PSF_TYPE"] = ("MOFFAT", "elliptical Moffat, polynomial spatial variation")
    h["POLYDEG"] = (psf.order, "total degree of the spatial polynomial")
    h["NX"], h["NY"] = (psf.shape[1], "image width (pix)"), (psf.shape[0], "image height (pix)")
    h["SUBSAMP"] = (psf.subsample, "Gauss-Legendre points per pixel side")
    h["FWHM"] = (psf.fwhm(), "PSF FWHM at the image centre (pix)")
    h["PSF_OK"] = (bool(psf.ok), "model agrees with the bright stars' own FWHM")
    if np.isfinite(psf.fwhm_ratio):
        h["PSF_FWQA"] = (float(psf.fwhm_ratio), "median model/star FWHM at bright stars")
    if psf.why:
        h["PSF_WHY"] = psf.why  # long strings become CONTINUE cards
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
            rows = json.loads(hdul["PSF_COEF"].header.get("PARAMS", "[]"))
            if tuple(rows) != PARAMS:
                raise FitsError(f"{path}: PSF_COEF rows are {rows}, this version reads {list(PARAMS)} "
                                f"(a file of an older version: run the extraction step again)")
            if coeffs.shape != (len(PARAMS), n_terms(order)):
                raise FitsError(f"{path}: PSF_COEF has shape {coeffs.shape}, expected "
                                f"{(len(PARAMS), n_terms(order))} for POLYDEG={order}")
            stars = Table(hdul["PSF_STARS"].data) if "PSF_STARS" in hdul else None
            return PSFModel(coeffs=coeffs, order=order, shape=(int(h["NY"]), int(h["NX"])),
                            subsample=int(h["SUBSAMP"]), stars=stars, ok=bool(h.get("PSF_OK", True)),
                            why=str(h.get("PSF_WHY", "")), fwhm_ratio=float(h.get("PSF_FWQA", np.nan)))
        except KeyError as exc:
            raise FitsError(f"{path}: missing PSF header keyword {exc}") from exc
