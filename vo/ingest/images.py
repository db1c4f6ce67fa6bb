"""Ingest the image pipeline's products (the ``ingest_images`` step): one CCD at a time.

Rows come from the files alone: FITS headers (keywords of the shared image contract and the
provenance cards ``VO_STEP``, ``VO_HASH``, ``VO_CODE``, ``VO_OBS``, ``VO_PARS`` of
:mod:`vo.io.fits`) and file checksums, so ``vo populate`` can rebuild them from the data root.
The patterns are those of :mod:`vo.ingest.lightcurves`:

* Idempotent: ``INSERT ... ON CONFLICT`` on each table's natural key
  (:data:`vo.db.models.NATURAL_KEYS`), updating only values that changed.
* Transactional: every file of a CCD is read and checked first; the rows of the CCD
  (provenances, exposure, image, source list, PSF, WCS, zero point) are then written in one
  transaction: all or nothing.
* Concurrent: every CCD transaction writes its tables in the same order (provenances sorted
  by key, then exposure, image, ...), so concurrent jobs queue instead of deadlocking;
  SQLite writers take the lock at ``BEGIN IMMEDIATE``.

Badness propagates downstream: image -> source list -> PSF and world coordinates; world
coordinates (or the source list when astrometry was skipped) -> zero point.  A failed WCS
therefore marks its zero point bad with the reason ``upstream world_coordinates bad: ...``.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import astropy.units as u
import numpy as np
import sqlalchemy as sa
from astropy.coordinates import Angle
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning
from astropy.wcs.utils import proj_plane_pixel_scales

from vo import provenance as vprov
from vo.db import models as m
from vo.db.bulk import IngestError, upsert
from vo.images.instruments.calibrated import Calibrated
from vo.db.engine import Session
from vo.db.migrate import init_db
from vo.db.rows import in_transaction, ingest_provenances, provenance_id, relative
from vo.io.atomic import checksum
from vo.io.fits import read_provenance
from vo.sky import footprint

#: Version of the ingest code (enters the ``ingest_images`` provenance hash).

#: The step that makes each kind of file (``raw`` is shared raw data, without provenance).
FILE_STEPS = {"image": "preprocessing", "sources": "extraction", "psf": "extraction",
              "background": "extraction", "wcs": "astrometry", "zp": "zero_point"}
REQUIRED_FILES = ("raw", "image", "sources", "psf", "background")
#: Header keywords of a background file's global level and RMS (e-/pixel; ``BACKGND`` and
#: ``BKG_RMS`` are written by :func:`vo.images.extract.background.write_background`); without them
#: the medians of the BACKGROUND and RMS HDUs are computed (subsampled).
SKY_KEYS = ("BACKGND", "SKY_MED")
SKY_RMS_KEYS = ("BKG_RMS", "SKY_RMS")
#: Stars used for the PSF model: in the PSF file, else the source list's ``PSF_NSTR``.
PSF_N_KEYS = ("PSF_NSTR", "PSF_N", "N_STARS")

log = logging.getLogger("vo.ingest.images")


# -- reading headers ------------------------------------------------------------------------
def read_headers(path) -> list[fits.Header]:
    """Headers of every HDU of a FITS file (primary first); no data is read."""
    path = Path(path)
    if not path.is_file():
        raise IngestError(f"{path}: file not found")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", fits.verify.VerifyWarning)
            with fits.open(path, memmap=True) as hdul:
                return [hdu.header.copy() for hdu in hdul]
    except Exception as exc:  # astropy raises OSError/ValueError/TypeError variants
        raise IngestError(f"{path}: not a readable FITS file ({type(exc).__name__}: {exc})") from exc


def header_value(headers: list[fits.Header], keys, path, required: bool = False, kind=float):
    """Value of the first of ``keys`` found in ``headers`` (primary first), converted with
    ``kind``; ``None`` (or an error naming the file) when absent; NaN becomes ``None``."""
    keys = (keys,) if isinstance(keys, str) else tuple(keys)
    for header in headers:
        for key in keys:
            if key in header and header[key] is not None and not isinstance(header[key], fits.card.Undefined):
                raw = header[key]
                try:
                    value = kind(raw)
                except (TypeError, ValueError):
                    raise IngestError(f"{path}: header keyword {key} = {raw!r} is not a "
                                      f"{kind.__name__}") from None
                if isinstance(value, float) and not np.isfinite(value):
                    return None
                return value
    if required:
        raise IngestError(f"{path}: header keyword {' or '.join(keys)} missing")
    return None


def _measured(value, ok: bool):
    """A non-negative measure (rms, count) of a product; a failed product may carry a
    negative placeholder (FITS headers cannot hold NaN), which becomes ``None``.  For a
    successful product a negative value is kept and the database's CHECK rejects it."""
    return None if value is not None and value < 0 and not ok else value


