"""What each workflow rule reads and writes, and the glue that runs it.

The Snakefile and the standalone scripts both call :func:`rule_io`, so a rule debugged
outside Snakemake reads and writes exactly the files the workflow would.  The ``run_*``
functions are the rule bodies: they read the inputs, call the science in ``vo``, and write
every output atomically.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import yaml

from vo import provenance as vprov
from vo.provenance import file_attrs
from vo import steps as vsteps
from vo.io.atomic import atomic_path, write_text
from vo.paths import Paths

log = logging.getLogger("vo.pipeline")

#: rules whose jobs run per (obs, RA bin); the others run per obs or once.
PER_BIN = vsteps.PER_BIN


def rule_io(step: str, cfg: dict, obs: str | None = None, ra_bin=None,
            ra_bins: list[int] | None = None, paths: Paths | None = None) -> tuple[dict, dict]:
    """(inputs, outputs) of one job of ``step`` as dicts of name -> path (str or list);
    ``paths``: the run's :class:`Paths` of ``cfg`` (reused, its hashes are computed once)."""
    P = paths or Paths(cfg)
    b = ra_bin
    if step == "targets":
        return {}, {"targets": [str(P.product("targets", ra_bin=x)) for x in ra_bins]}
    if step == "download":
        return ({"targets": str(P.product("targets", ra_bin=b))},
                {"manifest": str(P.product("download", obs, b))})
    if step == "reduce":
        return ({"targets": str(P.product("targets", ra_bin=b)),
                 "manifest": str(P.product("download", obs, b))},
                {"reduced": str(P.product("reduce", obs, b))})
    if step == "analysis":
        return ({"reduced": str(P.product("reduce", obs, b))},
                {"analysis": str(P.product("analysis", obs, b)),
                 "histograms": str(P.product("histograms", obs, b))})
    if step == "combine":
        return ({"histograms": [str(P.product("histograms", obs, x)) for x in ra_bins]},
                {"histograms": str(P.product("combine", obs)),
                 "efficiency": str(P.product("efficiency", obs))})
    if step == "plots":
        return ({"analysis": [str(P.product("analysis", obs, x)) for x in ra_bins],
                 "reduced": [str(P.product("reduce", obs, x)) for x in ra_bins],
                 "efficiency": str(P.product("efficiency", obs))},
                {"plot": str(P.product("plots", obs)),
                 "table": str(P.product("plots", obs)).replace(".png", "_efficiency.html")})
    if step == "ingest":
        return ({"targets": str(P.product("targets", ra_bin=b)),
                 "manifest": str(P.product("download", obs, b)),
                 "reduced": str(P.product("reduce", obs, b)),
                 "analysis": str(P.product("analysis", obs, b))},
                {"receipt": str(P.product("ingest", obs, b))})
    if step == "run_config":
        return {}, {"config": str(P.run_config()), "provenance": str(P.provenance_file())}
    raise KeyError(f"unknown rule {step!r}")


# -- rule bodies -------------------------------------------------------------------------
def run_targets(cfg: dict, outputs: dict) -> None:
    """Load the catalog, propagate proper motions, and write one targets file per RA bin."""
    from vo.catalog import Catalog, split_by_ra_bin, write_targets

    cat = Catalog.from_config(cfg).load()
    by_bin = split_by_ra_bin(cat.data)
    attrs = file_attrs(cfg, "targets", None)
    for path in outputs["targets"]:
        ra_bin = int(Path(path).stem.split("RA")[-1])
        if ra_bin not in by_bin:
            raise ValueError(f"{path}: RA bin {ra_bin} has no targets in the catalog")
        write_targets(path, by_bin[ra_bin], attrs)
        log.info("%s: %d targets", path, len(by_bin[ra_bin]))


def run_download(cfg: dict, obs: str, ra_bin, inputs: dict, outputs: dict) -> None:
    """Fetch the bin's targets into the shared raw store; write the per-project manifest."""
    from vo.catalog import read_targets
    from vo.lightcurves.observatories import get_observatory

    targets, _ = read_targets(inputs["targets"])
    observatory = get_observatory(obs, cfg)
    store = Paths(cfg).raw_photometry(obs, ra_bin)
    manifest = observatory.download_all_sources(
        targets, store, redownload=cfg[obs]["download"]["redownload"])
    manifest["provenance_hash"] = vprov.provenance(cfg, "download", obs).hash
    write_text(outputs["manifest"], json.dumps(manifest, indent=1, default=str))
    counts = {}
    for s in manifest["sources"]:
        counts[s["status"]] = counts.get(s["status"], 0) + 1
    log.info("%s RA%03d: %s into %s", obs, int(ra_bin), counts, store)


