"""Source extraction: background, detection, windowed positions, PSF model, PSF and aperture
photometry of a preprocessed :class:`vo.images.image.Image` (extraction step).

Pixel coordinates are 0-based (numpy ``[y, x]``); fluxes in e-; FWHM and radii in pix.
The heavy lifting is sep (SExtractor's background, detection, windowed centroids and apertures);
the PSF is :mod:`vo.images.extract.psf`; PSF photometry is a weighted linear least-squares amplitude of
the PSF at each source's windowed position, vectorised over all sources.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import sep
from astropy.io import fits
from astropy.table import Table
from scipy.spatial import cKDTree

from vo import config as vconfig
from vo.images.extract.background import Background, measure_background
from vo.images.extract.psf import PSFError, PSFModel, cut_stamps, stamp_grid
from vo.images.extract.psf_fit import fit_psf, fit_stars
from vo.io.fits import FitsError, open_fits, write_fits


SATURATION_MARGIN = 0.7  # PSF stars must peak below this fraction of the header's SATURATE
PIXFLAG_SHIFT = 8        # pixel flags inside the aperture are stored in bits 8.. of ``flags``
FWHM_RADIUS_RMAX = 2.5  # half-light radii for the fwhm column are of the light within 2.5 FWHM
MIN_PSF_STARS = 5        # below this many stars over psf_min_snr, stars down to S/N 10 are used
HEADER_KEYS = {"FWHM": "PSF FWHM at the image centre (pix)", "N_SRC": "number of sources",
               "APER_R": "aperture radius of flux_aper (pix)",
               "APER_RB": "aperture radius of flux_aper_big (pix)",
               "BACKGND": "global background (e-)", "BKG_RMS": "global background RMS (e-)",
               "PSF_NSTR": "stars used for the PSF model",
               "PSF_OK": "PSF model checked against its stars (F: flux_psf unreliable)"}


class ExtractionError(ValueError):
    """An image that cannot be extracted; the message names the image and the problem."""


@dataclass
class Extraction:
    """Result of :func:`extract`.

    sources : astropy Table, one row per source (columns in :func:`extract`), meta = header keys.
    psf : the PSF model.
    background : background and RMS maps (e-).
    meta : fwhm (pix), n_sources, aper_r, aper_rb (pix), n_psf_stars, globalback, globalrms (e-).
    """

    sources: Table
    psf: PSFModel
    background: Background
    meta: dict = field(default_factory=dict)


def parameters(pars: dict | None = None) -> dict:
    """The ``extraction`` config section completed with the schema's defaults."""
    return {**vconfig.defaults()["extraction"], **(pars or {})}


def image_name(header) -> str:
    """A readable name for error messages: instrument, exposure and CCD from the header."""
    parts = [str(header.get(k)) for k in ("INSTRUME", "EXPOSURE", "CCD") if header and header.get(k)]
    return " ".join(parts) if parts else "image"


def error_map(weight: np.ndarray) -> np.ndarray:
    """Per-pixel noise 1/sqrt(weight) (e-), 0 where the weight is 0 (float32)."""
    err = np.sqrt(weight)
    np.divide(1, err, out=err, where=weight > 0)
    return err


def _arrays(image, name: str):
    sci = np.asarray(image.sci, np.float32)
    weight = np.asarray(image.weight, np.float32)
    flags = np.asarray(image.flags)
    if sci.ndim != 2 or weight.shape != sci.shape or flags.shape != sci.shape:
        raise ExtractionError(f"{name}: sci {sci.shape}, weight {weight.shape} and flags "
                              f"{flags.shape} must be 2-D arrays of one shape")
    mask = (flags != 0) | ~np.isfinite(sci) | ~(weight > 0)
    if mask.all():
        raise ExtractionError(f"{name}: every pixel is flagged, NaN or has zero weight")
    return sci, np.where(mask, np.float32(0), weight), flags, mask