def _finite(value):
    """NaN and infinities (of numbers) become ``None``."""
    if isinstance(value, (float, np.floating)) and not np.isfinite(value):
        return None
    return value


def _bool(value) -> bool:
    if isinstance(value, str):
        return value.strip().upper() in ("T", "TRUE", "1", "Y", "YES")
    return bool(value)


def file_provenance(headers: list[fits.Header], path, step: str, instrument: str) -> vprov.Provenance:
    """The provenance written into a product's primary header, checked: the step and the
    instrument (any case; the provenance keeps the file's spelling) are the expected ones,
    and the parameters hash to the file's ``VO_HASH``."""
    attrs = read_provenance(headers[0])
    if not attrs:
        raise IngestError(f"{path}: no provenance cards (VO_STEP, VO_HASH, ...) in the primary header")
    if attrs["step"] != step:
        raise IngestError(f"{path}: made by step {attrs['step']!r}, expected {step!r}")
    obs = str(attrs.get("obs", ""))
    if obs.lower() != instrument.lower():
        raise IngestError(f"{path}: made for instrument {obs!r}, expected {instrument!r}")
    p = vprov.Provenance(step, obs, str(attrs["code_version"]), attrs.get("parameters", {}),
                         attrs.get("upstreams", {}))
    if p.hash != attrs["provenance_hash"]:
        raise IngestError(f"{path}: provenance cards hash to {p.hash}, VO_HASH says "
                          f"{attrs['provenance_hash']}")
    return p


def check_upstream(p: vprov.Provenance, up: vprov.Provenance, path, up_path) -> None:
    """``p`` was made from the product of provenance ``up`` (same hash in its upstreams)."""
    if p.upstreams.get(up.key) != up.hash:
        raise IngestError(f"{path}: made from {up.key} {p.upstreams.get(up.key)}, but {up_path} "
                          f"is {up.key} {up.hash}")


# -- geometry -------------------------------------------------------------------------------
def sci_header(headers: list[fits.Header], path) -> fits.Header:
    for h in headers:
        if h.get("EXTNAME", "").strip().upper() == "SCI":
            return h
    for h in headers:
        if h.get("NAXIS", 0) == 2:
            return h
    raise IngestError(f"{path}: no SCI image HDU")


def celestial_wcs(header: fits.Header, path) -> WCS:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            wcs = WCS(header).celestial
    except Exception as exc:  # astropy.wcs raises several exception types
        raise IngestError(f"{path}: invalid WCS ({type(exc).__name__}: {exc})") from exc
    if wcs.naxis != 2:
        raise IngestError(f"{path}: no celestial WCS in the header")
    return wcs


def _angle(value, unit) -> float | None:
    """Degrees from a header value: a number of degrees or a sexagesimal string."""
    if value is None:
        return None
    if isinstance(value, (int, float, np.number)):
        return float(value)
    text = str(value).strip()
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return float(Angle(text, unit=unit).deg)
    except (ValueError, u.UnitsError):
        return None