def run_reduce(cfg: dict, obs: str, ra_bin, inputs: dict, outputs: dict) -> None:
    """Reduce the bin's raw photometry to light curves (one per source, season, filter)."""
    from vo.catalog import read_targets
    from vo.lightcurves.datasets import write_lightcurves
    from vo.lightcurves.observatories import get_observatory

    targets, _ = read_targets(inputs["targets"])
    manifest = json.loads(Path(inputs["manifest"]).read_text())
    observatory = get_observatory(obs, cfg)
    lcs = observatory.reduce_store(manifest["store"], targets)
    write_lightcurves(outputs["reduced"], lcs, file_attrs(cfg, "reduce", obs))
    log.info("%s RA%03d: %d light curves from %d targets", obs, int(ra_bin), len(lcs), len(targets))


def run_analysis(cfg: dict, obs: str, ra_bin, inputs: dict, outputs: dict) -> None:
    """Quality checks, event finder, injections and histograms for one bin."""
    from vo.lightcurves import analysis, histograms
    from vo.lightcurves.datasets import read_lightcurves

    lcs = read_lightcurves(inputs["reduced"])
    result = analysis.analysis_for(cfg, obs).run(lcs)
    if not isinstance(result, analysis.AnalysisResult):
        raise TypeError(f"{cfg['analysis'].get('class_path')}.run returned {type(result).__name__}, not an AnalysisResult")
    attrs = file_attrs(cfg, "analysis", obs)
    analysis.write_analysis(outputs["analysis"], result, attrs)
    ds = result.histograms
    ds.attrs.update({k: json.dumps(v) if isinstance(v, (dict, list)) else v for k, v in attrs.items()})
    histograms.write_netcdf(ds, outputs["histograms"])
    n_sim = int(result.detections["simulated"].sum()) if len(result.detections) else 0
    log.info("%s RA%03d: %d light curves, %d detections (%d simulated)", obs, int(ra_bin),
             len(lcs), len(result.detections), n_sim)


def run_combine(cfg: dict, obs: str, inputs: dict, outputs: dict) -> None:
    """Sum the per-bin histograms and efficiency counts; write the efficiency table."""
    from vo.lightcurves import histograms

    ds = histograms.combine(inputs["histograms"])
    attrs = file_attrs(cfg, "combine", obs)
    ds.attrs.update({k: json.dumps(v) if isinstance(v, (dict, list)) else v for k, v in attrs.items()})
    histograms.write_netcdf(ds, outputs["histograms"])
    table = histograms.efficiency_table(ds)
    with atomic_path(outputs["efficiency"]) as tmp:
        table.to_csv(tmp, index=False)
    log.info("%s: combined %d bins; efficiency table with %d rows", obs,
             len(inputs["histograms"]), len(table))


def run_plots(cfg: dict, obs: str, inputs: dict, outputs: dict) -> None:
    """Plot light curves with real detections and render the efficiency table for the report."""
    from vo.lightcurves import plots

    plots.plot_detections(inputs["analysis"], inputs["reduced"], outputs["plot"],
                          max_plots=cfg["resources"]["plot_detections"])
    plots.efficiency_html(inputs["efficiency"], outputs["table"], title=f"{obs} detection efficiency")


def run_ingest(cfg: dict, obs: str, ra_bin, inputs: dict, outputs: dict) -> None:
    """Put the bin's products into the database (idempotent, one transaction per file)."""
    from vo.db import engine as vengine
    from vo.ingest import lightcurves as ingest

    eng = vengine.get_engine(vengine.url_from_config(cfg))
    counts = ingest.ingest_bin(eng, cfg, obs, int(ra_bin), files=inputs)
    receipt = {"obs": obs, "ra_bin": int(ra_bin), "counts": counts,
               "provenance_hash": vprov.provenance(cfg, "ingest", obs).hash}
    write_text(outputs["receipt"], json.dumps(receipt, indent=1, default=str))
    log.info("%s RA%03d: ingested %s", obs, int(ra_bin), counts)


def run_config(cfg: dict, outputs: dict) -> None:
    """Write the final merged config (secrets masked) and provenance.yaml of this run."""
    from vo.config import mask_secrets

    write_text(outputs["config"], yaml.safe_dump(mask_secrets(cfg), sort_keys=False))
    write_text(outputs["provenance"], yaml.safe_dump(vprov.provenance_document(cfg), sort_keys=False))