def detect(sub: np.ndarray, rms: np.ndarray, mask: np.ndarray, p: dict) -> np.ndarray:
    """sep detection on the background-subtracted image: threshold ``p['threshold']`` x rms.

    The 3x3 filter is SExtractor's (default.conv) applied as a plain convolution ('conv', as
    SExtractor does): sep's 'matched' mode with a mask fails to deblend bright neighbours that
    surround a masked pixel (tested), and equals 'conv' for a flat noise map anyway.
    """
    sep.set_extract_pixstack(max(300_000, sub.size // 20))
    sep.set_sub_object_limit(max(1024, sep.get_sub_object_limit()))
    return sep.extract(sub, float(p["threshold"]), err=rms, mask=mask, minarea=int(p["minarea"]), filter_type="conv",
                       deblend_nthresh=int(p["deblend_nthresh"]),
                       deblend_cont=float(p["deblend_cont"]), clean=True, clean_param=1.0)


def windowed_positions(sub, mask, objs):
    """SExtractor XWIN/YWIN: Gaussian window of sigma 2 r_half / 2.35 (r_half: half-light radius).

    Falls back to the isophotal barycentre where the iteration fails or moves by > 2 pix.
    Returns x, y (pix) and r_half (pix).
    """
    x, y = objs["x"].astype(float), objs["y"].astype(float)
    rmax = np.clip(6 * objs["a"], 3, 15)
    rh, _ = sep.flux_radius(sub, x, y, rmax, 0.5, mask=mask, subpix=1)  # coarse: window size only
    rh = np.where(np.isfinite(rh) & (rh > 0.3), rh, 0.3)
    # subpix=1: the Gaussian window is smooth, so pixel centres give the exact-overlap positions
    # to 1e-4 pix (90th percentile, tested) and are the fastest
    xw, yw, _ = sep.winpos(sub, x, y, 2 * rh / 2.35, mask=mask, subpix=1)
    good = np.isfinite(xw) & np.isfinite(yw) & (np.hypot(xw - x, yw - y) < 2)
    return np.where(good, xw, x), np.where(good, yw, y), rh


def select_psf_stars(sub, weight, flags, x, y, objs, snr, fwhm0, half, p, saturation=None):
    """Indices of bright, isolated, unsaturated, unflagged, unblended detections (brightest first)."""
    ny, nx = sub.shape
    ix, iy, _, _ = stamp_grid(x, y, half)
    (fl,), inside = cut_stamps([flags], ix, iy, fill=1)
    clean = (np.bitwise_or.reduce(fl.reshape(len(x), -1).astype(np.int64), axis=1) == 0)
    ok = clean & inside.all(axis=(1, 2)) & (objs["flag"] == 0) & np.isfinite(snr)
    if saturation:
        ok &= objs["peak"] < SATURATION_MARGIN * float(saturation)
    if len(x) > 1:
        d, _ = cKDTree(np.c_[x, y]).query(np.c_[x, y], k=2)
        ok &= d[:, 1] > float(p["psf_isolation"]) * fwhm0
    bright = ok & (snr >= float(p["psf_min_snr"]))
    if bright.sum() < MIN_PSF_STARS:
        bright = ok & (snr >= 10)
    idx = np.flatnonzero(bright)
    return idx[np.argsort(-snr[idx])][: int(p["psf_max_stars"])]


def build_psf(sub, weight, err, rms, flags, x, y, objs, p, name, saturation=None) -> PSFModel:
    """PSF model from the detections (see :mod:`vo.images.extract.psf`)."""
    rh = objs["rh"]
    # first guess of the FWHM: 1.6 r_half lies between a Gaussian (2.0) and a Moffat beta=3 (1.58)
    pre = objs["flag"] == 0
    fwhm0 = 1.6 * float(np.median(rh[pre] if pre.sum() >= 5 else rh))
    fwhm0 = max(fwhm0, 1.0)
    f, fe, _ = sep.sum_circle(sub, x, y, fwhm0, err=err, mask=weight <= 0, subpix=5)
    snr = f / np.where(fe > 0, fe, np.inf)
    half = max(4, int(np.ceil(2.5 * fwhm0)))
    idx = select_psf_stars(sub, weight, flags, x, y, objs, snr, fwhm0, half, p, saturation)
    if idx.size == 0:
        raise PSFError(f"{name}: no usable PSF star among {len(x)} detections (need isolated, "
                       f"unflagged, unsaturated sources with S/N >= 10)")
    stars = fit_stars(sub, weight, rms, x[idx], y[idx], fwhm0, half, int(p["psf_subsample"]))
    stars["snr"] = snr[idx]
    return fit_psf(sub, weight, rms, stars, sub.shape, int(p["psf_poly_order"]), half,
                   int(p["psf_subsample"]), bright_snr=float(p["psf_min_snr"]), name=name)


def fallback_psf(objs, header, shape, subsample: int, why: str) -> PSFModel:
    """A round Moffat (beta 3) standing in where no PSF can be fitted (a cutout too sparse), of
    the header's ``FWHM`` (pix) when it has one, else 1.6 x the detections' median half-light
    radius; flagged (``ok = False``, ``why``) so that no step relies on its PSF fluxes."""
    fw = float(header.get("FWHM", np.nan)) if header is not None else np.nan
    src = "the header's FWHM"
    if not (np.isfinite(fw) and fw > 0.5):
        fw, src = max(1.0, 1.6 * float(np.median(objs["rh"]))), "the detections' sizes"
    psf = PSFModel.round(fw, 3.0, shape, subsample)
    psf.ok, psf.why = False, f"{why}; a round Moffat of FWHM {fw:.2f} pix ({src}) stands in"
    return psf


def psf_photometry(sub, weight, rms, psf: PSFModel, x, y, radius: float):
    """Weighted least-squares PSF amplitude at fixed positions, all sources at once.

    Pixels within ``radius`` (pix) of each position and with non-zero ``weight`` enter. The fit
    weights are the inverse of a *model* variance, ``rms**2 + f1 * P`` (sky RMS from the
    background map plus the source's own Poisson noise from a first unweighted-by-source pass
    ``f1``), not the image's per-pixel weights: those are computed from the noisy data and would
    bias faint fluxes low by about the number of pixels in the PSF (e-). The flux error
    propagates the image's variance ``1/weight`` through the fit:
    ``flux = sum(u P d) / sum(u P^2)``, ``fluxerr = sqrt(sum(u^2 P^2 / weight)) / sum(u P^2)``.
    xerr, yerr are the Cramer-Rao position errors (pix) from the PSF model's derivatives.
    """
    half = max(2, int(np.ceil(radius)))
    n = len(x)
    flux, ferr = np.full(n, np.nan), np.full(n, np.nan)
    xerr, yerr = np.full(n, np.nan), np.full(n, np.nan)
    ax = (1, 2)
    step = 2048
    for lo in range(0, n, step):
        sl = slice(lo, lo + step)
        ix, iy, P, gx, gy = psf.render(x[sl], y[sl], half, derivs=True)
        (d, w, s), _ = cut_stamps([sub, weight, rms], ix, iy)
        use = ((ix - x[sl, None, None]) ** 2 + (iy - y[sl, None, None]) ** 2 <= radius ** 2) & (w > 0)
        var = np.where(use, 1 / np.where(use, w, 1), 0)
        sky = np.where(use, s * s, 1)
        f = np.full(P.shape[0], np.nan)
        for _ in range(2):  # pass 1: sky-only weights; pass 2: sky + source model
            u = np.where(use, 1 / (sky + np.maximum(np.nan_to_num(f), 0)[:, None, None] * P), 0)
            spp = (u * P * P).sum(axis=ax, dtype=np.float64)
            good = spp > 0
            f = np.where(good, (u * P * d).sum(axis=ax, dtype=np.float64) / np.where(good, spp, 1),
                         np.nan)
        flux[sl] = f
        ferr[sl] = np.where(good, np.sqrt((u * u * P * P * var).sum(axis=ax, dtype=np.float64))
                            / np.where(good, spp, 1), np.nan)
        # Fisher matrix of (flux, x0, y0) with the model weights; position errors from its inverse
        fa = np.abs(np.nan_to_num(f))[:, None, None]
        J = [P, fa * gx, fa * gy]
        F = np.empty((len(f), 3, 3))
        for i in range(3):
            for j in range(i, 3):
                F[:, i, j] = F[:, j, i] = (u * J[i] * J[j]).sum(axis=ax, dtype=np.float64)
        okf = good & (np.linalg.det(F) > 0) & (fa[:, 0, 0] > 0)
        cov = np.linalg.inv(np.where(okf[:, None, None], F, np.eye(3)))
        xerr[sl] = np.where(okf, np.sqrt(np.abs(cov[:, 1, 1])), np.nan)
        yerr[sl] = np.where(okf, np.sqrt(np.abs(cov[:, 2, 2])), np.nan)
    return flux, ferr, xerr, yerr


def aperture_flags(flags, x, y, radius: float) -> np.ndarray:
    """Bitwise OR of the pixel flags within ``radius`` (pix) of each position."""
    half = max(1, int(np.ceil(radius)))
    ix, iy, dx, dy = stamp_grid(x, y, half)
    (fl,), _ = cut_stamps([flags], ix, iy, fill=0)
    fl = np.where(dx * dx + dy * dy <= (radius + 0.5) ** 2, fl, 0).astype(np.int64)
    return np.bitwise_or.reduce(fl.reshape(len(x), -1), axis=1)


def _model_half_light_radius(psf: PSFModel, rmax: float) -> float:
    """Half-light radius (pix) that sep.flux_radius measures on the PSF at the image centre."""
    half = int(np.ceil(rmax)) + 3
    xc, yc = float(psf.shape[1] // 2), float(psf.shape[0] // 2)
    stamp = np.ascontiguousarray(psf.evaluate(xc, yc, 2 * half + 1), np.float32)
    r, _ = sep.flux_radius(stamp, np.array([float(half)]), np.array([float(half)]),
                           np.array([rmax]), 0.5, subpix=3)
    return float(r[0])


def extract(image, pars: dict | None = None, name: str | None = None) -> Extraction:
    """Extract the sources of a preprocessed image.

    Parameters
    ----------
    image : vo.images.image.Image (or any object with ``sci`` (e-), ``weight`` (1/e-^2),
        ``flags`` (uint16) arrays and a ``header``; ``SATURATE`` (e-) is used when present).
    pars : the ``extraction`` config section (missing keys take the schema defaults).
    name : name for error messages (default: instrument, exposure and CCD from the header).

    Returns
    -------
    Extraction whose ``sources`` table has columns x, y (windowed, 0-based pix), xerr, yerr
    (pix), flux_psf, fluxerr_psf, flux_aper, fluxerr_aper, flux_aper_big, fluxerr_aper_big (e-),
    fwhm (pix: the half-light radius scaled by the PSF's FWHM / half-light-radius ratio, so
    point sources have the PSF's FWHM), a, b (pix), theta (rad), snr (flux_psf / fluxerr_psf),
    flags (sep object and aperture flags in bits 0-7, pixel flags within the aperture << 8) and
    background (e-), and meta FWHM, N_SRC, APER_R, APER_RB, BACKGND, BKG_RMS, PSF_NSTR.

    Raises
    ------
    ExtractionError, PSFError : naming the image, for unusable arrays, no detection or no PSF star.
    """
    p = parameters(pars)
    header = getattr(image, "header", None)
    name = name or image_name(header)
    sci, weight, flags, mask = _arrays(image, name)
    bkg = measure_background(sci, mask, int(p["back_size"]), int(p["back_filter_size"]))
    sub = np.subtract(sci, bkg.bg, dtype=np.float32)
    sub[mask] = 0
    objs = detect(sub, bkg.rms, mask, p)
    if len(objs) == 0:
        raise ExtractionError(f"{name}: no sources detected above {p['threshold']} x the "
                              f"background RMS ({bkg.globalrms:.3g} e-): an image with no stars")
    x, y, rh = windowed_positions(sub, mask, objs)
    objs = Table(objs)
    objs["rh"] = rh
    saturation = header.get("SATURATE") if header is not None else None
    err = error_map(weight)
    try:
        psf = build_psf(sub, weight, err, bkg.rms, flags, x, y, objs, p, name, saturation)
    except PSFError as exc:  # a cutout with (almost) no star: flagged, not a failed job
        psf = fallback_psf(objs, header, sub.shape, int(p["psf_subsample"]), str(exc))
    fwhm = psf.fwhm()
    flux, ferr, xerr, yerr = psf_photometry(sub, weight, bkg.rms, psf, x, y, float(p["psf_fit_radius"]) * fwhm)

    r_ap, r_big = float(p["aper_radius"]) * fwhm, float(p["aper_big_radius"]) * fwhm
    fa, fae, aflag = sep.sum_circle(sub, x, y, r_ap, err=err, mask=mask, subpix=5)
    fb, fbe, _ = sep.sum_circle(sub, x, y, r_big, err=err, mask=mask, subpix=5)
    r_fr = FWHM_RADIUS_RMAX * fwhm
    rh_src, _ = sep.flux_radius(sub, x, y, np.full(len(x), r_fr), 0.5, mask=mask, subpix=3)
    src_fwhm = fwhm * rh_src / _model_half_light_radius(psf, r_fr)
    pix = aperture_flags(flags, x, y, r_ap)
    ny, nx = sub.shape
    t = Table()
    t["x"], t["y"], t["xerr"], t["yerr"] = x, y, xerr, yerr
    t["flux_psf"], t["fluxerr_psf"] = flux, ferr
    t["flux_aper"], t["fluxerr_aper"] = fa, fae
    t["flux_aper_big"], t["fluxerr_aper_big"] = fb, fbe
    t["fwhm"] = src_fwhm
    t["a"], t["b"], t["theta"] = objs["a"], objs["b"], objs["theta"]
    t["snr"] = flux / ferr
    t["flags"] = (np.asarray(objs["flag"], np.int64) | (aflag.astype(np.int64) & 0xFF)
                  | (pix << PIXFLAG_SHIFT)).astype(np.int32)
    t["background"] = bkg.bg[np.clip(np.rint(y).astype(int), 0, ny - 1),
                             np.clip(np.rint(x).astype(int), 0, nx - 1)]
    for col, unit in (("x", "pix"), ("y", "pix"), ("xerr", "pix"), ("yerr", "pix"), ("fwhm", "pix"),
                      ("a", "pix"), ("b", "pix"), ("theta", "rad")):
        t[col].unit = unit  # fluxes and background are e- (no FITS unit string for electrons)
    n_used = int(np.sum(psf.stars["used"])) if psf.stars is not None else 0
    t.meta.update({"FWHM": fwhm, "N_SRC": len(t), "APER_R": r_ap, "APER_RB": r_big,
                   "BACKGND": bkg.globalback, "BKG_RMS": bkg.globalrms, "PSF_NSTR": n_used,
                   "PSF_OK": bool(psf.ok)})
    meta = {"fwhm": fwhm, "n_sources": len(t), "aper_r": r_ap, "aper_rb": r_big,
            "n_psf_stars": n_used, "globalback": bkg.globalback, "globalrms": bkg.globalrms}
    return Extraction(sources=t, psf=psf, background=bkg, meta=meta)


def write_sources(path: str | os.PathLike, sources: Table, attrs: dict | None = None) -> None:
    """Write the source table as the FITS table HDU ``SOURCES`` (atomic, provenance cards).

    The table's meta (FWHM, N_SRC, APER_R, APER_RB, ...) goes into both headers.
    """
    primary = fits.PrimaryHDU()
    table = fits.BinTableHDU(sources, name="SOURCES")
    for key, value in sources.meta.items():
        if key in HEADER_KEYS:
            primary.header[key] = (value, HEADER_KEYS[key])
            table.header[key] = (value, HEADER_KEYS[key])
    write_fits(path, fits.HDUList([primary, table]), attrs)


def read_sources(path: str | os.PathLike) -> Table:
    """Read a source table written by :func:`write_sources` (header keys in ``meta``)."""
    with open_fits(path, required=("SOURCES",)) as hdul:
        t = Table(hdul["SOURCES"].data)
        h = hdul["SOURCES"].header
        missing = [k for k in ("FWHM", "N_SRC", "APER_R", "APER_RB") if k not in h]
        if missing:
            raise FitsError(f"{path}: SOURCES header lacks {missing}")
        for key in HEADER_KEYS:
            if key in h:
                t.meta[key] = h[key]
        for col in t.colnames:
            unit = hdul["SOURCES"].columns[col].unit
            if unit:
                t[col].unit = unit
    return t
