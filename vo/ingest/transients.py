"""Ingest the transient products (references, subtractions, cutouts, measurements, scores)
and associate the real measurements to sky objects: one CCD at a time.

The patterns are those of :mod:`vo.ingest.images`:

* Rows come from the files alone (provenance cards of :mod:`vo.io.fits`, HDF5 attributes of
  :mod:`vo.io.hdf5`, header keywords, tables) plus the rows already in the database that
  they hang from: a subtraction needs the ``images`` and ``zero_points`` rows of its new
  image (:func:`vo.ingest.images.ingest_image_products` first) and the ``references``
  row of its reference (:func:`ingest_reference` first); a clear error names what is missing.
* Every file is read and checked first (the chain reference/zero point -> subtraction ->
  detection -> cutouts -> measurements -> scores must be made from each other, by
  provenance hash); the rows of one CCD are then written in ONE transaction with the
  association: all or nothing.
* Idempotent: ``INSERT ... ON CONFLICT`` on the natural keys; a measurement that already
  has an object keeps it, so ingesting again writes the same rows and the same object names.
* Concurrent: locks are taken in one fixed order (provenances, subtractions, cutouts, the
  CCD's advisory lock (:func:`vo.db.bulk.lock`), the association's cell locks and name
  counters (:mod:`vo.db.objects`), then measurements and scores), so concurrent jobs queue
  instead of deadlocking.
* Fast: the rows are columns (no dict per row); a CCD ingested for the first time is
  written with plain ``COPY`` (:func:`vo.db.bulk.upsert` ``new``), its real measurements
  associated before they are written, so each row is written once.

Badness propagates: image, zero point or reference bad -> subtraction -> cutouts ->
measurements.  A measurement is *real* when it is not bad and, when a score file is
given, its score is >= ``scoring.threshold``; only real measurements get an object.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import sqlalchemy as sa
from astropy.io import fits

from vo import config as vconfig
from vo import provenance as vprov
from vo.db import bulk
from vo.db import models as m
from vo.db import objects as vobjects
from vo.db.bulk import IngestError, upsert
from vo.db.migrate import init_db
from vo.db.rows import in_transaction, ingest_provenances, provenance_id, relative
from vo.images.realbogus.score import is_real
from vo.ingest.images import (celestial_wcs, check_upstream, file_provenance, file_row, header_value,
                              propagate_badness, read_headers, sci_header, upsert_one)
from vo.io.fits import FitsError, add_provenance
from vo.io.hdf5 import read_attrs
from vo.sky import footprint

#: Version of the ingest code.

#: The step that makes each kind of file.
FILE_STEPS = {"difference": "subtraction", "candidates": "detection", "cutouts": "cutouts",
              "measurements": "measurements", "scores": "scoring", "image": "preprocessing",
              "zp": "zero_point", "reference_image": "references"}
REQUIRED_FILES = ("difference", "candidates", "cutouts", "measurements", "image", "zp", "reference_image")
REFERENCE_FILES = ("image", "psf", "sources")
#: Step name of the objects' provenance.
#: Every 8th pixel of a map is enough for its median noise.
SUBSAMPLE = 8
#: Measurement file columns -> ``measurements`` columns.
MEAS_COLUMNS = {"x": "x", "y": "y", "flux_psf": "flux", "flux_psf_err": "flux_err", "mag": "mag",
                "mag_err": "mag_err", "snr_psf": "snr"}

log = logging.getLogger("vo.ingest.transients")


# -- small readers ----------------------------------------------------------------------------
def _map_median(path: Path, hdu: str) -> float | None:
    """Median of the finite positive pixels of an image HDU, on a subsampled grid."""
    try:
        with fits.open(path, memmap=True) as hdul:
            data = np.asarray(hdul[hdu].data[::SUBSAMPLE, ::SUBSAMPLE], float)
    except (KeyError, OSError, TypeError) as exc:
        raise IngestError(f"{path}: cannot read HDU {hdu} ({type(exc).__name__}: {exc})") from exc
    good = data[np.isfinite(data) & (data > 0)]
    return float(np.median(good)) if good.size else None


def _limmag(flux_err: float | None, zp: float | None, nsigma: float = 5.0) -> float | None:
    """Magnitude of ``nsigma`` times a PSF-flux error (e-) with zero point ``zp``."""
    if flux_err is None or zp is None or not flux_err > 0:
        return None
    return float(-2.5 * np.log10(nsigma * flux_err) + zp)


def hdf5_attrs(path) -> dict:
    """Root attributes of an HDF5 product (:func:`vo.io.hdf5.read_attrs`)."""
    path = Path(path)
    if not path.is_file():
        raise IngestError(f"{path}: file not found")
    try:
        with h5py.File(path, "r") as f:
            return read_attrs(f)
    except OSError as exc:
        raise IngestError(f"{path}: not a readable HDF5 file ({exc})") from exc


def hdf5_provenance(attrs: dict, path, step: str, instrument: str) -> vprov.Provenance:
    """The provenance in an HDF5 product's root attributes, checked like a FITS product's
    (:func:`vo.ingest.images.file_provenance`)."""
    if "provenance_hash" not in attrs or "step" not in attrs:
        raise IngestError(f"{path}: no provenance attributes (step, provenance_hash, ...)")
    return file_provenance([add_provenance(fits.Header(), attrs)], path, step, instrument)


def _read_table(path, reader, what: str):
    try:
        return reader(path)
    except (FitsError, OSError, ValueError) as exc:
        raise IngestError(f"{path}: cannot read the {what} ({exc})") from exc


# -- references ---------------------------------------------------------------------------------
def read_reference_row(root, instrument: str, field: str, filt: str, ccd: str,
                       files: dict) -> tuple[vprov.Provenance, dict]:
    """Provenance and row of a reference coadd from its three files (headers only, plus the
    PSF stamp for the limiting magnitude); nothing is written."""
    missing = [k for k in REFERENCE_FILES if not files.get(k)]
    if missing:
        raise IngestError(f"reference {instrument} {field} {filt} {ccd}: no {', '.join(missing)} file given")
    paths = {k: Path(files[k]) for k in REFERENCE_FILES}
    heads = {k: read_headers(p) for k, p in paths.items()}
    provs = {k: file_provenance(heads[k], paths[k], "references", instrument) for k in paths}
    for k in ("psf", "sources"):
        if provs[k].hash != provs["image"].hash:
            raise IngestError(f"{paths[k]}: references {provs[k].hash}, but {paths['image']} is "
                              f"references {provs['image'].hash}")
    img, ip = heads["image"], paths["image"]
    for key, expected in (("FILTER", filt), ("CCD", ccd)):
        got = header_value(img, key, ip, required=True, kind=str).strip()
        if got.lower() != str(expected).lower():
            raise IngestError(f"{ip}: {key} = {got!r}, expected {expected!r}")
    sci = sci_header(img, ip)
    nx, ny = int(sci["NAXIS1"]), int(sci["NAXIS2"])
    centre, _ = footprint(celestial_wcs(sci, ip), nx, ny)
    zp = header_value(img, "MAGZP", ip, required=True)
    fwhm = header_value(heads["psf"], "FWHM", paths["psf"])
    sky_rms = header_value(heads["sources"], ("BKG_RMS", "SKY_RMS"), paths["sources"])
    limmag5 = None
    try:
        with fits.open(paths["psf"], memmap=True) as hdul:
            stamp = np.asarray(hdul["PSF_STAMP"].data, float) if "PSF_STAMP" in hdul else None
    except OSError as exc:
        raise IngestError(f"{paths['psf']}: cannot read the PSF stamp ({exc})") from exc
    if stamp is not None and sky_rms is not None and np.sum(stamp ** 2) > 0:
        nea = stamp.sum() ** 2 / np.sum(stamp ** 2)  # noise-equivalent area (pix)
        limmag5 = _limmag(sky_rms * np.sqrt(nea), zp)
    row = {**file_row(ip, root), "instrument": provs["image"].obs, "field": field, "filter": filt,
           "ccd": ccd, "n_images": header_value(img, ("NCOMBINE", "N_IMAGES"), ip, True, int), "zp": zp,
           "fwhm": fwhm, "limmag5": limmag5, "mjd_start": header_value(img, "MJD-BEG", ip),
           "mjd_end": header_value(img, "MJD-END", ip), "nx": nx, "ny": ny,
           "ra": float(centre[0]), "dec": float(centre[1]), "bad": False, "bad_reason": None}
    return provs["image"], row


def _write_reference(session, prov: vprov.Provenance, row: dict) -> int:
    ingest_provenances(session, [prov])
    pid = provenance_id(session, prov.step, prov.obs, prov.hash, row["filename"])
    return upsert_one(session, m.Reference, {**row, "provenance_id": pid})


def ingest_reference(engine, cfg: dict, instrument: str, field: str, filt: str, ccd: str, files: dict,
                     init: bool = True) -> int:
    """Add or update the ``references`` row of one coadd (files ``image``, ``psf``,
    ``sources`` of :func:`vo.images.reference.coadd.write_reference`); returns its id."""
    root = vconfig.data_root(cfg)
    if init:
        init_db(engine)
    prov, row = read_reference_row(root, instrument, field, filt, ccd, files)
    rid = in_transaction(engine, _write_reference, prov, row)
    log.info("reference %s %s %s %s: row %d", instrument, field, filt, ccd, rid)
    return rid


# -- one CCD ----------------------------------------------------------------------------------
@dataclass
class TransientProducts:
    """One CCD's transient rows read from the files, before any id is known."""

    where: str
    provenances: list[vprov.Provenance]
    prov_keys: dict[str, tuple]
    image_file: str
    zp_file: str
    reference_file: str
    subtraction: dict
    cutouts: dict
    measurements: dict[str, list]   # columns; without cutouts_id, provenance_id, mjd, filter, object_id
    scores: dict[str, list] | None = None  # columns aligned with measurements; without the ids
    threshold: float | None = None   # score threshold of "real" (None: no scores)
    radius: float = 1.0


