"""Ingest products into the database: idempotent, transactional, safe in parallel.

* Idempotent: every table is written with ``INSERT ... ON CONFLICT`` on its natural key
  (:data:`vo.db.models.NATURAL_KEYS`); rows that exist are left alone (provenances) or
  updated only where a value changed.  Ingesting twice changes nothing.
* Transactional: the ``ingest_*`` functions never commit; the file-level entry points run
  one transaction per input file (all its rows or none).
* Parallel: conflicting inserts from other jobs wait for them and then do nothing (or
  update); rows are sorted by natural key so that concurrent jobs lock them in the same
  order (no deadlocks on PostgreSQL).  SQLite writers take the lock at ``BEGIN IMMEDIATE``
  and queue behind the busy timeout.
* Bulk: rows go to the database with COPY (PostgreSQL) or in executemany batches of
  ``batch_size`` (:func:`vo.db.bulk.upsert`), never one ORM object per row.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import sqlalchemy as sa

from vo import provenance as vprov
from vo.db import models as m
from vo.db import bulk
from vo.db.bulk import DEFAULT_BATCH, IngestError, upsert
from vo.db.migrate import init_db
from vo.db.rows import in_transaction, ingest_provenances, provenance_id, records, relative, source_ids
from vo.io.atomic import checksum

#: Version of the ingest code (enters the ``ingest`` provenance hash).
#: Manifest statuses whose raw data is not in the store.
_NOT_STORED = {"failed"}

log = logging.getLogger("vo.ingest.lightcurves")


# -- in-memory objects -> rows ------------------------------------------------------------
def ingest_sources(session, targets_df: pd.DataFrame, project: str,
                   batch_size: int = DEFAULT_BATCH) -> int:
    """Add or update the project's sources from a targets table (columns name, ra, dec
    in deg, optionally mag; every column goes to ``cat_row``).  Returns the row count."""
    missing = [c for c in ("name", "ra", "dec") if c not in targets_df]
    if missing:
        raise IngestError(f"targets table lacks column(s) {missing}; has {list(targets_df.columns)}")
    if targets_df.empty:
        return 0
    ra = targets_df["ra"].to_numpy(dtype=float)
    dec = targets_df["dec"].to_numpy(dtype=float)
    bad = ~(np.isfinite(ra) & np.isfinite(dec) & (np.abs(dec) <= 90))
    if bad.any():
        raise IngestError(f"targets with invalid ra/dec: {list(targets_df['name'][bad][:10])}")
    mag = (targets_df["mag"].to_numpy(dtype=float) if "mag" in targets_df
           else np.full(len(targets_df), np.nan))
    hp = m.healpix_index(ra, dec)
    cat_rows = records(targets_df)
    rows = [{"name": str(name), "project": project, "ra": float(r), "dec": float(d),
             "mag": float(g) if np.isfinite(g) else None, "healpix": int(h), "cat_row": row}
            for name, r, d, g, h, row in zip(targets_df["name"], ra % 360.0, dec, mag, hp, cat_rows)]
    return upsert(session, m.Source, rows, update=("ra", "dec", "mag", "healpix", "cat_row"),
                  batch_size=batch_size)


def ingest_raw(session, manifest: dict, data_root, project: str,
               batch_size: int = DEFAULT_BATCH) -> int:
    """Add or update raw-photometry rows from a download manifest.

    ``manifest``: {"obs", "store" (raw store path, absolute or relative to ``data_root``),
    "download_params_hash", "sources": [{"name", "key", "n_rows", "status", "error"}]}.
    Sources whose download failed are skipped.  Returns the number of rows.
    """
    try:
        obs, store = manifest["obs"], Path(manifest["store"])
        entries = manifest["sources"]
    except KeyError as exc:
        raise IngestError(f"manifest lacks key {exc}") from None
    store = store if store.is_absolute() else Path(data_root) / store
    entries = [e for e in entries if e.get("status") not in _NOT_STORED and not e.get("error")]
    if not entries:
        return 0
    filename = relative(store, data_root)
    digest = checksum(store)
    ids = source_ids(session, project, (e["name"] for e in entries), f"manifest of {store}")
    rows = [{"source_id": ids[str(e["name"])], "obs": obs, "filename": filename, "filekey": e["key"],
             "checksum": digest, "n_rows": int(e.get("n_rows") or 0),
             "download_params_hash": manifest.get("download_params_hash")} for e in entries]
    return upsert(session, m.RawPhotometry, rows,
                  update=("filename", "filekey", "checksum", "n_rows", "download_params_hash"),
                  batch_size=batch_size)


_LC_FLOATS = ("flux_mean", "flux_rms", "mag_mean", "mjd_start", "mjd_end")
_LC_STATS = ("filter", "season", "reduction_number", "reduction_total", "n_epochs") + _LC_FLOATS


def ingest_lightcurves(session, lcs, file_path, data_root, provenance_hash: str, project: str,
                       batch_size: int = DEFAULT_BATCH) -> int:
    """Add or update the rows of the light curves stored in ``file_path`` (one reduced file).

    ``lcs``: the light curves, or the file's index table (columns of
    :func:`vo.lightcurves.datasets.lightcurve_index`, what :func:`ingest_reduced_file`
    reads): source_name, obs, filter, season, reduction_number, reduction_total, n_epochs,
    flux_mean, flux_rms (uJy), mag_mean, mjd_start, mjd_end.  Returns the number of rows.
    """
    from vo.lightcurves.datasets import lightcurve_index

    try:
        index = lcs if isinstance(lcs, dict) else lightcurve_index(lcs)
    except ValueError as exc:
        raise IngestError(f"{file_path}: {exc}") from None
    n = len(index["filekey"])
    if n == 0:
        return 0
    filekey = index["filekey"].tolist()
    for k in ("source_name", "obs"):
        lacking = np.flatnonzero(index[k] == "")
        if lacking.size:
            raise IngestError(f"{file_path}: light curve {filekey[lacking[0]]!r} has no attribute {k!r}")
    for k in ("reduction_number", "reduction_total", "n_epochs"):
        lacking = np.flatnonzero(index[k] < 0)
        if lacking.size:
            raise IngestError(f"{file_path}: light curve {filekey[lacking[0]]!r} has no attribute {k!r}")
    filename = relative(file_path, data_root)
    digest = checksum(file_path)
    names, name_of = np.unique(index["source_name"].astype(str), return_inverse=True)
    ids = source_ids(session, project, names.tolist(), str(file_path))
    obs, obs_of = np.unique(index["obs"].astype(str), return_inverse=True)
    prov = [provenance_id(session, "reduce", o, provenance_hash, str(file_path)) for o in obs.tolist()]
    season = index["season"]
    columns = {"source_id": np.array([ids[x] for x in names.tolist()], np.int64)[name_of].tolist(),
               "provenance_id": np.array(prov, np.int64)[obs_of].tolist(), "obs": index["obs"].tolist(),
               "filekey": filekey, "filter": index["filter"].tolist(),
               "season": np.where(season < 0, None, season).tolist(),
               "filename": [filename] * n, "checksum": [digest] * n}
    columns.update({k: index[k].tolist() for k in ("reduction_number", "reduction_total", "n_epochs")})
    columns.update({k: bulk.finite_or_none(index[k]) for k in _LC_FLOATS})
    update = ("source_id", "obs", "checksum") + _LC_STATS
    # a file ingested for the first time (the usual case) is written with a plain COPY
    new = bulk.lock(session, m.Lightcurve.__tablename__, filename) and \
        not bulk.has_rows(session, m.Lightcurve, provenance_id=sorted(set(prov)), filename=filename)
    return upsert(session, m.Lightcurve, columns, update=update, batch_size=batch_size, new=new)


_DET_COLUMNS = ("time_start", "time_peak", "time_end", "peak_snr", "peak_mag", "dmag", "n_epochs",
                "simulated", "sim_type", "sim_params")


def _lightcurve_ids(session, analysis_prov_id: int, obs: str, keys: pd.DataFrame) -> list:
    """Ids of the light curves (by source id and filekey) the analysis read, or None."""
    upstreams = session.scalar(sa.select(m.Provenance.upstreams).where(m.Provenance.id == analysis_prov_id))
    reduce_hash = (upstreams or {}).get(f"reduce.{obs}")
    if reduce_hash is None:
        return [None] * len(keys)
    lc = m.Lightcurve
    pairs = session.execute(
        sa.select(lc.source_id, lc.filekey, lc.id).join(m.Provenance, lc.provenance_id == m.Provenance.id)
        .where(m.Provenance.step == "reduce", m.Provenance.obs == obs, m.Provenance.hash == reduce_hash,
               lc.source_id.in_(sorted(set(keys["source_id"]))))).tuples().all()
    lookup = {(s, k): i for s, k, i in pairs}
    return [lookup.get((s, k)) for s, k in zip(keys["source_id"], keys["filekey"])]


def ingest_detections(session, detections_df: pd.DataFrame, provenance_hash: str, project: str,
                      batch_size: int = DEFAULT_BATCH) -> int:
    """Add or update detections (light-curve events) made by the analysis ``provenance_hash``.

    Columns: source_name (or name), obs, time_peak (MJD) required; optional filter,
    time_start, time_end (MJD), peak_snr, peak_mag, dmag (mag), n_epochs, simulated,
    sim_type, sim_params (dict or JSON string), filekey (of the light curve, links the row
    to it).  Returns the number of rows.
    """
    if detections_df is None or detections_df.empty:
        return 0
    df = detections_df.rename(columns={"name": "source_name"}) if "source_name" not in detections_df \
        else detections_df
    missing = [c for c in ("source_name", "obs", "time_peak") if c not in df]
    if missing:
        raise IngestError(f"detections table lacks column(s) {missing}; has {list(df.columns)}")
    df = df.copy()
    df["source_name"] = df["source_name"].astype(str)
    df["obs"] = df["obs"].astype(str)
    df["filter"] = df["filter"].fillna("").astype(str) if "filter" in df else ""
    df["simulated"] = df["simulated"].fillna(False).astype(bool) if "simulated" in df else False
    if "sim_type" in df:
        df["sim_type"] = df["sim_type"].replace("", None)
    if "sim_params" in df:
        df["sim_params"] = [json.loads(v) if isinstance(v, str) and v else (v if isinstance(v, dict) else None)
                            for v in df["sim_params"]]
    ids = source_ids(session, project, df["source_name"], "detections")
    df["source_id"] = df["source_name"].map(ids)
    df["lightcurve_id"] = None
    for obs, part in df.groupby("obs"):
        pid = provenance_id(session, "analysis", obs, provenance_hash, "detections")
        df.loc[part.index, "provenance_id"] = pid
        if "filekey" in df:
            df.loc[part.index, "lightcurve_id"] = pd.Series(
                _lightcurve_ids(session, pid, obs, part[["source_id", "filekey"]]), index=part.index,
                dtype=object)
    cols = ["source_id", "lightcurve_id", "provenance_id", "obs", "filter"] + \
        [c for c in _DET_COLUMNS if c in df]
    rows = records(df[cols])
    for row in rows:
        row["provenance_id"] = int(row["provenance_id"])
        row["simulated"] = bool(row["simulated"])
        if row.get("n_epochs") is not None:
            row["n_epochs"] = int(row["n_epochs"])
    update = ["lightcurve_id"] + [c for c in _DET_COLUMNS if c in df and c not in ("time_peak", "simulated")]
    return upsert(session, m.Detection, rows, update=update, batch_size=batch_size)


# -- files -> database --------------------------------------------------------------------
def _batch(cfg: dict) -> int:
    return int(cfg.get("database", {}).get("batch_size", DEFAULT_BATCH))


def ingest_targets_file(engine, path, project: str, batch_size: int = DEFAULT_BATCH) -> int:
    from vo.catalog import read_targets
    targets, _ = read_targets(path)
    return in_transaction(engine, ingest_sources, targets, project, batch_size)


def ingest_manifest_file(engine, path, data_root, project: str, batch_size: int = DEFAULT_BATCH) -> int:
    try:
        manifest = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise IngestError(f"{path}: cannot read manifest: {exc}") from exc
    try:
        return in_transaction(engine, ingest_raw, manifest, data_root, project, batch_size)
    except IngestError as exc:
        raise IngestError(f"{path}: {exc}") from exc


def ingest_reduced_file(engine, path, data_root, provenance_hash: str, project: str,
                        batch_size: int = DEFAULT_BATCH) -> int:
    from vo.lightcurves.datasets import read_lightcurve_index
    try:
        index = read_lightcurve_index(path)  # the rows need the index table only
    except ValueError as exc:
        raise IngestError(f"{path}: {exc}") from None
    return in_transaction(engine, ingest_lightcurves, index, path, data_root, provenance_hash, project,
                          batch_size)


def ingest_analysis_file(engine, path, provenance_hash: str, project: str,
                         batch_size: int = DEFAULT_BATCH) -> int:
    from vo.lightcurves.analysis import read_analysis
    detections = read_analysis(path).detections
    try:
        return in_transaction(engine, ingest_detections, detections, provenance_hash, project, batch_size)
    except IngestError as exc:
        raise IngestError(f"{path}: {exc}") from exc


def ingest_bin(engine, cfg: dict, obs: str, ra_bin: int, files: dict | None = None) -> dict:
    """Ingest the products of one (observatory, RA bin): provenances, targets, download
    manifest, reduced light curves and analysis detections, one transaction per file.

    ``files`` (keys targets, manifest, reduced, analysis) are the rule's inputs; by default
    they are the config's paths.  Returns ``{table: rows ingested}``.
    """
    from vo.paths import Paths

    paths = Paths(cfg)
    files = files or {"targets": paths.product("targets", ra_bin=ra_bin),
                      "manifest": paths.product("download", obs, ra_bin),
                      "reduced": paths.product("reduce", obs, ra_bin),
                      "analysis": paths.product("analysis", obs, ra_bin)}
    project, root, batch = paths.project, paths.data_root, _batch(cfg)
    init_db(engine)
    provs = {k: p for k, p in vprov.all_provenances(cfg).items() if p.obs in (None, obs)}
    counts = {"provenances": len(in_transaction(engine, ingest_provenances, provs.values(),
                                                vprov.git_commit()))}
    counts["sources"] = ingest_targets_file(engine, files["targets"], project, batch)
    counts["raw_photometry"] = ingest_manifest_file(engine, files["manifest"], root, project, batch)
    counts["lightcurves"] = ingest_reduced_file(engine, files["reduced"], root,
                                                provs[f"reduce.{obs}"].hash, project, batch)
    counts["detections"] = ingest_analysis_file(engine, files["analysis"],
                                                provs[f"analysis.{obs}"].hash, project, batch)
    return counts
