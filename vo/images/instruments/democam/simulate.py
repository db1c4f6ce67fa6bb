"""DemoCam: a simulated multi-CCD camera whose raw exposures look like a real survey's.

Each exposure is a multi-extension FITS file (one ``uint16`` HDU per CCD) with, per CCD, two
amplifiers (left half A, right half B), each with its own gain (e-/ADU), read noise (e-),
bias level and overscan columns (A's on the left edge, B's on the right edge)::

    | BIASSECA | DATASECA | DATASECB | BIASSECB |     (overscan_columns wide each)

What goes into a CCD (all in electrons before the conversion to ADU):

* stars of a Gaia-like catalog (:func:`gaia_catalog`, Gaia DR3 column names and units)
  moved to the exposure epoch with their proper motions (parallax ignored), with magnitudes
  in the camera filter from :func:`vo.images.photometry.photometric.gaia_to_filter` plus a fixed
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

from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table, vstack
from astropy.time import Time
from astropy.wcs import WCS

from vo.images.instruments.base import format_section
from vo.images.instruments.democam.plan import (AMPS, BIAS_RE, FLAT_RE, GAIA_EPOCH, INSTRUMENT,
                                                amp_properties, apply_bad_columns, bad_pixel_mask,
                                                calibration_names, ccd_names, ccd_wcs_header, exposure_plan,
                                                field_sources, field_transients, flat_pattern, focal_plane,
                                                gaia_catalog, mjd_to_year, pars_key, rng_for,
                                                science_exposure_names, wcs_header)
from vo.images.instruments.democam.render import bleed, cosmic_rays, moffat_neff, render_point_sources
from vo.io.fits import open_fits, write_fits


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
    from vo.images.photometry.photometric import gaia_to_filter  # written alongside; imported lazily

    p = cfg["DemoCam"]
    key = pars_key(cfg)
    stars = field_sources(key, plan["field"])
    filt = plan["filter"]
    dt = mjd_to_year(plan["mjd"]) - GAIA_EPOCH
    dec = stars["dec"] + stars["pmdec"] * dt / 3.6e6
    ra = stars["ra"] + stars["pmra"] * dt / 3.6e6 / np.cos(np.radians(stars["dec"]))
    mean_mag = gaia_to_filter(stars["phot_g_mean_mag"], stars["bp_rp"], filt) + stars[f"colour_offset_{filt}"]
    dmag = stars["var_amplitude"] * np.sin(2 * np.pi * (plan["mjd"] / stars["var_period"] + stars["var_phase"]))
    out = Table({"source_id": np.asarray(stars["source_id"]), "ra": np.asarray(ra) % 360.0,
                 "dec": np.asarray(dec), "mag": np.asarray(mean_mag + dmag),
                 "kind": np.where(stars["var_amplitude"] > 0, "variable", "star")})
    tr = field_transients(key, plan["field"])
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
        apply_bad_columns(cfg, geom.name, e)
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
    mb, mf = BIAS_RE.match(name), FLAT_RE.match(name)
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
            apply_bad_columns(cfg, geom.name, e)
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


def raw_file(cfg: dict, paths, name: str) -> Path:
    """Raw file of a DemoCam exposure: ``.fits.fz`` when ``DemoCam.compress`` is set, else ``.fits``."""
    return paths.raw_exposure(INSTRUMENT, name, suffix=".fits.fz" if cfg["DemoCam"]["compress"] else ".fits")


def write_exposure(cfg: dict, exposure: str, raw_path: str | Path | None = None,
                   truth_path: str | Path | None = None, attrs: dict | None = None) -> tuple[Path, Path]:
    """Simulate a science exposure and write its raw file (compressed when the path ends in
    ``.fz``) and truth table atomically; default paths from :class:`vo.paths.Paths`."""
    from vo.paths import Paths

    paths = Paths(cfg)
    raw_path = Path(raw_path or raw_file(cfg, paths, exposure))
    truth_path = Path(truth_path or paths.raw_truth(INSTRUMENT, exposure))
    hdul, truth = simulate_exposure(cfg, exposure)
    write_fits(raw_path, compress(hdul) if raw_path.name.endswith(".fz") else hdul, attrs)
    write_truth(truth_path, truth, attrs)
    return raw_path, truth_path


def write_calibration(cfg: dict, name: str, raw_path: str | Path | None = None,
                      attrs: dict | None = None) -> Path:
    """Simulate and write a bias or flat exposure (compressed when the path ends in ``.fz``)."""
    from vo.paths import Paths

    raw_path = Path(raw_path or raw_file(cfg, Paths(cfg), name))
    hdul = simulate_calibration(cfg, name)
    write_fits(raw_path, compress(hdul) if raw_path.name.endswith(".fz") else hdul, attrs)
    return raw_path


__all__ = ["simulate_exposure", "simulate_calibration", "gaia_catalog", "write_exposure",
           "write_calibration", "write_truth", "read_truth", "exposure_plan", "science_exposure_names",
           "calibration_names", "bad_pixel_mask", "flat_pattern", "render_point_sources"]