def _measurement_columns(meas, path, root) -> dict[str, list]:
    """``measurements`` columns of the rows of the file that are not dropped (``row_index``:
    their rows in the file)."""
    keep = ~np.asarray(meas["is_dropped"], bool) if "is_dropped" in meas.colnames else np.ones(len(meas), bool)
    rows_idx = np.flatnonzero(keep)
    ra, dec = np.asarray(meas["ra"], float)[rows_idx], np.asarray(meas["dec"], float)[rows_idx]
    bad_pos = ~(np.isfinite(ra) & np.isfinite(dec) & (np.abs(dec) <= 90))
    if bad_pos.any():
        raise IngestError(f"{path}: rows {rows_idx[bad_pos][:10].tolist()} have no valid ra/dec")
    ra = np.mod(ra, 360.0)
    is_bad = np.asarray(meas["is_bad"], bool)[rows_idx]
    reasons = np.asarray(meas["bad_reasons"], str)[rows_idx]
    n = rows_idx.size
    base = file_row(path, root)
    cols = {"filename": [base["filename"]] * n, "checksum": [base["checksum"]] * n,
            "filekey": rows_idx.astype(str).tolist(), "row_index": rows_idx.tolist(), "ra": ra.tolist(),
            "dec": dec.tolist(), "healpix": m.healpix_index(ra, dec).tolist(),
            "is_negative": np.asarray(meas["is_negative"], bool)[rows_idx].tolist(), "bad": is_bad.tolist(),
            "bad_reason": [(r or "analytic cuts") if b else None for b, r in zip(is_bad.tolist(), reasons.tolist())]}
    cols.update({db: bulk.finite_or_none(np.asarray(meas[c], float)[rows_idx]) for c, db in MEAS_COLUMNS.items()})
    return cols


