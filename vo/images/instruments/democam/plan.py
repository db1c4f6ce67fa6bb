"""DemoCam's plan: names, seeds, focal plane and WCS, what each exposure is (field, filter,
epoch, seeing, pointing error), the Gaia-like catalog of its fields and each CCD's fixed
properties (amplifiers, bad columns, flat pattern).  The rendering of raw exposures from this
plan is :mod:`vo.images.instruments.democam.simulate`, which describes the simulated camera.

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

import numpy as np
from astropy.io import fits
from astropy.table import Table, vstack

from vo.sky import inverse_gnomonic

INSTRUMENT = "DemoCam"
AMPS = ("A", "B")
EXPOSURE_RE = re.compile(r"^dc_f(\d{2,})_([A-Za-z0-9]+)_(\d{3,})$")
BIAS_RE = re.compile(r"^dc_bias_(\d{3,})$")
FLAT_RE = re.compile(r"^dc_flat_([A-Za-z0-9]+)_(\d{3,})$")
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
    m = EXPOSURE_RE.match(name)
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
    if BIAS_RE.match(name):
        return ""
    m = FLAT_RE.match(name)
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
def pars_key(cfg: dict) -> str:
    return json.dumps(cfg["DemoCam"], sort_keys=True)


def field_radius(cfg: dict) -> float:
    """Radius (deg) around a field centre covered by its catalog and transients."""
    p = cfg["DemoCam"]
    fp = focal_plane(cfg)
    return (fp.r_max * p["pixel_scale"] + p["dither"] + p["pointing_error"] + 60.0) / 3600.0


@lru_cache(maxsize=4)
def field_sources(key: str, field: int) -> Table:
    """Stars of one field: Gaia columns plus hidden truth (``colour_offset_*``, variability)."""
    p = json.loads(key)
    ra0, dec0 = p["fields"][field]
    rng = rng_for(p["seed"], f"field{field}", "stars")
    half = field_radius({"DemoCam": p})
    area = (2 * half * 60.0) ** 2  # arcmin^2 of the square tangent-plane patch
    n = rng.poisson(p["star_density"] * area)
    xi, eta = rng.uniform(-half, half, n), rng.uniform(-half, half, n)
    ra, dec = inverse_gnomonic(xi, eta, ra0, dec0)
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
    key = pars_key(cfg)
    tables = [field_sources(key, f)[list(GAIA_COLUMNS)] for f in range(len(cfg["DemoCam"]["fields"]))]
    t = vstack(tables, metadata_conflicts="silent") if len(tables) > 1 else tables[0].copy()
    for col, unit in GAIA_UNITS.items():
        t[col].unit = unit
    t.meta.update({"CATALOG": "DemoCam Gaia-like (Gaia DR3 columns)", "EPOCH": GAIA_EPOCH})
    return t


@lru_cache(maxsize=4)
def field_transients(key: str, field: int) -> Table:
    """Transient positions of a field (fixed on the sky; absent from the catalog)."""
    p = json.loads(key)
    cfg = {"DemoCam": p}
    ra0, dec0 = p["fields"][field]
    rng = rng_for(p["seed"], f"field{field}", "transients")
    fp = focal_plane(cfg)
    n = p["n_transients"] * p["n_ccds"]
    half = (fp.r_max / math.sqrt(2)) * p["pixel_scale"] / 3600.0
    ra, dec = inverse_gnomonic(rng.uniform(-half, half, n), rng.uniform(-half, half, n), ra0, dec0)
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


def apply_bad_columns(cfg: dict, ccd: str, e: np.ndarray) -> None:
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
