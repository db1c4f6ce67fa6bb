"""Astrometric solution: match a source list to a Gaia excerpt and fit a TAN-SIP WCS.

Method (all in the tangent plane, arcsec, so no WCS inversion is needed while fitting):

1. Gaia positions are moved to the image epoch with their proper motions (linear in
   time, parallax ignored: below 1 mas for all but the nearest stars).
2. Sources go to the sky through the header WCS (with its own distortion, e.g. TPV or
   SIP) and both lists to the tangent plane at the header's image centre.
3. Offset vote: for trial rotations (a step small enough that the rotation error at the
   image corner stays below half a vote bin) the offsets catalog - rotated source of all
   pairs closer than ``max_offset`` are histogrammed; the strongest 3x3-bin peak gives the
   rotation and pointing offset.  The peak must stand far above the random-pair level.
4. Iterative nearest-neighbour matching (cKDTree, unambiguous one-to-one pairs) and a
   weighted linear least-squares fit of a polynomial ``(xi, eta) = P(x - crpix, y - crpix)``
   with sigma clipping of normalised residuals; the matching radius shrinks to
   ``max(min_radius, 5 rms)``.  The first iteration is linear, later ones use
   ``sip_order`` (lowered when there are too few stars).
5. The tangent point is moved to the fitted position of CRPIX (constant term zero), and the
   polynomial becomes CD (linear part) and SIP A/B (CD^-1 x higher orders), with inverse
   AP/BP fitted on a pixel grid.

We fit our own linear least squares rather than ``astropy.wcs.utils.fit_wcs_from_points``:
the problem is linear once the tangent point is fixed, which makes the fit ~100x faster,
lets us weight stars by their errors and clip outliers inside the loop.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field

import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS, FITSFixedWarning, Sip
from scipy.spatial import cKDTree

from vo import config as vconfig
from vo.images.astrometry.excerpts import footprint_mask
from vo.io.fits import open_fits, write_fits
from vo.sky import gnomonic, inverse_gnomonic


MJD_J2000 = 51544.5
DAYS_PER_YEAR = 365.25


@dataclass
class WCSSolution:
    """Result of :func:`solve_wcs`.

    wcs : astropy WCS (TAN-SIP when ok; the header WCS when not)
    rms_arcsec : 2-D rms of the matched stars' residuals, sqrt(mean(dxi^2 + deta^2)) (arcsec)
    n_stars : matched stars kept by the fit
    ok : quality flag
    reason : why the solution failed (empty when ok)
    matches : (n_stars, 2) int array of (source row, excerpt row)
    meta : extra numbers (offset_arcsec, rotation_deg, sip_order, rms per axis, ...)
    """

    wcs: WCS
    rms_arcsec: float
    n_stars: int
    ok: bool
    reason: str = ""
    matches: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), dtype=np.int64))
    meta: dict = field(default_factory=dict)


# -- small helpers -------------------------------------------------------------------------
def float_column(table: Table, name: str, default: float = np.nan) -> np.ndarray:
    """Plain float array of a table column (masked entries -> NaN), or ``default`` everywhere
    when the column is absent."""
    if name not in table.colnames:
        return np.full(len(table), default, dtype=float)
    col = table[name]
    return np.asarray(col.filled(np.nan) if hasattr(col, "filled") else col, dtype=float)


def mjd_to_year(mjd: float) -> float:
    """Julian epoch (yr) of an MJD."""
    return 2000.0 + (mjd - MJD_J2000) / DAYS_PER_YEAR


def catalog_at_epoch(excerpt: Table, mjd: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positions (deg) of the excerpt's stars at ``mjd`` and their errors (arcsec).

    Linear proper motion from ``ref_epoch`` (default 2016.0); stars without proper motion
    (2-parameter solutions) stay put.  Error = position error and proper-motion error x dt.
    """
    for name in ("ra", "dec"):
        if name not in excerpt.colnames:
            raise ValueError(f"catalog excerpt has no {name!r} column; columns: {excerpt.colnames}")
    ra, dec = float_column(excerpt, "ra"), float_column(excerpt, "dec")
    dt = mjd_to_year(mjd) - np.nan_to_num(float_column(excerpt, "ref_epoch", 2016.0), nan=2016.0)
    pmra = np.nan_to_num(float_column(excerpt, "pmra", 0.0))  # mas/yr, includes cos(dec)
    pmdec = np.nan_to_num(float_column(excerpt, "pmdec", 0.0))
    dec_t = dec + pmdec * dt / 3.6e6
    ra_t = ra + pmra * dt / 3.6e6 / np.cos(np.radians(dec))
    err = np.hypot(np.hypot(np.nan_to_num(float_column(excerpt, "ra_error", 0.0)),
                            np.nan_to_num(float_column(excerpt, "dec_error", 0.0))) / np.sqrt(2),
                   np.hypot(np.nan_to_num(float_column(excerpt, "pmra_error", 0.0)),
                            np.nan_to_num(float_column(excerpt, "pmdec_error", 0.0))) / np.sqrt(2) * dt)
    return ra_t % 360.0, dec_t, err / 1000.0


