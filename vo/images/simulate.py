"""DemoCam: a simulated multi-CCD camera whose raw exposures look like a real survey's.

Each exposure is a multi-extension FITS file (one ``uint16`` HDU per CCD) with, per CCD, two
amplifiers (left half A, right half B), each with its own gain (e-/ADU), read noise (e-),
bias level and overscan columns (A's on the left edge, B's on the right edge)::

    | BIASSECA | DATASECA | DATASECB | BIASSECB |     (overscan_columns wide each)

What goes into a CCD (all in electrons before the conversion to ADU):

* stars of a Gaia-like catalog (:func:`gaia_catalog`, Gaia DR3 column names and units)
  moved to the exposure epoch with their proper motions (parallax ignored), with magnitudes
  in the camera filter from :func:`vo.images.photometric.gaia_to_filter` plus a fixed
  per-star scatter (``colour_scatter``); a fraction of them are variable stars;
* transients: point sources absent from the catalog (fixed sky positions per field, absent
  from the first ``reference_epochs`` exposures of a field and filter) whose flux gives an
  expected S/N drawn log-uniformly from ``transient_snr``;
* a Moffat PSF (``moffat_beta``) whose FWHM is drawn per exposure from ``seeing_fwhm`` and
  grows by ``psf_variation`` (fraction) towards the focal-plane corners;
* sky (``sky_brightness``, mag/arcsec^2), all multiplied by the flat-field pattern
  (pixel-to-pixel, large-scale and vignetting; median 1 per CCD), Poisson and read noise;
* saturation with bleed trails along columns, cosmic rays, dead and hot (bad) columns;
* bias: a level per amplifier, row structure (per exposure, also in the overscan) and a fixed
  slope across each amplifier (data region only, removed by a master bias).

The photometric truth: a source of magnitude ``m`` gives ``flux = 10**(-0.4 (m - zp))`` e-
in the exposure, with ``zp = zero_point[filter] + 2.5 log10(exptime) - extinction[filter]
(airmass - 1) - transparency``; each star's stamp is the Moffat integrated over its pixels,
normalised to that total flux (the far wings beyond the stamp, 0.13% of it, are dropped).  After
overscan, bias, flat (normalised to median 1) and gain correction, ``zp`` is the zero point
``m = -2.5 log10(flux_e) + zp`` of every CCD of the exposure.

Astrometric truth: each CCD has a TAN-SIP WCS (cubic radial distortion about the optical
axis, camera rotation ``rotation``); the raw header carries the same model but with the
pointing offset by up to ``pointing_error`` arcsec and the rotation by up to
``rotation_error`` deg.  The truth table (:func:`write_truth`) holds every source with true
ra, dec, x, y (0-based, in the TRIMMED data-region grid of its CCD), flux (e-), mag, kind;
per CCD the zero point, FWHM, sky, gains, bias levels and header offsets; the true WCS of
each CCD (trimmed grid; the raw header's WCS is for the untrimmed grid, CRPIX1 shifted by
the overscan width); and the cosmic-ray pixels.

Everything is deterministic for ``DemoCam.seed``: each random stream is seeded from the seed
and a name (exposure, CCD, field) through SHA-256 (:func:`rng_for`).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table, vstack
from astropy.time import Time
from astropy.wcs import WCS

from vo.images.instruments.base import format_section
from vo.io.fits import open_fits, write_fits

INSTRUMENT = "DemoCam"
AMPS = ("A", "B")
_EXPOSURE_RE = re.compile(r"^dc_f(\d{2,})_([A-Za-z0-9]+)_(\d{3,})$")
_BIAS_RE = re.compile(r"^dc_bias_(\d{3,})$")
_FLAT_RE = re.compile(r"^dc_flat_([A-Za-z0-9]+)_(\d{3,})$")
#: Gaia-like catalog columns (Gaia DR3 names; units in :data:`GAIA_UNITS`).
GAIA_COLUMNS = ("source_id", "ra", "dec", "ra_error", "dec_error", "pmra", "pmdec", "pmra_error",
                "pmdec_error", "parallax", "parallax_error", "ref_epoch", "phot_g_mean_mag",
                "phot_bp_mean_mag", "phot_rp_mean_mag", "phot_g_mean_flux_over_error",
                "phot_bp_mean_flux_over_error", "phot_rp_mean_flux_over_error", "bp_rp")
GAIA_UNITS = {"ra": "deg", "dec": "deg", "ra_error": "mas", "dec_error": "mas", "pmra": "mas / yr",
              "pmdec": "mas / yr", "pmra_error": "mas / yr", "pmdec_error": "mas / yr",
              "parallax": "mas", "parallax_error": "mas", "ref_epoch": "yr",
              "phot_g_mean_mag": "mag", "phot_bp_mean_mag": "mag", "phot_rp_mean_mag": "mag",
              "bp_rp": "mag"}
GAIA_EPOCH = 2016.0


# -- names and seeds -------------------------------------------------------------------
def rng_for(seed: int, *names) -> np.random.Generator:
    """Random generator seeded from ``seed`` and ``names`` (SHA-256; stable across runs)."""
    digest = hashlib.sha256("|".join([str(seed), *map(str, names)]).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "little"))


def ccd_names(cfg: dict) -> list[str]:
    """CCD (section) names ``C01``, ``C02``, ..."""
    return [f"C{i + 1:02d}" for i in range(cfg["DemoCam"]["n_ccds"])]


def exposure_name(field: int, filt: str, index: int) -> str:
    return f"dc_f{field:02d}_{filt}_{index:03d}"


def science_exposure_names(cfg: dict) -> list[str]:
    """Every simulated science exposure: ``n_exposures`` epochs per field and filter."""
    p = cfg["DemoCam"]
    return [exposure_name(f, filt, k) for f in range(len(p["fields"])) for filt in p["filters"]
            for k in range(p["n_exposures"])]


def calibration_names(cfg: dict) -> dict:
    """``{"bias": ["dc_bias_000", ...], "flat": {filter: ["dc_flat_r_000", ...]}}``."""
    p = cfg["DemoCam"]
    return {"bias": [f"dc_bias_{k:03d}" for k in range(p["n_bias"])],
            "flat": {f: [f"dc_flat_{f}_{k:03d}" for k in range(p["n_flats"])] for f in p["filters"]}}


def parse_exposure(cfg: dict, name: str) -> tuple[int, str, int]:
    """``(field, filter, index)`` of a science exposure name like ``"dc_f00_r_000"``."""
    m = _EXPOSURE_RE.match(name)
    p = cfg["DemoCam"]
    if not m:
        raise ValueError(f"DemoCam exposure {name!r}: expected a name like 'dc_f00_r_000'")
    field, filt, index = int(m.group(1)), m.group(2), int(m.group(3))
    if field >= len(p["fields"]) or filt not in p["filters"] or index >= p["n_exposures"]:
        raise ValueError(f"DemoCam exposure {name!r} is not simulated by this config "
                         f"({len(p['fields'])} fields, filters {p['filters']}, "
                         f"{p['n_exposures']} exposures each)")
    return field, filt, index


def exposure_filter(cfg: dict, name: str) -> str:
    """Filter of a DemoCam science or flat exposure (``""`` for a bias)."""
    if _BIAS_RE.match(name):
        return ""
    m = _FLAT_RE.match(name)
    if m:
        return m.group(1)
    return parse_exposure(cfg, name)[1]


def mjd_to_year(mjd) -> np.ndarray:
    """Julian year of an MJD."""
    return 2000.0 + (np.asarray(mjd, dtype=float) - 51544.5) / 365.25


# -- focal plane and WCS ---------------------------------------------------------------
@dataclass(frozen=True)
class CCDGeometry:
    """Where a CCD's data region lies on the focal plane (pixels, 0-based)."""

    name: str
    index: int
    x0: int  # focal-plane x of data pixel (0, 0)
    y0: int
    ny: int
    nx: int


