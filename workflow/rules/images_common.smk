# Image pipeline set-up: exposures, CCDs, filters, new exposures and input functions.
import re

from vo.pipeline import image_io as image_rules
from vo.steps import KIND_STEP, step_of

IKEY = image_rules.instrument_key(CFG)
INSTRUMENT = image_rules.instrument(CFG)
EXPOSURES = PLAN.exposures
CCDS = PLAN.ccds
CALIB = {"bias": PLAN.bias, "flat": PLAN.flats}
# The raw folder's headers are read once, into the plan: the input functions get the lists
# (ICFG) and each exposure's filter, so no job reads a raw file while planning.
ICFG = PLAN.image_config(CFG)
IP = Paths(ICFG)
EXPOSURE_FILTER = PLAN.filters
FILTERS = sorted(set(EXPOSURE_FILTER.values()))
CAL_NAMES = CALIB["bias"] + [n for f in FILTERS for n in CALIB["flat"].get(f, [])]


def _alt(names):
    return "|".join(re.escape(n) for n in names)


wildcard_constraints:
    exposure=_alt(EXPOSURES),
    ccd=_alt(CCDS),
    filter=_alt(FILTERS),


def iio(step, part, key=None):
    """Input/output function of an image rule, with the provenance-hash check of ``io``."""

    expected = step_suffix(step_of(step), IKEY)

    def f(wildcards):
        if "vc" in wildcards.keys() and wildcards.vc != expected:
            raise ValueError(f"{step}: path hash {wildcards.vc!r} does not match the config's {expected!r}")
        exposure = wildcards.get("exposure")
        ccds = CCDS if step in EXPOSURE_JOBS else [wildcards.get("ccd")]
        files = _merge([image_rules.rule_io(step, ICFG, exposure, c,
                                            wildcards.get("filter") or EXPOSURE_FILTER.get(exposure),
                                            paths=IP)[0 if part == "in" else 1]
                        for c in ccds])
        if EXPOSURE_JOBS:
            files = {k: ifolders(v) for k, v in files.items()}
        return files[key] if key else files

    return f


def _listed(files):
    return [files] if isinstance(files, str) else files


def _merge(per_ccd):
    """One job's files from each CCD's ``rule_io`` dict: the dict itself for a CCD job; for an
    exposure job, every CCD's files under each name (a file shared by CCDs once)."""
    if len(per_ccd) == 1:
        return per_ccd[0]
    names = dict.fromkeys(k for files in per_ccd for k in files)
    return {k: list(dict.fromkeys(f for files in per_ccd if k in files for f in _listed(files[k])))
            for k in names}


#: step folders whose {exposure} subfolders are the outputs of exposure jobs (images.jobs: exposure)
EXPOSURE_STEP_DIRS = set()


def iouts(temporary=(), **kinds):
    """Outputs of a per-CCD rule, ``name=kind``: its CCD's files, or for an exposure job the
    exposure's folder in the step folder, which holds every CCD's files (``temporary``: names
    of ``temp()`` outputs, kept in an exposure job's folder)."""
    if not EXPOSURE_JOBS:
        return {name: temp(ipattern(k)) if name in temporary else ipattern(k) for name, k in kinds.items()}
    (step,) = {KIND_STEP.get(k, k) for k in kinds.values()}
    EXPOSURE_STEP_DIRS.add(str(IP.step_dir(step, IKEY)))
    return {"folder": directory(str(P.project_dir / f"{step}{{vc}}" / "{exposure}"))}


def ifolders(files):
    """Files with those in an exposure job's folder replaced by the folder (in order, once)."""
    out = [os.path.dirname(f) if os.path.dirname(os.path.dirname(f)) in EXPOSURE_STEP_DIRS else f
           for f in _listed(files)]
    return list(dict.fromkeys(out)) if not isinstance(files, str) else out[0]


def ipattern(kind):
    return P.pattern(kind).replace("{obs}", IKEY)


#: per-CCD rules: an exposure job runs its CCDs in resources.threads processes
ITHREADS = CFG["resources"]["threads"] if EXPOSURE_JOBS else 1


def imem(base_mb):
    """mem_mb of a per-CCD rule (per process; an exposure job runs ITHREADS at once)."""
    return mem(base_mb * ITHREADS)


def iruntime(base_min):
    """runtime (minutes) of a per-CCD rule (an exposure job runs its CCDs ITHREADS at a time)."""
    return runtime(base_min * (-(-len(CCDS) // ITHREADS) if EXPOSURE_JOBS else 1))


def iproduct(kind):
    """A product's path for this config with ``{exposure}``/``{ccd}`` left to fill (for expand)."""
    return str(P.product(kind, IKEY, exposure="{exposure}", ccd="{ccd}"))


def ilog(rule_name, *names):
    return log_path(rule_name, *names)


NEW_EXPOSURES = PLAN.new_exposures()


onstart:
    no_reference = PLAN.unreferenced
    if no_reference:
        logger.warning(
            f"{len(no_reference)} exposure(s) are neither references nor overlapped by enough references "
            f"(references.min_images) and are "
            f"calibrated but not subtracted: {', '.join(no_reference)}"
        )
