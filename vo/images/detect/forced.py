"""Forced PSF photometry at known sky positions on a difference image.

At fixed positions (no centroiding) the flux is the linear least-squares amplitude of the
PSF stamp P (unit sum) against the data D with inverse variances w (0 on flagged pixels):

    flux = sum(w P D) / sum(w P^2),   flux_err = 1 / sqrt(sum(w P^2))

which is unbiased for any PSF-shaped source and, for uncorrelated noise, has exactly the
quoted error (ZOGY's difference image has white noise by construction).  The PSF is either
a :class:`vo.images.extract.psf.PSFModel` (rendered at the exact sub-pixel position) or a centred
stamp array such as a difference image's PSF, shifted to the position with a Fourier phase
ramp (exact for a band-limited PSF; a spline shift would smooth it).
"""

from __future__ import annotations

import numpy as np
from astropy.table import Table

from vo.images import flags as pixflags
from vo.images.extract.psf import cut_stamps, stamp_grid

#: Fraction of the PSF's sum(P^2) that must fall on good pixels for a usable measurement.
MIN_COVERAGE = 0.5


def shifted_stamps(psf: np.ndarray, dx, dy) -> np.ndarray:
    """Copies of a centred odd-sized PSF stamp shifted by (dx, dy) pixels (N, S, S).

    The shift is a Fourier phase ramp, renormalised to the input's sum.
    """
    psf = np.asarray(psf, float)
    if psf.ndim != 2 or psf.shape[0] != psf.shape[1] or psf.shape[0] % 2 == 0:
        raise ValueError(f"PSF stamp must be square with an odd side, got shape {psf.shape}")
    size = psf.shape[0]
    ky = np.fft.fftfreq(size)[None, :, None]
    kx = np.fft.rfftfreq(size)[None, None, :]
    dx = np.atleast_1d(np.asarray(dx, float))[:, None, None]
    dy = np.atleast_1d(np.asarray(dy, float))[:, None, None]
    ramp = np.exp(-2j * np.pi * (kx * dx + ky * dy))
    out = np.fft.irfft2(np.fft.rfft2(psf)[None] * ramp, s=(size, size), axes=(1, 2))
    return out * (psf.sum() / out.sum(axis=(1, 2), keepdims=True))


def psf_stamps(psf, x, y, size: int) -> np.ndarray:
    """PSF stamps (N, size, size) centred on the pixels nearest (x, y), the profile at (x, y)."""
    if hasattr(psf, "evaluate"):
        return np.asarray(psf.evaluate(np.asarray(x, float), np.asarray(y, float), size), float)
    psf = np.asarray(psf, float)
    if psf.shape[0] != size:  # crop or zero-pad the stamp to ``size``
        pad = (size - psf.shape[0]) // 2
        psf = np.pad(psf, pad) if pad > 0 else psf[-pad:size - pad, -pad:size - pad]
    dx = np.asarray(x, float) - np.rint(x)
    dy = np.asarray(y, float) - np.rint(y)
    return shifted_stamps(psf, dx, dy)


