"""Measurements of candidates on their difference stamps, and the analytic cuts (measurements step).

Every candidate is measured at once on the (n, size, size) stamps of :mod:`vo.images.detect.cutouts`.
Sign convention: a negative candidate (``is_negative``: the source faded) is measured on the
sign-flipped difference ``I = -sub``, so the shape and dipole features mean the same for both
signs; fluxes stay signed. Pixels are *bad* where the difference is NaN, its weight is 0, or the
new or reference image flags them (``bad_flags``); bad pixels are left out of the PSF fit and
replaced by the fitted PSF model in the aperture sum and the shape features.

Why stamps and hand-written apertures and moments (not sep on the difference image): the step's
input is the cutouts file, and numpy on the (n, S, S) stack measures all candidates at once.

Features (radii are multiples of the PSF FWHM: ``PSFModel.fwhm`` or :func:`stamp_fwhm` of the
difference PSF stamp; position offsets in pix):

- ``flux_psf``, ``flux_psf_err`` (e- of the new image): weighted least-squares amplitude of the
  PSF at the candidate position (pixels within ``fit_radius``, weights ``sub_weight``);
  ``snr_psf`` = flux_psf / flux_psf_err.
- ``flux_aper``, ``flux_aper_err`` (e-): sum within ``aper_radius`` (exact pixel overlap,
  5x5 sub-pixels), not aperture-corrected.
- ``mag``, ``mag_err``: ``zp - 2.5 log10 |flux_psf|`` (the sign is in ``is_negative``) and
  ``1.0857 flux_psf_err / |flux_psf|``.
- ``centroid_dx``, ``centroid_dy``, ``centroid_offset`` (pix): Gaussian-windowed centroid
  (sigma = ``window_scale`` x PSF sigma, 3 iterations) minus the candidate position.
- ``elongation``: sqrt of the ratio of the eigenvalues of the isophotal second moments (as
  SExtractor: the positive pixels of ``I`` where the local S/N map below exceeds
  ``dipole_nsigma``, within ``dipole_radius``; eigenvalues floored at 1/12 pix^2, a pixel's own
  variance): ~1 for a round source, > 2.5 for a bad column in tests.
- ``fwhm_ratio``: width of the source over that of the PSF, from windowed second moments
  deconvolved from the Gaussian window (``T = T_w s^2 / (s^2 - T_w)``) for both the candidate
  and the PSF: 1 for a point source, ~0.2 for a single hot pixel, > 1 for extended residuals.
- ``negative_flux_fraction``: on the PSF-filtered S/N map of ``I`` (the local score), the
  summed |S/N| of pixels below ``-dipole_nsigma`` over that of pixels above ``+dipole_nsigma``,
  within ``dipole_radius``: ~0 for a point source, ~1 for a dipole (a ratio: it can exceed 1).
- ``negative_pixel_fraction``: fraction of the good pixels within ``dipole_radius`` with
  ``I < -dipole_nsigma`` sigma (ZTF's ``nneg``, normalised).
- ``bad_pixels``: bad pixels (including off-CCD padding) within ``bad_radius``; ``flags``: OR of
  the difference's pixel flags there.
- ``ref_distance`` (arcsec): distance to the nearest reference-image source (NaN without one).

Cuts: two threshold sets ``bad`` and ``drop``, each {feature: [min, max]} (None = unbounded);
a feature outside its range marks the measurement bad (kept, ``is_bad``) or drops it. A NaN
feature (not measurable) never triggers a cut; +-inf does. The reasons are recorded as e.g.
``"fwhm_ratio<0.5,bad_pixels>8"``.
"""

from __future__ import annotations

import os

import numpy as np
from astropy.io import fits
from astropy.table import Table
from scipy import ndimage
from scipy.signal import fftconvolve
from scipy.spatial import cKDTree

from vo import config as vconfig
from vo.io.fits import FitsError, open_fits, write_fits


GAUSS_FWHM = 2 * np.sqrt(2 * np.log(2))   # FWHM / sigma of a Gaussian
MAG = 2.5 / np.log(10)                    # 1.0857: mag error per relative flux error
PSF_EXTENT = 3.0      # PSF stamps reach this many FWHM from their centre
FILTER_EXTENT = 2.0   # the PSF filter of the local S/N map reaches this many FWHM
APER_SUB = 5          # sub-pixels per side for the aperture's pixel overlap
CENTROID_ITER = 3
CHUNK = 512           # candidates measured at once
PIXEL_VAR = 1 / 12    # variance of a uniform pixel (pix^2)

