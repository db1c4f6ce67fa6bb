"""The pipeline in process, without Snakemake: make any product of a config, or one CCD's products.

For a notebook or a debugging session (SeeChange's Pipeline and DataStore)::

    from vo import config as vconfig
    from vo.pipeline.runner import run_ccd

    cfg = vconfig.load_config("my.yaml")
    ccd = run_ccd(cfg, "dc_f00_r_002", "C01", through="scoring")
    ccd.difference.score       # the ZOGY score image, read from its file on first use
    ccd.measurements           # astropy Table
    ccd.parameters("subtraction")

The jobs are the workflow's own (:func:`vo.pipeline.status.jobs`: the same ``rule_io`` as the
Snakefile), run by the same rule bodies (:func:`vo.steps.function`) in dependency order; a job
whose outputs all exist is not run again (as Snakemake, without timestamps).  So the files, their
names and their provenance hashes are those of ``snakemake``, and a run started here can be
finished by ``snakemake`` and the other way round.  Temporary outputs of the workflow (the
aligned reference) are kept.
"""

from __future__ import annotations

import importlib
import logging
import os
import time
from functools import cached_property

from vo import provenance as vprov
from vo import steps as vsteps
from vo.io.atomic import remove_orphans
from vo.paths import Paths
from vo.pipeline import image_io, status
from vo.pipeline.plan import get_plan
from vo.pipeline.skipped import skipped_reason

log = logging.getLogger("vo.pipeline.runner")

#: product kind -> ``module:function`` that reads its file
READERS = {
    "image": "vo.images.image:read_image", "sources": "vo.images.extract:read_sources",
    "psf": "vo.images.extract.psf:read_psf", "background": "vo.images.extract.background:read_background",
    "wcs": "vo.images.astrometry:read_wcs", "zp": "vo.images.photometry.zeropoint:read_zp",
    "difference": "vo.images.subtract:read_difference", "aligned_reference": "vo.images.image:read_image",
    "candidates": "vo.images.detect:read_candidates", "cutouts": "vo.images.detect.cutouts:read_cutouts",
    "measurements": "vo.images.detect.measure:read_measurements",
    "scores": "vo.images.realbogus.score:read_scores", "alerts": "vo.images.alerts:read_alerts",
}
#: the per-CCD rules of one CCD's chain, in order, and the kinds of product each writes
CCD_CHAIN = ("preprocess", "extract", "astrometry", "zero_point", "subtraction", "detection", "cutouts",
             "measurements", "scoring", "association")


def _files(value) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def _simulation_jobs(cfg: dict, paths: Paths) -> list[status.Job]:
    """Jobs that simulate the raw exposures of a simulated camera (DemoCam)."""
    inst = image_io.instrument(cfg)
    if not cfg["images"]["enabled"] or not getattr(inst, "simulated", False):
        return []
    cal = inst.calibration_names(cfg)
    names = [*cal["bias"], *(n for f in sorted(cal["flat"]) for n in cal["flat"][f])]
    jobs = []
    for e in image_io.exposures(cfg):
        io = image_io.rule_io("simulate_exposure", cfg, e, paths=paths)
        jobs.append(status.Job("simulate_exposure", {"exposure": e}, _files(io[1]["raw"]), io))
    for n in names:
        io = image_io.rule_io("simulate_calibration", cfg, n, paths=paths)
        jobs.append(status.Job("simulate_calibration", {"exposure": n}, _files(io[1]["raw"]), io))
    return jobs


class Runner:
    """Every job of one config, and how to make any of their files."""

    def __init__(self, cfg: dict):
        self.cfg = get_plan(cfg).image_config(cfg) if cfg["images"]["enabled"] else cfg
        self.paths = Paths(self.cfg)
        self.jobs = status.jobs(self.cfg, self.paths) + _simulation_jobs(self.cfg, self.paths)
        self.producer = {f: job for job in self.jobs for v in job.io[1].values() for f in _files(v)}
        self.ran: list[status.Job] = []

    def job(self, rule: str, **wildcards) -> status.Job:
        """The one job of ``rule`` whose wildcards include these (e.g. ``exposure`` and ``ccd``)."""
        found = [job for job in self.jobs
                 if job.rule == rule and all(job.wildcards.get(k) == v for k, v in wildcards.items())]
        if len(found) != 1:
            raise KeyError(f"{len(found)} {rule} jobs with {wildcards} in this config (vo status lists its jobs)")
        return found[0]

    def make(self, path: str) -> None:
        """Make ``path`` (and what it needs) unless it exists."""
        if os.path.exists(path):
            return
        job = self.producer.get(str(path))
        if job is None:
            raise FileNotFoundError(f"{path}: missing, and no job of this config makes it")
        self.run(job)

    def run(self, job: status.Job) -> None:
        """Run ``job`` after making its inputs; nothing when its outputs exist."""
        inputs, outputs = job.io
        outs = [f for v in outputs.values() for f in _files(v)]
        if all(os.path.exists(f) for f in outs):
            return
        for v in inputs.values():
            for f in _files(v):
                self.make(f)
        for f in outs:
            remove_orphans(f)  # a killed earlier attempt's partial write
        args = {a: job.wildcards.get("filter" if a == "filt" else a) for a in vsteps.job_args(job.rule)}
        if "ra_bin" in args:
            args["ra_bin"] = int(args["ra_bin"])
        t0 = time.perf_counter()
        vsteps.call(job.rule, self.cfg, args, inputs, outputs)
        self.ran.append(job)
        log.info("%s %s done in %.2f s", job.rule, " ".join(map(str, job.wildcards.values())),
                 time.perf_counter() - t0)