def _score_columns(scores, meas, path, root, row_index: list[int]) -> dict[str, list]:
    """``scores`` columns (without the ids) of the measurement rows ``row_index``."""
    if len(scores) != len(meas):
        raise IngestError(f"{path}: {len(scores)} scores for {len(meas)} measurement rows")
    if "id" in scores.colnames and "id" in meas.colnames and \
            not np.array_equal(np.asarray(scores["id"]), np.asarray(meas["id"])):
        raise IngestError(f"{path}: score ids differ from the measurement ids")
    values = np.asarray(scores["score"], float)[np.asarray(row_index, np.int64)]
    algorithm = str(scores.meta.get("algorithm") or "").strip()
    if not algorithm:
        raise IngestError(f"{path}: no scoring algorithm (ALGORITH) in the SCORES header")
    wrong = ~(np.isfinite(values) & (values >= 0) & (values <= 1))
    if wrong.any():
        k = int(np.flatnonzero(wrong)[0])
        raise IngestError(f"{path}: row {row_index[k]}: score {values[k]} not in [0, 1]")
    n = len(row_index)
    base = file_row(path, root)
    return {"filename": [base["filename"]] * n, "checksum": [base["checksum"]] * n,
            "filekey": [str(i) for i in row_index], "algorithm": [algorithm] * n, "score": values.tolist()}