def pointing(raw_primary: fits.Header) -> tuple[float | None, float | None]:
    """Telescope pointing (deg) from a raw primary header: ``RA``/``DEC`` or ``TELRA``/``TELDEC``,
    decimal degrees or sexagesimal (RA in hours); ``(None, None)`` when absent."""
    for kra, kdec in (("RA", "DEC"), ("TELRA", "TELDEC")):
        if kra in raw_primary and kdec in raw_primary:
            ra = _angle(raw_primary[kra], u.hourangle)
            dec = _angle(raw_primary[kdec], u.deg)
            if ra is not None and dec is not None and abs(dec) <= 90:
                return ra % 360.0, dec
    return None, None


def _sky_from_data(path) -> tuple[float | None, float | None]:
    """Median background level and RMS (e-/pixel) from the BACKGROUND and RMS HDUs, on a
    subsampled grid (every 8th pixel)."""
    out = []
    try:
        with fits.open(path, memmap=True) as hdul:
            names = [h.name for h in hdul]
            for name in ("BACKGROUND", "RMS"):
                if name in names and hdul[name].data is not None:
                    out.append(float(np.nanmedian(hdul[name].data[::8, ::8])))
                else:
                    out.append(None)
    except Exception as exc:  # astropy raises OSError/ValueError/TypeError variants
        raise IngestError(f"{path}: cannot read the background ({type(exc).__name__}: {exc})") from exc
    return tuple(v if v is not None and np.isfinite(v) else None for v in out)


# -- badness ----------------------------------------------------------------------------------
def propagate_badness(row: dict, parent: dict | None, parent_table: str) -> dict:
    """Mark ``row`` bad when its upstream ``parent`` row is bad (in place; returns ``row``).

    The reason names the upstream table and its reason, after the row's own reason if any.
    """
    if parent is not None and parent.get("bad"):
        upstream = f"upstream {parent_table} bad: {parent.get('bad_reason') or 'no reason given'}"
        row["bad_reason"] = f"{row['bad_reason']}; {upstream}" if row.get("bad") and row.get("bad_reason") \
            else upstream
        row["bad"] = True
    row.setdefault("bad", False)
    row.setdefault("bad_reason", None)
    return row


# -- one CCD --------------------------------------------------------------------------------
@dataclass
class CCDProducts:
    """Rows of one CCD's products, read from the files, before any id is known."""

    provenances: list[vprov.Provenance]
    prov_keys: dict[str, tuple]  # kind -> (step, obs, hash)
    exposure: dict
    image: dict
    source_list: dict
    psf: dict
    wcs: dict | None = None
    zp: dict | None = None


def file_row(path, root) -> dict:
    return {"filename": relative(path, root), "filekey": "", "checksum": checksum(path)}


def _raw_checksum(engine, instrument: str, exposure: str, filename: str, path) -> str:
    """Checksum of the raw file; raw exposures are shared and never rewritten, so the one
    stored for the same file is reused instead of reading hundreds of MB again per CCD."""
    try:
        with Session(engine) as session:
            stored = session.execute(sa.select(m.Exposure.filename, m.Exposure.checksum).where(
                m.Exposure.instrument == instrument, m.Exposure.name == exposure)).first()
    except (sa.exc.OperationalError, sa.exc.ProgrammingError):  # no table yet
        stored = None
    if stored is not None and stored.filename == filename:
        return stored.checksum
    return checksum(path)


