"""The DemoCam chain of the tests: one way to make a small config's products, in process.

Every test module that needs DemoCam products (images, references, differences, measurements,
scores, objects) makes them here, with the workflow's own jobs and rule bodies
(:class:`vo.pipeline.runner.Runner`), so the files, names and hashes are the workflow's.
"""

from __future__ import annotations

from vo import config as vconfig
from vo.pipeline.runner import Runner


def democam_config(root, project: str | None = None, **democam) -> dict:
    """A DemoCam config with data root ``root``: one 512x512 CCD, few calibration frames, and the
    ``DemoCam`` parameters given (``n_exposures``, ``reference_epochs``, ``ccd_shape``, ...); the
    reference policy takes the ``reference_epochs`` (which the simulator keeps free of transients)
    as the reference images."""
    pars = {"n_ccds": 1, "ccd_shape": [512, 512], "n_bias": 3, "n_flats": 2, **democam}
    overrides = {"project": {"data_root": str(root)}, "images": {"enabled": True}, "DemoCam": pars}
    if "reference_epochs" in democam:
        overrides["references"] = {"select": "first", "first": int(democam["reference_epochs"])}
    if project:
        overrides["project"]["name"] = project
    return vconfig.load_config(overrides=overrides)


def make(cfg: dict, *rules: str, exposures=None) -> Runner:
    """Run every job of ``rules`` (of the given exposures; all by default) and what they need;
    returns the runner (``runner.job(rule, ...)`` has each job's files)."""
    runner = Runner(cfg)
    for job in runner.jobs:
        if job.rule in rules and (exposures is None or job.wildcards.get("exposure") in exposures):
            runner.run(job)
    return runner