def read_transient_products(cfg: dict, instrument: str, exposure: str, ccd: str,
                            files: dict) -> TransientProducts:
    """Read and check every file of one CCD; nothing is written.

    Raises :class:`IngestError` naming the file for a missing file or HDU, provenance cards
    that do not match, products not made from each other, or a header that names another
    exposure or CCD.
    """
    from vo.images.detect.measure import read_measurements
    from vo.images.realbogus.score import read_scores

    where = f"{instrument} {exposure} {ccd}"
    missing = [k for k in REQUIRED_FILES if not files.get(k)]
    if missing:
        raise IngestError(f"{where}: no {', '.join(missing)} file given")
    unknown = set(files) - set(FILE_STEPS)
    if unknown:
        raise IngestError(f"{where}: unknown file kind(s) {sorted(unknown)}")
    root = vconfig.data_root(cfg)
    paths = {k: Path(v) for k, v in files.items() if v}
    heads = {k: read_headers(p) for k, p in paths.items() if k != "cutouts"}
    provs = {k: file_provenance(heads[k], paths[k], FILE_STEPS[k], instrument)
             for k in paths if k != "cutouts"}
    attrs = hdf5_attrs(paths["cutouts"])
    provs["cutouts"] = hdf5_provenance(attrs, paths["cutouts"], "cutouts", instrument)
    for k, up in (("difference", "zp"), ("difference", "reference_image"), ("candidates", "difference"),
                  ("cutouts", "candidates"), ("measurements", "cutouts"), ("scores", "measurements")):
        if k in provs:
            check_upstream(provs[k], provs[up], paths[k], paths[up])

    dp, dh = paths["difference"], heads["difference"]
    diff_sci = next((h for h in dh if h.get("EXTNAME", "").strip().upper() == "DIFF"), None)
    if diff_sci is None:
        raise IngestError(f"{dp}: no DIFF HDU")
    for key, expected in (("EXPOSURE", exposure), ("CCD", ccd)):
        got = header_value([diff_sci], key, dp, required=True, kind=str).strip()
        if got.lower() != str(expected).lower():
            raise IngestError(f"{dp}: {key} = {got!r}, expected {expected!r}")
    zp = header_value(dh[:1], "MAGZP", dp)  # the image's own, or carried over from the reference
    if zp is None:
        zp = header_value(heads["zp"], "ZP", paths["zp"])
    flux_err = _map_median(dp, "FLUXERR")
    sub_row = {**file_row(dp, root), "method": header_value(dh, "METHOD", dp, True, str).strip(),
               "fwhm": header_value(dh, "FWHM", dp), "noise_rms": _map_median(dp, "ERROR"),
               "limmag5": _limmag(flux_err, zp),
               "n_candidates": header_value(heads["candidates"], "N_CAND", paths["candidates"], True, int),
               "bad": False, "bad_reason": None}
    cp = paths["cutouts"]
    try:
        cut_row = {**file_row(cp, root), "n_cutouts": int(attrs["n_candidates"]), "size": int(attrs["size"])}
    except (KeyError, TypeError, ValueError) as exc:
        raise IngestError(f"{cp}: attribute {exc} missing or not an integer") from None

    mp = paths["measurements"]
    meas = _read_table(mp, read_measurements, "measurements")
    for col in ("ra", "dec", "is_negative"):
        if col not in meas.colnames:
            raise IngestError(f"{mp}: MEASUREMENTS table lacks column {col!r}")
    meas_cols = _measurement_columns(meas, mp, root)
    scores, threshold = None, None
    if "scores" in paths:
        table = _read_table(paths["scores"], read_scores, "scores")
        scores = _score_columns(table, meas, paths["scores"], root, meas_cols["row_index"])
        threshold = float(cfg["scoring"]["threshold"])
    assoc = vprov.provenance(cfg, "association", provs["measurements"].obs)
    unique = {(p.step, p.obs, p.hash): p for p in [*provs.values(), assoc]}
    keys = {k: (p.step, p.obs, p.hash) for k, p in provs.items()}
    keys["association"] = (assoc.step, assoc.obs, assoc.hash)
    return TransientProducts(where=where, provenances=sorted(unique.values(), key=lambda p: (p.step, p.hash)),
                             prov_keys=keys, image_file=relative(paths["image"], root),
                             zp_file=relative(paths["zp"], root),
                             reference_file=relative(paths["reference_image"], root), subtraction=sub_row,
                             cutouts=cut_row, measurements=meas_cols, scores=scores, threshold=threshold,
                             radius=float(cfg["association"]["radius"]))


