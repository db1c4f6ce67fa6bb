"""Entry point shared by the rule scripts in ``scripts/``.

Under Snakemake (``script:`` directive) a script takes its config, wildcards, inputs,
outputs and log from the ``snakemake`` object.  Run by hand
(``python scripts/reduce.py --obs DEMO --ra-bin 123``) it builds the same config and
asks :func:`vo.pipeline.lightcurves.rule_io` (or :func:`vo.pipeline.image_io.rule_io`) for the same paths,
so one rule can be debugged alone.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from vo import config as vconfig
from vo import steps as vsteps
from vo.io.atomic import remove_orphans
from vo.pipeline import image_io
from vo.pipeline import lightcurves as workflow
from vo.pipeline.plan import get_plan

HELP = {"obs": "observatory, e.g. DEMO or ZTF", "ra_bin": "integer RA bin (deg)",
        "exposure": "exposure name", "ccd": "CCD (section) name", "filt": "filter"}


def _setup_logging(logfile: str | None) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if logfile:
        handlers.append(logging.FileHandler(logfile, mode="w"))
    logging.basicConfig(level=logging.INFO, handlers=handlers, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _parse_overrides(pairs: list[str]) -> dict:
    """``["DEMO.reducer.gap=60", ...]`` -> nested dict (values parsed as YAML)."""
    import yaml

    out: dict = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--set expects KEY=VALUE, got {pair!r}")
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = yaml.safe_load(value)
    return out


def _planned(step: str, cfg: dict) -> dict:
    """For an image rule, ``cfg`` with the plan's exposures and calibration frames listed, so the
    job reads no raw header to find them (:mod:`vo.pipeline.plan`).  A CCD job under Snakemake
    gets its files from Snakemake and does without (finding the plan's key costs about 0.3 s)."""
    return get_plan(cfg).image_config(cfg) if step in vsteps.IMAGE_RULES and cfg["images"]["enabled"] else cfg


def _standalone_io(step: str, cfg: dict, job: dict) -> tuple[dict, dict]:
    if step in vsteps.IMAGE_RULES:
        return image_io.rule_io(step, cfg, job.get("exposure"), job.get("ccd"), job.get("filt"))
    ra_bins = get_plan(cfg).ra_bins if step in ("targets", "combine", "plots") else None
    return workflow.rule_io(step, cfg, job.get("obs"), job.get("ra_bin"), ra_bins)


def _run_ccd(step: str, cfg: dict, exposure: str, ccd: str) -> str | None:
    """One CCD of an exposure job: the step run on the CCD's files (from ``rule_io``); the error,
    logged with its traceback, if it failed."""
    inputs, outputs = image_io.rule_io(step, cfg, exposure, ccd)
    for out in outputs.values():
        for tmp in remove_orphans(out):  # a killed earlier attempt's partial write
            logging.getLogger("vo").info("removed %s, left by a killed job", tmp)
    try:
        vsteps.function(step)(cfg, exposure, ccd, inputs, outputs)
    except Exception as exc:
        logging.getLogger("vo").error("%s %s %s failed: %s: %s", step, exposure, ccd, type(exc).__name__, exc,
                                      exc_info=True)
        return f"{ccd}: {type(exc).__name__}: {exc}"
    return None


def _run_exposure(step: str, cfg: dict, exposure: str, threads: int) -> None:
    """A per-CCD step on every CCD of ``exposure`` (``images.jobs: exposure``), ``threads`` CCDs at
    a time in worker processes; the job fails, once every CCD was tried, if one failed."""
    from concurrent.futures import ProcessPoolExecutor
    from functools import partial

    ccds = image_io.ccds(cfg)
    run = partial(_run_ccd, step, cfg, exposure)
    t0 = time.perf_counter()
    if threads > 1 and len(ccds) > 1:
        with ProcessPoolExecutor(min(threads, len(ccds))) as pool:
            errors = [e for e in pool.map(run, ccds) if e]
    else:
        errors = [e for e in map(run, ccds) if e]
    log = logging.getLogger("vo")
    if errors:
        log.error("%s %s failed on %d of %d CCDs: %s", step, exposure, len(errors), len(ccds), "; ".join(errors))
        raise SystemExit(1)
    log.info("%s %s: %d CCDs done in %.2f s", step, exposure, len(ccds), time.perf_counter() - t0)


def rule_main(step: str, doc: str, snakemake=None, argv: list[str] | None = None) -> None:
    """Run rule ``step`` from Snakemake or from the command line."""
    names = vsteps.job_args(step)
    if snakemake is not None:
        _setup_logging(snakemake.log[0] if len(snakemake.log) else None)
        cfg = vconfig.complete(dict(snakemake.config), "snakemake config")
        if cfg["images"]["jobs"] == "exposure":  # an exposure job lists its CCDs' files: from the plan
            cfg = _planned(step, cfg)
        wc = dict(snakemake.wildcards.items())
        wc.setdefault("exposure", wc.get("calname"))
        wc.setdefault("filt", wc.get("filter"))
        job = {n: wc.get(n) for n in names}
        if step in vsteps.PER_CCD and "ccd" not in wc:  # images.jobs: exposure
            return _run_exposure(step, cfg, job["exposure"], snakemake.threads)
        inputs = {k: v for k, v in snakemake.input.items()}
        outputs = {k: v for k, v in snakemake.output.items()}
        if step in vsteps.IMAGE_RULES and cfg["images"]["jobs"] == "exposure":
            inputs = _standalone_io(step, cfg, job)[0]  # the files in the exposure jobs' folders
    else:
        ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
        ap.add_argument("--configfile", default=None, help="config YAML (default: config/config.yaml)")
        ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a parameter, e.g. --set DEMO.reducer.gap=60 (repeatable)")
        for n in names:
            ap.add_argument("--" + n.replace("_", "-").replace("filt", "filter"), dest=n, required=True,
                            type=int if n == "ra_bin" else str, help=HELP[n])
        ap.add_argument("--log", default=None, help="also log to this file")
        args = ap.parse_args(argv)
        _setup_logging(args.log)
        cfg = _planned(step, vconfig.workflow_config(args.configfile, _parse_overrides(args.set)))
        job = {n: getattr(args, n) for n in names}
        inputs, outputs = _standalone_io(step, cfg, job)
    for out in (o for v in outputs.values() for o in ([v] if isinstance(v, str) else v)):
        for tmp in remove_orphans(out):  # a killed earlier attempt's partial write
            logging.getLogger("vo").info("removed %s, left by a killed job", tmp)
    t0 = time.perf_counter()
    try:
        vsteps.call(step, cfg, job, inputs, outputs)
    except Exception as exc:  # the job's log file must say why it failed (once, with the traceback)
        logging.getLogger("vo").error("%s failed: %s: %s", step, type(exc).__name__, exc, exc_info=True)
        raise SystemExit(1) from None
    logging.getLogger("vo").info("%s done in %.2f s", step, time.perf_counter() - t0)
