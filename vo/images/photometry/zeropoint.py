"""Photometric zero point of an image against Gaia DR3 converted to the image's filter.

Convention: ``m = -2.5 log10(flux) + zp`` with ``flux`` in electrons collected over the whole
exposure (not per second; ``ZeroPoint.zp_per_second`` gives the per-second value) and ``m``
the AB magnitude in the image's filter (SDSS system through
:func:`vo.images.photometry.photometric.gaia_to_filter`).

The fit: sources matched to the excerpt through the solved WCS; calibration stars are
unflagged, S/N >= ``min_snr``, isolated in the catalog, with a Gaia colour inside the
validity range of the transformation.  ``m_cat - m_inst = zp (+ k (BP-RP - pivot))`` is fitted
by weighted least squares (weights: source flux error, Gaia G error and a per-star
systematic term), clipping stars whose normalised residual exceeds ``sigma_clip`` times the
robust (MAD) scatter.  ``zp_err`` is the formal error scaled up by sqrt(reduced chi^2) when
that exceeds 1.

Aperture correction ``apcor = median(-2.5 log10(flux_aper_big / flux_aper))`` over bright
stars (mag, negative): add it to small-aperture magnitudes to get total magnitudes.

Limiting magnitude: the magnitude of a point source measured at S/N = 5, i.e. the flux
``f`` with ``f = 5 sqrt(NEA rms^2 + f)`` (e-, gain 1, source Poisson noise included), where
``NEA`` is the PSF's noise-equivalent area (pix) and ``rms`` the background noise (e-/pix);
without those, ``NEA rms^2`` and the Poisson slope are fitted to the sources' flux errors.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
from astropy.io import fits
from astropy.table import Table
from scipy.spatial import cKDTree

from vo import config as vconfig
from vo.images.astrometry import WCSSolution, catalog_at_epoch, float_column
from vo.sky import gnomonic
from vo.images.photometry.photometric import (RELATION_NOTES, PhotometricError, colour_slope, gaia_to_filter,
                                               in_valid_range, transformation_sigma)
from vo.io.fits import FitsError, open_fits, write_fits


#: 2.5 / ln(10): magnitude error of a relative flux error of 1.
MAG_PER_FLUX = 2.5 / np.log(10.0)


@dataclass
class ZeroPoint:
    """Result of :func:`fit_zero_point` (magnitudes in mag, AB)."""

    zp: float
    zp_err: float
    colour_term: float
    colour_pivot: float
    apcor: float
    limmag5: float
    n_stars: int
    ok: bool
    reason: str = ""
    filter: str = ""
    exptime: float = float("nan")
    meta: dict = field(default_factory=dict)

    @property
    def zp_per_second(self) -> float:
        """Zero point for fluxes in e-/s: ``zp - 2.5 log10(exptime)``."""
        return self.zp - 2.5 * np.log10(self.exptime) if self.exptime > 0 else float("nan")


def noise_equivalent_area(stamp: np.ndarray) -> float:
    """Noise-equivalent area (pix) of a PSF stamp: ``(sum p)^2 / sum p^2``."""
    p = np.asarray(stamp, dtype=float)
    return float(p.sum() ** 2 / np.sum(p ** 2))


def match_to_catalog(sources: Table, excerpt: Table, wcs, radius_arcsec: float,
                     mjd: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nearest one-to-one matches within ``radius_arcsec`` through ``wcs``.

    Returns source rows, excerpt rows and separations (arcsec).  With ``mjd`` the Gaia
    positions are moved to that epoch first.
    """
    x, y = float_column(sources, "x"), float_column(sources, "y")
    if mjd is None:
        cra, cdec = float_column(excerpt, "ra"), float_column(excerpt, "dec")
    else:
        cra, cdec, _ = catalog_at_epoch(excerpt, mjd)
    ok_s = np.flatnonzero(np.isfinite(x) & np.isfinite(y))
    ok_c = np.flatnonzero(np.isfinite(cra) & np.isfinite(cdec))
    if len(ok_s) == 0 or len(ok_c) == 0:
        return np.zeros(0, int), np.zeros(0, int), np.zeros(0)
    sra, sdec = wcs.all_pix2world(x[ok_s], y[ok_s], 0)
    ra0, dec0 = float(np.median(sra)), float(np.median(sdec))
    s = np.stack(gnomonic(sra, sdec, ra0, dec0), axis=1) * 3600.0
    c = np.stack(gnomonic(cra[ok_c], cdec[ok_c], ra0, dec0), axis=1) * 3600.0
    good_c = np.all(np.isfinite(c), axis=1)
    c, ok_c = c[good_c], ok_c[good_c]
    dist, idx = cKDTree(c).query(s, k=1, distance_upper_bound=radius_arcsec)
    hit = np.flatnonzero(np.isfinite(dist))
    order = hit[np.argsort(dist[hit])]
    _, first = np.unique(idx[order], return_index=True)
    sel = order[first]
    return ok_s[sel], ok_c[idx[sel]], dist[sel]