def _parent(session, model, filename: str, what: str, hint: str, extra=(), join=None) -> dict:
    """The row of ``model`` for a file (``id``, ``bad``, ``bad_reason`` and ``extra`` columns,
    from ``join`` where given)."""
    stmt = sa.select(model.id, model.bad, model.bad_reason, *extra)
    if join is not None:
        stmt = stmt.join(join)
    row = session.execute(stmt.where(model.filename == filename).order_by(model.id.desc())).first()
    if row is None:
        raise IngestError(f"{what}: no {model.__tablename__} row for {filename} in the database ({hint})")
    return row._asdict()


def write_transient_products(session, prod: TransientProducts) -> dict:
    """Write one CCD's transient rows and associate its real measurements, in the open
    transaction of ``session`` (never commits).  Returns ``{table: rows written}`` plus
    ``associated`` (measurements newly given an object) and ``objects_created``."""
    hint = "ingest the image-level products of this CCD first (ingest_image_products)"
    image = _parent(session, m.Image, prod.image_file, prod.where, hint,
                    (m.Exposure.mjd, m.Exposure.filter), join=m.Image.exposure)
    zp = _parent(session, m.ZeroPoint, prod.zp_file, prod.where, hint)
    ref = _parent(session, m.Reference, prod.reference_file, prod.where, "ingest the reference first "
                  "(ingest_reference)")
    ingest_provenances(session, prod.provenances)
    pid = {kind: provenance_id(session, *key, prod.where) for kind, key in prod.prov_keys.items()}

    sub = dict(prod.subtraction)
    for parent, table in ((image, "images"), (zp, "zero_points"), (ref, "references")):
        propagate_badness(sub, parent, table)
    sub_id = upsert_one(session, m.Subtraction, {**sub, "image_id": image["id"], "reference_id": ref["id"],
                                                   "zero_point_id": zp["id"], "provenance_id": pid["difference"]})
    cut = propagate_badness({**prod.cutouts, "bad": False, "bad_reason": None}, sub, "subtractions")
    cut_id = upsert_one(session, m.Cutouts, {**cut, "subtraction_id": sub_id, "provenance_id": pid["cutouts"]})
    # the ingests of one CCD queue here; a CCD ingested for the first time (the usual case)
    # is written with plain COPYs
    t = m.Measurement.__table__
    new = bulk.lock(session, t.name, cut_id, pid["measurements"])
    stored = dict(session.execute(sa.select(t.c.row_index, t.c.object_id).where(
        t.c.cutouts_id == cut_id, t.c.provenance_id == pid["measurements"])).tuples().all())
    new = new and not stored
    cols = dict(prod.measurements)
    n = len(cols["row_index"])
    if cut["bad"]:
        badness = [propagate_badness({"bad": b, "bad_reason": r}, cut, "cutouts")
                   for b, r in zip(cols["bad"], cols["bad_reason"])]
        cols["bad"], cols["bad_reason"] = [b["bad"] for b in badness], [b["bad_reason"] for b in badness]
    cols.update(cutouts_id=[cut_id] * n, provenance_id=[pid["measurements"]] * n, mjd=[image["mjd"]] * n,
                filter=[image["filter"]] * n)
    counts = {"provenances": len(prod.provenances), "subtractions": 1, "cutouts": 1, "measurements": n,
              "scores": 0, "associated": 0, "objects_created": 0}
    # the real measurements without an object get one before they are written (a measurement
    # that already has an object keeps it: ingesting again changes nothing)
    real = ~np.array(cols["bad"], bool)
    if prod.scores is not None:
        real &= is_real(np.array(prod.scores["score"]), prod.threshold)
    object_ids = [stored.get(i) for i in cols["row_index"]]
    todo = real & np.array([o is None for o in object_ids], bool)
    if todo.any():
        sel = np.flatnonzero(todo)
        res = vobjects.associate_in_session(session, np.array(cols["ra"])[sel], np.array(cols["dec"])[sel],
                                            image["mjd"], pid["association"], prod.radius)
        for k, oid in zip(sel.tolist(), res.object_ids.tolist()):
            object_ids[k] = oid
        counts["associated"], counts["objects_created"] = int(sel.size), len(res.created)
    cols["object_id"] = object_ids
    key = m.NATURAL_KEYS[t.name]
    upsert(session, m.Measurement, cols, update=[c for c in cols if c not in key], new=new)
    if prod.scores is not None:
        ids = dict(session.execute(sa.select(t.c.row_index, t.c.id).where(
            t.c.cutouts_id == cut_id, t.c.provenance_id == pid["measurements"])).tuples().all())
        score_cols = {**prod.scores, "measurement_id": [ids[i] for i in cols["row_index"]],
                      "provenance_id": [pid["scores"]] * n}
        # new measurements have no scores yet
        counts["scores"] = upsert(session, m.Score, score_cols, update=("algorithm", "score", "filename",
                                                                        "filekey", "checksum"), new=new)
    return counts


def ingest_transient_products(engine, cfg: dict, instrument: str, exposure: str, ccd: str, files: dict,
                              init: bool = True) -> dict:
    """Ingest the transient products of one CCD of one exposure and associate its real
    measurements to objects, in one transaction.

    Parameters
    ----------
    engine : database engine.
    cfg : merged config (data root; ``scoring.threshold``; ``association.radius`` in arcsec).
    instrument, exposure, ccd : what the files are of (checked against the difference header).
    files : paths by kind: ``difference``, ``candidates``, ``cutouts``, ``measurements``,
        ``scores`` (optional), and the upstream ``image``, ``zp`` and ``reference_image``
        whose rows must already be in the database.
    init : create the tables first.

    Returns
    -------
    ``{table: rows written}`` with ``associated`` (measurements given an object by this
    call) and ``objects_created``; ingesting the same files again gives 0 for both.
    """
    if init:
        init_db(engine)
    prod = read_transient_products(cfg, instrument, exposure, ccd, files)
    counts = in_transaction(engine, write_transient_products, prod)
    log.info("%s: %s", prod.where, counts)
    return counts