@dataclass(frozen=True)
class FocalPlane:
    ccds: tuple[CCDGeometry, ...]
    axis_x: float  # optical axis, focal-plane pixels
    axis_y: float
    r_max: float   # distance of the farthest data pixel from the axis (pix)
    gap: int


def focal_plane(cfg: dict) -> FocalPlane:
    """CCDs on a grid (gap ``ccd_gap`` pixels), optical axis at the grid centre."""
    p = cfg["DemoCam"]
    ny, nx = p["ccd_shape"]
    n = p["n_ccds"]
    gap = p["ccd_gap"]
    ncol = max(1, math.ceil(math.sqrt(n * ny / nx)))
    ncol = min(ncol, n)
    nrow = math.ceil(n / ncol)
    ccds = tuple(CCDGeometry(name, i, (i % ncol) * (nx + gap), (i // ncol) * (ny + gap), ny, nx)
                 for i, name in enumerate(ccd_names(cfg)))
    width, height = ncol * nx + (ncol - 1) * gap, nrow * ny + (nrow - 1) * gap
    ax, ay = (width - 1) / 2.0, (height - 1) / 2.0
    return FocalPlane(ccds, ax, ay, math.hypot(width / 2.0, height / 2.0), gap)


def distortion_k(cfg: dict) -> float:
    """Cubic radial distortion coefficient (pix^-2): displacement ``k r^3`` (pix) at ``r`` pix."""
    p = cfg["DemoCam"]
    r = 900.0 / p["pixel_scale"]  # 0.25 deg in pixels
    return (p["distortion"] / p["pixel_scale"]) / r ** 3


def wcs_header(cfg: dict, crpix: tuple[float, float], ra: float, dec: float, rot_deg: float) -> fits.Header:
    """TAN-SIP WCS cards (1-based ``crpix``; rotation ``rot_deg`` east of north; cubic radial SIP)."""
    scale = cfg["DemoCam"]["pixel_scale"] / 3600.0
    t = math.radians(rot_deg)
    k = distortion_k(cfg)
    h = fits.Header()
    h["WCSAXES"] = 2
    h["CTYPE1"], h["CTYPE2"] = "RA---TAN-SIP", "DEC--TAN-SIP"
    h["CUNIT1"], h["CUNIT2"] = "deg", "deg"
    h["CRPIX1"], h["CRPIX2"] = float(crpix[0]), float(crpix[1])
    h["CRVAL1"], h["CRVAL2"] = float(ra % 360.0), float(dec)
    h["CD1_1"], h["CD1_2"] = -scale * math.cos(t), scale * math.sin(t)
    h["CD2_1"], h["CD2_2"] = scale * math.sin(t), scale * math.cos(t)
    h["RADESYS"], h["EQUINOX"] = "ICRS", 2000.0
    h["A_ORDER"], h["B_ORDER"] = 3, 3
    for key in ("A_3_0", "A_1_2", "B_2_1", "B_0_3"):
        h[key] = k
    return h


def ccd_wcs_header(cfg: dict, fp: FocalPlane, ccd: CCDGeometry, ra: float, dec: float,
                   rot_deg: float, x_offset: int = 0) -> fits.Header:
    """WCS of a CCD's data region; ``x_offset`` shifts it to a grid with that many columns
    before the data (the raw section's overscan)."""
    crpix = (fp.axis_x - ccd.x0 + 1.0 + x_offset, fp.axis_y - ccd.y0 + 1.0)
    return wcs_header(cfg, crpix, ra, dec, rot_deg)


def offset_radec(ra: float, dec: float, dx_arcsec: float, dy_arcsec: float) -> tuple[float, float]:
    """Position offset by (east, north) arcsec on the tangent plane."""
    from astropy.coordinates import SkyCoord
    import astropy.units as u
    c = SkyCoord(ra * u.deg, dec * u.deg).spherical_offsets_by(dx_arcsec * u.arcsec, dy_arcsec * u.arcsec)
    return float(c.ra.deg), float(c.dec.deg)


# -- the exposure plan (everything random that is per exposure) ------------------------
def exposure_plan(cfg: dict, exposure: str) -> dict:
    """Observing conditions of a science exposure (deterministic for the seed)."""
    p = cfg["DemoCam"]
    field, filt, index = parse_exposure(cfg, exposure)
    rng = rng_for(p["seed"], exposure, "plan")
    ra0, dec0 = p["fields"][field]
    fwhm = rng.uniform(*p["seeing_fwhm"])
    airmass = rng.uniform(1.0, 1.6)
    transparency = rng.uniform(0.0, 0.05)
    exptime = float(p["exptime"])
    zp = (p["zero_point"][filt] + 2.5 * math.log10(exptime)
          - p["extinction"][filt] * (airmass - 1.0) - transparency)
    sky_mag = p["sky_brightness"][filt] + rng.normal(0.0, 0.15)
    sky = 10 ** (-0.4 * (sky_mag - p["zero_point"][filt] - 2.5 * math.log10(exptime))) * p["pixel_scale"] ** 2
    r, a = p["dither"] * math.sqrt(rng.uniform()), rng.uniform(0, 2 * math.pi)
    ra, dec = offset_radec(ra0, dec0, r * math.cos(a), r * math.sin(a))
    r, a = p["pointing_error"] * math.sqrt(rng.uniform()), rng.uniform(0, 2 * math.pi)
    d_east, d_north = r * math.cos(a), r * math.sin(a)
    hra, hdec = offset_radec(ra, dec, d_east, d_north)
    drot = rng.uniform(-p["rotation_error"], p["rotation_error"])
    mjd = (p["start_mjd"] + index * p["cadence"] + 0.01 * field
           + 0.02 * p["filters"].index(filt) + rng.uniform(0.0, 0.2))
    return {"exposure": exposure, "field": field, "filter": filt, "index": index, "mjd": mjd,
            "exptime": exptime, "airmass": airmass, "fwhm": fwhm, "zp": zp, "sky": sky,
            "sky_mag": sky_mag, "ra": ra, "dec": dec, "rotation": p["rotation"],
            "header_ra": hra, "header_dec": hdec, "header_rotation": p["rotation"] + drot,
            "offset_east": d_east, "offset_north": d_north, "offset_rotation": drot}


# -- the Gaia-like catalog -------------------------------------------------------------
def _pars_key(cfg: dict) -> str:
    return json.dumps(cfg["DemoCam"], sort_keys=True)


def field_radius(cfg: dict) -> float:
    """Radius (deg) around a field centre covered by its catalog and transients."""
    p = cfg["DemoCam"]
    fp = focal_plane(cfg)
    return (fp.r_max * p["pixel_scale"] + p["dither"] + p["pointing_error"] + 60.0) / 3600.0


@lru_cache(maxsize=4)
def _field_sources(key: str, field: int) -> Table:
    """Stars of one field: Gaia columns plus hidden truth (``colour_offset_*``, variability)."""
    p = json.loads(key)
    ra0, dec0 = p["fields"][field]
    rng = rng_for(p["seed"], f"field{field}", "stars")
    half = field_radius({"DemoCam": p})
    area = (2 * half * 60.0) ** 2  # arcmin^2 of the square tangent-plane patch
    n = rng.poisson(p["star_density"] * area)
    xi, eta = rng.uniform(-half, half, n), rng.uniform(-half, half, n)
    ra, dec = _tan_to_radec(ra0, dec0, xi, eta)
    gmin, gmax = p["gaia_mag_range"]
    slope = 0.3  # dex per mag: star counts at intermediate latitude
    u = rng.uniform(size=n)
    g = np.log10(10 ** (slope * gmin) + u * (10 ** (slope * gmax) - 10 ** (slope * gmin))) / slope
    bp_rp = np.clip(rng.normal(1.0, 0.4, n), 0.2, 3.0)
    rp = g - (0.05 + 0.53 * bp_rp)
    bp = rp + bp_rp
    sig_pos = 0.02 * 10 ** (0.2 * (np.maximum(g, 13.0) - 13.0))  # mas
    sig_g = 0.0003 * 10 ** (0.2 * (np.maximum(g, 13.0) - 13.0))  # mag
    t = Table()
    from astropy_healpix import HEALPix
    hp = HEALPix(nside=4096, order="nested")
    import astropy.units as au
    pix = hp.lonlat_to_healpix(ra * au.deg, dec * au.deg).astype(np.int64)
    t["source_id"] = pix * 34359738368 + np.arange(n, dtype=np.int64) + field * 1_000_000
    t["ra"], t["dec"] = ra, dec
    t["ra_error"], t["dec_error"] = sig_pos, sig_pos
    t["pmra"], t["pmdec"] = rng.normal(-2.0, 6.0, n), rng.normal(-4.0, 6.0, n)
    t["pmra_error"], t["pmdec_error"] = 1.2 * sig_pos, 1.2 * sig_pos
    t["parallax"] = np.abs(rng.normal(0.4, 0.5, n)) + 0.02
    t["parallax_error"] = 1.3 * sig_pos
    t["ref_epoch"] = np.full(n, GAIA_EPOCH)
    t["phot_g_mean_mag"], t["phot_bp_mean_mag"], t["phot_rp_mean_mag"] = g, bp, rp
    t["phot_g_mean_flux_over_error"] = 1.0857 / sig_g
    t["phot_bp_mean_flux_over_error"] = 1.0857 / (5 * sig_g)
    t["phot_rp_mean_flux_over_error"] = 1.0857 / (5 * sig_g)
    t["bp_rp"] = bp_rp
    # hidden truth: per-star offset from the colour transformation, variability
    for f in sorted(set(p["filters"]) | {"g", "r", "i"}):
        t[f"colour_offset_{f}"] = rng.normal(0.0, p["colour_scatter"], n)
    var = rng.uniform(size=n) < p["variable_fraction"]
    t["var_amplitude"] = np.where(var, rng.uniform(*p["variable_amplitude"], n), 0.0)
    t["var_period"] = np.exp(rng.uniform(math.log(0.3), math.log(30.0), n))
    t["var_phase"] = rng.uniform(0.0, 1.0, n)
    return t


def gaia_catalog(cfg: dict) -> Table:
    """The Gaia-like catalog of every DemoCam field (Gaia DR3 column names and units).

    Positions are at ``ref_epoch`` (2016.0) and are the true ones (the quoted errors are not
    applied); the simulation moves them to each exposure's epoch with ``pmra``/``pmdec``.
    """
    key = _pars_key(cfg)
    tables = [_field_sources(key, f)[list(GAIA_COLUMNS)] for f in range(len(cfg["DemoCam"]["fields"]))]
    t = vstack(tables, metadata_conflicts="silent") if len(tables) > 1 else tables[0].copy()
    for col, unit in GAIA_UNITS.items():
        t[col].unit = unit
    t.meta.update({"CATALOG": "DemoCam Gaia-like (Gaia DR3 columns)", "EPOCH": GAIA_EPOCH})
    return t


def _tan_to_radec(ra0, dec0, xi, eta):
    """Gnomonic (TAN) de-projection: standard coordinates (deg) about (ra0, dec0) -> ra, dec (deg)."""
    a0, d0 = np.radians(ra0), np.radians(dec0)
    x, y = np.radians(xi), np.radians(eta)
    den = np.cos(d0) - y * np.sin(d0)
    ra = a0 + np.arctan2(x, den)
    dec = np.arctan2(np.sin(d0) + y * np.cos(d0), np.hypot(x, den))
    return np.degrees(ra) % 360.0, np.degrees(dec)


@lru_cache(maxsize=4)
def _field_transients(key: str, field: int) -> Table:
    """Transient positions of a field (fixed on the sky; absent from the catalog)."""
    p = json.loads(key)
    cfg = {"DemoCam": p}
    ra0, dec0 = p["fields"][field]
    rng = rng_for(p["seed"], f"field{field}", "transients")
    fp = focal_plane(cfg)
    n = p["n_transients"] * p["n_ccds"]
    half = (fp.r_max / math.sqrt(2)) * p["pixel_scale"] / 3600.0
    ra, dec = _tan_to_radec(ra0, dec0, rng.uniform(-half, half, n), rng.uniform(-half, half, n))
    return Table({"source_id": -(field * 100_000 + np.arange(n, dtype=np.int64) + 1), "ra": ra, "dec": dec})


# -- per-CCD fixed properties ----------------------------------------------------------
def amp_properties(cfg: dict, ccd: str) -> dict:
    """Fixed amplifier properties of a CCD: gain (e-/ADU), read noise (e-), bias level (ADU)
    and the bias slope across each amplifier (ADU, data region)."""
    p = cfg["DemoCam"]
    rng = rng_for(p["seed"], ccd, "amps")
    return {"gain": rng.uniform(*p["gain"], 2), "read_noise": p["read_noise"] * rng.uniform(0.9, 1.1, 2),
            "bias": p["bias_level"] + rng.uniform(-30.0, 30.0, 2),
            "slope": p["bias_slope"] * rng.choice([-1.0, 1.0], 2)}


def bad_columns(cfg: dict, ccd: str) -> Table:
    """Bad columns of a CCD: x (0-based, data region), first row y0, kind (dead/hot)."""
    p = cfg["DemoCam"]
    ny, nx = p["ccd_shape"]
    rng = rng_for(p["seed"], ccd, "bad columns")
    n = p["n_bad_columns"]
    x = rng.choice(np.arange(8, nx - 8), size=n, replace=False)
    y0 = np.where(rng.uniform(size=n) < 0.5, 0, rng.integers(0, ny // 2, n))
    kind = np.array(["dead" if i % 2 == 0 else "hot" for i in range(n)])
    return Table({"x": x.astype(np.int32), "y0": y0.astype(np.int32), "kind": kind})


def bad_pixel_mask(cfg: dict, ccd: str) -> np.ndarray:
    """Bool mask (True = bad) over the data region of ``ccd``: its bad columns."""
    ny, nx = cfg["DemoCam"]["ccd_shape"]
    mask = np.zeros((ny, nx), dtype=bool)
    for row in bad_columns(cfg, ccd):
        mask[row["y0"]:, row["x"]] = True
    return mask


def _apply_bad_columns(cfg: dict, ccd: str, e: np.ndarray) -> None:
    """Dead columns collect no charge; hot columns add ``hot_column_level`` e- (in place)."""
    for row in bad_columns(cfg, ccd):
        col = e[row["y0"]:, row["x"]]
        col[...] = 0.0 if row["kind"] == "dead" else col + cfg["DemoCam"]["hot_column_level"]


def flat_pattern(cfg: dict, ccd: str, filt: str) -> np.ndarray:
    """Flat-field response of the data region (float32, median 1): pixel-to-pixel
    (``flat_pixel_rms``), large-scale (``flat_large_scale``, per filter) and vignetting
    (``vignetting``: fractional loss at the focal-plane corners, ~ r^4)."""
    p = cfg["DemoCam"]
    fp = focal_plane(cfg)
    geom = fp.ccds[ccd_names(cfg).index(ccd)]
    ny, nx = geom.ny, geom.nx
    rng = rng_for(p["seed"], ccd, "flat pixels")
    flat = rng.standard_normal((ny, nx), dtype=np.float32)
    flat *= np.float32(p["flat_pixel_rms"])
    flat += np.float32(1.0)
    c = rng_for(p["seed"], ccd, filt, "flat large").normal(0.0, p["flat_large_scale"] / 2.0, 5)
    yy = np.linspace(-1.0, 1.0, ny, dtype=np.float32)[:, None]
    xx = np.linspace(-1.0, 1.0, nx, dtype=np.float32)[None, :]
    fy = (geom.y0 + np.arange(ny, dtype=np.float32) - fp.axis_y)[:, None] / np.float32(fp.r_max)
    fx = (geom.x0 + np.arange(nx, dtype=np.float32) - fp.axis_x)[None, :] / np.float32(fp.r_max)
    r2 = fx * fx + fy * fy
    large = (1.0 + c[0] * xx + c[1] * yy + c[2] * xx * yy + c[3] * (xx * xx) + c[4] * (yy * yy)).astype(np.float32)
    flat *= large * (np.float32(1.0) - np.float32(p["vignetting"]) * r2 * r2)
    flat /= np.float32(np.median(flat[::3, ::3]))
    return flat


# -- rendering -------------------------------------------------------------------------
def moffat_alpha(fwhm, beta: float):
    """Moffat core width alpha (same unit as ``fwhm``)."""
    return np.asarray(fwhm) / (2.0 * math.sqrt(2.0 ** (1.0 / beta) - 1.0))


def moffat_neff(fwhm, beta: float):
    """Effective number of pixels ``1 / sum(psf^2)`` of a Moffat PSF (``fwhm`` in pix)."""
    a = moffat_alpha(fwhm, beta)
    return np.pi * a * a * (2 * beta - 1) / (beta - 1) ** 2


# Stamp half-sizes: the light outside a faint star's stamp is below STAMP_LOST_FRACTION of its
# flux (a Moffat beta = 3 holds a fraction (1 + r^2/alpha^2)^(1 - beta) outside radius r: 4.5 FWHM
# for 2e-3 in a circle, ~1.3e-3 outside the square stamp); brighter stars get wider stamps so
# their faint wings stay visible far out.
STAMP_LOST_FRACTION = 2e-3
CORE_FWHM = 1.5  # pixels within this many FWHM of a star are integrated with 3x3 Gauss-Legendre points


def _gauss_legendre(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Legendre nodes (offsets from the pixel centre, pix) and weights (sum 1) over a pixel."""
    x, w = np.polynomial.legendre.leggauss(n)
    return (x / 2).astype(np.float32), (w / 2).astype(np.float32)


def _pixel_integral(dx, dy, inv_a2, beta: float, n: int) -> np.ndarray:
    """Mean over each pixel of ``(1 + r^2 / alpha^2)^-beta`` (n x n Gauss-Legendre points).

    ``dx`` (N, 1, S) and ``dy`` (N, S, 1): pixel-centre offsets from the source (pix);
    ``inv_a2`` (N, 1, 1): 1 / alpha^2 (1/pix^2).
    """
    o, w = _gauss_legendre(n)
    out = np.zeros(np.broadcast_shapes(dx.shape, dy.shape), np.float32)
    nb = np.float32(-beta)
    for oy, wy in zip(o, w):
        yy = (dy + oy) ** 2
        for ox, wx in zip(o, w):
            q = (dx + ox) ** 2 + yy
            q *= inv_a2
            q += np.float32(1.0)
            out += (wx * wy) * q ** nb
    return out


def render_point_sources(shape: tuple[int, int], x, y, flux, fwhm, beta: float) -> np.ndarray:
    """Image (float32) of Moffat point sources, integrated over each pixel.

    ``x``, ``y`` 0-based pixel positions, ``flux`` (any unit: the total flux of the profile out
    to infinity), ``fwhm`` (pix, per source). Each pixel holds the integral of the analytically
    normalised Moffat over the pixel: 3x3 Gauss-Legendre points within ``CORE_FWHM`` FWHM of the
    source (relative error < 1e-4 of the flux at FWHM >= 1.6 pix), 2x2 points in the wings
    (< 2e-4 of the flux). Sampling the profile at pixel centres instead makes stars too peaked
    (a fitted pixel-integrated model at FWHM 1.8 pix gets a 10% smaller FWHM and 1% more flux).
    Stamps are vectorised per stamp size: half-size holding all but ``STAMP_LOST_FRACTION`` of
    the flux (4.5 FWHM for beta 3), 8 FWHM above 1e5 and 15 FWHM above 1e6 in ``flux`` units;
    light outside the stamps and the image is dropped, so a stamp sums to its flux less the
    far wings (0.13% of it at beta 3), and its profile is exactly the Moffat.
    """
    ny, nx = shape
    x, y, flux, fwhm = (np.asarray(v, dtype=np.float64) for v in np.broadcast_arrays(x, y, flux, fwhm))
    alpha = moffat_alpha(fwhm, beta)
    r_lost = np.sqrt(STAMP_LOST_FRACTION ** (-1.0 / (beta - 1.0)) - 1.0) * alpha / np.maximum(fwhm, 1e-6)
    mult = np.where(flux > 1e6, 15.0, np.where(flux > 1e5, 8.0, r_lost))
    half = np.clip(np.ceil(np.maximum(mult, r_lost) * fwhm), 4, 128).astype(int)
    keep = (x > -half) & (x < nx + half) & (y > -half) & (y < ny + half) & (flux > 0)
    idx_all, val_all = [], []
    for h in np.unique(half[keep]):
        sel_h = np.flatnonzero(keep & (half == h))
        d = np.arange(-h, h + 1, dtype=np.float32)
        chunk = max(1, 4_000_000 // d.size ** 2)  # bounds the temporaries (~16 MB each)
        for lo in range(0, sel_h.size, chunk):
            sel = sel_h[lo:lo + chunk]
            ix, iy = np.rint(x[sel]).astype(np.int64), np.rint(y[sel]).astype(np.int64)
            dx = d[None, None, :] - (x[sel] - ix).astype(np.float32)[:, None, None]
            dy = d[None, :, None] - (y[sel] - iy).astype(np.float32)[:, None, None]
            inv_a2 = (1.0 / alpha[sel] ** 2).astype(np.float32)[:, None, None]
            prof = _pixel_integral(dx, dy, inv_a2, beta, 2)
            k = int(min(h, np.ceil(CORE_FWHM * fwhm[sel].max()) + 1))
            core = slice(h - k, h + k + 1)
            prof[:, core, core] = _pixel_integral(dx[:, :, core], dy[:, core, :], inv_a2, beta, 3)
            norm = flux[sel] * (beta - 1.0) / (np.pi * alpha[sel] ** 2)
            prof *= norm.astype(np.float32)[:, None, None]
            px = ix[:, None, None] + d.astype(np.int64)[None, None, :]
            py = iy[:, None, None] + d.astype(np.int64)[None, :, None]
            inside = (px >= 0) & (px < nx) & (py >= 0) & (py < ny)
            idx_all.append((py * nx + px)[inside])
            val_all.append(prof[inside])
    if not idx_all:
        return np.zeros(shape, dtype=np.float32)
    img = np.bincount(np.concatenate(idx_all), weights=np.concatenate(val_all), minlength=ny * nx)
    return img.astype(np.float32).reshape(shape)


def cosmic_rays(shape: tuple[int, int], rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Cosmic-ray hits: ``n`` short straight tracks (length ~ exponential, mean 3 pix; total
    charge log-normal, median 3000 e-). Returns (flat pixel indices, e- per pixel)."""
    ny, nx = shape
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    x0, y0 = rng.uniform(0, nx, n), rng.uniform(0, ny, n)
    length = rng.exponential(3.0, n)
    angle = rng.uniform(0, np.pi, n)
    charge = rng.lognormal(math.log(3000.0), 0.6, n)
    npts = np.maximum(1, np.ceil(2 * length)).astype(int)
    which = np.repeat(np.arange(n), npts)
    t = (np.arange(which.size) - np.repeat(np.cumsum(npts) - npts, npts)) / np.maximum(npts[which] - 1, 1)
    px = np.clip(np.rint(x0[which] + t * length[which] * np.cos(angle[which])), 0, nx - 1).astype(np.int64)
    py = np.clip(np.rint(y0[which] + t * length[which] * np.sin(angle[which])), 0, ny - 1).astype(np.int64)
    dep = np.bincount(py * nx + px, weights=charge[which] / npts[which], minlength=ny * nx)
    idx = np.flatnonzero(dep)
    return idx, dep[idx].astype(np.float32)


def bleed(e: np.ndarray, full_well: np.ndarray) -> np.ndarray:
    """Saturate and bleed along columns (in place): charge above ``full_well`` (e-, per
    column) fills the pixels above and below each saturated run, half each way, up to the
    full well (charge is conserved unless a trail reaches the chip edge). Returns the bool
    mask of full pixels."""
    sat = e >= full_well[None, :]
    for c in np.flatnonzero(sat.any(axis=0)):
        col, fw = e[:, c], full_well[c]
        d = np.diff(np.concatenate([[0], (col > fw).astype(np.int8), [0]]))
        for s, t in zip(np.flatnonzero(d == 1), np.flatnonzero(d == -1)):
            half = float((col[s:t] - fw).sum()) / 2.0
            col[s:t] = fw
            _spill(col[t:], half, fw)
            _spill(col[:s][::-1], half, fw)
        sat[:, c] = col >= fw
    return sat


def _spill(seg: np.ndarray, charge: float, fw: float) -> None:
    """Fill ``seg`` (a view, in spill order) up to ``fw`` with ``charge`` e- (in place)."""
    if charge <= 0 or seg.size == 0:
        return
    room = np.cumsum(np.maximum(fw - seg, 0.0), dtype=np.float64)
    n = int(np.searchsorted(room, charge))
    seg[:n] = np.maximum(seg[:n], fw)
    if n < seg.size:
        seg[n] += charge - (room[n - 1] if n else 0.0)


def _add_noise(lam: np.ndarray, read_noise_map: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Electrons with Poisson (Gaussian above 30 e-) and read noise; float32, in place on ``lam``."""
    read_noise_map = np.broadcast_to(read_noise_map, lam.shape)
    noise = rng.standard_normal(lam.shape, dtype=np.float32)
    low = lam < 30.0
    var = lam + read_noise_map * read_noise_map
    noise *= np.sqrt(var)
    if low.any():  # exact Poisson where the Gaussian approximation is poor
        lam_low = lam[low]
        noise[low] = (rng.poisson(lam_low).astype(np.float32) - lam_low
                      + read_noise_map[low] * rng.standard_normal(lam_low.size, dtype=np.float32))
    lam += noise
    return lam


def _amp_map(values, nx: int) -> np.ndarray:
    """Per-column values over the data region from per-amplifier ``values`` (A left, B right)."""
    out = np.empty(nx, dtype=np.float32)
    out[: nx // 2], out[nx // 2:] = values[0], values[1]
    return out


def _to_raw(cfg: dict, ccd: str, electrons: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """Raw uint16 section (overscan + data, ADU) from noisy electrons of the data region."""
    p = cfg["DemoCam"]
    amp = amp_properties(cfg, ccd)
    ny, nx = electrons.shape
    nos = p["overscan_columns"]
    level = amp["bias"] + rng.normal(0.0, 2.0, 2)  # this exposure's bias level per amp (ADU)
    yy = np.arange(ny, dtype=np.float32)
    rows = np.empty((2, ny), dtype=np.float32)  # row structure per amp (ADU)
    for a in range(2):
        k = rng.uniform(1.0, 6.0, 3)
        ph = rng.uniform(0, 2 * np.pi, 3)
        rows[a] = sum(0.6 * np.sin(2 * np.pi * k[j] * yy / ny + ph[j]) for j in range(3))
        rows[a] += rng.normal(0.0, 0.3, ny).astype(np.float32)
    raw = np.empty((ny, nx + 2 * nos), dtype=np.float32)
    xa = np.linspace(-0.5, 0.5, nx // 2, dtype=np.float32)
    for a, (dsl, osl) in enumerate([(slice(nos, nos + nx // 2), slice(0, nos)),
                                    (slice(nos + nx // 2, nos + nx), slice(nos + nx, nx + 2 * nos))]):
        g, rn = amp["gain"][a], amp["read_noise"][a]
        base = np.float32(level[a]) + rows[a][:, None]
        e = electrons[:, dsl.start - nos: dsl.stop - nos]
        slope = np.float32(amp["slope"][a]) * (xa if a == 0 else xa[::-1])[None, :]
        raw[:, dsl] = e / np.float32(g) + base + slope
        raw[:, osl] = base + np.float32(rn / g) * rng.standard_normal((ny, nos), dtype=np.float32)
    np.rint(raw, out=raw)
    np.clip(raw, 0, p["saturation"], out=raw)
    return raw.astype(np.uint16), {"bias_a": level[0], "bias_b": level[1]}


def _section_header(cfg: dict, ccd: str, wcs: fits.Header | None) -> fits.Header:
    p = cfg["DemoCam"]
    ny, nx = p["ccd_shape"]
    nos = p["overscan_columns"]
    amp = amp_properties(cfg, ccd)
    h = fits.Header()
    h["EXTNAME"] = (ccd, "extension name = CCD name")
    h["CCDNAME"] = (ccd, "CCD name")
    h["CCDNUM"] = (ccd_names(cfg).index(ccd) + 1, "CCD number")
    h["BUNIT"] = ("ADU", "raw counts")
    h["CCDSUM"] = ("1 1", "binning")
    h["DATASEC"] = (format_section((slice(0, ny), slice(nos, nos + nx))), "data region")
    h["TRIMSEC"] = (h["DATASEC"], "trimmed region")
    h["DATASECA"] = (format_section((slice(0, ny), slice(nos, nos + nx // 2))), "data region amp A")
    h["BIASSECA"] = (format_section((slice(0, ny), slice(0, nos))), "overscan amp A")
    h["DATASECB"] = (format_section((slice(0, ny), slice(nos + nx // 2, nos + nx))), "data region amp B")
    h["BIASSECB"] = (format_section((slice(0, ny), slice(nos + nx, nx + 2 * nos))), "overscan amp B")
    for a, name in enumerate(AMPS):
        h[f"GAIN{name}"] = (round(float(amp["gain"][a]), 5), f"[e-/ADU] gain amp {name}")
        h[f"RDNOISE{name}"] = (round(float(amp["read_noise"][a]), 4), f"[e-] read noise amp {name}")
        h[f"SATURAT{name}"] = (float(p["saturation"]), f"[ADU] saturation amp {name}")
    h["GAIN"] = (round(float(np.mean(amp["gain"])), 5), "[e-/ADU] mean gain")
    h["RDNOISE"] = (round(float(np.max(amp["read_noise"])), 4), "[e-] larger read noise of A, B")
    h["SATURATE"] = (float(p["saturation"]), "[ADU] raw saturation level (incl. bias)")
    if wcs is not None:
        h.extend(wcs.cards)
    return h


def _primary_header(cfg: dict, name: str, obstype: str, filt: str, mjd: float, exptime: float,
                    ra: float, dec: float, airmass: float, field: str) -> fits.Header:
    p = cfg["DemoCam"]
    h = fits.Header()
    h["OBSERVAT"] = ("DEMO", "observatory")
    h["TELESCOP"] = ("DemoScope 4m", "telescope")
    h["INSTRUME"] = (INSTRUMENT, "instrument")
    h["OBSTYPE"] = (obstype, "observation type")
    h["EXPNAME"] = (name, "exposure name")
    h["FIELD"] = (field, "field name")
    h["DATE-OBS"] = (Time(mjd, format="mjd", scale="utc").isot, "UTC start of exposure")
    h["MJD-OBS"] = (round(mjd, 8), "[d] MJD at start of exposure")
    h["EXPTIME"] = (exptime, "[s] exposure time")
    h["FILTER"] = (f"{filt} DemoCam SDSS-like" if filt else "none", "filter")
    h["RA"] = (round(ra, 7), "[deg] telescope pointing RA")
    h["DEC"] = (round(dec, 7), "[deg] telescope pointing Dec")
    h["RADESYS"] = "ICRS"
    h["AIRMASS"] = (round(airmass, 4), "airmass at start")
    h["PIXSCAL"] = (p["pixel_scale"], "[arcsec/pix] nominal pixel scale")
    h["NEXTEND"] = (p["n_ccds"], "number of CCD extensions")
    h["DEMOSEED"] = (p["seed"], "simulation seed")
    return h


# -- science exposures -----------------------------------------------------------------
def _sources_at_epoch(cfg: dict, plan: dict) -> Table:
    """Catalog stars (moved to the epoch) and transients of the exposure's field, with their
    camera-filter magnitude at this epoch and kind (star, variable, transient)."""
    from vo.images.photometric import gaia_to_filter  # written alongside; imported lazily

    p = cfg["DemoCam"]
    key = _pars_key(cfg)
    stars = _field_sources(key, plan["field"])
    filt = plan["filter"]
    dt = mjd_to_year(plan["mjd"]) - GAIA_EPOCH
    dec = stars["dec"] + stars["pmdec"] * dt / 3.6e6
    ra = stars["ra"] + stars["pmra"] * dt / 3.6e6 / np.cos(np.radians(stars["dec"]))
    mean_mag = gaia_to_filter(stars["phot_g_mean_mag"], stars["bp_rp"], filt) + stars[f"colour_offset_{filt}"]
    dmag = stars["var_amplitude"] * np.sin(2 * np.pi * (plan["mjd"] / stars["var_period"] + stars["var_phase"]))
    out = Table({"source_id": np.asarray(stars["source_id"]), "ra": np.asarray(ra) % 360.0,
                 "dec": np.asarray(dec), "mag": np.asarray(mean_mag + dmag),
                 "kind": np.where(stars["var_amplitude"] > 0, "variable", "star")})
    tr = _field_transients(key, plan["field"])
    if plan["index"] >= p["reference_epochs"] and len(tr):
        t = Table({"source_id": tr["source_id"], "ra": tr["ra"], "dec": tr["dec"],
                   "mag": np.full(len(tr), np.nan), "kind": np.full(len(tr), "transient")})
        out = vstack([out, t])
    return out


def simulate_exposure(cfg: dict, exposure: str) -> tuple[fits.HDUList, Table]:
    """Raw multi-CCD exposure (HDUList: primary + one uint16 image HDU per CCD) and its truth.

    The truth is the table of sources (columns ccd, kind, source_id, ra, dec (deg, at the
    epoch), x, y (0-based pix, trimmed grid), flux (e-), mag (AB, camera filter), snr
    (expected PSF-fit S/N), fwhm (pix, local), saturated, inside (centre on the data
    region)) with ``meta``: ``ccds`` (Table per CCD: zp, fwhm, sky, gains, bias levels,
    header offsets, ...), ``wcs`` ({ccd: true WCS Header, trimmed grid}), ``cosmics``
    (Table ccd, x, y, electrons) and the exposure's scalar conditions.
    """
    p = cfg["DemoCam"]
    plan = exposure_plan(cfg, exposure)
    fp = focal_plane(cfg)
    beta = p["moffat_beta"]
    fwhm_pix = plan["fwhm"] / p["pixel_scale"]
    src = _sources_at_epoch(cfg, plan)
    # focal-plane pixel coordinates of every source through the true focal-plane WCS
    fpw = WCS(wcs_header(cfg, (fp.axis_x + 1.0, fp.axis_y + 1.0), plan["ra"], plan["dec"], plan["rotation"]))
    fx, fy = fpw.all_world2pix(src["ra"], src["dec"], 0, quiet=True)
    primary = fits.PrimaryHDU(header=_primary_header(
        cfg, exposure, "object", plan["filter"], plan["mjd"], plan["exptime"], plan["header_ra"],
        plan["header_dec"], plan["airmass"], f"f{plan['field']:02d}"))
    hdus, truths, ccd_rows, wcs_truth, cosmics = [primary], [], [], {}, []
    for geom in fp.ccds:
        rng = rng_for(p["seed"], exposure, geom.name, "pixels")
        amp = amp_properties(cfg, geom.name)
        rn_cols = _amp_map(amp["read_noise"], geom.nx)
        x, y = fx - geom.x0, fy - geom.y0
        near = (x > -64) & (x < geom.nx + 64) & (y > -64) & (y < geom.ny + 64)
        t = src[near]
        t["x"], t["y"] = x[near], y[near]
        r = np.hypot(fx[near] - fp.axis_x, fy[near] - fp.axis_y) / fp.r_max
        t["fwhm"] = fwhm_pix * (1.0 + p["psf_variation"] * r * r)
        neff = moffat_neff(t["fwhm"], beta)
        noise_bg = neff * (plan["sky"] + float(np.mean(amp["read_noise"])) ** 2)
        is_tr = t["kind"] == "transient"
        if is_tr.any():  # flux for an expected S/N drawn log-uniformly in transient_snr
            snr = np.exp(rng_for(p["seed"], exposure, geom.name, "transients").uniform(
                *np.log(p["transient_snr"]), int(is_tr.sum())))
            flux_tr = 0.5 * (snr ** 2 + np.sqrt(snr ** 4 + 4 * snr ** 2 * noise_bg[is_tr]))
            t["mag"][is_tr] = plan["zp"] - 2.5 * np.log10(flux_tr)
        t["flux"] = 10 ** (-0.4 * (t["mag"] - plan["zp"]))
        t["snr"] = t["flux"] / np.sqrt(t["flux"] + noise_bg)
        t["inside"] = (t["x"] >= -0.5) & (t["x"] < geom.nx - 0.5) & (t["y"] >= -0.5) & (t["y"] < geom.ny - 0.5)
        # electrons: (sky + sources) x flat, noise, saturation + bleed, bad columns, cosmics
        e = render_point_sources((geom.ny, geom.nx), t["x"], t["y"], t["flux"], t["fwhm"], beta)
        e += np.float32(plan["sky"])
        e *= flat_pattern(cfg, geom.name, plan["filter"])
        _add_noise(e, rn_cols[None, :], rng)
        # full well: a full pixel reads above the saturation level, clipped to it in ADU
        full_well = (p["saturation"] - amp["bias"] + 20.0) * amp["gain"]
        saturated = bleed(e, _amp_map(full_well, geom.nx))
        iy = np.clip(np.rint(t["y"]).astype(int), 0, geom.ny - 1)
        ix = np.clip(np.rint(t["x"]).astype(int), 0, geom.nx - 1)
        t["saturated"] = t["inside"] & saturated[iy, ix]
        _apply_bad_columns(cfg, geom.name, e)
        n_cr = rng.poisson(p["cosmic_rate"] * geom.ny * geom.nx / 1e6 * plan["exptime"] / 60.0)
        idx, dep = cosmic_rays((geom.ny, geom.nx), rng, n_cr)
        e.ravel()[idx] += dep
        raw, levels = _to_raw(cfg, geom.name, e, rng)
        del e
        header_wcs = ccd_wcs_header(cfg, fp, geom, plan["header_ra"], plan["header_dec"],
                                    plan["header_rotation"], x_offset=p["overscan_columns"])
        hdus.append(fits.ImageHDU(raw, header=_section_header(cfg, geom.name, header_wcs)))
        wcs_truth[geom.name] = ccd_wcs_header(cfg, fp, geom, plan["ra"], plan["dec"], plan["rotation"])
        t["ccd"] = geom.name
        truths.append(t)
        cosmics.append(Table({"ccd": np.full(idx.size, geom.name), "x": (idx % geom.nx).astype(np.int32),
                              "y": (idx // geom.nx).astype(np.int32), "electrons": dep}))
        ccd_rows.append({"ccd": geom.name, "zp": plan["zp"], "fwhm": plan["fwhm"],
                         "fwhm_pix": fwhm_pix, "sky": plan["sky"], "gain_a": amp["gain"][0],
                         "gain_b": amp["gain"][1], "read_noise_a": amp["read_noise"][0],
                         "read_noise_b": amp["read_noise"][1], "bias_a": levels["bias_a"],
                         "bias_b": levels["bias_b"], "n_cosmics": n_cr,
                         "offset_east": plan["offset_east"], "offset_north": plan["offset_north"],
                         "offset_rotation": plan["offset_rotation"], "x0": geom.x0, "y0": geom.y0})
    truth = vstack(truths) if truths else Table()
    cols = ["ccd", "kind", "source_id", "ra", "dec", "x", "y", "flux", "mag", "snr", "fwhm",
            "saturated", "inside"]
    truth = truth[cols]
    truth.meta.update({k: v for k, v in plan.items()})
    truth.meta["ccds"] = Table(rows=ccd_rows)
    truth.meta["wcs"] = wcs_truth
    truth.meta["cosmics"] = vstack(cosmics)
    return fits.HDUList(hdus), truth


# -- calibration exposures -------------------------------------------------------------
def simulate_calibration(cfg: dict, name: str) -> fits.HDUList:
    """Raw bias (``dc_bias_NNN``: bias and read noise only) or dome flat (``dc_flat_F_NNN``:
    ``flat_level`` e- through the flat pattern, Poisson and read noise, a few cosmic rays)."""
    p = cfg["DemoCam"]
    mb, mf = _BIAS_RE.match(name), _FLAT_RE.match(name)
    if not (mb or mf):
        raise ValueError(f"DemoCam calibration {name!r}: expected 'dc_bias_NNN' or 'dc_flat_<filter>_NNN'")
    filt = mf.group(1) if mf else ""
    if mf and filt not in p["filters"]:
        raise ValueError(f"DemoCam calibration {name!r}: filter {filt!r} not in DemoCam.filters {p['filters']}")
    k = int((mb or mf).groups()[-1])
    exptime = 0.0 if mb else 10.0
    ra, dec = p["fields"][0]
    hdus = [fits.PrimaryHDU(header=_primary_header(
        cfg, name, "zero" if mb else "dome flat", filt, p["start_mjd"] - 0.5 + 0.001 * k + (0.1 if mf else 0.0),
        exptime, ra, dec, 1.0, "calibration"))]
    fp = focal_plane(cfg)
    for geom in fp.ccds:
        rng = rng_for(p["seed"], name, geom.name, "pixels")
        amp = amp_properties(cfg, geom.name)
        rn_cols = _amp_map(amp["read_noise"], geom.nx)
        if mb:
            e = rn_cols[None, :] * rng.standard_normal((geom.ny, geom.nx), dtype=np.float32)
        else:
            e = flat_pattern(cfg, geom.name, filt) * np.float32(p["flat_level"])
            _add_noise(e, rn_cols[None, :], rng)
            _apply_bad_columns(cfg, geom.name, e)
            idx, dep = cosmic_rays((geom.ny, geom.nx), rng, rng.poisson(
                p["cosmic_rate"] * geom.ny * geom.nx / 1e6 * exptime / 60.0))
            e.ravel()[idx] += dep
        raw, _ = _to_raw(cfg, geom.name, e, rng)
        hdus.append(fits.ImageHDU(raw, header=_section_header(cfg, geom.name, None)))
    return fits.HDUList(hdus)


# -- files -----------------------------------------------------------------------------
def compress(hdul: fits.HDUList) -> fits.HDUList:
    """fpack-style copy: image extensions as RICE tile-compressed ``CompImageHDU`` (lossless
    for the integer raw data)."""
    out = [fits.PrimaryHDU(header=hdul[0].header.copy())]
    for hdu in hdul[1:]:
        out.append(fits.CompImageHDU(hdu.data, header=hdu.header.copy(), compression_type="RICE_1"))
    return fits.HDUList(out)


def write_truth(path: str | Path, truth: Table, attrs: dict | None = None) -> None:
    """Truth FITS: SOURCES and CCDS tables, COSMICS table, one header-only ``WCS_<ccd>``
    HDU per CCD (true WCS, trimmed grid); exposure conditions in the primary header."""
    primary = fits.PrimaryHDU()
    for k, v in truth.meta.items():
        if isinstance(v, (int, float, str, np.floating, np.integer)):
            primary.header[f"HIERARCH {k.upper()}"] = v
    src = Table(truth, copy=False)
    src.meta = {}
    hdus = [primary, fits.table_to_hdu(src), fits.table_to_hdu(truth.meta["ccds"]),
            fits.table_to_hdu(truth.meta["cosmics"])]
    hdus[1].name, hdus[2].name, hdus[3].name = "SOURCES", "CCDS", "COSMICS"
    for ccd, h in truth.meta["wcs"].items():
        hdus.append(fits.ImageHDU(header=h.copy(), name=f"WCS_{ccd}"))
    write_fits(path, fits.HDUList(hdus), attrs)


def read_truth(path: str | Path) -> Table:
    """Truth table written by :func:`write_truth` (same layout as :func:`simulate_exposure`'s)."""
    with open_fits(path, required=("SOURCES", "CCDS", "COSMICS")) as hdul:
        truth = Table(hdul["SOURCES"].data)
        truth.meta = {k.lower(): v for k, v in hdul[0].header.items()
                      if k not in ("SIMPLE", "BITPIX", "NAXIS", "EXTEND") and not k.startswith("VO_")}
        truth.meta["ccds"] = Table(hdul["CCDS"].data)
        truth.meta["cosmics"] = Table(hdul["COSMICS"].data)
        wcs = {}
        for hdu in hdul:
            if hdu.name.startswith("WCS_"):
                h = hdu.header.copy()
                for key in ("XTENSION", "BITPIX", "NAXIS", "PCOUNT", "GCOUNT", "EXTNAME"):
                    h.remove(key, ignore_missing=True)
                wcs[hdu.name[4:]] = h
        truth.meta["wcs"] = wcs
    for col in ("ccd", "kind"):
        truth[col] = np.char.strip(np.asarray(truth[col]).astype(str))
    return truth


def write_exposure(cfg: dict, exposure: str, raw_path: str | Path | None = None,
                   truth_path: str | Path | None = None, attrs: dict | None = None) -> tuple[Path, Path]:
    """Simulate a science exposure and write its raw file (compressed when the path ends in
    ``.fz``) and truth table atomically; default paths from :class:`vo.paths.Paths`."""
    from vo.paths import Paths
    from vo.images.instruments import get_instrument
    paths = Paths(cfg)
    raw_path = Path(raw_path or get_instrument(INSTRUMENT, cfg).raw_path(paths, exposure))
    truth_path = Path(truth_path or paths.raw_truth(INSTRUMENT, exposure))
    hdul, truth = simulate_exposure(cfg, exposure)
    write_fits(raw_path, compress(hdul) if raw_path.name.endswith(".fz") else hdul, attrs)
    write_truth(truth_path, truth, attrs)
    return raw_path, truth_path


def write_calibration(cfg: dict, name: str, raw_path: str | Path | None = None,
                      attrs: dict | None = None) -> Path:
    """Simulate and write a bias or flat exposure (compressed when the path ends in ``.fz``)."""
    from vo.paths import Paths
    from vo.images.instruments import get_instrument
    raw_path = Path(raw_path or get_instrument(INSTRUMENT, cfg).raw_path(Paths(cfg), name))
    hdul = simulate_calibration(cfg, name)
    write_fits(raw_path, compress(hdul) if raw_path.name.endswith(".fz") else hdul, attrs)
    return raw_path


__all__ = ["simulate_exposure", "simulate_calibration", "gaia_catalog", "write_exposure",
           "write_calibration", "write_truth", "read_truth", "exposure_plan", "science_exposure_names",
           "calibration_names", "bad_pixel_mask", "flat_pattern", "render_point_sources"]
