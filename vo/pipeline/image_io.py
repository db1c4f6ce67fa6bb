"""What each image-pipeline rule reads and writes (:func:`rule_io`), and what every rule body shares.

The Snakefile (``workflow/rules/images.smk``), the standalone scripts and ``vo status`` all call
:func:`rule_io`; the rule bodies are in :mod:`vo.pipeline.image_steps` (calibration to zero
point) and :mod:`vo.pipeline.transient_steps` (references to alerts).  A CCD whose WCS failed is
flagged, not a crash: later steps write flagged products and log why (:func:`skippable`).
"""

from __future__ import annotations

import functools
import inspect
import logging

from vo import provenance as vprov
from vo.pipeline.plan import ccds, exposures, get_plan, instrument, instrument_key  # noqa: F401 (re-exported)
from vo.pipeline.skipped import SkipProduct, first_skipped, write_skipped
from vo.paths import Paths

log = logging.getLogger("vo.images")



def reference_images(cfg: dict, exposure: str, ccd: str) -> list[tuple[str, str]]:
    """The (exposure, ccd) reference images coadded onto new image ``exposure`` ``ccd`` (the plan's
    reference policy; empty when none overlaps it)."""
    return get_plan(cfg).reference_images(exposure, ccd)


def new_exposures(cfg: dict) -> dict[str, tuple[str, str]]:
    """Exposures to subtract references from: exposure -> (patch of sky, filter), in time order."""
    return get_plan(cfg).new_exposures()


def unreferenced_exposures(cfg: dict) -> list[str]:
    """Exposures that are neither references nor have a CCD overlapped by enough references:
    they are calibrated and ingested but not subtracted."""
    return list(get_plan(cfg).unreferenced)


def previous_new_exposure(cfg: dict, exposure: str) -> str | None:
    """The new exposure of the same patch of sky and filter just before ``exposure`` in time."""
    news = new_exposures(cfg)
    same = [e for e in news if news[e] == news[exposure]]
    i = same.index(exposure)
    return same[i - 1] if i > 0 else None


def exposure_filter(cfg: dict, exposure: str) -> str:
    """Filter of a science exposure (from its raw header, or the simulator's plan)."""
    return instrument(cfg).exposure_filter(Paths(cfg), exposure)