class CCDProducts:
    """One CCD's products, each read from its file on first use (``ccd.image``, ``ccd.psf``, ...).

    ``paths``: product kind -> file; ``reference`` is the coadd (image, psf and sources) the CCD
    was subtracted from.  A kind whose file is a skipped-product marker raises ``ValueError``
    with the reason (:meth:`skipped` gives it without raising).
    """

    def __init__(self, cfg: dict, exposure: str, ccd: str, runner: Runner | None = None):
        self.cfg, self.exposure, self.ccd = cfg, exposure, ccd
        runner = runner or Runner(cfg)
        self.paths: dict[str, str] = {}
        self._reference: dict[str, str] = {}
        for rule in CCD_CHAIN:
            try:
                inputs, outputs = runner.job(rule, exposure=exposure, ccd=ccd).io
            except KeyError:
                continue  # an exposure that is not new has no subtraction chain
            if rule != "association":  # rule_io names each output by its product kind
                self.paths.update(outputs)
            if rule == "subtraction":
                self._reference = {"image": inputs["ref_image"], "psf": inputs["ref_psf"],
                                   "sources": inputs["ref_sources"]}
        try:
            self.paths["alerts"] = runner.job("alerts", exposure=exposure).io[1]["alerts"]
        except KeyError:
            pass

    def skipped(self, kind: str) -> str | None:
        """Why the product ``kind`` was skipped, or None (made, or not made yet)."""
        path = self._reference["image"] if kind == "reference" else self.paths[kind]
        return skipped_reason(path) if os.path.exists(path) else None

    def _read(self, kind: str):
        path = self.paths[kind]
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path}: {kind} of {self.exposure} {self.ccd} not made yet")
        why = self.skipped(kind)
        if why:
            raise ValueError(f"{path}: {kind} of {self.exposure} {self.ccd} was skipped: {why}")
        module, func = READERS[kind].split(":")
        return getattr(importlib.import_module(module), func)(path)

    @cached_property
    def reference(self):
        from vo.images.reference.coadd import read_reference

        if not self._reference:
            raise KeyError(f"{self.exposure} has no reference (it is not a new exposure)")
        return read_reference(self._reference)

    def __getattr__(self, kind: str):
        if kind.startswith("_") or kind not in READERS or kind not in self.__dict__.get("paths", {}):
            raise AttributeError(kind)
        value = self._read(kind)
        self.__dict__[kind] = value  # read once
        return value

    def parameters(self, step: str) -> dict:
        """The critical parameters of ``step`` (or of a rule's step) that made these products."""
        step = vsteps.step_of(step) if step in vsteps.RULES else step
        return vprov.provenance(self.cfg, step, image_io.instrument_key(self.cfg)).parameters

    def __repr__(self) -> str:
        made = [k for k, p in self.paths.items() if os.path.exists(p)]
        return f"<CCDProducts {self.exposure} {self.ccd}: {', '.join(made) or 'nothing made yet'}>"


def run_ccd(cfg: dict, exposure: str, ccd: str, through: str = "measurements") -> CCDProducts:
    """Make one CCD's products through step (or rule) ``through``, in process; return them.

    Everything the step needs is made first (raw simulation, calibration, the reference's own
    exposures, and for the ``democam_rb`` scorer the model trained on every new CCD); files that
    exist are not made again.  ``through="alerts"`` makes the exposure's alert file (every CCD
    of the exposure).  Returns a :class:`CCDProducts`.
    """
    runner = Runner(cfg)
    rule = through if through in vsteps.RULES else next(
        (r.name for r in vsteps.STEPS[through].rules), None) if through in vsteps.STEPS else None
    if rule is None:
        raise KeyError(f"through={through!r}: not a step or rule ({', '.join(vsteps.RULES)})")
    wildcards = {"exposure": exposure} if rule == "alerts" else {"exposure": exposure, "ccd": ccd}
    runner.run(runner.job(rule, **wildcards))
    return CCDProducts(runner.cfg, exposure, ccd, runner)
