"""What each image-pipeline rule reads and writes, and the rule bodies.

Like :mod:`vo.workflow` for light curves: the Snakefile (``workflow/rules/images.smk``) and
the standalone scripts both call :func:`rule_io`, and the ``run_*`` functions read inputs,
call the science in ``vo.images`` and write every output atomically.  A CCD whose WCS
failed is flagged, not a crash: later steps write flagged products and log why.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from vo import provenance as vprov
from vo.io.atomic import write_text
from vo.paths import Paths

log = logging.getLogger("vo.images")

#: image rules; all run per CCD except the calibration/simulation ones.
STEPS = ("simulate_exposure", "simulate_calibration", "master_bias", "master_flat", "preprocess",
         "extract", "astrometry", "zero_point", "ingest_images")
PER_CCD = ("preprocess", "extract", "astrometry", "zero_point", "ingest_images")


def instrument(cfg: dict):
    from vo.images.instruments import get_instrument
    return get_instrument(cfg["images"]["instrument"], cfg)


def instrument_key(cfg: dict) -> str:
    """The instrument as it appears in provenance keys and file names (upper case)."""
    return cfg["images"]["instrument"].upper()


def exposures(cfg: dict) -> list[str]:
    """Science exposures of this run (config list, or what the instrument lists)."""
    return list(cfg["images"]["exposures"] or instrument(cfg).exposure_names(cfg))


def ccds(cfg: dict) -> list[str]:
    names = instrument(cfg).section_names()
    wanted = cfg["images"]["ccds"]
    if wanted:
        unknown = sorted(set(wanted) - set(names))
        if unknown:
            raise ValueError(f"images.ccds: unknown sections {unknown} of {cfg['images']['instrument']}")
        return [c for c in names if c in wanted]
    return names


def exposure_filter(cfg: dict, exposure: str) -> str:
    """Filter of a science exposure (from its raw header, or the simulator's plan)."""
    return instrument(cfg).exposure_filter(Paths(cfg), exposure)


def rule_io(step: str, cfg: dict, exposure: str | None = None, ccd: str | None = None,
            filt: str | None = None) -> tuple[dict, dict]:
    """(inputs, outputs) of one job of image rule ``step`` as dicts of name -> path."""
    P = Paths(cfg)
    inst = instrument(cfg)
    key = instrument_key(cfg)

    def prod(kind, **kw):
        return str(P.product(kind, key, **kw))

    def raw(name):
        return str(inst.raw_path(P, name))

    if step == "simulate_exposure":
        return {}, {"raw": raw(exposure), "truth": str(P.raw_truth(key, exposure))}
    if step == "simulate_calibration":
        return {}, {"raw": raw(exposure)}
    cal = inst.calibration_names(cfg)
    if step == "master_bias":
        return {"raw": [raw(n) for n in cal["bias"]]}, {"bias": prod("bias", ccd=ccd)}
    if step == "master_flat":
        return ({"raw": [raw(n) for n in cal["flat"][filt]], "bias": prod("bias", ccd=ccd)},
                {"flat": prod("flat", ccd=ccd, filter=filt)})
    e = {"exposure": exposure, "ccd": ccd}
    if step == "preprocess":
        f = filt or exposure_filter(cfg, exposure)
        return ({"raw": raw(exposure), "bias": prod("bias", ccd=ccd), "flat": prod("flat", ccd=ccd, filter=f)},
                {"image": prod("image", **e)})
    if step == "extract":
        return ({"image": prod("image", **e)},
                {"sources": prod("sources", **e), "psf": prod("psf", **e), "background": prod("background", **e)})
    if step == "astrometry":
        return {"image": prod("image", **e), "sources": prod("sources", **e)}, {"wcs": prod("wcs", **e)}
    if step == "zero_point":
        return ({"image": prod("image", **e), "sources": prod("sources", **e), "psf": prod("psf", **e),
                 "background": prod("background", **e), "wcs": prod("wcs", **e)},
                {"zp": prod("zp", **e)})
    if step == "ingest_images":
        return ({"raw": raw(exposure), "image": prod("image", **e), "sources": prod("sources", **e),
                 "psf": prod("psf", **e), "background": prod("background", **e), "wcs": prod("wcs", **e),
                 "zp": prod("zp", **e)},
                {"receipt": prod("ingest_images", **e)})
    raise KeyError(f"unknown image rule {step!r}")


def file_attrs(cfg: dict, step: str) -> dict:
    """Provenance attributes for the files of an image step."""
    p = vprov.provenance(cfg, step, instrument_key(cfg))
    return {"step": step, "obs": p.obs, "provenance_hash": p.hash, "code_version": p.code_version,
            "parameters": p.parameters, "upstreams": p.upstreams, "project": Paths(cfg).project}