def _isolated(excerpt: Table, radius_arcsec: float, dmag: float = 5.0) -> np.ndarray:
    """True for catalog stars without a neighbour brighter than G + ``dmag`` within radius."""
    ra, dec = float_column(excerpt, "ra"), float_column(excerpt, "dec")
    g = np.nan_to_num(float_column(excerpt, "phot_g_mean_mag"), nan=30.0)
    ok = np.isfinite(ra) & np.isfinite(dec)
    iso = np.ones(len(excerpt), dtype=bool)
    if radius_arcsec <= 0 or ok.sum() < 2:
        return iso
    ra0, dec0 = float(np.median(ra[ok])), float(np.median(dec[ok]))
    xy = np.stack(gnomonic(ra[ok], dec[ok], ra0, dec0), axis=1) * 3600.0
    pairs = cKDTree(xy).query_pairs(radius_arcsec, output_type="ndarray")
    idx = np.flatnonzero(ok)
    i, j = idx[pairs[:, 0]], idx[pairs[:, 1]]
    iso[i[g[j] < g[i] + dmag]] = False
    iso[j[g[i] < g[j] + dmag]] = False
    return iso


def _clipped_fit(design: np.ndarray, y: np.ndarray, sigma: np.ndarray, clip: float,
                 n_iter: int = 10) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weighted least squares with clipping on normalised residuals.

    Returns coefficients, their covariance (scaled by the reduced chi^2 when > 1) and the
    mask of kept rows.
    """
    keep = np.ones(len(y), dtype=bool)
    for _ in range(n_iter):
        a = design[keep] / sigma[keep, None]
        cov = np.linalg.inv(a.T @ a)
        coef = cov @ (a.T @ (y[keep] / sigma[keep]))
        r = (y - design @ coef) / sigma
        std = 1.4826 * np.median(np.abs(r[keep] - np.median(r[keep])))
        new = np.abs(r) <= clip * max(std, 1e-12)
        if keep.sum() <= 3 or np.array_equal(new, keep) or new.sum() <= design.shape[1]:  # 1-3 stars: no clipping
            break
        keep = new
    dof = keep.sum() - design.shape[1]
    chi2 = float(np.sum(r[keep] ** 2) / dof) if dof > 0 else 1.0
    return coef, cov * max(chi2, 1.0), keep


def _clipped_median(values: np.ndarray, clip: float = 3.0) -> float:
    v = values[np.isfinite(values)]
    for _ in range(5):
        if len(v) == 0:
            return float("nan")
        med = np.median(v)
        std = 1.4826 * np.median(np.abs(v - med))
        new = v[np.abs(v - med) <= clip * max(std, 1e-6)]
        if len(new) == len(v):
            break
        v = new
    return float(np.median(v))


def limiting_flux(background_var: float, poisson_slope: float = 1.0, snr: float = 5.0) -> float:
    """Flux (e-) measured at S/N = ``snr`` when ``var(f) = background_var + slope f``."""
    k2 = snr ** 2
    return 0.5 * (k2 * poisson_slope + np.sqrt((k2 * poisson_slope) ** 2 + 4 * k2 * background_var))


def _noise_model(flux: np.ndarray, err: np.ndarray) -> tuple[float, float]:
    """Fit ``err^2 = a + b flux`` (robust, b >= 0) to sources' fluxes and errors (e-)."""
    ok = np.isfinite(flux) & np.isfinite(err) & (flux > 0) & (err > 0)
    f, v = flux[ok], err[ok] ** 2
    keep = np.ones(len(f), dtype=bool)
    a, b = float(np.median(v)), 0.0
    for _ in range(5):
        if keep.sum() < 3:
            break
        design = np.stack([np.ones(keep.sum()), f[keep]], axis=1) / v[keep, None]
        a, b = np.linalg.lstsq(design, np.ones(keep.sum()), rcond=None)[0]
        if b < 0:
            a, b = float(np.median(v[keep])), 0.0
        r = (v - a - b * f) / v
        keep = np.abs(r) < 3 * 1.4826 * np.median(np.abs(r[keep])) + 1e-12
    return float(a), float(b)


