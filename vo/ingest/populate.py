"""``vo populate``: rebuild the database from the files under the data root.

Every step folder of the project is scanned (``{step}-{hash}`` or ``{step}``, old hashes too);
provenances come from ``provenance.yaml`` and the files' own attributes and headers, so a data
root copied without its database can be indexed again.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import yaml

from vo import provenance as vprov
from vo import steps as vsteps
from vo.db import models as m
from vo.db.bulk import IngestError
from vo.db.migrate import init_db
from vo.db.rows import in_transaction, ingest_provenances
from vo.ingest.images import read_ccd_products, read_headers, write_ccd_products
from vo.ingest.tiles import ingest_excerpt_tiles
from vo.ingest.lightcurves import (_batch, ingest_analysis_file, ingest_manifest_file, ingest_reduced_file,
                                   ingest_targets_file)
from vo.io.fits import read_provenance

log = logging.getLogger("vo.ingest.populate")


#: the light-curve steps whose files hold rows (ingested in this order), and their folders
LIGHTCURVE_STEPS = ("targets", "download", "reduce", "analysis")
_FOLDER = re.compile(rf"^(?P<step>{'|'.join(LIGHTCURVE_STEPS)})(?:-(?P<hash>[0-9a-f]+))?$")


def _file_regex(kind: str) -> re.Pattern:
    pattern = re.escape(vsteps.FILES[kind]).replace(r"\{obs\}", r"(?P<obs>[A-Za-z0-9]+)")
    return re.compile("^" + pattern.replace(r"\{ra_bin\}", r"(?P<ra_bin>\d{3})") + "$")


def read_file_provenance(path) -> dict:
    """Provenance attributes of a product file (HDF5 root attributes or manifest JSON keys):
    step, obs, provenance_hash and, where present, code_version, parameters, upstreams."""
    path = Path(path)
    if path.suffix == ".json":
        doc = json.loads(path.read_text())
        return {"step": "download", "obs": doc.get("obs", ""), "provenance_hash": doc.get("provenance_hash")}
    import h5py
    from vo.io.hdf5 import read_attrs
    with h5py.File(path, "r") as f:
        return read_attrs(f)


def _provenance_from_attrs(attrs: dict) -> vprov.Provenance | None:
    if not all(k in attrs for k in ("step", "code_version", "parameters", "upstreams")):
        return None
    return vprov.Provenance(attrs["step"], attrs.get("obs") or None, str(attrs["code_version"]),
                            attrs["parameters"], attrs["upstreams"])


def populate(cfg: dict) -> dict:
    """Rebuild the database rows of the project from the files under the data root (``vo populate``).

    Scans every step folder of the project (``{step}-{hash}`` or ``{step}``, old hashes too):
    provenances from ``provenance.yaml`` and the files' attributes, then targets, manifests,
    reduced light curves and analysis files, one transaction per file; then the image
    products (one transaction per CCD, provenances from the FITS headers) and the cached
    catalog tiles (:func:`vo.ingest.images.populate_images`).  Returns
    ``{table: rows ingested}``.
    """
    from vo.db.engine import engine_from_config
    from vo.paths import Paths

    paths = Paths(cfg)
    project, root, batch = paths.project, paths.data_root, _batch(cfg)
    if not paths.project_dir.is_dir():
        raise FileNotFoundError(f"{paths.project_dir}: no project folder to populate from")
    engine = engine_from_config(cfg)
    init_db(engine)
    counts = dict.fromkeys(["provenances", "sources", "raw_photometry", "lightcurves", "detections"], 0)

    provs = {}
    doc_path = paths.provenance_file()
    if doc_path.exists():
        doc = yaml.safe_load(doc_path.read_text()) or {}
        for d in (doc.get("steps") or {}).values():
            p = vprov.Provenance(d["step"], d.get("obs"), str(d["code_version"]), d["parameters"], d["upstreams"])
            provs[(p.step, p.obs, p.hash)] = p

    folders = {}
    for folder in sorted(paths.project_dir.iterdir()):
        match = _FOLDER.match(folder.name)
        if match and folder.is_dir():
            folders.setdefault(match["step"], []).append((folder, match["hash"]))
    found = {step: [] for step in LIGHTCURVE_STEPS}
    for step, entries in folders.items():
        regex = _file_regex(step)
        for folder, _hash in entries:
            for path in sorted(folder.iterdir()):
                fm = regex.match(path.name)
                if not fm:
                    continue
                attrs = read_file_provenance(path)
                obs = fm.groupdict().get("obs") or attrs.get("obs") or None
                phash = attrs.get("provenance_hash") or _hash or paths.step_hash(step, obs)
                p = _provenance_from_attrs(attrs)
                if p is not None:
                    if p.hash != phash:
                        raise IngestError(f"{path}: provenance attributes hash to {p.hash}, "
                                          f"file says {phash}")
                    provs[(p.step, p.obs, p.hash)] = p
                found[step].append((path, obs, phash))

    if provs:
        counts["provenances"] = len(in_transaction(engine, ingest_provenances, list(provs.values())))
    for path, _obs, _h in found["targets"]:
        counts["sources"] += ingest_targets_file(engine, path, project, batch)
    for path, _obs, _h in found["download"]:
        counts["raw_photometry"] += ingest_manifest_file(engine, path, root, project, batch)
    for path, _obs, phash in found["reduce"]:
        counts["lightcurves"] += ingest_reduced_file(engine, path, root, phash, project, batch)
    for path, _obs, phash in found["analysis"]:
        counts["detections"] += ingest_analysis_file(engine, path, phash, project, batch)
    counts.update(populate_images(cfg, engine, provenances=counts["provenances"]))
    log.info("populate %s from %s: %s", project, paths.project_dir, counts)
    return counts


#: the image steps whose per-CCD files hold rows, and each kind's file-name suffix (step table)
IMAGE_STEPS = ("preprocessing", "extraction", "astrometry", "zero_point")
_IMAGE_FOLDER = re.compile(rf"^(?P<step>{'|'.join(IMAGE_STEPS)})(?:-[0-9a-f]+)?$")
_SUFFIX_KIND = {vsteps.STEPS[s].files[k].removeprefix("{exposure}/{ccd}"): k
                for s in IMAGE_STEPS for k in vsteps.STEPS[s].files}


def _scan_products(project_dir: Path) -> dict:
    """``{(kind, exposure, ccd): [(path, provenance attrs), ...]}`` of the image products
    under a project folder (every ``{step}-{hash}`` folder, old hashes too)."""
    found: dict = {}
    for folder in sorted(project_dir.iterdir()):
        if not (folder.is_dir() and _IMAGE_FOLDER.match(folder.name)):
            continue
        for path in sorted(folder.glob("*/*.fits")):
            kind = next((k for s, k in _SUFFIX_KIND.items() if path.name.endswith(s)), None)
            if kind is None:
                continue
            ccd = path.name[: -len(next(s for s, k in _SUFFIX_KIND.items() if k == kind))]
            header = read_headers(path)[0]
            if header.get("VO_SKIP", False):  # a skipped-product marker (vo.pipeline.skipped): no rows
                continue
            attrs = read_provenance(header)
            if attrs:
                found.setdefault((kind, path.parent.name, ccd), []).append((path, attrs))
    return found


def _made_from(candidates: list, up_attrs: dict) -> list:
    key = f"{up_attrs['step']}.{up_attrs['obs']}" if up_attrs.get("obs") else up_attrs["step"]
    return [(p, a) for p, a in candidates if a.get("upstreams", {}).get(key) == up_attrs["provenance_hash"]]


def image_chains(project_dir: Path) -> list[tuple[str, str, str, dict]]:
    """Every chain of products of one CCD found on disk: ``(instrument, exposure, ccd,
    files)`` with image, sources, psf, background, and wcs, zp where they were made from
    those; one chain per combination of provenances (old hashes too)."""
    found = _scan_products(project_dir)
    chains = []
    for (kind, exposure, ccd), images in sorted(found.items(), key=lambda kv: kv[0]):
        if kind != "image":
            continue
        get = lambda k: found.get((k, exposure, ccd), [])  # noqa: E731
        for img, img_a in images:
            for src, src_a in _made_from(get("sources"), img_a):
                same = lambda k: [(p, a) for p, a in get(k)  # noqa: E731
                                  if a["provenance_hash"] == src_a["provenance_hash"]]
                psf, bg = same("psf"), same("background")
                if not (psf and bg):
                    log.warning("%s: no PSF or background file of the same extraction; skipped", src)
                    continue
                base = {"image": img, "sources": src, "psf": psf[0][0], "background": bg[0][0]}
                wcss = _made_from(get("wcs"), src_a)
                if not wcss:
                    chains.append((img_a["obs"], exposure, ccd, base))
                for wcs, wcs_a in wcss:
                    zps = _made_from(get("zp"), wcs_a) or [(None, None)]
                    for zp, _ in zps:
                        files = {**base, "wcs": wcs}
                        if zp is not None:
                            files["zp"] = zp
                        chains.append((img_a["obs"], exposure, ccd, files))
    return chains


def populate_images(cfg: dict, engine, provenances: int = 0) -> dict:
    """Rebuild the image-pipeline rows of a project from its files (``vo populate``):
    every CCD chain found by :func:`image_chains` (raw exposures from the data root), and
    every cached catalog tile.  Returns ``{table: rows written}`` (``provenances`` counts
    the chains' provenances on top of ``provenances``)."""
    from vo.paths import Paths

    paths = Paths(cfg)
    written = {k: set() for k in ("provenances", *m.IMAGE_TABLES)}  # distinct rows
    table_of = {"raw": "exposures", "image": "images", "sources": "source_lists", "psf": "psfs",
                "wcs": "world_coordinates", "zp": "zero_points"}
    for instrument, exposure, ccd, files in image_chains(paths.project_dir):
        raw = paths.raw_exposure(instrument, exposure)
        fz = paths.raw_exposure(instrument, exposure, ".fits.fz")
        files = {**files, "raw": fz if fz.exists() and not raw.exists() else raw}
        prod = read_ccd_products(engine, paths.data_root, instrument, exposure, ccd, files)
        in_transaction(engine, write_ccd_products, prod)
        written["provenances"].update(prod.prov_keys.values())
        for kind, table in table_of.items():
            if kind in files:
                written[table].add(str(files[kind]))
    counts = {k: len(v) for k, v in written.items()}
    counts["provenances"] += provenances
    tiles = sorted(paths.catalog_cache().glob("*/*_tile*.fits")) if paths.catalog_cache().is_dir() else []
    counts["catalog_excerpts"] = ingest_excerpt_tiles(engine, cfg, tiles, init=False)
    return counts