def forced_photometry(diff: np.ndarray, diff_err: np.ndarray, psf, x, y, zp: float | None = None,
                      flags: np.ndarray | None = None, size: int = 15, limit_nsigma: float = 5.0,
                      detect_snr: float = 3.0) -> Table:
    """PSF flux at fixed pixel positions of a difference image.

    Parameters
    ----------
    diff : 2-D array
        Difference image (e- of the new image).
    diff_err : 2-D array
        Per-pixel 1-sigma error of ``diff`` (e-); pixels with non-finite or non-positive
        errors are excluded.
    psf : PSFModel or 2-D array
        The PSF of ``diff``: a model, or a centred odd-sized stamp.
    x, y : arrays
        Positions (0-based pixels).
    zp : float, optional
        Zero point (m = -2.5 log10(flux) + zp); without it the magnitudes are NaN.
    flags : 2-D uint16 array, optional
        Pixel flags: flagged pixels are excluded and their bits ORed into ``flags``.
    size : int
        Side of the fitting stamp (odd, pixels; about 4 FWHM).
    limit_nsigma : float
        The limiting magnitude is that of ``limit_nsigma`` times the flux error.
    detect_snr : float
        ``mag``/``mag_err`` are given where ``snr >= detect_snr``, else NaN.

    Returns
    -------
    Table with x, y, flux, flux_err (e-), snr, mag, mag_err, limmag (AB mag), flags (uint16:
    bits of flagged pixels under the PSF core, EDGE if the stamp leaves the image), coverage
    (fraction of sum(P^2) on good pixels) and ok (coverage >= :data:`MIN_COVERAGE`).
    """
    diff = np.asarray(diff)
    diff_err = np.asarray(diff_err)
    if diff.ndim != 2 or diff_err.shape != diff.shape:
        raise ValueError(f"difference {diff.shape} and error {diff_err.shape} must be equal 2-D shapes")
    if size < 3 or size % 2 == 0:
        raise ValueError(f"forced photometry stamp size must be odd and >= 3, got {size}")
    x = np.atleast_1d(np.asarray(x, float))
    y = np.atleast_1d(np.asarray(y, float))
    if x.shape != y.shape or not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("forced photometry positions must be finite arrays of equal shape")
    flags = np.zeros(diff.shape, pixflags.DTYPE) if flags is None else np.asarray(flags)
    if x.size == 0:
        return _table(x, y, *(np.zeros(0),) * 3, np.zeros(0, pixflags.DTYPE), zp, limit_nsigma, detect_snr)
    ix, iy, _, _ = stamp_grid(x, y, size // 2)
    (d, e, f), inside = cut_stamps([diff, diff_err, flags], ix, iy)
    good = inside & (f == 0) & np.isfinite(d) & np.isfinite(e) & (e > 0)
    w = np.where(good, 1.0 / np.where(good, e.astype(float), 1.0) ** 2, 0.0)
    d = np.where(good, d, 0.0).astype(float)
    p = psf_stamps(psf, x, y, size)
    spp = (w * p * p).sum(axis=(1, 2))
    # coverage: sum(w P^2) relative to all pixels good at the stamp's typical error
    w_typ = np.nanmedian(np.where(good, w, np.nan).reshape(x.size, -1), axis=1) if good.any() else 0
    with np.errstate(divide="ignore", invalid="ignore"):
        flux = (w * p * d).sum(axis=(1, 2)) / spp
        err = 1.0 / np.sqrt(spp)
        coverage = np.nan_to_num(spp / (w_typ * (p * p).sum(axis=(1, 2))))
    core = p >= 0.1 * p.max(axis=(1, 2), keepdims=True)
    fl = np.bitwise_or.reduce(np.where(core & inside, f, 0).astype(pixflags.DTYPE).reshape(x.size, -1), axis=1)
    fl |= np.where(inside.all(axis=(1, 2)), 0, pixflags.EDGE).astype(pixflags.DTYPE)
    return _table(x, y, flux, err, coverage, fl, zp, limit_nsigma, detect_snr)


def _table(x, y, flux, err, coverage, fl, zp, limit_nsigma, detect_snr) -> Table:
    ok = np.isfinite(flux) & np.isfinite(err) & (coverage >= MIN_COVERAGE)
    flux, err = np.where(ok, flux, np.nan), np.where(ok, err, np.nan)
    snr = flux / err
    zp = np.nan if zp is None else float(zp)
    with np.errstate(divide="ignore", invalid="ignore"):
        det = ok & (snr >= detect_snr)
        mag = np.where(det, -2.5 * np.log10(np.where(det, flux, 1.0)) + zp, np.nan)
        mag_err = np.where(det, 2.5 / np.log(10) / snr, np.nan)
        limmag = -2.5 * np.log10(limit_nsigma * err) + zp
    return Table({"x": x, "y": y, "flux": flux, "flux_err": err, "snr": snr, "mag": mag,
                  "mag_err": mag_err, "limmag": limmag, "flags": fl.astype(pixflags.DTYPE),
                  "coverage": coverage, "ok": ok})


def forced_photometry_sky(diff, wcs, ra, dec, zp: float | None = None, size: int = 15,
                          limit_nsigma: float = 5.0, detect_snr: float = 3.0) -> Table:
    """Forced photometry at sky positions on a difference product.

    ``diff`` has attributes ``diff``, ``diff_err``, ``psf`` (stamp) and ``flags`` (a
    :class:`vo.images.subtract.Difference`); ``wcs`` is the new image's WCS; ``ra``, ``dec``
    in degrees.  Positions off the image get ok = False and NaN fluxes.  Adds ``ra``,
    ``dec`` columns.
    """
    ra = np.atleast_1d(np.asarray(ra, float))
    dec = np.atleast_1d(np.asarray(dec, float))
    x, y = wcs.all_world2pix(ra, dec, 0)
    ny, nx = np.shape(diff.diff)
    on = np.isfinite(x) & np.isfinite(y) & (x > -0.5) & (x < nx - 0.5) & (y > -0.5) & (y < ny - 0.5)
    xs, ys = np.where(on, x, 0.0), np.where(on, y, 0.0)
    t = forced_photometry(diff.diff, diff.diff_err, diff.psf, xs, ys, zp, diff.flags, size,
                          limit_nsigma, detect_snr)
    for col in ("flux", "flux_err", "snr", "mag", "mag_err", "limmag", "coverage"):
        t[col][~on] = np.nan
    t["ok"] &= on
    t["flags"][~on] |= pixflags.EDGE
    t["x"], t["y"] = x, y
    t.add_columns([ra, dec], names=["ra", "dec"], indexes=[0, 0])
    return t