def read_ccd_products(engine, root, instrument: str, exposure: str, ccd: str, files: dict,
                      exposure_header: dict | None = None) -> CCDProducts:
    """Read and check every file of one CCD (headers and checksums); nothing is written.

    Raises :class:`IngestError` naming the file for a missing file, a missing keyword,
    provenance cards that do not match, or products made from other products than these.
    """
    missing = [k for k in REQUIRED_FILES if not files.get(k)]
    if missing:
        raise IngestError(f"{instrument} {exposure} {ccd}: no {', '.join(missing)} file given")
    unknown = set(files) - set(FILE_STEPS) - {"raw"}
    if unknown:
        raise IngestError(f"{instrument} {exposure} {ccd}: unknown file kind(s) {sorted(unknown)}")
    paths = {k: Path(v) for k, v in files.items() if v}
    heads = {k: read_headers(p) for k, p in paths.items()}
    provs = {k: file_provenance(heads[k], paths[k], FILE_STEPS[k], instrument)
             for k in paths if k != "raw"}
    # the chain: each product made from the given upstream product
    for k in ("psf", "background"):
        if provs[k].hash != provs["sources"].hash:
            raise IngestError(f"{paths[k]}: extraction {provs[k].hash}, but {paths['sources']} "
                              f"is extraction {provs['sources'].hash}")
    check_upstream(provs["sources"], provs["image"], paths["sources"], paths["image"])
    if "wcs" in provs:
        check_upstream(provs["wcs"], provs["sources"], paths["wcs"], paths["sources"])
    if "zp" in provs and "wcs" in provs:
        check_upstream(provs["zp"], provs["wcs"], paths["zp"], paths["wcs"])

    img_path, img = paths["image"], heads["image"]
    for key, expected in (("INSTRUME", instrument), ("EXPOSURE", exposure), ("CCD", ccd)):
        got = header_value(img, key, img_path, required=True, kind=str).strip()
        if got.lower() != str(expected).lower():
            raise IngestError(f"{img_path}: {key} = {got!r}, expected {expected!r}")

    # exposure
    info = {k: _finite(v) for k, v in (exposure_header or {}).items()}
    info = {k: float(v) if isinstance(v, (int, float, np.number)) and not isinstance(v, bool) else v
            for k, v in info.items()}  # numpy scalars: psycopg adapts Python numbers only
    raw_ra, raw_dec = pointing(heads["raw"][0])
    try:
        raw_name = relative(paths["raw"], root)
    except IngestError:  # a user's calibrated file, read where it lies: its absolute path
        if instrument.lower() != Calibrated.name:
            raise
        raw_name = Path(paths["raw"]).resolve().as_posix()
    exp_row = {  # the instrument as spelled in the provenance: the same from every caller
        "instrument": provs["image"].obs, "name": exposure,
        "filter": str(info.get("filter") or header_value(img, "FILTER", img_path, True, str)).strip(),
        "mjd": float(info.get("mjd") or header_value(img, "MJD-OBS", img_path, True)),
        "exptime": float(info["exptime"]) if info.get("exptime") is not None
        else header_value(img, "EXPTIME", img_path, True),
        "airmass": info["airmass"] if info.get("airmass") is not None
        else header_value(img, "AIRMASS", img_path),
        "ra": info["ra"] if info.get("ra") is not None else raw_ra,
        "dec": info["dec"] if info.get("dec") is not None else raw_dec,
        "filename": raw_name,
        "checksum": _raw_checksum(engine, provs["image"].obs, exposure, raw_name, paths["raw"]),
    }

    # world coordinates (before the image: a solved WCS gives the image's footprint)
    wcs_row = None
    if "wcs" in paths:
        wh, wp = heads["wcs"], paths["wcs"]
        ok = header_value(wh, "ASTR_OK", wp, True, _bool)
        wcs_row = {**file_row(wp, root), "rms_arcsec": _measured(header_value(wh, "ASTR_RMS", wp), ok),
                   "n_stars": _measured(header_value(wh, "ASTR_N", wp, kind=int), ok), "bad": not ok,
                   "bad_reason": None if ok else (header_value(wh, "ASTR_MSG", wp, kind=str)
                                                  or "astrometry failed")}

    # image
    sci = sci_header(img, img_path)
    nx, ny = int(sci["NAXIS1"]), int(sci["NAXIS2"])
    solved = wcs_row is not None and not wcs_row["bad"]
    wcs = celestial_wcs(heads["wcs"][0] if solved else sci, paths["wcs"] if solved else img_path)
    centre, corners = footprint(wcs, nx, ny)
    if not (np.isfinite(centre).all() and np.isfinite(corners).all()):
        raise IngestError(f"{paths['wcs'] if solved else img_path}: the WCS maps the image outside the sky")
    scale = float(np.mean(proj_plane_pixel_scales(wcs)) * 3600.0)
    src_path, src = paths["sources"], heads["sources"]
    fwhm_pix = header_value(src, "FWHM", src_path)
    bg_path = paths["background"]
    sky = header_value(heads["background"], SKY_KEYS, bg_path)
    sky_rms = header_value(heads["background"], SKY_RMS_KEYS, bg_path)
    if sky is None or sky_rms is None:
        sky_data, rms_data = _sky_from_data(bg_path)
        sky = sky_data if sky is None else sky
        sky_rms = rms_data if sky_rms is None else sky_rms
    image_row = {**file_row(img_path, root), "ccd": ccd, "nx": nx, "ny": ny, "pixel_scale": scale,
                 "ra": float(centre[0]), "dec": float(centre[1]),
                 "healpix": int(m.healpix_index(centre[0], centre[1])), "wcs_solved": solved,
                 "fwhm_arcsec": fwhm_pix * scale if fwhm_pix is not None else None,
                 "sky_level": sky, "sky_rms": sky_rms,
                 "saturation": header_value(img, "SATURATE", img_path),
                 "read_noise": header_value(img, "RDNOISE", img_path), "bad": False, "bad_reason": None}
    for k, (ra, dec) in enumerate(corners, start=1):
        image_row[f"ra_corner_{k}"], image_row[f"dec_corner_{k}"] = float(ra), float(dec)

    # source list, PSF
    n_src = header_value(src, "N_SRC", src_path, kind=int)
    if n_src is None:  # the SOURCES table's row count
        n_src = header_value([h for h in src if h.get("EXTNAME", "").strip().upper() == "SOURCES"],
                             "NAXIS2", src_path, True, int)
    sl_row = propagate_badness({**file_row(src_path, root), "n_sources": n_src, "fwhm": fwhm_pix,
                                "aper_radius": header_value(src, "APER_R", src_path),
                                "background_filename": relative(bg_path, root),
                                "background_checksum": checksum(bg_path)}, image_row, "images")
    psf_row = propagate_badness({**file_row(paths["psf"], root),
                                 "fwhm": header_value(heads["psf"], "FWHM", paths["psf"]),
                                 "n_stars": header_value(heads["psf"] + src, PSF_N_KEYS, paths["psf"], kind=int)},
                                sl_row, "source_lists")
    if wcs_row is not None:
        propagate_badness(wcs_row, sl_row, "source_lists")

    zp_row = None
    if "zp" in paths:
        zh, zpath = heads["zp"], paths["zp"]
        ok = header_value(zh, "ZP_OK", zpath, True, _bool)
        zp_row = {**file_row(zpath, root), "zp": header_value(zh, "ZP", zpath, ok),
                  "zp_err": _measured(header_value(zh, "ZP_ERR", zpath), ok),
                  "apcor": header_value(zh, "APCOR", zpath), "limmag5": header_value(zh, "LIMMAG5", zpath),
                  "n_stars": _measured(header_value(zh, "ZP_N", zpath, kind=int), ok), "bad": not ok,
                  "bad_reason": None if ok else (header_value(zh, "ZP_MSG", zpath, kind=str)
                                                 or "zero point failed")}
        if wcs_row is not None:
            propagate_badness(zp_row, wcs_row, "world_coordinates")
        else:
            propagate_badness(zp_row, sl_row, "source_lists")

    unique = {(p.step, p.obs, p.hash): p for p in provs.values()}
    return CCDProducts(provenances=list(unique.values()),
                       prov_keys={k: (p.step, p.obs, p.hash) for k, p in provs.items()},
                       exposure=exp_row, image=image_row, source_list=sl_row, psf=psf_row,
                       wcs=wcs_row, zp=zp_row)


