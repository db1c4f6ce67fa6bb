# Image pipeline set-up: exposures, CCDs, filters, reference sets and input functions.
import re

from vo.images import rules as image_rules

INST = CFG["images"]["instrument"]
IKEY = image_rules.instrument_key(CFG)
INSTRUMENT = image_rules.instrument(CFG)
EXPOSURES = image_rules.exposures(CFG)
CCDS = image_rules.ccds(CFG)
CALIB = INSTRUMENT.calibration_names(CFG)
FILTERS = sorted({INSTRUMENT.exposure_filter(P, e) for e in EXPOSURES})
CAL_NAMES = CALIB["bias"] + [n for f in FILTERS for n in CALIB["flat"][f]]


def _alt(names):
    return "|".join(re.escape(n) for n in names)


wildcard_constraints:
    exposure=_alt(EXPOSURES),
    ccd=_alt(CCDS),
    filter=_alt(FILTERS),


def iio(step, part, key=None):
    """Input/output function of an image rule, with the provenance-hash check of ``io``."""

    def f(wildcards):
        check = {"master_bias": "calibration", "master_flat": "calibration",
                 "preprocess": "preprocessing", "extract": "extraction",
                 "rb_training_set": "rb_training", "train_rb": "rb_training",
                 "efficiency": "injection"}.get(step, step)
        if "vc" in wildcards.keys() and wildcards.vc != P.step_suffix(check, IKEY):
            raise ValueError(f"{step}: path hash {wildcards.vc!r} does not match the config's")
        files = image_rules.rule_io(step, CFG, wildcards.get("exposure"), wildcards.get("ccd"),
                                    wildcards.get("filter"), wildcards.get("field"))[0 if part == "in" else 1]
        return files[key] if key else files

    return f


def ipattern(kind):
    return P.pattern(kind).replace("{obs}", IKEY)


def ilog(rule_name, *names):
    return log_path(rule_name, *names)


REFERENCE_SETS = image_rules.reference_sets(CFG)
NEW_EXPOSURES = image_rules.new_exposures(CFG)