def rule_io(step: str, cfg: dict, exposure: str | None = None, ccd: str | None = None,
            filt: str | None = None, paths: Paths | None = None) -> tuple[dict, dict]:
    """(inputs, outputs) of one job of image rule ``step`` as dicts of name -> path; ``paths``: the
    run's :class:`Paths` of ``cfg`` (reused, its hashes are computed once)."""
    P = paths or Paths(cfg)
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
    if step == "preprocess" and getattr(inst, "calibrated", False):  # read as they are
        return {"raw": raw(exposure)}, {"image": prod("image", **e)}
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
    ref = {k: prod(f"reference_{k}", **e) for k in ("image", "psf", "sources")} if exposure and ccd else {}
    if step == "references":
        members = reference_images(cfg, exposure, ccd)
        per = {k: [prod(k, exposure=m, ccd=c) for m, c in members] for k in ("image", "psf", "wcs", "zp")}
        return per, ref  # the grid is the plan's (get_plan(cfg).coadd_grid): no input of the new image
    if step == "subtraction":
        return ({"image": prod("image", **e), "psf": prod("psf", **e), "sources": prod("sources", **e),
                 "wcs": prod("wcs", **e), "zp": prod("zp", **e), "ref_image": ref["image"], "ref_psf": ref["psf"],
                 "ref_sources": ref["sources"]},
                {"difference": prod("difference", **e), "aligned_reference": prod("aligned_reference", **e)})
    if step == "detection":
        return ({"difference": prod("difference", **e), "psf": prod("psf", **e)},
                {"candidates": prod("candidates", **e)})
    if step == "cutouts":
        return ({"candidates": prod("candidates", **e), "image": prod("image", **e), "wcs": prod("wcs", **e),
                 "aligned_reference": prod("aligned_reference", **e), "difference": prod("difference", **e)},
                {"cutouts": prod("cutouts", **e)})
    if step == "measurements":
        return ({"cutouts": prod("cutouts", **e), "candidates": prod("candidates", **e),
                 "difference": prod("difference", **e), "psf": prod("psf", **e), "ref_sources": ref["sources"]},
                {"measurements": prod("measurements", **e)})
    if step == "rb_training_set":
        return ({"image": prod("image", **e), "psf": prod("psf", **e), "wcs": prod("wcs", **e),
                 "zp": prod("zp", **e), "aligned_reference": prod("aligned_reference", **e),
                 "ref_image": ref["image"], "ref_psf": ref["psf"]},
                {"training_set": prod("training_set", **e)})
    if step == "efficiency":
        inputs, _ = rule_io("rb_training_set", cfg, exposure, ccd)
        if cfg["scoring"]["algorithm"] == "democam_rb":
            inputs["model"] = prod("rb_model")
        return inputs, {"efficiency": prod("efficiency_fakes", **e)}
    if step == "train_rb":
        return ({"training_sets": [prod("training_set", exposure=x, ccd=c) for x in new_exposures(cfg)
                                   for c in ccds(cfg)]},
                {"model": prod("rb_model")})
    if step == "scoring":
        inputs = {"measurements": prod("measurements", **e), "cutouts": prod("cutouts", **e),
                  "difference": prod("difference", **e)}
        if cfg["scoring"]["algorithm"] == "democam_rb":
            inputs["model"] = prod("rb_model")
        return inputs, {"scores": prod("scores", **e)}
    if step == "association":
        inputs = {"ingest_images": prod("ingest_images", **e), "difference": prod("difference", **e),
                  "candidates": prod("candidates", **e), "cutouts": prod("cutouts", **e),
                  "measurements": prod("measurements", **e), "scores": prod("scores", **e),
                  "image": prod("image", **e), "zp": prod("zp", **e), "reference_image": ref["image"],
                  "reference_psf": ref["psf"], "reference_sources": ref["sources"]}
        earlier = previous_new_exposure(cfg, exposure)
        if earlier:  # associate in time order, so object names do not depend on job order
            inputs["previous"] = prod("association", exposure=earlier, ccd=ccd)
        return inputs, {"receipt": prod("association", **e)}
    if step == "alerts":
        return ({"association": [prod("association", exposure=exposure, ccd=c) for c in ccds(cfg)]},
                {"alerts": prod("alerts", exposure=exposure), "forced": prod("forced", exposure=exposure)})
    if step == "efficiency_summary":
        return ({"efficiency": [prod("efficiency_fakes", exposure=x, ccd=c) for x in new_exposures(cfg)
                                for c in ccds(cfg)]},
                {"summary": prod("efficiency_summary"), "plot": prod("efficiency_plot")})
    if step == "ingest_images":
        return ({"raw": raw(exposure), "image": prod("image", **e), "sources": prod("sources", **e),
                 "psf": prod("psf", **e), "background": prod("background", **e), "wcs": prod("wcs", **e),
                 "zp": prod("zp", **e)},
                {"receipt": prod("ingest_images", **e)})
    raise KeyError(f"unknown image rule {step!r}")


def file_attrs(cfg: dict, step: str) -> dict:
    """Provenance attributes for the files of an image step (its ``obs`` is the instrument)."""
    return vprov.file_attrs(cfg, step, instrument_key(cfg))


def skippable(prov_step: str, members_optional: bool = False):
    """Decorate a rule body ``run_x(cfg, *job, inputs, outputs)``: when an input is a
    skipped-product marker, or the body raises :class:`SkipProduct`, every output is written as a
    skipped marker with the reason (and the step's provenance) and a warning is logged, instead of
    failing the job (see :mod:`vo.pipeline.skipped`).  With ``members_optional`` the inputs given
    as lists (the reference images of a coadd) are the body's to judge: one skipped member does
    not skip the step."""
    def decorate(func):
        signature = inspect.signature(func)

        @functools.wraps(func)
        def run(*args, **kwargs) -> None:
            bound = signature.bind(*args, **kwargs).arguments
            cfg, inputs, outputs = bound["cfg"], bound["inputs"], bound["outputs"]
            job = [str(v) for k, v in bound.items() if k not in ("cfg", "inputs", "outputs")]
            hit = first_skipped(v for v in inputs.values() if not (members_optional and isinstance(v, (list, tuple))))
            if hit is None:
                try:
                    return func(*args, **kwargs)
                except SkipProduct as exc:
                    why = str(exc)
            else:
                why = hit[1]
            log.warning("%s %s: skipped: %s", func.__name__.removeprefix("run_"), " ".join(job), why)
            for path in outputs.values():
                write_skipped(path, why, file_attrs(cfg, prov_step))
        return run
    return decorate