def upsert_one(session, model, row: dict) -> int:
    """Insert or update one row (on its natural key); returns its id."""
    key = m.NATURAL_KEYS[model.__tablename__]
    upsert(session, model, [row], update=[c for c in row if c not in key])
    return session.scalar(sa.select(model.id).where(*(getattr(model, c) == row[c] for c in key)))


def write_ccd_products(session, prod: CCDProducts) -> dict:
    """Write one CCD's rows in the open transaction of ``session`` (never commits).

    Table order is fixed (provenances, exposures, images, source_lists, psfs,
    world_coordinates, zero_points) so that concurrent jobs lock rows in the same order.
    Returns ``{table: rows written}``.
    """
    ingest_provenances(session, prod.provenances)
    pid = {kind: provenance_id(session, *key) for kind, key in prod.prov_keys.items()}
    exp_id = upsert_one(session, m.Exposure, prod.exposure)
    image_id = upsert_one(session, m.Image, {**prod.image, "exposure_id": exp_id,
                                               "provenance_id": pid["image"]})
    sl_id = upsert_one(session, m.SourceList, {**prod.source_list, "image_id": image_id,
                                                 "provenance_id": pid["sources"]})
    upsert_one(session, m.PSF, {**prod.psf, "source_list_id": sl_id, "provenance_id": pid["psf"]})
    counts = {"provenances": len(prod.provenances), "exposures": 1, "images": 1, "source_lists": 1,
              "psfs": 1, "world_coordinates": 0, "zero_points": 0}
    wcs_id = None
    if prod.wcs is not None:
        wcs_id = upsert_one(session, m.WorldCoordinates, {**prod.wcs, "source_list_id": sl_id,
                                                            "provenance_id": pid["wcs"]})
        counts["world_coordinates"] = 1
    if prod.zp is not None:
        upsert_one(session, m.ZeroPoint, {**prod.zp, "source_list_id": sl_id,
                                           "world_coordinates_id": wcs_id, "provenance_id": pid["zp"]})
        counts["zero_points"] = 1
    return counts


