"""Alert packets of one exposure, from the database and the exposure's files.

One alert per *real* measurement of the exposure that has an object (the association of
:mod:`vo.ingest.transients`: not bad and, where a score file is given, score >=
``scoring.threshold``).  Each alert holds:

* the candidate: the measurement's row of the measurements file (fluxes, magnitudes, S/N,
  cuts, other numeric columns as ``features``), its zero point, the difference's 5-sigma
  limit and its real/bogus score;
* its object (name, position, first detection, number of detections so far);
* the object's previous detections: its measurements in the database of earlier MJD;
* its forced-photometry history: forced PSF photometry (:func:`vo.images.detect.forced.forced_photometry_sky`)
  at the object's position on this exposure's difference image and on every earlier
  difference image in the database whose CCD footprint holds the object (each file is read
  once per exposure, whatever the number of objects on it);
* the science, template and difference stamps of the cutouts file, as gzipped FITS.

Known objects on the exposure's differences that were not detected there get no alert;
:func:`undetected_forced_photometry` measures them.

Alerts are checked against the schema (:func:`vo.images.alerts.make_alert` /
``validate_alert``) and written per exposure with :func:`write_exposure_alerts`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import sqlalchemy as sa
from astropy.wcs import WCS

from vo import config as vconfig
from vo.db import models as m
from vo.db.engine import Session
from vo.db.rows import relative
from vo.images import alerts as valerts
from vo.images.realbogus.score import is_real
from vo.sky import unit_vectors

log = logging.getLogger("vo.pipeline.alert_packets")

#: Measurement-file columns that are candidate fields (not ``features``).
CANDIDATE_COLUMNS = {"x", "y", "ra", "dec", "id", "is_negative", "is_bad", "is_dropped", "flux_psf",
                     "flux_psf_err", "snr_psf", "mag", "mag_err"}
#: Margin (deg) added to a CCD's centre-to-corner radius when looking for the earlier
#: differences that may hold an object (forced photometry off the pixels returns nothing).
FOOTPRINT_MARGIN = 1.0 / 3600


def _measurement_query(cutouts_file: str, filename: str):
    """Measurements of one file (made from ``cutouts_file``: the indexed way to them) with
    their object, exposure, CCD, zero point and limit."""
    M, C, S, I, E, Z, O = (m.Measurement, m.Cutouts, m.Subtraction, m.Image, m.Exposure, m.ZeroPoint,
                           m.SkyObject)
    return (sa.select(M.id, M.row_index, M.mjd, M.filter, M.bad, M.bad_reason, M.object_id,
                      O.name.label("object_name"), O.ra.label("object_ra"), O.dec.label("object_dec"),
                      O.mjd_first, Z.zp, S.limmag5, S.id.label("subtraction_id"))
            .join(C, M.cutouts_id == C.id).join(S, C.subtraction_id == S.id).join(I, S.image_id == I.id)
            .join(E, I.exposure_id == E.id).join(O, M.object_id == O.id)
            .outerjoin(Z, S.zero_point_id == Z.id)
            .where(C.filename == cutouts_file, M.filename == filename, M.bad.is_(False))
            .order_by(M.row_index))


def _scores(session, measurement_ids, scores_file: str | None) -> dict[int, tuple[float, str]]:
    """``{measurement id: (score, algorithm)}`` from the given score file's rows, else from
    any score row (the latest)."""
    if not len(measurement_ids):
        return {}
    stmt = sa.select(m.Score.measurement_id, m.Score.score, m.Score.algorithm).where(
        m.Score.measurement_id.in_([int(i) for i in measurement_ids])).order_by(m.Score.id)
    if scores_file is not None:
        stmt = stmt.where(m.Score.filename == scores_file)
    return {r.measurement_id: (float(r.score), r.algorithm) for r in session.execute(stmt)}


def previous_detections(session, instrument: str, object_ids, mjd: float) -> dict[int, list[dict]]:
    """Earlier (MJD < ``mjd``) measurements of the objects: ``{object id: [prv_candidate]}``
    in time order; ``candid`` as :func:`vo.images.alerts.candid_for` made it."""
    if not len(object_ids):
        return {}
    M, C, S, I, E = m.Measurement, m.Cutouts, m.Subtraction, m.Image, m.Exposure
    rows = session.execute(
        sa.select(M.id, M.object_id, M.row_index, M.mjd, M.filter, M.ra, M.dec, M.flux, M.flux_err, M.mag,
                  M.mag_err, M.snr, M.is_negative, M.bad, E.name.label("exposure"), I.ccd)
        .join(C, M.cutouts_id == C.id).join(S, C.subtraction_id == S.id).join(I, S.image_id == I.id)
        .join(E, I.exposure_id == E.id)
        .where(M.object_id.in_([int(i) for i in object_ids]), M.mjd < mjd)
        .order_by(M.mjd, M.id)).all()
    scores = _scores(session, [r.id for r in rows], None)
    out: dict[int, list[dict]] = {}
    for r in rows:
        out.setdefault(r.object_id, []).append({
            "candid": valerts.candid_for(instrument, r.exposure, r.ccd, r.row_index), "mjd": r.mjd,
            "filter": r.filter, "ra": r.ra, "dec": r.dec, "flux": r.flux, "flux_err": r.flux_err, "mag": r.mag,
            "mag_err": r.mag_err, "snr": r.snr, "score": scores.get(r.id, (None,))[0],
            "is_negative": bool(r.is_negative), "is_bad": bool(r.bad)})
    return out


def _forced_records(diff, ra, dec, zp, pars: dict, mjd: float, filt: str, exposure: str, ccd: str) -> list:
    """Forced photometry of positions on one difference: a record (or None off the image) each."""
    from vo.images.detect.forced import forced_photometry_sky

    t = forced_photometry_sky(diff, WCS(diff.header), ra, dec, zp, size=int(pars["forced_size"]),
                              limit_nsigma=float(pars["limit_nsigma"]),
                              detect_snr=float(pars["forced_detect_snr"]))
    out = []
    for row in t:
        if not row["ok"]:
            out.append(None)
            continue
        out.append({"mjd": mjd, "filter": filt, "exposure": exposure, "ccd": ccd, "flux": row["flux"],
                    "flux_err": row["flux_err"], "snr": row["snr"], "mag": row["mag"], "mag_err": row["mag_err"],
                    "limmag": row["limmag"], "zp": zp, "flags": int(row["flags"])})
    return out


def _earlier_differences(session, instrument: str, mjd: float, ra, dec) -> list[tuple]:
    """Earlier good subtractions of the instrument whose CCD footprint may hold one of the
    positions: ``(filename, mjd, filter, exposure, ccd, zp, indices of the positions)``."""
    S, I, E, Z = m.Subtraction, m.Image, m.Exposure, m.ZeroPoint
    rows = session.execute(
        sa.select(S.filename, E.mjd, E.filter, E.name, I.ccd, Z.zp, I.ra, I.dec,
                  *[getattr(I, f"{c}_corner_{k}") for k in range(1, 5) for c in ("ra", "dec")])
        .join(I, S.image_id == I.id).join(E, I.exposure_id == E.id).outerjoin(Z, S.zero_point_id == Z.id)
        .where(sa.func.lower(E.instrument) == instrument.lower(), E.mjd < mjd, S.bad.is_(False))
        .order_by(E.mjd, S.id)).all()
    if not rows:
        return []
    arr = np.array([tuple(r[6:]) for r in rows], float)  # centre ra, dec, then 4 corners
    centre = unit_vectors(arr[:, 0], arr[:, 1])
    corners = unit_vectors(arr[:, 2::2].ravel(), arr[:, 3::2].ravel()).reshape(len(rows), 4, 3)
    radius = np.arccos(np.clip(np.einsum("nk,nck->nc", centre, corners), -1, 1)).max(axis=1)
    radius += np.radians(FOOTPRINT_MARGIN)
    pos = unit_vectors(ra, dec)
    inside = np.arccos(np.clip(centre @ pos.T, -1, 1)) <= radius[:, None]  # (n_sub, n_pos)
    return [(r.filename, r.mjd, r.filter, r.name, r.ccd, r.zp, np.flatnonzero(inside[i]))
            for i, r in enumerate(rows) if inside[i].any()]


def forced_history(session, root, instrument: str, mjd: float, ra, dec, pars: dict) -> list[list[dict]]:
    """Forced photometry of each position on every earlier difference in the database that
    holds it (files read once each): a time-ordered list of records per position."""
    from vo.images.subtract import read_difference

    out: list[list[dict]] = [[] for _ in range(len(ra))]
    for filename, smjd, filt, exposure, ccd, zp, idx in _earlier_differences(session, instrument, mjd, ra, dec):
        path = Path(root) / filename
        if not path.is_file():
            log.warning("forced photometry: %s is in the database but not on disk; skipped", path)
            continue
        recs = _forced_records(read_difference(path), np.asarray(ra)[idx], np.asarray(dec)[idx], zp, pars,
                               smjd, filt, exposure, ccd)
        for i, rec in zip(idx, recs):
            if rec is not None:
                out[i].append(rec)
    return out


def _features(row) -> dict:
    """Numeric measurement columns that are not candidate fields (name -> float)."""
    out = {}
    for name in row.colnames:
        v = row[name]
        if name in CANDIDATE_COLUMNS or isinstance(v, (str, np.str_, bool, np.bool_)):
            continue
        if np.ndim(v) == 0 and np.issubdtype(np.asarray(v).dtype, np.number):
            out[name] = float(v)
    return out


def _ccd_alerts(session, cfg, root, instrument: str, exposure: str, ccd: str, files: dict) -> list[dict]:
    from vo.images.detect.cutouts import read_cutouts
    from vo.images.detect.measure import read_measurements
    from vo.images.subtract import read_difference

    missing = [k for k in ("measurements", "cutouts", "difference") if not files.get(k)]
    if missing:
        raise valerts.AlertError(f"{exposure} {ccd}: no {', '.join(missing)} file given")
    meas_file = relative(files["measurements"], root)
    cut_file = relative(files["cutouts"], root)
    if session.scalar(sa.select(m.Cutouts.id).where(m.Cutouts.filename == cut_file).limit(1)) is None:
        raise valerts.AlertError(f"{files['cutouts']}: not in the database: ingest the transient products of "
                                 f"{exposure} {ccd} first (ingest_transient_products)")
    rows = session.execute(_measurement_query(cut_file, meas_file)).all()
    scores_file = relative(files["scores"], root) if files.get("scores") else None
    scores = _scores(session, [r.id for r in rows], scores_file)
    if scores_file is not None:
        threshold = float(cfg["scoring"]["threshold"])
        rows = [r for r in rows if r.id in scores and is_real(scores[r.id][0], threshold)]
    if not rows:
        return []
    table = read_measurements(files["measurements"])
    cut = read_cutouts(files["cutouts"])
    cut_index = {int(c): i for i, c in enumerate(np.asarray(cut.candidates["id"]))}
    mjd = float(rows[0].mjd)
    ora, odec = np.array([r.object_ra for r in rows]), np.array([r.object_dec for r in rows])
    pars = cfg["association"]
    prv = previous_detections(session, instrument, {r.object_id for r in rows}, mjd)
    history = forced_history(session, root, instrument, mjd, ora, odec, pars)
    here = _forced_records(read_difference(files["difference"]), ora, odec, rows[0].zp, pars, mjd,
                           rows[0].filter, exposure, ccd)
    alerts = []
    for k, r in enumerate(rows):
        mrow = table[r.row_index]
        if int(mrow["id"]) not in cut_index:
            raise valerts.AlertError(f"{files['cutouts']}: no cutout of candidate {int(mrow['id'])} "
                                     f"(row {r.row_index} of {files['measurements']})")
        ci = cut_index[int(mrow["id"])]
        score, algorithm = scores.get(r.id, (None, None))
        candidate = {"candid": valerts.candid_for(instrument, exposure, ccd, r.row_index), "mjd": mjd,
                     "instrument": instrument, "exposure": exposure, "ccd": ccd, "filter": r.filter,
                     "ra": float(mrow["ra"]), "dec": float(mrow["dec"]), "x": float(mrow["x"]),
                     "y": float(mrow["y"]), "flux": float(mrow["flux_psf"]), "flux_err": float(mrow["flux_psf_err"]),
                     "mag": float(mrow["mag"]), "mag_err": float(mrow["mag_err"]), "snr": float(mrow["snr_psf"]),
                     "zp": r.zp, "limmag": r.limmag5, "is_negative": bool(mrow["is_negative"]), "score": score,
                     "score_algorithm": algorithm, "is_bad": bool(r.bad), "bad_reason": r.bad_reason}
        previous = prv.get(r.object_id, [])
        obj = {"name": r.object_name, "ra": r.object_ra, "dec": r.object_dec, "mjd_first": r.mjd_first,
               "n_detections": len(previous) + 1}
        forced = history[k] + ([here[k]] if here[k] is not None else [])
        alert = valerts.make_alert(candidate, obj, previous, forced,
                                   {"science": cut.new[ci], "template": cut.ref[ci], "difference": cut.sub[ci]},
                                   features=_features(mrow))
        valerts.validate_alert(alert, f"{exposure} {ccd} measurement row {r.row_index}")
        alerts.append(alert)
    return alerts


def build_alerts(engine, cfg: dict, instrument: str, exposure: str, files_by_ccd: dict) -> list[dict]:
    """The alerts of one exposure (one per real, associated measurement), validated.

    Parameters
    ----------
    engine : database engine, with the exposure's transient products ingested
        (:func:`vo.ingest.transients.ingest_transient_products`).
    cfg : merged config (data root; ``scoring.threshold``; ``association`` forced-photometry
        parameters ``forced_size`` (pix), ``limit_nsigma``, ``forced_detect_snr``).
    instrument : instrument name as the candidate ids use it (e.g. ``"DemoCam"``).
    exposure : exposure name.
    files_by_ccd : ``{ccd: {"measurements", "cutouts", "difference", "scores" (optional)}}``.

    Returns
    -------
    list of alert dicts (schema ``vo.alert``), by CCD then measurement row.
    """
    root = vconfig.data_root(cfg)
    alerts = []
    with Session(engine) as session:
        for ccd in sorted(files_by_ccd):
            alerts += _ccd_alerts(session, cfg, root, instrument, exposure, ccd, files_by_ccd[ccd])
    log.info("%s %s: %d alerts", instrument, exposure, len(alerts))
    return alerts


def undetected_forced_photometry(engine, cfg: dict, instrument: str, exposure: str,
                                files_by_ccd: dict) -> list[dict]:
    """Forced photometry on this exposure's differences of the known objects that fall on
    them but have no measurement in this exposure (they get no alert: there is no
    candidate); one ``vo.forced_photometry`` record per object, with its ``object`` name.
    Objects off the pixels or on too many flagged pixels are left out."""
    from vo.images.subtract import read_difference

    root = vconfig.data_root(cfg)
    out = []
    with Session(engine) as session:
        for ccd in sorted(files_by_ccd):
            files = files_by_ccd[ccd]
            sub_file = relative(files["difference"], root)
            S, I, E, Z, M, C, O = (m.Subtraction, m.Image, m.Exposure, m.ZeroPoint, m.Measurement, m.Cutouts,
                                   m.SkyObject)
            sub = session.execute(sa.select(S.id, E.mjd, E.filter, Z.zp, I.ra, I.dec,
                                            *[getattr(I, f"{c}_corner_{k}") for k in range(1, 5)
                                              for c in ("ra", "dec")])
                                  .join(I, S.image_id == I.id).join(E, I.exposure_id == E.id)
                                  .outerjoin(Z, S.zero_point_id == Z.id).where(S.filename == sub_file)).first()
            if sub is None:
                raise valerts.AlertError(f"{files['difference']}: not in the database: ingest the transient "
                                         f"products of {exposure} {ccd} first (ingest_transient_products)")
            corners = np.array(tuple(sub[6:]), float).reshape(4, 2)
            centre = unit_vectors([sub.ra], [sub.dec])[0]
            radius = np.arccos(np.clip(unit_vectors(corners[:, 0], corners[:, 1]) @ centre, -1, 1)).max()
            detected = sa.select(M.object_id).join(C, M.cutouts_id == C.id).where(
                C.subtraction_id == sub.id, M.object_id.is_not(None))
            objs = session.execute(sa.select(O.name, O.ra, O.dec).where(O.id.not_in(detected))
                                   .order_by(O.id)).all()
            if not objs:
                continue
            ra, dec = np.array([o.ra for o in objs]), np.array([o.dec for o in objs])
            near = np.arccos(np.clip(unit_vectors(ra, dec) @ centre, -1, 1)) <= radius
            if not near.any():
                continue
            recs = _forced_records(read_difference(files["difference"]), ra[near], dec[near], sub.zp,
                                   cfg["association"], sub.mjd, sub.filter, exposure, ccd)
            out += [{"object": objs[i].name, "ra": float(ra[i]), "dec": float(dec[i]), **rec}
                    for i, rec in zip(np.flatnonzero(near), recs) if rec is not None]
    return out


FORCED_COLUMNS = ("object", "ra", "dec", "exposure", "ccd", "filter", "mjd", "flux", "flux_err", "snr", "mag",
                  "mag_err", "limmag", "zp", "flags")


def write_forced_table(path, records: list[dict], attrs: dict | None = None) -> None:
    """The records of :func:`undetected_forced_photometry` as a FITS table (HDU ``FORCED``, columns
    :data:`FORCED_COLUMNS`: fluxes in e- of the difference, magnitudes AB, one row per object,
    possibly none), atomically."""
    from astropy.io import fits
    from astropy.table import Table

    from vo.io.fits import write_fits

    text = {"object", "exposure", "ccd", "filter"}
    table = Table({c: np.array([r.get(c) for r in records], str if c in text else
                               (np.int32 if c == "flags" else float)) for c in FORCED_COLUMNS})
    hdu = fits.table_to_hdu(table)
    hdu.name = "FORCED"
    write_fits(path, fits.HDUList([fits.PrimaryHDU(), hdu]), attrs)


def write_exposure_alerts(path, alerts: list[dict], attrs: dict | None = None) -> None:
    """Write an exposure's alerts (possibly none) to one AVRO file, atomically, with the
    provenance ``attrs`` in its metadata (:func:`vo.images.alerts.write_alerts`)."""
    valerts.write_alerts(path, alerts, attrs)