FEATURES = ("flux_psf", "flux_psf_err", "snr_psf", "flux_aper", "flux_aper_err", "mag", "mag_err",
            "centroid_dx", "centroid_dy", "centroid_offset", "elongation", "fwhm_ratio",
            "negative_flux_fraction", "negative_pixel_fraction", "bad_pixels", "ref_distance")
CANDIDATE_COLUMNS = ("id", "x", "y", "ra", "dec", "is_negative")
HEADER_KEYS = {"N_MEAS": "measurements in this table", "N_BAD": "measurements marked bad",
               "N_DROP": "measurements dropped by the cuts", "ZP": "zero point of mag (mag)"}


class MeasureError(ValueError):
    """Measurements that cannot be made; the message names the input or the config key."""


def parameters(pars: dict | None = None) -> dict:
    """The ``measurements`` config section completed with the schema's defaults.

    ``bad`` and ``drop`` are merged key by key into the defaults (as a config file would be).
    """
    d = vconfig.defaults()["measurements"]
    p = {**d, **(pars or {})}
    for key in ("bad", "drop"):
        p[key] = {**d[key], **((pars or {}).get(key) or {})}
    return p


# --------------------------------------------------------------------------- PSF stamps


def stamp_fwhm(stamp: np.ndarray, upsample: int = 5) -> float:
    """FWHM (pix) of a PSF stamp: ``2 sqrt(A / pi)`` with A the area at or above half the peak
    (the geometric mean of the axes, as :func:`vo.images.extract.psf.moffat_fwhm`), measured on the
    stamp upsampled ``upsample`` times by a cubic spline (of the pixel-integrated profile, so
    about 2% above the intrinsic FWHM for FWHM 3 pix)."""
    fine = ndimage.zoom(np.asarray(stamp, np.float64), upsample, order=3, grid_mode=True, mode="grid-constant")
    return float(2 * np.sqrt(np.count_nonzero(fine >= fine.max() / 2) / upsample ** 2 / np.pi))


def shift_stamp(stamp: np.ndarray, dx, dy, half: int) -> np.ndarray:
    """The PSF stamp (odd size, centred on its central pixel) moved by (dx, dy) pix, on
    (n, 2*half+1, 2*half+1) stamps; a Fourier shift (exact for a band-limited PSF), zero-padded
    so that nothing wraps around. ``stamp`` may also be one stamp per position, (n, m, m)."""
    stamp = np.asarray(stamp, np.float64)
    m = stamp.shape[-1]
    size = 2 * half + 1
    L = max(m, size) + 8
    L += (L + 1) % 2                       # odd, so the centre is a pixel
    pad = np.zeros(stamp.shape[:-2] + (L, L))
    o = (L - m) // 2
    pad[..., o:o + m, o:o + m] = stamp
    F = np.fft.rfft2(pad, axes=(-2, -1))
    F = F[None] if F.ndim == 2 else F
    ky = np.fft.fftfreq(L)[None, :, None]
    kx = np.fft.rfftfreq(L)[None, None, :]
    dx, dy = np.asarray(dx, float)[:, None, None], np.asarray(dy, float)[:, None, None]
    out = np.fft.irfft2(F * np.exp(-2j * np.pi * (kx * dx + ky * dy)), s=(L, L), axes=(1, 2))
    c = (L - size) // 2
    return out[:, c:c + size, c:c + size]


