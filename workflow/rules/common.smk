# Shared set-up: the merged config, paths, RA bins and input functions.
# Every path comes from vo.paths / vo.steps / vo.pipeline, the same code the scripts use.
import functools
import sys

# the Snakefile imports vo from this checkout; rule scripts need it installed (pip install -e .)
sys.path.insert(0, os.path.abspath(os.path.join(workflow.basedir, "..")))

from vo import config as vconfig
from vo import provenance as vprov
from vo.paths import Paths
from vo.pipeline.lightcurves import rule_io
from vo.pipeline.plan import get_plan
from vo.steps import PER_CCD, step_of

CFG = vconfig.complete(config, "snakemake config")
config.update(CFG)
P = Paths(CFG)
OBS = [o.upper() for o in CFG["project"]["obs_names"]]
PLAN = get_plan(CFG)  # RA bins, exposures, references: built once, kept in a file (vo.pipeline.plan)
BINS = PLAN.ra_bins
RUN_CONFIG = rule_io("run_config", CFG)[1]["config"]
# images.jobs: exposure: these image rules run one job per exposure (no {ccd} wildcard)
EXPOSURE_JOBS = set(PER_CCD) if CFG["images"]["enabled"] and CFG["images"]["jobs"] == "exposure" else set()


wildcard_constraints:
    obs="|".join(OBS),
    ra_bin=r"\d{3}",
    vc=r"(-[0-9a-f]{10})?",


@functools.cache
def step_suffix(step, obs=None):
    """``P.step_suffix``, computed once per parse (the config does not change while planning)."""
    return P.step_suffix(step, obs)


def io(step, part, key=None):
    """Input function: the inputs of ``step`` for a job's wildcards, checked against the
    config's provenance hash (a stale hash in a requested path is an error)."""

    hashed = step_of(step)

    def f(wildcards):
        obs = wildcards.get("obs")
        expected = step_suffix(hashed, obs)
        if "vc" in wildcards.keys() and wildcards.vc != expected:
            raise ValueError(
                f"{step} {obs}: path hash {wildcards.vc!r} does not match the config's {expected!r}"
            )
        files = rule_io(step, CFG, obs, wildcards.get("ra_bin"), BINS, paths=P)[0 if part == "in" else 1]
        return files[key] if key else files

    return f


def _job_name(rule_name, names):
    """The wildcards that name a job's log and benchmark files (an exposure job has no ccd)."""
    return ["{%s}" % n for n in names if not (n == "ccd" and rule_name in EXPOSURE_JOBS)]


def log_path(rule_name, *names):
    """Log file of a job: named by its wildcards (``vc`` keeps hashed runs apart)."""
    return P.log(rule_name, *_job_name(rule_name, names)).replace("_{vc}", "{vc}")


def bench_path(rule_name, *names):
    """Benchmark file of a job, named like its log."""
    return P.benchmark(rule_name, *_job_name(rule_name, names)).replace("_{vc}", "{vc}")


def mem(base_mb):
    """mem_mb growing with the retry attempt."""
    return lambda wildcards, attempt: base_mb * attempt


def runtime(base_min):
    """runtime (minutes) growing with the retry attempt."""
    return lambda wildcards, attempt: base_min * attempt
