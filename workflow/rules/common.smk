# Shared set-up: the merged config, paths, RA bins and input functions.
# Every path comes from vo.paths / vo.workflow, the same code the scripts use.
import sys

# the Snakefile imports vo from this checkout; rule scripts need it installed (pip install -e .)
sys.path.insert(0, os.path.abspath(os.path.join(workflow.basedir, "..")))

from vo import config as vconfig
from vo import provenance as vprov
from vo.paths import Paths
from vo.workflow import rule_io
from vo.catalog import Catalog

CFG = vconfig.complete(config, "snakemake config")
config.update(CFG)
P = Paths(CFG)
OBS = [o.upper() for o in CFG["project"]["obs_names"]]
BINS = CFG["project"]["ra_bins"] or Catalog.from_config(CFG).load().ra_bins()
RUN_CONFIG = rule_io("run_config", CFG)[1]["config"]


wildcard_constraints:
    obs="|".join(OBS),
    ra_bin=r"\d{3}",
    vc=r"(-[0-9a-f]{10})?",


def io(step, part, key=None):
    """Input function: the inputs of ``step`` for a job's wildcards, checked against the
    config's provenance hash (a stale hash in a requested path is an error)."""

    def f(wildcards):
        obs = wildcards.get("obs")
        expected = P.step_suffix(step if step != "plots" else "combine", obs)
        if "vc" in wildcards.keys() and wildcards.vc != expected:
            raise ValueError(
                f"{step} {obs}: path hash {wildcards.vc!r} does not match the config's {expected!r}"
            )
        files = rule_io(step, CFG, obs, wildcards.get("ra_bin"), BINS)[0 if part == "in" else 1]
        return files[key] if key else files

    return f


def log_path(rule_name, *names):
    """Log file of a job: named by its wildcards (``vc`` keeps hashed runs apart)."""
    return P.log(rule_name, *("{%s}" % n for n in names)).replace("_{vc}", "{vc}")


def bench_path(rule_name, *names):
    """Benchmark file of a job, named like its log."""
    return P.benchmark(rule_name, *("{%s}" % n for n in names)).replace("_{vc}", "{vc}")


def mem(base_mb):
    """mem_mb growing with the retry attempt."""
    return lambda wildcards, attempt: base_mb * attempt


def runtime(base_min):
    """runtime (minutes) growing with the retry attempt."""
    return lambda wildcards, attempt: base_min * attempt