def _terms(order: int) -> list[tuple[int, int]]:
    """Polynomial terms (p, q) of x^p y^q up to ``order``, constant and linear first."""
    return [(p, n - p) for n in range(order + 1) for p in range(n, -1, -1)]


def _design(u: np.ndarray, v: np.ndarray, order: int, scale: float) -> np.ndarray:
    us, vs = u / scale, v / scale
    return np.stack([us ** p * vs ** q for p, q in _terms(order)], axis=1)


@dataclass
class _Poly:
    """(xi, eta) [arcsec] = sum c_pq (u/scale)^p (v/scale)^q."""

    order: int
    scale: float
    cx: np.ndarray
    cy: np.ndarray

    def __call__(self, u, v) -> tuple[np.ndarray, np.ndarray]:
        a = _design(u, v, self.order, self.scale)
        return a @ self.cx, a @ self.cy

    def raw(self, c: np.ndarray) -> dict[tuple[int, int], float]:
        """Coefficients for unscaled pixel offsets."""
        return {(p, q): c[k] / self.scale ** (p + q) for k, (p, q) in enumerate(_terms(self.order))}


def _solve(a: np.ndarray, rhs: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted linear least squares (normal equations: the design is scaled to [-1, 1], so
    they are well conditioned and much faster than an SVD) for two right-hand sides."""
    aw = a * w[:, None]
    c = np.linalg.solve(aw.T @ aw, aw.T @ (rhs * w[:, None]))
    return c[:, 0], c[:, 1]


def _fit_poly(u, v, xi, eta, sigma, order: int, scale: float, clip: float,
              n_clip: int = 5) -> tuple[_Poly, np.ndarray]:
    """Weighted least squares with sigma clipping of residuals normalised by ``sigma``."""
    a = _design(u, v, order, scale)
    keep = np.ones(len(u), dtype=bool)
    w = 1.0 / sigma
    rhs = np.stack([xi, eta], axis=1)
    for _ in range(n_clip):
        cx, cy = _solve(a[keep], rhs[keep], w[keep])
        rx, ry = (xi - a @ cx) * w, (eta - a @ cy) * w
        std = 1.4826 * np.median(np.abs(np.concatenate([rx[keep], ry[keep]])))
        new = (np.abs(rx) < clip * std) & (np.abs(ry) < clip * std)
        if np.array_equal(new, keep) or new.sum() < a.shape[1] + 2:
            break
        keep = new
    return _Poly(order, scale, cx, cy), keep


def _rotate(x: np.ndarray, theta_deg: float) -> np.ndarray:
    t = np.radians(theta_deg)
    c, s = np.cos(t), np.sin(t)
    return np.stack([c * x[:, 0] - s * x[:, 1], s * x[:, 0] + c * x[:, 1]], axis=1)


def _vote(src: np.ndarray, cat: np.ndarray, max_offset: float, max_rotation: float,
          bin_size: float, radius: float) -> tuple[float, np.ndarray, int, float]:
    """Rotation (deg), offset (arcsec, catalog - rotated source), peak count and the
    expected random count in the peak window, from histograms of pair offsets."""
    step = np.degrees(bin_size / max(radius, bin_size))
    n_rot = int(np.ceil(max_rotation / step)) if max_rotation > 0 else 0
    thetas = np.arange(-n_rot, n_rot + 1) * step
    nb = int(np.ceil(2 * max_offset / bin_size))
    edges = (np.arange(nb + 1) - nb / 2) * bin_size
    cat_tree = cKDTree(cat)
    best = (0.0, np.zeros(2), -1, 0.0)
    for theta in thetas:
        rs = _rotate(src, theta)
        pairs = cKDTree(rs).sparse_distance_matrix(cat_tree, max_offset, output_type="ndarray")
        if len(pairs) == 0:
            continue
        d = cat[pairs["j"]] - rs[pairs["i"]]
        h, _, _ = np.histogram2d(d[:, 0], d[:, 1], bins=[edges, edges])
        h3 = sum(np.roll(np.roll(h, i, 0), j, 1) for i in (-1, 0, 1) for j in (-1, 0, 1))
        k = np.unravel_index(np.argmax(h3), h3.shape)
        if h3[k] > best[2]:
            centre = np.array([edges[k[0]], edges[k[1]]]) + bin_size / 2
            near = np.all(np.abs(d - centre) < 1.5 * bin_size, axis=1)
            expected = len(d) * 9.0 * bin_size ** 2 / (np.pi * max_offset ** 2)
            best = (float(theta), np.median(d[near], axis=0), int(h3[k]), expected)
    return best


def _match(pred: np.ndarray, tree: cKDTree, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one, unambiguous nearest-neighbour pairs (source index, catalog index)."""
    dist, idx = tree.query(pred, k=2, distance_upper_bound=radius)
    ok = np.isfinite(dist[:, 0]) & ~np.isfinite(dist[:, 1])  # exactly one candidate
    src = np.flatnonzero(ok)
    cat = idx[ok, 0]
    order = np.argsort(dist[ok, 0])
    _, first = np.unique(cat[order], return_index=True)  # closest source per catalog star
    sel = order[first]
    return src[sel], cat[sel]


def _image_shape(header: fits.Header, sources: Table, shape) -> tuple[int, int]:
    if shape is not None:
        return int(shape[0]), int(shape[1])
    for kx, ky in (("NAXIS1", "NAXIS2"), ("ZNAXIS1", "ZNAXIS2"), ("IMAGEW", "IMAGEH")):
        if header.get(kx, 0) and header.get(ky, 0):
            return int(header[ky]), int(header[kx])
    return int(np.nanmax(sources["y"])) + 1, int(np.nanmax(sources["x"])) + 1


def _failure(wcs: WCS, reason: str, n: int = 0, rms: float = np.nan, **meta) -> WCSSolution:
    return WCSSolution(wcs=wcs, rms_arcsec=float(rms), n_stars=int(n), ok=False, reason=reason,
                       meta=meta)


def _pars(pars: dict | None) -> dict:
    return {**vconfig.defaults()["astrometry"], **(pars or {})}


# -- the solver ----------------------------------------------------------------------------
def solve_wcs(sources: Table, excerpt: Table, header: fits.Header, mjd: float,
              pars: dict | None = None, shape: tuple[int, int] | None = None) -> WCSSolution:
    """Fit a TAN-SIP WCS of an image from its sources and a Gaia excerpt.

    Parameters
    ----------
    sources : Table
        Columns ``x``, ``y`` (0-based pix); optional ``xerr``, ``yerr`` (pix), ``flags``
        (rows with flags other than the sep "deblended" bit 1 are not used), and one of
        ``snr``, ``flux_psf``, ``flux_aper`` (brightness ranking for the vote).
    excerpt : Table
        Gaia DR3 columns: ``ra``, ``dec`` (deg), ``phot_g_mean_mag``; optional ``pmra``,
        ``pmdec`` (mas/yr), ``ref_epoch`` (yr), ``ra_error``, ``dec_error`` (mas),
        ``pmra_error``, ``pmdec_error`` (mas/yr).
    header : Header
        Header with the initial WCS of the image's pixel grid.
    mjd : float
        Epoch of the image (MJD) for the proper motions.
    pars : dict
        The ``astrometry`` config section (missing keys take the schema defaults).
    shape : (ny, nx), optional
        Image size; default NAXIS1/2 of ``header``, else the sources' extent.

    Returns
    -------
    WCSSolution; ``ok=False`` with a ``reason`` (no overlap, no significant match, too few
    stars, rms too large) instead of an exception.
    """
    p = _pars(pars)
    for name in ("x", "y"):
        if name not in sources.colnames:
            raise ValueError(f"source list has no {name!r} column; columns: {sources.colnames}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        try:
            w0 = WCS(header).celestial
        except Exception as exc:  # astropy raises many kinds for broken WCS keywords
            return _failure(WCS(naxis=2), f"header WCS unusable: {exc}")
    if not w0.has_celestial or w0.naxis != 2:
        return _failure(w0, "header has no celestial WCS")
    ny, nx = _image_shape(header, sources, shape)
    w0.pixel_shape = (nx, ny)
    crpix = np.array([(nx - 1) / 2.0, (ny - 1) / 2.0])  # 0-based centre of the image
    ra0, dec0 = (float(v[0]) for v in w0.all_pix2world([crpix[0]], [crpix[1]], 0))
    ra0 %= 360.0

    # sources: usable rows, header-WCS tangent-plane positions (arcsec)
    x, y = float_column(sources, "x"), float_column(sources, "y")
    flags = np.nan_to_num(float_column(sources, "flags", 0.0)).astype(np.int64)
    good = np.isfinite(x) & np.isfinite(y) & ((flags & ~1) == 0)
    gi = np.flatnonzero(good)
    if len(gi) < p["min_stars"]:
        return _failure(w0, f"too few usable sources ({len(gi)} < {p['min_stars']})")
    sra, sdec = w0.all_pix2world(x[gi], y[gi], 0)
    s = np.stack(gnomonic(sra, sdec, ra0, dec0), axis=1) * 3600.0
    bright = next((float_column(sources, c)[gi] for c in ("snr", "flux_psf", "flux_aper")
                   if c in sources.colnames), np.zeros(len(gi)))
    pixscale = float(np.sqrt(abs(np.linalg.det(w0.pixel_scale_matrix)))) * 3600.0
    serr = pixscale * np.hypot(float_column(sources, "xerr", 0.05)[gi],
                               float_column(sources, "yerr", 0.05)[gi]) / np.sqrt(2)

    # catalog: at the image epoch, inside the footprint grown by the largest offset
    cra, cdec, cerr = catalog_at_epoch(excerpt, mjd)
    corners = w0.all_pix2world(np.array([[-0.5, -0.5], [nx - 0.5, -0.5], [nx - 0.5, ny - 0.5],
                                         [-0.5, ny - 0.5]]), 0)
    inside = np.isfinite(cra) & np.isfinite(cdec) & \
        footprint_mask(cra, cdec, corners, p["max_offset"] + p["match_radius"])
    ci = np.flatnonzero(inside)
    if len(ci) < p["min_stars"]:
        return _failure(w0, f"no overlap: {len(ci)} catalog stars within the image footprint "
                            f"(+{p['max_offset']}\") of the header WCS")
    c = np.stack(gnomonic(cra[ci], cdec[ci], ra0, dec0), axis=1) * 3600.0
    gmag = np.nan_to_num(float_column(excerpt, "phot_g_mean_mag")[ci], nan=99.0)

    # 1. offset vote on the brightest objects
    sb = np.argsort(-np.nan_to_num(bright, nan=-np.inf))[:p["n_vote"]]
    cb = np.argsort(gmag)[:p["n_vote"]]
    radius_img = 0.5 * np.hypot(nx, ny) * pixscale
    theta, offset, peak, expected = _vote(s[sb], c[cb], p["max_offset"], p["max_rotation"],
                                          p["vote_bin"], radius_img)
    vote = dict(rotation_deg=theta, offset_arcsec=[float(o) for o in offset], vote_peak=peak,
                vote_random=round(expected, 2))
    if peak < max(p["min_stars"], expected + 5 * np.sqrt(expected) + 3):
        return _failure(w0, f"no significant match: offset-vote peak {peak} pairs (random "
                            f"level {expected:.1f}) within {p['max_offset']}\"", **vote)

    # 2. iterative matching and polynomial fits in the tangent plane
    u, v = x[gi] - crpix[0], y[gi] - crpix[1]
    scale = 0.5 * max(nx, ny)
    pred = _rotate(s, theta) + offset
    tree = cKDTree(c)
    radius = float(p["match_radius"])
    sigma_all = np.sqrt(serr ** 2 + p["error_floor"] ** 2)
    poly, keep, si, cj = None, None, None, None
    for it in range(int(p["n_iter"])):
        si, cj = _match(pred, tree, radius)
        n = len(si)
        if n < p["min_stars"]:
            return _failure(w0, f"too few matched stars ({n} < {p['min_stars']}) within "
                                f"{radius:.2f}\" at iteration {it + 1}", n=n, **vote)
        order = 1 if it == 0 else _usable_order(int(p["sip_order"]), n)
        sigma = np.sqrt(sigma_all[si] ** 2 + cerr[cj] ** 2)
        poly, keep = _fit_poly(u[si], v[si], c[cj, 0], c[cj, 1], sigma, max(order, 1), scale,
                               p["clip_sigma"])
        pred = np.stack(poly(u, v), axis=1)
        res = pred[si[keep]] - c[cj[keep]]
        rms = float(np.sqrt(np.mean(np.sum(res ** 2, axis=1))))
        radius = max(float(p["min_radius"]), 5.0 * rms)

    # 3. tangent point at CRPIX, then CD + SIP
    si, cj = si[keep], cj[keep]
    sigma = np.sqrt(sigma_all[si] ** 2 + cerr[cj] ** 2)
    tra, tdec = ra0, dec0
    for _ in range(2):
        tra, tdec = (float(v_) for v_ in inverse_gnomonic(poly.cx[0] / 3600.0,
                                                          poly.cy[0] / 3600.0, tra, tdec))
        ct = np.stack(gnomonic(cra[ci][cj], cdec[ci][cj], tra, tdec), axis=1) * 3600.0
        poly = _Poly(poly.order, scale,
                     *_solve(_design(u[si], v[si], poly.order, scale), ct, 1.0 / sigma))
    px, py = poly(u[si], v[si])
    res = np.stack([px - ct[:, 0], py - ct[:, 1]], axis=1)
    rms = float(np.sqrt(np.mean(np.sum(res ** 2, axis=1))))
    wcs = _build_wcs(poly, tra, tdec, crpix, nx, ny)
    n = len(si)
    meta = dict(vote, sip_order=poly.order if poly.order >= 2 else 0,
                rms_ra_arcsec=float(np.std(res[:, 0])), rms_dec_arcsec=float(np.std(res[:, 1])),
                n_matched=int(len(keep)), n_catalog=int(len(ci)), n_sources=int(len(gi)))
    matches = np.stack([gi[si], ci[cj]], axis=1).astype(np.int64)
    ok, reason = True, ""
    if n < p["min_stars"]:
        ok, reason = False, f"too few stars after clipping ({n} < {p['min_stars']})"
    elif not rms <= p["max_rms"]:
        ok, reason = False, f"rms {rms:.3f}\" above astrometry.max_rms={p['max_rms']}\""
    return WCSSolution(wcs=wcs, rms_arcsec=rms, n_stars=n, ok=ok, reason=reason,
                       matches=matches, meta=meta)


def _usable_order(order: int, n: int) -> int:
    """Highest order <= ``order`` with at least 3 stars per polynomial term."""
    while order > 1 and n < 3 * len(_terms(order)):
        order -= 1
    return max(order, 1)


def _build_wcs(poly: _Poly, ra0: float, dec0: float, crpix: np.ndarray, nx: int,
               ny: int) -> WCS:
    """TAN(-SIP) WCS from the tangent-plane polynomial (constant term dropped: ~0)."""
    cx, cy = poly.raw(poly.cx), poly.raw(poly.cy)
    m = np.array([[cx[(1, 0)], cx[(0, 1)]], [cy[(1, 0)], cy[(0, 1)]]])  # arcsec / pix
    sip = poly.order >= 2
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN-SIP", "DEC--TAN-SIP"] if sip else ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crpix = crpix + 1.0
    wcs.wcs.crval = [ra0, dec0]
    wcs.wcs.cunit = ["deg", "deg"]
    wcs.wcs.cd = m / 3600.0
    if sip:
        minv = np.linalg.inv(m)
        a = np.zeros((poly.order + 1, poly.order + 1))
        b = np.zeros_like(a)
        for pq in _terms(poly.order):
            if sum(pq) >= 2:
                a[pq], b[pq] = minv @ np.array([cx[pq], cy[pq]])
        ap, bp = _inverse_sip(a, b, crpix, nx, ny)
        wcs.sip = Sip(a, b, ap, bp, wcs.wcs.crpix)
    wcs.wcs.set()
    wcs.pixel_shape = (nx, ny)
    return wcs


def _inverse_sip(a: np.ndarray, b: np.ndarray, crpix: np.ndarray, nx: int,
                 ny: int) -> tuple[np.ndarray, np.ndarray]:
    """Inverse SIP polynomials AP, BP (one order higher) fitted on a pixel grid."""
    gx, gy = np.meshgrid(np.linspace(-0.5, nx - 0.5, 25) - crpix[0],
                         np.linspace(-0.5, ny - 0.5, 25) - crpix[1])
    u, v = gx.ravel(), gy.ravel()
    order = a.shape[0] - 1
    fu = u + np.polynomial.polynomial.polyval2d(u, v, a)
    fv = v + np.polynomial.polynomial.polyval2d(u, v, b)
    inv_order = order + 1
    terms = [pq for pq in _terms(inv_order) if sum(pq) >= 1]
    scale = 0.5 * max(nx, ny)
    design = np.stack([(fu / scale) ** p * (fv / scale) ** q for p, q in terms], axis=1)
    cu, cv = _solve(design, np.stack([u - fu, v - fv], axis=1), np.ones(len(u)))
    ap = np.zeros((inv_order + 1, inv_order + 1))
    bp = np.zeros_like(ap)
    for k, (p, q) in enumerate(terms):
        ap[p, q], bp[p, q] = cu[k] / scale ** (p + q), cv[k] / scale ** (p + q)
    return ap, bp


# -- files ---------------------------------------------------------------------------------
def _header_number(value) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else np.nan


def write_wcs(path: str | os.PathLike, sol: WCSSolution, attrs: dict | None = None) -> None:
    """Header-only FITS: the WCS keywords plus ASTR_OK, ASTR_RMS (arcsec; blank if
    undefined), ASTR_N, ASTR_MSG, IMAGEW/IMAGEH and provenance ``attrs``."""
    hdr = sol.wcs.to_header(relax=True)
    primary = fits.PrimaryHDU()
    primary.header.extend(hdr, update=True)
    if sol.wcs.pixel_shape is not None:
        primary.header["IMAGEW"] = (int(sol.wcs.pixel_shape[0]), "image width (pix)")
        primary.header["IMAGEH"] = (int(sol.wcs.pixel_shape[1]), "image height (pix)")
    primary.header["ASTR_OK"] = (bool(sol.ok), "astrometric solution valid")
    primary.header["ASTR_RMS"] = (float(sol.rms_arcsec) if np.isfinite(sol.rms_arcsec) else None,
                                  "rms of matched stars (arcsec)")
    primary.header["ASTR_N"] = (int(sol.n_stars), "matched stars in the fit")
    primary.header["ASTR_MSG"] = (sol.reason or "", "why the solution failed")
    write_fits(path, fits.HDUList([primary]), attrs)


def read_wcs(path: str | os.PathLike) -> WCSSolution:
    """Read a file written by :func:`write_wcs` (``matches`` are not stored: empty)."""
    with open_fits(path) as hdul:
        hdr = hdul[0].header.copy()
    for key in ("ASTR_OK", "ASTR_N"):
        if key not in hdr:
            from vo.io.fits import FitsError
            raise FitsError(f"{path}: missing header keyword {key} (not an astrometry file)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        wcs = WCS(hdr, naxis=2)
    if hdr.get("IMAGEW") and hdr.get("IMAGEH"):
        wcs.pixel_shape = (int(hdr["IMAGEW"]), int(hdr["IMAGEH"]))
    return WCSSolution(wcs=wcs, rms_arcsec=_header_number(hdr.get("ASTR_RMS")),
                       n_stars=int(hdr["ASTR_N"]), ok=bool(hdr["ASTR_OK"]),
                       reason=str(hdr.get("ASTR_MSG", "")))