def psf_stamps(psf, x, y, half: int):
    """Unit-flux PSF stamps (n, 2*half+1, 2*half+1) centred on the pixels nearest (x, y), with the
    profile at the exact positions, and the FWHM (n,) (pix).

    ``psf`` is a :class:`vo.images.extract.psf.PSFModel` (evaluated at each position), a 2-D stamp
    (the difference PSF: odd square size, centred on its central pixel, shifted by Fourier), or
    an object whose ``stamps(x, y)`` gives one such stamp per position
    (:class:`vo.images.subtract.tiles.LocalPSF`: the difference's PSF where each source is).
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    if hasattr(psf, "evaluate"):
        return psf.evaluate(x, y, 2 * half + 1).astype(np.float64), np.atleast_1d(psf.fwhm(x, y)).astype(float)
    if hasattr(psf, "stamps"):
        st = np.asarray(psf.stamps(x, y), np.float64)
        st /= st.sum(axis=(1, 2), keepdims=True)
        return shift_stamp(st, x - np.rint(x), y - np.rint(y), half), np.array([stamp_fwhm(s) for s in st])
    stamp = np.asarray(psf, np.float64)
    if stamp.ndim != 2 or stamp.shape[0] != stamp.shape[1] or stamp.shape[0] % 2 == 0:
        raise MeasureError(f"a PSF stamp must be a square 2-D array of odd size, got shape {stamp.shape}")
    if not (np.all(np.isfinite(stamp)) and stamp.sum() > 0):
        raise MeasureError("the PSF stamp has non-finite values or a non-positive sum")
    stamp = stamp / stamp.sum()
    P = shift_stamp(stamp, x - np.rint(x), y - np.rint(y), half)
    return P, np.full(len(x), stamp_fwhm(stamp))


# --------------------------------------------------------------------------- features


def _aperture_weights(dx, dy, radius, half: int) -> np.ndarray:
    """Fraction (n, S, S) of each pixel inside circles of ``radius`` (n,) around (dx, dy) (pix)."""
    k = np.arange(-half, half + 1, dtype=np.float64)
    s = (np.arange(APER_SUB) + 0.5) / APER_SUB - 0.5
    u = (k[:, None] + s[None, :]).ravel()                          # sub-pixel centres (S*A,)
    ux = (u[None, :] - dx[:, None]) ** 2                           # (n, S*A)
    uy = (u[None, :] - dy[:, None]) ** 2
    inside = (uy[:, :, None] + ux[:, None, :]) <= (radius ** 2)[:, None, None]
    n, S = len(dx), 2 * half + 1
    return inside.reshape(n, S, APER_SUB, S, APER_SUB).mean(axis=(2, 4))


def _windowed_moments(img, gx, gy, xc, yc, sigma_w):
    """Gaussian-windowed first moments and (xx, yy) second moments of (n, S, S) stamps about
    (xc, yc) (pix, pix^2), and whether the windowed flux is positive (else moments are junk)."""
    ddx, ddy = gx - xc[:, None, None], gy - yc[:, None, None]
    w = np.exp(-(ddx * ddx + ddy * ddy) / (2 * sigma_w[:, None, None] ** 2)) * img
    ax = (1, 2)
    s0 = w.sum(axis=ax)
    ok = s0 > 0
    d = np.where(ok, s0, 1)
    m1 = (w * ddx).sum(axis=ax) / d, (w * ddy).sum(axis=ax) / d
    m2 = (w * ddx * ddx).sum(axis=ax) / d, (w * ddy * ddy).sum(axis=ax) / d
    return ok, m1, m2


def _isophotal_elongation(img, gx, gy) -> np.ndarray:
    """sqrt(major / minor eigenvalue) of the second moments of (n, S, S) non-negative stamps
    (eigenvalues floored at a pixel's variance, 1/12 pix^2); NaN for an empty stamp."""
    ax = (1, 2)
    s0 = img.sum(axis=ax)
    ok = s0 > 0
    d = np.where(ok, s0, 1)
    mx, my = (img * gx).sum(axis=ax) / d, (img * gy).sum(axis=ax) / d
    ddx, ddy = gx - mx[:, None, None], gy - my[:, None, None]
    mxx, mxy, myy = ((img * a * b).sum(axis=ax) / d for a, b in ((ddx, ddx), (ddx, ddy), (ddy, ddy)))
    tr, det = mxx + myy, mxx * myy - mxy * mxy
    disc = np.sqrt(np.maximum(tr * tr / 4 - det, 0))
    lam1, lam2 = np.maximum(tr / 2 + disc, PIXEL_VAR), np.maximum(tr / 2 - disc, PIXEL_VAR)
    return np.where(ok, np.sqrt(lam1 / lam2), np.nan)


def _deconvolved_size(t_w, sigma_w):
    """Size (pix^2) of a Gaussian whose moment with a Gaussian window of ``sigma_w`` is ``t_w``."""
    s2 = sigma_w ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(t_w < s2, t_w * s2 / (s2 - t_w), np.inf)
    return np.where(t_w > 0, t, 0.0)


def _ref_distance(ra, dec, ref_sources, x, y, pixel_scale):
    """Distance (arcsec) from each candidate to its nearest reference source (NaN without any)."""
    n = len(ra)
    if ref_sources is None or len(ref_sources) == 0:
        return np.full(n, np.nan)
    cols = ref_sources.colnames
    if {"ra", "dec"} <= set(cols) and np.all(np.isfinite(ra)) and np.all(np.isfinite(dec)):
        def unit(a, d):
            a, d = np.radians(np.asarray(a, float)), np.radians(np.asarray(d, float))
            return np.column_stack([np.cos(d) * np.cos(a), np.cos(d) * np.sin(a), np.sin(d)])
        chord, _ = cKDTree(unit(ref_sources["ra"], ref_sources["dec"])).query(unit(ra, dec))
        return np.degrees(2 * np.arcsin(np.clip(chord / 2, 0, 1))) * 3600
    if {"x", "y"} <= set(cols) and pixel_scale is not None:
        dist, _ = cKDTree(np.column_stack([ref_sources["x"], ref_sources["y"]])).query(np.column_stack([x, y]))
        return dist * float(pixel_scale)
    raise MeasureError("reference sources need ra, dec columns (and candidates with ra, dec), "
                       f"or x, y columns and a pixel_scale; got columns {cols}")


def _stamp_features(st: dict, x, y, sign, psf, fwhm0: float, p: dict) -> dict:
    """Features of one chunk of candidates from their stamps ``st`` (name -> (n, S, S) array)."""
    n, S, half = len(x), st["sub"].shape[-1], st["sub"].shape[-1] // 2
    dx, dy = x - np.rint(x), y - np.rint(y)               # candidate position in the stamp frame
    k = np.arange(-half, half + 1, dtype=np.float64)
    gx, gy = k[None, None, :], k[None, :, None]            # pixel offsets from the stamp centre
    r2 = (gx - dx[:, None, None]) ** 2 + (gy - dy[:, None, None]) ** 2

    sub = st["sub"].astype(np.float64)
    w = st["sub_weight"].astype(np.float64)
    flagged = ((st["new_flags"] | st["ref_flags"]) & int(p["bad_flags"])) != 0
    good = np.isfinite(sub) & (w > 0) & ~flagged
    w = np.where(good, w, 0.0)
    sub = np.where(good, sub, 0.0)

    # PSF on the full stamp (zero beyond PSF_EXTENT FWHM)
    hp = int(min(half, np.ceil(PSF_EXTENT * fwhm0)))
    Pc, fwhm = psf_stamps(psf, x, y, hp)
    P = np.zeros((n, S, S))
    P[:, half - hp:half + hp + 1, half - hp:half + hp + 1] = Pc

    # PSF photometry
    fit = r2 <= (float(p["fit_radius"]) * fwhm[:, None, None]) ** 2
    wf = np.where(fit, w, 0.0)
    spp = (wf * P * P).sum(axis=(1, 2))
    has = spp > 0
    spp_ = np.where(has, spp, 1)
    flux = np.where(has, (wf * P * sub).sum(axis=(1, 2)) / spp_, np.nan)
    ferr = np.where(has, 1 / np.sqrt(spp_), np.nan)
    model = np.nan_to_num(flux)[:, None, None] * P
    filled = np.where(good, sub, model)                    # bad pixels replaced by the PSF model
    I = sign[:, None, None] * filled                       # sign-flipped: the candidate is positive

    # aperture photometry on the central box
    ra_ = float(p["aper_radius"]) * fwhm
    ha = int(min(half, np.ceil(ra_.max() + 1)))
    box = (slice(None), slice(half - ha, half + ha + 1), slice(half - ha, half + ha + 1))
    aw = _aperture_weights(dx, dy, ra_, ha)
    var = np.where(good[box], 1 / np.where(good[box], st["sub_weight"][box].astype(float), 1), 0)
    fap = (aw * filled[box]).sum(axis=(1, 2))
    fap_err = np.sqrt((aw * aw * var).sum(axis=(1, 2)))

    # windowed centroid (as SExtractor's XWIN: Gaussian window, iterated) and second moments
    sigma_p = fwhm / GAUSS_FWHM
    sigma_w = float(p["window_scale"]) * sigma_p
    xc, yc = dx.copy(), dy.copy()
    for _ in range(CENTROID_ITER):
        ok, (mx, my), _ = _windowed_moments(I, gx, gy, xc, yc, sigma_w)
        step = np.hypot(mx, my)
        scale = np.where(step > fwhm, fwhm / np.maximum(step, 1e-12), 1.0)   # at most 1 FWHM a step
        xc, yc = np.where(ok, xc + mx * scale, xc), np.where(ok, yc + my * scale, yc)
    ok, _, (mxx, myy) = _windowed_moments(I, gx, gy, xc, yc, sigma_w)
    _, _, (pxx, pyy) = _windowed_moments(P, gx, gy, dx, dy, sigma_w)
    t_src = _deconvolved_size(np.where(ok, (mxx + myy) / 2, 0), sigma_w)
    t_psf = _deconvolved_size((pxx + pyy) / 2, sigma_w)
    with np.errstate(invalid="ignore"):
        fwhm_ratio = np.where(ok, np.sqrt(t_src / t_psf), 0.0)   # no windowed flux: nothing there

    # dipoles: local S/N map (PSF-filtered I, weighted) and negative pixels
    hk = int(min(hp, np.ceil(FILTER_EXTENT * fwhm0)))
    K = P[:, half - hk:half + hk + 1, half - hk:half + hk + 1][:, ::-1, ::-1]
    num = fftconvolve(w * I, K, mode="same", axes=(1, 2))
    den = fftconvolve(w, K * K, mode="same", axes=(1, 2))
    snr_map = np.where(den > 1e-12 * den.max(), num / np.sqrt(np.maximum(den, 1e-300)), 0.0)
    inner = r2 <= (float(p["dipole_radius"]) * fwhm[:, None, None]) ** 2
    ks = float(p["dipole_nsigma"])
    pos = np.where(inner & (snr_map > ks), snr_map, 0).sum(axis=(1, 2))
    neg = np.where(inner & (snr_map < -ks), -snr_map, 0).sum(axis=(1, 2))
    with np.errstate(divide="ignore", invalid="ignore"):
        nff = np.where(pos > 0, neg / np.where(pos > 0, pos, 1), np.where(neg > 0, np.inf, np.nan))
    elong = _isophotal_elongation(np.where(inner & (snr_map > ks), np.maximum(I, 0), 0), gx, gy)
    n_good = (inner & good).sum(axis=(1, 2))
    n_neg = (inner & good & (I * np.sqrt(w) < -ks)).sum(axis=(1, 2))
    npf = np.where(n_good > 0, n_neg / np.maximum(n_good, 1), np.nan)

    # bad pixels and flags near the candidate
    rb = np.maximum(float(p["bad_radius"]) * fwhm, 0.5)[:, None, None]
    near = r2 <= rb ** 2
    bad_pixels = (near & ~good).sum(axis=(1, 2))
    flg = np.bitwise_or.reduce(np.where(near, st["sub_flags"], 0).astype(np.int64).reshape(n, -1), axis=1)

    return {"flux_psf": flux, "flux_psf_err": ferr, "flux_aper": fap, "flux_aper_err": fap_err,
            "centroid_dx": xc - dx, "centroid_dy": yc - dy, "elongation": elong, "fwhm_ratio": fwhm_ratio,
            "negative_flux_fraction": nff, "negative_pixel_fraction": npf,
            "bad_pixels": bad_pixels.astype(np.int32), "fwhm_psf": fwhm, "flags": flg.astype(np.int32)}


def measure_features(cutouts, candidates: Table, psf, zp: float | None, ref_sources: Table | None = None,
                     pars: dict | None = None, pixel_scale: float | None = None) -> Table:
    """Every feature of :data:`FEATURES` for every candidate (no cuts applied).

    Parameters
    ----------
    cutouts : vo.images.detect.cutouts.Cutouts of these candidates (same order).
    candidates : Table with id, x, y (0-based pix), ra, dec (deg), is_negative.
    psf : PSF of the difference image: a 2-D unit-sum stamp (``Difference.psf``), a PSFModel, or
        a :class:`vo.images.subtract.tiles.LocalPSF` (each candidate's own).
    zp : zero point of the new image (m = -2.5 log10(flux_e-) + zp); None gives NaN magnitudes.
    ref_sources : sources of the reference (ra, dec in deg; or x, y on the new grid with
        ``pixel_scale`` in arcsec/pix) for ``ref_distance``.
    pars : the ``measurements`` config section.
    """
    p = parameters(pars)
    n = len(candidates)
    missing = [c for c in ("x", "y", "is_negative") if c not in candidates.colnames]
    if missing:
        raise MeasureError(f"candidate table lacks columns {missing}")
    if len(cutouts) != n:
        raise MeasureError(f"{len(cutouts)} cutouts for {n} candidates")
    out = Table()
    for c in CANDIDATE_COLUMNS:
        if c in candidates.colnames:
            out[c] = candidates[c]
    if n == 0:
        for f in (*FEATURES, "fwhm_psf"):
            out[f] = np.zeros(0, np.int32 if f == "bad_pixels" else np.float64)
        out["flags"] = np.zeros(0, np.int32)
        return out

    x, y = np.asarray(candidates["x"], float), np.asarray(candidates["y"], float)
    sign = np.where(np.asarray(candidates["is_negative"], bool), -1.0, 1.0)
    fwhm0 = psf.fwhm() if hasattr(psf, "evaluate") else stamp_fwhm(np.asarray(getattr(psf, "central", psf), float))
    parts = []
    for lo in range(0, n, CHUNK):   # bounds the temporary (chunk, S, S) arrays
        sl = slice(lo, lo + CHUNK)
        st = {k: getattr(cutouts, k)[sl] for k in ("sub", "sub_weight", "sub_flags", "new_flags", "ref_flags")}
        parts.append(_stamp_features(st, x[sl], y[sl], sign[sl], psf, fwhm0, p))
    f = {k: np.concatenate([q[k] for q in parts]) for k in parts[0]}
    flux, ferr = f["flux_psf"], f["flux_psf_err"]
    afl = np.abs(flux)
    with np.errstate(divide="ignore", invalid="ignore"):
        mag = np.where(afl > 0, (np.nan if zp is None else float(zp)) - 2.5 * np.log10(afl), np.nan)
        mag_err = np.where(afl > 0, MAG * ferr / afl, np.nan)
    ra = np.asarray(candidates["ra"], float) if "ra" in candidates.colnames else np.full(n, np.nan)
    dec = np.asarray(candidates["dec"], float) if "dec" in candidates.colnames else np.full(n, np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        f["snr_psf"] = flux / ferr
    f.update({"mag": mag, "mag_err": mag_err, "centroid_offset": np.hypot(f["centroid_dx"], f["centroid_dy"]),
              "ref_distance": _ref_distance(ra, dec, ref_sources, x, y, pixel_scale)})
    for name in (*FEATURES, "fwhm_psf", "flags"):
        out[name] = f[name]
    for c, unit in (("x", "pix"), ("y", "pix"), ("ra", "deg"), ("dec", "deg"), ("mag", "mag"),
                    ("mag_err", "mag"), ("centroid_dx", "pix"), ("centroid_dy", "pix"),
                    ("centroid_offset", "pix"), ("fwhm_psf", "pix"), ("ref_distance", "arcsec")):
        if c in out.colnames:
            out[c].unit = unit
    return out


# --------------------------------------------------------------------------- cuts


def check_cuts(cuts: dict, key: str) -> dict[str, tuple[float, float]]:
    """Validate ``{feature: [min, max]}`` (None = unbounded) and return it with floats."""
    out = {}
    for feature, rng in (cuts or {}).items():
        if feature not in FEATURES:
            raise MeasureError(f"measurements.{key}.{feature}: unknown feature (known: {', '.join(FEATURES)})")
        if not isinstance(rng, (list, tuple)) or len(rng) != 2:
            raise MeasureError(f"measurements.{key}.{feature}: expected [min, max], got {rng!r}")
        lo, hi = (-np.inf if rng[0] is None else float(rng[0]), np.inf if rng[1] is None else float(rng[1]))
        if lo > hi:
            raise MeasureError(f"measurements.{key}.{feature}: min {lo} > max {hi}")
        out[feature] = (lo, hi)
    return out


def cut_reasons(table: Table, cuts: dict[str, tuple[float, float]]) -> tuple[np.ndarray, np.ndarray]:
    """(failed (n,) bool, reasons (n,) str such as ``"fwhm_ratio<0.5,bad_pixels>8"``)."""
    n = len(table)
    reasons = np.full(n, "", dtype=object)
    for feature, (lo, hi) in cuts.items():
        v = np.asarray(table[feature], float)
        for fails, text in ((v < lo, f"{feature}<{lo:g}"), (v > hi, f"{feature}>{hi:g}")):
            reasons = np.where(fails, np.where(reasons == "", text, reasons + "," + text), reasons)
    return reasons != "", reasons.astype(str) if n else np.zeros(0, str)


def apply_cuts(table: Table, bad: dict, drop: dict) -> Table:
    """Add is_bad, bad_reasons, is_dropped, drop_reasons to a copy of ``table``."""
    out = table.copy()
    for key, cuts in (("bad", bad), ("drop", drop)):
        failed, reasons = cut_reasons(out, check_cuts(cuts, key))
        out[f"is_{'dropped' if key == 'drop' else 'bad'}"] = failed
        out[f"{key}_reasons"] = reasons
    return out


def measure(cutouts, candidates: Table, psf, zp: float | None, ref_sources: Table | None = None,
            pars: dict | None = None, pixel_scale: float | None = None, keep_dropped: bool = False) -> Table:
    """Measure every candidate and apply the analytic cuts.

    Arguments as :func:`measure_features`. Returns the measurements that survive the ``drop``
    cuts (all of them with ``keep_dropped``), with columns is_bad, bad_reasons, is_dropped,
    drop_reasons, and meta N_MEAS, N_BAD, N_DROP, ZP.
    """
    p = parameters(pars)
    bad, drop = check_cuts(p["bad"], "bad"), check_cuts(p["drop"], "drop")  # fail before measuring
    t = apply_cuts(measure_features(cutouts, candidates, psf, zp, ref_sources, p, pixel_scale), bad, drop)
    n_drop = int(np.sum(t["is_dropped"]))
    if not keep_dropped:
        t = t[~np.asarray(t["is_dropped"], bool)]
    t.meta.update({"N_MEAS": len(t), "N_BAD": int(np.sum(t["is_bad"])), "N_DROP": n_drop,
                   "ZP": np.nan if zp is None else float(zp)})
    return t


# --------------------------------------------------------------------------- files


def write_measurements(path: str | os.PathLike, table: Table, attrs: dict | None = None) -> None:
    """Write measurements as the FITS table HDU ``MEASUREMENTS`` (atomic, provenance cards)."""
    missing = [c for c in (*FEATURES, "is_bad", "bad_reasons") if c not in table.colnames]
    if missing:
        raise MeasureError(f"{path}: measurement table lacks columns {missing}")
    t = table.copy()
    for c in ("bad_reasons", "drop_reasons"):
        if c in t.colnames:  # fixed-width FITS strings; at least 1 character wide
            t[c] = np.asarray(t[c], dtype=f"U{max(1, max((len(s) for s in t[c]), default=1))}")
    primary = fits.PrimaryHDU()
    hdu = fits.BinTableHDU(t, name="MEASUREMENTS")
    for key, comment in HEADER_KEYS.items():
        if key in table.meta:
            value = table.meta[key]
            value = None if isinstance(value, float) and not np.isfinite(value) else value
            primary.header[key] = (value, comment)
            hdu.header[key] = (value, comment)
    write_fits(path, fits.HDUList([primary, hdu]), attrs)


def read_measurements(path: str | os.PathLike) -> Table:
    """Read measurements written by :func:`write_measurements` (header keys in ``meta``)."""
    with open_fits(path, required=("MEASUREMENTS",)) as hdul:
        hdu = hdul["MEASUREMENTS"]
        if hdu.data is None:
            raise FitsError(f"{path}: MEASUREMENTS HDU has no table")
        t = Table(hdu.data)
        missing = [c for c in (*FEATURES, "is_bad", "bad_reasons") if c not in t.colnames]
        if missing:
            raise FitsError(f"{path}: MEASUREMENTS table lacks columns {missing}")
        for key in HEADER_KEYS:
            if key in hdu.header:
                v = hdu.header[key]
                t.meta[key] = np.nan if v is None or isinstance(v, fits.card.Undefined) else v
        for c in ("bad_reasons", "drop_reasons"):
            if c in t.colnames:
                t[c] = np.char.strip(np.asarray(t[c], str))
        for c in t.colnames:
            unit = hdu.columns[c].unit
            if unit:
                t[c].unit = unit
    return t