def _pars(pars: dict | None) -> dict:
    return {**vconfig.defaults()["zero_point"], **(pars or {})}


def fit_zero_point(sources: Table, excerpt: Table, wcs, filter: str, exptime: float,
                   pars: dict | None = None, *, mjd: float | None = None,
                   background_rms: float | None = None,
                   psf_nea: float | None = None, system: str = "sdss",
                   release: str = "gaia_dr3") -> ZeroPoint:
    """Fit the zero point of an image.

    Parameters
    ----------
    sources : Table
        ``x``, ``y`` (0-based pix), the flux column ``pars["flux_column"]`` and its error
        (``fluxerr_psf`` / ``fluxerr_aper``, e-), optional ``flags``, ``flux_aper_big``.
    excerpt : Table
        Gaia DR3 columns (``phot_g_mean_mag``, ``phot_bp_mean_mag``, ``phot_rp_mean_mag``;
        optional ``phot_g_mean_flux_over_error``, proper motions).
    wcs : astropy WCS or WCSSolution
        The solved WCS of the image.
    filter : str
        Image filter, as the header has it (read per ``system``: :func:`vo.images.photometry.photometric.band`).
    exptime : float
        Exposure time (s); only recorded (``zp`` is for e- over the exposure).
    pars : dict
        The ``zero_point`` config section (missing keys take the schema defaults).
    mjd : float, optional
        Image epoch: Gaia positions are moved there before matching.
    background_rms, psf_nea : float, optional
        Background noise (e-/pix) and PSF noise-equivalent area (pix) for the limiting
        magnitude; without them it comes from the sources' flux errors.
    system, release : the photometric system of the camera and the Gaia release of ``excerpt``
        (:data:`vo.images.photometry.photometric.RELATIONS`).

    Returns
    -------
    ZeroPoint; ``ok=False`` with a reason (no calibration star, no relation for the band) rather
    than an error. Fewer than ``min_stars`` (but at least one) stars give a zero point with its
    error, ``ok`` and the reason "few calibration stars" (flagged, not refused). Where the
    source list says its PSF model failed (``PSF_OK`` false: a cutout too sparse for a PSF),
    the large-aperture fluxes are used instead of the PSF fluxes.
    """
    p = _pars(pars)
    if isinstance(wcs, WCSSolution):
        wcs = wcs.wcs
    fcol = p["flux_column"]
    if fcol == "flux_psf" and not bool(sources.meta.get("PSF_OK", True)) and "flux_aper_big" in sources.colnames:
        fcol = "flux_aper_big"
    ecol = fcol.replace("flux_", "fluxerr_")
    for name in ("x", "y", fcol, ecol):
        if name not in sources.colnames:
            raise ValueError(f"source list has no {name!r} column; columns: {sources.colnames}")
    for name in ("phot_g_mean_mag", "phot_bp_mean_mag", "phot_rp_mean_mag"):
        if name not in excerpt.colnames:
            raise ValueError(f"catalog excerpt has no {name!r} column")
    nan = float("nan")
    try:
        sys_err = transformation_sigma(filter, system, release) if p["sys_error"] is None else float(p["sys_error"])
    except PhotometricError as exc:
        return ZeroPoint(zp=nan, zp_err=nan, colour_term=nan, colour_pivot=float(p["colour_pivot"]), apcor=nan,
                         limmag5=nan, n_stars=0, ok=False, reason=str(exc), filter=str(filter),
                         exptime=float(exptime), meta={"system": system, "release": release})
    flux, ferr = float_column(sources, fcol), float_column(sources, ecol)
    flags = np.nan_to_num(float_column(sources, "flags", 0.0)).astype(np.int64)
    good_src = ((flags & ~1) == 0) & np.isfinite(flux) & (flux > 0) & (ferr > 0)

    si, ci, _ = match_to_catalog(sources, excerpt, wcs, p["match_radius"], mjd)
    g = float_column(excerpt, "phot_g_mean_mag")
    bp_rp = float_column(excerpt, "phot_bp_mean_mag") - float_column(excerpt, "phot_rp_mean_mag")
    g_err = MAG_PER_FLUX / float_column(excerpt, "phot_g_mean_flux_over_error", np.inf)
    g_err = np.nan_to_num(g_err, nan=0.0)
    # the colour's own error through the relation's slope: a faint star's BP-RP (BP and RP S/N
    # ~8 at G = 21: 0.2 mag) put one of three mzlsbass2 stars 0.3 mag off in g and z
    c_err = MAG_PER_FLUX * np.hypot(1 / float_column(excerpt, "phot_bp_mean_flux_over_error", np.inf),
                                    1 / float_column(excerpt, "phot_rp_mean_flux_over_error", np.inf))
    c_err = np.nan_to_num(c_err, nan=0.0)
    snr = flux[si] / ferr[si]
    use = good_src[si] & (snr >= p["min_snr"]) & np.isfinite(g[ci]) & \
        in_valid_range(bp_rp[ci], filter, system, release) & _isolated(excerpt, p["isolation"])[ci]
    si, ci = si[use], ci[use]
    n_cand = len(si)
    meta = dict(n_matched=int(use.size), n_candidates=int(n_cand), sys_error=sys_err,
                flux_column=fcol, system=system, release=release,
                relation=RELATION_NOTES.get((release, system), f"{release} -> {system}"))
    apcor = _aperture_correction(sources, good_src, si, p["apcor_snr"])
    fail = None
    colour_term = p["colour_term"] and n_cand >= max(p["min_stars"], 3)
    flag = None
    if n_cand < 1:
        fail = f"no calibration star ({use.size} matched to the catalog)"
        zp = zp_err = k = np.nan
        n = n_cand
    else:
        m_cat = gaia_to_filter(g[ci], bp_rp[ci], filter, system, release)
        dm = m_cat + 2.5 * np.log10(flux[si])
        m_colour_err = colour_slope(bp_rp[ci], filter, system, release) * c_err[ci]
        sigma = np.sqrt((MAG_PER_FLUX / snr[use]) ** 2 + g_err[ci] ** 2 + m_colour_err ** 2 + sys_err ** 2)
        design = np.ones((n_cand, 1))
        if colour_term:
            design = np.stack([np.ones(n_cand), bp_rp[ci] - p["colour_pivot"]], axis=1)
        coef, cov, keep = _clipped_fit(design, dm, sigma, p["sigma_clip"])
        zp, zp_err = float(coef[0]), float(np.sqrt(cov[0, 0]))
        k = float(coef[1]) if colour_term else 0.0
        n = int(keep.sum())
        resid = dm[keep] - design[keep] @ coef
        meta.update(scatter_mag=float(np.std(resid)),
                    colour_term_err=float(np.sqrt(cov[1, 1])) if colour_term else 0.0)
        if n < p["min_stars"]:  # computed, with its error, and flagged
            flag = f"few calibration stars ({n} < {p['min_stars']}): zp {zp:.3f} +- {zp_err:.3f}"
            meta["few_stars"] = True
    if background_rms is not None and psf_nea is not None:
        f5 = limiting_flux(psf_nea * background_rms ** 2, 1.0)
        meta["limmag_method"] = "background rms x PSF NEA"
    else:
        a, b = _noise_model(flux[good_src], ferr[good_src])
        f5 = limiting_flux(a, b)
        meta["limmag_method"] = "noise model fitted to source flux errors"
    limmag5 = zp - 2.5 * np.log10(f5) if np.isfinite(zp) and f5 > 0 else np.nan
    return ZeroPoint(zp=zp, zp_err=zp_err, colour_term=k, colour_pivot=float(p["colour_pivot"]),
                     apcor=apcor, limmag5=float(limmag5), n_stars=n, ok=fail is None,
                     reason=fail or flag or "", filter=str(filter), exptime=float(exptime), meta=meta)