def ingest_image_products(engine, cfg: dict, instrument: str, exposure: str, ccd: str, files: dict,
                          exposure_header: dict | None = None, init: bool = True) -> dict:
    """Ingest the products of one CCD of one exposure, in one transaction.

    Parameters
    ----------
    engine : database engine.
    cfg : merged config (gives the data root, to which file paths are made relative).
    instrument, exposure, ccd : what the files are of (checked against the image header).
    files : paths by kind: ``raw`` (the raw exposure), ``image``, ``sources``, ``psf``,
        ``background``, and ``wcs``, ``zp`` when those steps ran.
    exposure_header : standard exposure keys (filter, mjd, exptime, ra, dec, airmass) from
        :meth:`Instrument.read_exposure_header`; by default filter, mjd, exptime and airmass
        come from the image header and the pointing from the raw primary header.
    init : create the tables first (:func:`vo.db.migrate.init_db`).

    Returns
    -------
    ``{table: rows written}``; ingesting the same files again writes the same counts and
    changes no row.
    """
    from vo import config as vconfig

    root = vconfig.data_root(cfg)
    if init:
        init_db(engine)
    prod = read_ccd_products(engine, root, instrument, exposure, ccd, files, exposure_header)
    counts = in_transaction(engine, write_ccd_products, prod)
    log.info("%s %s %s: %s", instrument, exposure, ccd, counts)
    return counts


# -- catalog excerpt tiles ---------------------------------------------------------------------
# -- vo populate -------------------------------------------------------------------------------
