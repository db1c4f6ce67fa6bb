"""Pieces shared by the subtraction methods: the :class:`Difference` result, input preparation
(sky subtraction, variance maps, inpainting of masked pixels) and flag growth.

Units: pixel values in electrons (e-), variances in e-^2, positions and sizes in pixels.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from astropy.io import fits
from scipy import signal

from vo import config as vconfig
from vo.images import flags as pixflags
from vo.images.reference.align import read_noise_acf
from vo.images.extract.background import subtract_background


class SubtractionError(ValueError):
    """Inputs that cannot be subtracted; the message names the images and the problem."""


@dataclass
class Difference:
    """Result of :func:`vo.images.subtract.subtract` (all maps on the NEW image's pixel grid).

    Attributes
    ----------
    diff : float32 (ny, nx), new minus flux-scaled, PSF-matched reference, e- of the new image.
    diff_err : float32, per-pixel 1-sigma noise of ``diff`` (e-).
    score : float32, detection statistic in sigma for a point source at each pixel, from the
        background noise only (ZOGY: ``S / sqrt(V(S))`` with V(S) for pure background).
    score_corr : float32, the score with the source (Poisson) noise of both images and the
        astrometric noise in its variance (ZOGY's S_corr), in sigma.
    flux : float32, PSF flux of a point source centred on each pixel (e- of the new image).
    flux_err : float32, its 1-sigma error (e-), from the same variance as ``score_corr``.
    psf : float32 (k, k), unit-sum PSF of ``diff`` (centred stamp).
    flags : uint16, OR of both images' flags grown by ``flag_grow`` x FWHM, plus EDGE at the border.
    meta : dict, method, fwhm (pix, of ``psf``), fwhm_new, fwhm_ref, flux_ratio (ref/new),
        noise figures and method-specific kernel information (JSON-serialisable).
    header : FITS header with the new image's exposure keys and WCS (or None).
    psf_grid : float32 (n_ty, n_tx, k, k) or None, the unit-sum PSF of ``diff`` per tile when the
        PSFs vary over the image (:mod:`vo.images.subtract.tiles`); ``psf`` is then the central tile's.
    tile_edges : (y edges, x edges) of the tiles' cores (pix), with ``psf_grid``.
    kernel_grid : float32 (n_ty, n_tx, k, k) or None (ZOGY), per tile the kernel that turns a
        point source of the new image into its profile in ``diff``: a transient at (x, y) looks
        like ``kernel * P_new(x, y)`` (unit sum), the exact template for its PSF fit.
    """

    diff: np.ndarray
    diff_err: np.ndarray
    score: np.ndarray
    score_corr: np.ndarray
    flux: np.ndarray
    flux_err: np.ndarray
    psf: np.ndarray
    flags: np.ndarray
    meta: dict = field(default_factory=dict)
    header: fits.Header | None = None
    psf_grid: np.ndarray | None = None
    tile_edges: tuple | None = None
    kernel_grid: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return self.diff.shape


@dataclass
class Prepared:
    """Both images ready to subtract: sky-subtracted, masked pixels inpainted (float32)."""

    new: np.ndarray       # e-, sky subtracted
    ref: np.ndarray       # e- of the reference, sky subtracted
    var_new: np.ndarray   # e-^2 per pixel (inpainted pixels: the sky variance)
    var_ref: np.ndarray
    sigma_new: float      # median background noise (e-)
    sigma_ref: float
    mask: np.ndarray      # bool: flagged, zero-weight or non-finite in either image (not grown)
    flags: np.ndarray     # uint16: OR of both inputs' flags (+ BAD/NAN for unflagged bad pixels)
    rho_new: np.ndarray | None = None  # normalised noise autocorrelation (NACF* header keys), None: white
    rho_ref: np.ndarray | None = None


def parameters(pars: dict | None = None) -> dict:
    """The ``subtraction`` config section completed with the schema's defaults."""
    return {**vconfig.defaults()["subtraction"], **(pars or {})}


def _bad(image, name: str) -> tuple[np.ndarray, np.ndarray]:
    sci = np.asarray(image.sci, np.float32)
    weight = np.asarray(image.weight, np.float32)
    flg = np.asarray(image.flags, pixflags.DTYPE)
    if sci.ndim != 2 or weight.shape != sci.shape or flg.shape != sci.shape:
        raise SubtractionError(f"{name}: sci {sci.shape}, weight {weight.shape} and flags {flg.shape} "
                               "must be 2-D arrays of one shape")
    finite = np.isfinite(sci)
    flg = flg.copy()
    if not finite.all():
        flg[~finite] |= pixflags.NAN
    no_weight = ~(weight > 0)  # NaN weights fail weight > 0
    no_weight &= flg == 0
    flg[no_weight] |= pixflags.BAD
    return flg != 0, flg  # every flagged, NaN or zero-weight pixel is now flagged


INPAINT_CHUNK = 16384  # masked pixels per chunk of the inpainting gather (bounds temporary memory)


def inpaint(img: np.ndarray, mask: np.ndarray, sigma: float) -> np.ndarray:
    """Replace the masked pixels of ``img`` by a Gaussian-weighted mean of the unmasked neighbours.

    Normalised convolution (``G * (img m) / G * m``, ``m`` = good pixels, ``G`` a Gaussian of
    ``sigma`` pix truncated at 3 sigma) evaluated at the masked pixels only (a gather of their
    neighbourhoods: the cost grows with the masked area, not the image size); pixels with almost no
    good neighbour (holes wider than a few sigma) get 0, the sky level of a sky-subtracted image.
    Why not a library inpainting (astropy's interpolate_replace_nans, skimage biharmonic): they
    convolve or solve over the whole CCD, much slower on 2048x4096, and a smooth local mean is all
    that is needed to keep bad values from ringing through the FFTs.
    See :func:`inpaint_many` to inpaint several images with one mask.
    """
    return inpaint_many((img,), mask, sigma)[0]


def inpaint_many(imgs, mask: np.ndarray, sigma: float, overwrite: bool = False) -> list[np.ndarray]:
    """:func:`inpaint` of each 2-D image of ``imgs`` (all of ``mask``'s shape) with one ``mask``:
    the neighbour indices and weights are computed once for all of them.

    Masked pixels with no good pixel in their (2r + 1)^2 window (r = ceil(3 sigma) pix; e.g. the
    no-coverage border of an aligned reference) have a zero weight sum: they are set to 0 without
    the gather, found by growing the good-pixel map with a window OR along each axis.
    ``overwrite``: inpaint the (writeable) arrays of ``imgs`` themselves instead of copies; either
    way the means are computed from the input values (all masked pixels are written at the end).
    """
    outs = [img if overwrite else np.array(img, copy=True) for img in imgs]
    if not mask.any():
        return outs
    r = max(int(np.ceil(3 * sigma)), 1)
    near = _or_window(_or_window(~mask, 2 * r + 1, 0), 2 * r + 1, 1)  # a good pixel within r
    iy, ix = np.nonzero(mask & near)
    k = np.arange(-r, r + 1)
    dy, dx = (a.ravel() for a in np.meshgrid(k, k, indexing="ij"))
    g = np.exp(-(dx ** 2 + dy ** 2) / (2 * sigma ** 2)).astype(np.float32)
    ny, nx = mask.shape
    mflat = mask.ravel()
    flats = [out.ravel() for out in outs]  # views: gathers by flat index, no padded copy
    vals = [np.empty(iy.size, out.dtype) for out in outs]
    # windows inside the image are a fixed flat offset from their centre; the few within r of the
    # border clip their indices (= edge-replicated padding) and give off-image neighbours weight 0
    inner = (iy >= r) & (iy < ny - r) & (ix >= r) & (ix < nx - r)
    for sel, clip in ((np.flatnonzero(inner), False), (np.flatnonzero(~inner), True)):
        for lo in range(0, sel.size, INPAINT_CHUNK):
            s = sel[lo:lo + INPAINT_CHUNK]
            idx, off_image = _window_indices(iy[s], ix[s], dy, dx, (ny, nx), clip)
            off = np.take(mflat, idx)
            if off_image is not None:
                off |= off_image
            w = np.where(off, np.float32(0), g)
            den = w.sum(axis=1)
            ok = den > 0.05 * g.sum()
            den = np.maximum(den, 1e-12)
            for v, flat in zip(vals, flats):
                num = (w * np.take(flat, idx)).sum(axis=1)
                v[s] = np.where(ok, num / den, np.float32(0))
    far = mask & ~near
    for out, v in zip(outs, vals):
        out[iy, ix] = v
        np.copyto(out, 0, where=far)
    return outs


def _window_indices(y: np.ndarray, x: np.ndarray, dy: np.ndarray, dx: np.ndarray, shape: tuple[int, int],
                    clip: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Flat indices (n, len(dy)) of the pixels (y + dy, x + dx) of a C-ordered image of ``shape``,
    and, with ``clip``, indices clipped into the image plus where they were off it (else None: all
    windows must lie inside)."""
    ny, nx = shape
    if not clip:
        return (y * nx + x)[:, None] + (dy * nx + dx), None
    yy, xx = y[:, None] + dy, x[:, None] + dx
    cy, cx = np.clip(yy, 0, ny - 1), np.clip(xx, 0, nx - 1)
    return cy * nx + cx, (cy != yy) | (cx != xx)


def prepare(new, ref, pars: dict, fwhm: float) -> Prepared:
    """Sky-subtract both images, build their variance maps and inpaint every pixel masked in
    EITHER image in both (the same pixels are then missing from both: no one-sided hole).

    ``fwhm`` (pix) sets the inpainting scale. Raises :class:`SubtractionError` for shapes that
    differ or an image with no usable pixel.
    """
    if np.shape(new.sci) != np.shape(ref.sci):
        raise SubtractionError(f"new image {np.shape(new.sci)} and reference {np.shape(ref.sci)} differ "
                               "in shape: align the reference onto the new image's grid first")
    mask_n, flg_n = _bad(new, "new image")
    mask_r, flg_r = _bad(ref, "reference")
    mask = mask_n | mask_r
    good = ~mask
    for key, own in (("new", mask_n), ("ref", mask_r)):
        if np.count_nonzero(own) > 0.95 * own.size:
            raise SubtractionError(f"{key} image: {own.mean():.1%} of the pixels are flagged, NaN or "
                                   "have zero weight")
    if np.count_nonzero(mask) > 0.95 * mask.size:
        raise SubtractionError(f"new image and reference overlap on only {1 - mask.mean():.1%} of the "
                               "pixels (unflagged in both)")
    out = {}
    for key, image in (("new", new), ("ref", ref)):
        sci = np.where(mask, np.float32(0), np.asarray(image.sci, np.float32))  # no NaN reaches sep
        subtract_background(sci, mask, int(pars["back_size"]), int(pars["back_filter_size"]))
        var = np.empty(sci.shape, np.float32)
        np.divide(np.float32(1), np.asarray(image.weight, np.float32), out=var, where=good)
        step = max(1, int(np.sqrt(var.size / 1_000_000)))  # a subsample is enough for the median
        sigma2 = float(np.median(var[::step, ::step][good[::step, ::step]], overwrite_input=True))
        np.copyto(var, sigma2, where=mask)
        out[key] = (sci, var, float(np.sqrt(sigma2)))
    # in place: the sky-subtracted arrays are this function's own
    sci_new, sci_ref = inpaint_many((out["new"][0], out["ref"][0]), mask, max(fwhm / 2.355, 1.0),
                                    overwrite=True)
    return Prepared(new=sci_new, ref=sci_ref, var_new=out["new"][1], var_ref=out["ref"][1],
                    sigma_new=out["new"][2], sigma_ref=out["ref"][2], mask=mask, flags=flg_n | flg_r,
                    rho_new=read_noise_acf(getattr(new, "header", None)),
                    rho_ref=read_noise_acf(getattr(ref, "header", None)))


def correlation_factor(kernel: np.ndarray, rho: np.ndarray | None) -> float:
    """Variance of ``kernel * x`` for noise ``x`` with autocorrelation ``rho`` (see
    :func:`vo.images.reference.align.read_noise_acf`: a resampled image's noise is correlated), divided by its white-noise value ``sum(kernel^2) var``:
    ``sum_d rho(d) A(d) / A(0)`` with ``A`` the kernel's autocorrelation.  1 for white noise
    (``rho`` None)."""
    if rho is None:
        return 1.0
    k = np.asarray(kernel, np.float64)
    a = signal.correlate(k, k, mode="full")
    cy, cx = k.shape[0] - 1, k.shape[1] - 1
    lag = rho.shape[0] // 2
    ly, lx = min(lag, cy), min(lag, cx)
    sub = a[cy - ly: cy + ly + 1, cx - lx: cx + lx + 1]
    r = rho[lag - ly: lag + ly + 1, lag - lx: lag + lx + 1]
    return float(max(np.sum(r * sub) / a[cy, cx], 0.0))


def _or_window(a: np.ndarray, size: int, axis: int) -> np.ndarray:
    """Bitwise OR of ``a`` over a centred window of odd ``size`` along ``axis`` (zeros beyond
    the ends).  All 16 flag bits at once by window doubling, O(log size) passes; written here
    because scipy's maximum filter works on one bit at a time for this purpose.  Every pass is
    one ``|`` of two shifted slices into a new C-ordered array (no strided copies)."""
    r = size // 2
    pad = [(0, 0)] * a.ndim
    pad[axis] = (r, r)
    ap = np.pad(a, pad)

    def cut(lo: int, hi: int | None) -> tuple:  # ap[lo:hi] along ``axis``
        return tuple(slice(lo, hi) if i == axis else slice(None) for i in range(a.ndim))

    pw, length = ap, 1           # pw[i] = OR of ap[i : i + length] (length n - length + 1)
    acc, acc_len = None, 0       # acc[i] = OR of ap[i : i + acc_len]
    s = size
    while s:
        if s & 1:
            acc = pw if acc is None else acc[cut(0, acc.shape[axis] - length)] | pw[cut(acc_len, None)]
            acc_len += length
        s >>= 1
        if s:
            pw = pw[cut(0, pw.shape[axis] - length)] | pw[cut(length, None)]
            length *= 2
    return acc


def grow_flags(flags: np.ndarray, radius: int) -> np.ndarray:
    """OR of ``flags`` over a (2 radius + 1)^2 box around each pixel, and EDGE within ``radius``
    of the border (separable: a window OR along each axis)."""
    if radius <= 0:
        return flags.copy()
    size = 2 * radius + 1
    out = _or_window(_or_window(flags, size, 0), size, 1)
    out[:radius] |= pixflags.EDGE
    out[-radius:] |= pixflags.EDGE
    out[:, :radius] |= pixflags.EDGE
    out[:, -radius:] |= pixflags.EDGE
    return out


def flux_ratio(new_zp: float, ref_zp: float) -> float:
    """Flux of a source in the reference divided by its flux in the new image (e-/e-), from the
    zero points (``m = -2.5 log10(flux) + zp``)."""
    for name, v in (("new_zp", new_zp), ("ref_zp", ref_zp)):
        if v is None or not np.isfinite(v):
            raise SubtractionError(f"{name} is {v!r}: a zero point is needed to scale the fluxes")
    return float(10 ** (0.4 * (ref_zp - new_zp)))


def robust_std(x: np.ndarray) -> float:
    """1.4826 x the median absolute deviation (nan if empty)."""
    x = x[np.isfinite(x)]
    if x.size == 0:
        return float("nan")
    return float(1.4826 * np.median(np.abs(x - np.median(x))))


def noise_stats(d: Difference) -> dict:
    """Robust standard deviations of diff/diff_err, score and score_corr over unflagged pixels."""
    good = d.flags == 0
    if good.sum() > 200_000:  # a regular subsample is enough for a robust std
        step = int(np.ceil(np.sqrt(good.sum() / 200_000)))
        good = good[::step, ::step]
        sl = (slice(None, None, step), slice(None, None, step))
    else:
        sl = (slice(None), slice(None))
    with np.errstate(divide="ignore", invalid="ignore"):
        pull = d.diff[sl][good] / d.diff_err[sl][good]
    return {"std_pull": robust_std(pull), "std_score": robust_std(d.score[sl][good]),
            "std_score_corr": robust_std(d.score_corr[sl][good]),
            "frac_flagged": float(np.mean(d.flags != 0))}