def _aperture_correction(sources: Table, good: np.ndarray, stars: np.ndarray,
                         min_snr: float) -> float:
    """Clipped median of ``-2.5 log10(flux_aper_big / flux_aper)`` (mag) over bright stars
    (calibration stars, or all good sources when fewer than 3 of those are bright)."""
    if not {"flux_aper", "flux_aper_big", "fluxerr_aper"} <= set(sources.colnames):
        return float("nan")
    small, big = float_column(sources, "flux_aper"), float_column(sources, "flux_aper_big")
    snr = small / float_column(sources, "fluxerr_aper")
    ok = good & (small > 0) & (big > 0) & (snr >= min_snr)
    sel = stars[ok[stars]]
    if len(sel) < 3:
        sel = np.flatnonzero(ok)
    with np.errstate(divide="ignore", invalid="ignore"):
        return _clipped_median(-2.5 * np.log10(big[sel] / small[sel]))


# -- files ---------------------------------------------------------------------------------
def _card(value):
    return float(value) if np.isfinite(value) else None  # FITS headers have no NaN


def _number(value) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else np.nan


def write_zp(path: str | os.PathLike, zp: ZeroPoint, attrs: dict | None = None) -> None:
    """Header-only FITS: ZP, ZP_ERR, ZP_COLT, ZP_CPIV, APCOR, LIMMAG5 (mag; blank when
    undefined), ZP_N, ZP_OK, ZP_MSG, FILTER, EXPTIME, ZP_REL (the Gaia relation used), and
    provenance ``attrs``."""
    primary = fits.PrimaryHDU()
    h = primary.header
    h["ZP"] = (_card(zp.zp), "m = -2.5 log10(flux e- in exposure) + ZP (AB)")
    h["ZP_ERR"] = (_card(zp.zp_err), "zero-point uncertainty (mag)")
    h["ZP_COLT"] = (_card(zp.colour_term), "colour term k (mag/mag of BP-RP)")
    h["ZP_CPIV"] = (_card(zp.colour_pivot), "BP-RP pivot of the colour term (mag)")
    h["APCOR"] = (_card(zp.apcor), "aperture correction big - small aperture (mag)")
    h["LIMMAG5"] = (_card(zp.limmag5), "5-sigma point-source limiting magnitude")
    h["ZP_N"] = (int(zp.n_stars), "calibration stars used")
    h["ZP_OK"] = (bool(zp.ok), "zero point valid")
    h["ZP_MSG"] = (zp.reason or "", "why the fit failed")
    h["FILTER"] = (zp.filter, "filter of the zero point")
    h["EXPTIME"] = (_card(zp.exptime), "exposure time (s)")
    if zp.meta.get("relation"):
        h["ZP_REL"] = (str(zp.meta["relation"])[:60], "Gaia to camera relation")
    write_fits(path, fits.HDUList([primary]), attrs)


def read_zp(path: str | os.PathLike) -> ZeroPoint:
    """Read a file written by :func:`write_zp`."""
    with open_fits(path) as hdul:
        h = hdul[0].header.copy()
    missing = [k for k in ("ZP", "ZP_N", "ZP_OK") if k not in h]
    if missing:
        raise FitsError(f"{path}: missing header keyword(s) {missing} (not a zero-point file)")
    return ZeroPoint(zp=_number(h["ZP"]), zp_err=_number(h.get("ZP_ERR")),
                     colour_term=_number(h.get("ZP_COLT")), colour_pivot=_number(h.get("ZP_CPIV")),
                     apcor=_number(h.get("APCOR")), limmag5=_number(h.get("LIMMAG5")),
                     n_stars=int(h["ZP_N"]), ok=bool(h["ZP_OK"]), reason=str(h.get("ZP_MSG", "")),
                     filter=str(h.get("FILTER", "")), exptime=_number(h.get("EXPTIME")),
                     meta={"relation": str(h["ZP_REL"])} if "ZP_REL" in h else {})
