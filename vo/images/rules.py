"""What each image-pipeline rule reads and writes, and the rule bodies.

Like :mod:`vo.workflow` for light curves: the Snakefile (``workflow/rules/images.smk``) and
the standalone scripts both call :func:`rule_io`, and the ``run_*`` functions read inputs,
call the science in ``vo.images`` and write every output atomically.  A CCD whose WCS
failed is flagged, not a crash: later steps write flagged products and log why.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging

from vo import provenance as vprov
from vo.images.skipped import SkipProduct, first_skipped, skipped_reason, write_skipped
from vo.io.atomic import write_text
from vo.paths import Paths

log = logging.getLogger("vo.images")

#: image rules; all run per CCD except the calibration/simulation ones.
STEPS = ("simulate_exposure", "simulate_calibration", "master_bias", "master_flat", "preprocess",
         "extract", "astrometry", "zero_point", "ingest_images", "references", "subtraction", "detection",
         "cutouts", "measurements", "rb_training_set", "train_rb", "scoring", "association", "alerts", "efficiency",
         "efficiency_summary")
PER_CCD = ("preprocess", "extract", "astrometry", "zero_point", "ingest_images", "subtraction", "detection",
           "cutouts", "measurements", "rb_training_set", "scoring", "association", "efficiency")


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


def reference_sets(cfg: dict) -> dict[tuple[str, str], list[str]]:
    """Exposures that build the reference of each (field, filter): DemoCam's reference epochs."""
    if cfg["images"]["instrument"] != "DemoCam":
        return {}
    from vo.images.simulate import parse_exposure

    sets: dict[tuple[str, str], list[str]] = {}
    for e in exposures(cfg):
        field, filt, index = parse_exposure(cfg, e)
        if index < cfg["DemoCam"]["reference_epochs"]:
            sets.setdefault((f"f{field:02d}", filt), []).append(e)
    return {k: v for k, v in sets.items() if len(v) >= cfg["references"]["min_images"]}


def new_exposures(cfg: dict) -> dict[str, tuple[str, str]]:
    """Exposures to subtract a reference from: exposure -> its (field, filter) reference key."""
    if cfg["images"]["instrument"] != "DemoCam":
        return {}
    from vo.images.simulate import parse_exposure

    refs = reference_sets(cfg)
    out = {}
    for e in exposures(cfg):
        field, filt, index = parse_exposure(cfg, e)
        key = (f"f{field:02d}", filt)
        if index >= cfg["DemoCam"]["reference_epochs"] and key in refs:
            out[e] = key
    return out


def unreferenced_exposures(cfg: dict) -> list[str]:
    """Science exposures after the reference epochs whose field and filter have no reference (too
    few reference epochs or inputs): they are calibrated and ingested but not subtracted."""
    if cfg["images"]["instrument"] != "DemoCam":
        return []
    from vo.images.simulate import parse_exposure

    news = new_exposures(cfg)
    return [e for e in exposures(cfg)
            if e not in news and parse_exposure(cfg, e)[2] >= cfg["DemoCam"]["reference_epochs"]]


def previous_new_exposure(cfg: dict, exposure: str) -> str | None:
    """The new exposure of the same field and filter just before ``exposure`` (by index)."""
    news = new_exposures(cfg)
    same = [e for e in news if news[e] == news[exposure]]
    i = same.index(exposure)
    return same[i - 1] if i > 0 else None


def exposure_filter(cfg: dict, exposure: str) -> str:
    """Filter of a science exposure (from its raw header, or the simulator's plan)."""
    return instrument(cfg).exposure_filter(Paths(cfg), exposure)


def rule_io(step: str, cfg: dict, exposure: str | None = None, ccd: str | None = None,
            filt: str | None = None, field: str | None = None, paths: Paths | None = None) -> tuple[dict, dict]:
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
    if step == "references":
        members = reference_sets(cfg)[(field, filt)]
        per = {k: [prod(k, exposure=m, ccd=ccd) for m in members] for k in ("image", "psf", "wcs", "zp")}
        prefix = prod("reference", field=field, filter=filt, ccd=ccd)
        return per, {k: f"{prefix}.{k}.fits" for k in ("image", "psf", "sources")}
    if step == "subtraction":
        field, filt = new_exposures(cfg)[exposure]
        ref = prod("reference", field=field, filter=filt, ccd=ccd)
        return ({"image": prod("image", **e), "psf": prod("psf", **e), "wcs": prod("wcs", **e),
                 "zp": prod("zp", **e), "ref_image": f"{ref}.image.fits", "ref_psf": f"{ref}.psf.fits",
                 "ref_sources": f"{ref}.sources.fits"},
                {"difference": prod("difference", **e), "aligned_reference": prod("aligned_reference", **e)})
    if step == "detection":
        return {"difference": prod("difference", **e)}, {"candidates": prod("candidates", **e)}
    if step == "cutouts":
        return ({"candidates": prod("candidates", **e), "image": prod("image", **e), "wcs": prod("wcs", **e),
                 "aligned_reference": prod("aligned_reference", **e), "difference": prod("difference", **e)},
                {"cutouts": prod("cutouts", **e)})
    if step == "measurements":
        field, filt = new_exposures(cfg)[exposure]
        ref = prod("reference", field=field, filter=filt, ccd=ccd)
        return ({"cutouts": prod("cutouts", **e), "candidates": prod("candidates", **e),
                 "difference": prod("difference", **e), "zp": prod("zp", **e),
                 "ref_sources": f"{ref}.sources.fits"},
                {"measurements": prod("measurements", **e)})
    if step == "rb_training_set":
        field, filt = new_exposures(cfg)[exposure]
        ref = prod("reference", field=field, filter=filt, ccd=ccd)
        return ({"image": prod("image", **e), "psf": prod("psf", **e), "wcs": prod("wcs", **e),
                 "zp": prod("zp", **e), "aligned_reference": prod("aligned_reference", **e),
                 "ref_image": f"{ref}.image.fits", "ref_psf": f"{ref}.psf.fits"},
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
                  "psf": prod("psf", **e)}
        if cfg["scoring"]["algorithm"] == "democam_rb":
            inputs["model"] = prod("rb_model")
        return inputs, {"scores": prod("scores", **e)}
    if step == "association":
        field, filt = new_exposures(cfg)[exposure]
        ref = prod("reference", field=field, filter=filt, ccd=ccd)
        inputs = {"ingest_images": prod("ingest_images", **e), "difference": prod("difference", **e),
                  "candidates": prod("candidates", **e), "cutouts": prod("cutouts", **e),
                  "measurements": prod("measurements", **e), "scores": prod("scores", **e),
                  "image": prod("image", **e), "zp": prod("zp", **e), "reference_image": f"{ref}.image.fits",
                  "reference_psf": f"{ref}.psf.fits", "reference_sources": f"{ref}.sources.fits"}
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
    from vo import workflow

    return workflow.file_attrs(cfg, step, instrument_key(cfg))


def skippable(prov_step: str):
    """Decorate a transient rule body ``run_x(cfg, *job, inputs, outputs)``: when an input is a
    skipped-product marker, or the body raises :class:`SkipProduct`, every output is written as a
    skipped marker with the reason (and the step's provenance) and a warning is logged, instead of
    failing the job (see :mod:`vo.images.skipped`)."""
    def decorate(func):
        signature = inspect.signature(func)

        @functools.wraps(func)
        def run(*args, **kwargs) -> None:
            bound = signature.bind(*args, **kwargs).arguments
            cfg, inputs, outputs = bound["cfg"], bound["inputs"], bound["outputs"]
            job = [str(v) for k, v in bound.items() if k not in ("cfg", "inputs", "outputs")]
            hit = first_skipped(inputs.values())
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


# -- rule bodies ---------------------------------------------------------------------------
def run_simulate_exposure(cfg: dict, exposure: str, inputs: dict, outputs: dict) -> None:
    """DemoCam: simulate one raw science exposure and its truth table."""
    from vo.images import simulate

    simulate.write_exposure(cfg, exposure, raw_path=outputs["raw"], truth_path=outputs["truth"])
    log.info("simulated %s -> %s", exposure, outputs["raw"])


def run_simulate_calibration(cfg: dict, exposure: str, inputs: dict, outputs: dict) -> None:
    """DemoCam: simulate one raw calibration exposure (bias or flat)."""
    from vo.images import simulate

    simulate.write_calibration(cfg, exposure, raw_path=outputs["raw"])
    log.info("simulated calibration %s -> %s", exposure, outputs["raw"])


def _sections(cfg: dict, files: list[str], ccd: str) -> list:
    inst = instrument(cfg)
    return [inst.read_section(f, ccd) for f in files]


def run_master_bias(cfg: dict, ccd: str, inputs: dict, outputs: dict) -> None:
    """Master bias of one CCD from the bias exposures (ADU, overscan-corrected)."""
    from vo.images import calibration

    bias = calibration.master_bias(_sections(cfg, inputs["raw"], ccd), cfg["calibration"])
    calibration.write_master(outputs["bias"], bias, file_attrs(cfg, "calibration"), "bias", ccd,
                             n_frames=len(inputs["raw"]))
    log.info("master bias %s from %d frames", ccd, len(inputs["raw"]))


def run_master_flat(cfg: dict, ccd: str, filt: str, inputs: dict, outputs: dict) -> None:
    """Master flat of one CCD and filter (normalised to median 1)."""
    from vo.images import calibration

    bias, _ = calibration.read_master(inputs["bias"], "bias")
    flat = calibration.master_flat(_sections(cfg, inputs["raw"], ccd), bias, cfg["calibration"])
    calibration.write_master(outputs["flat"], flat, file_attrs(cfg, "calibration"), "flat", ccd,
                             filt=filt, n_frames=len(inputs["raw"]))
    log.info("master flat %s %s from %d frames", ccd, filt, len(inputs["raw"]))


def run_preprocess(cfg: dict, exposure: str, ccd: str, inputs: dict, outputs: dict) -> None:
    """Overscan, trim, bias, flat, gain, weights and flags of one CCD."""
    from vo.images import calibration
    from vo.images.image import write_image
    from vo.images.preprocess import preprocess

    inst = instrument(cfg)
    meta = {"instrument": cfg["images"]["instrument"], **inst.read_exposure_header(inputs["raw"])}
    raw = inst.read_section(inputs["raw"], ccd)
    bias, _ = calibration.read_master(inputs["bias"], "bias")
    flat = calibration.read_master(inputs["flat"], "flat")[0] if cfg["preprocessing"]["flat"] else None
    image = preprocess(raw, bias, flat, cfg["preprocessing"], overscan=cfg["calibration"], meta=meta,
                       filename=inputs["raw"])
    write_image(outputs["image"], image, file_attrs(cfg, "preprocessing"))
    log.info("%s %s: preprocessed, %d flagged pixels", exposure, ccd, int((image.flags != 0).sum()))


def run_extract(cfg: dict, exposure: str, ccd: str, inputs: dict, outputs: dict) -> None:
    """Background, sources, PSF and photometry of one CCD."""
    from vo.images.background import write_background
    from vo.images.extract import extract, write_sources
    from vo.images.image import read_image
    from vo.images.psf import write_psf

    image = read_image(inputs["image"])
    ex = extract(image, cfg["extraction"], name=f"{exposure} {ccd} ({inputs['image']})")
    attrs = file_attrs(cfg, "extraction")
    write_sources(outputs["sources"], ex.sources, attrs)
    write_psf(outputs["psf"], ex.psf, attrs)
    write_background(outputs["background"], ex.background, attrs)
    log.info("%s %s: %d sources, FWHM %.2f pix", exposure, ccd, len(ex.sources), ex.meta.get("fwhm", float("nan")))


def fetcher(cfg: dict):
    """Reference-catalog fetcher: DemoCam supplies its own (offline), others ask the Gaia archive."""
    from vo.images import excerpts

    if cfg["images"]["instrument"] == "DemoCam":
        return excerpts.DemoCamFetcher(cfg)
    return excerpts.GaiaArchiveFetcher.from_config(cfg)


def footprint(header, shape):
    """Sky corners (4, 2) in degrees of an image from its header WCS."""
    import numpy as np
    from astropy.wcs import WCS

    ny, nx = shape
    corners = np.array([[0, 0], [nx - 1, 0], [nx - 1, ny - 1], [0, ny - 1]], float)
    return WCS(header).all_pix2world(corners, 0)


def excerpt_tile_files(cfg: dict, image_file: str) -> list[str]:
    """The cached reference-catalog tiles that cover an image (those present on disk)."""
    from astropy.io import fits

    from vo.images import excerpts

    pars = cfg["catalog_excerpts"]
    hdr = fits.getheader(image_file, "SCI")
    pix = excerpts.tiles_for_footprint(footprint(hdr, (hdr["NAXIS2"], hdr["NAXIS1"])), pars["nside"],
                                       pars["margin"])
    files = [Paths(cfg).excerpt_tile(pars["catalog"], int(excerpts.tile_uniq(pars["nside"], p))) for p in pix]
    return [str(f) for f in files if f.exists()]


def run_astrometry(cfg: dict, exposure: str, ccd: str, inputs: dict, outputs: dict) -> None:
    """Fit the WCS against the reference catalog; a failure is flagged in the file, not raised."""
    from vo.images import excerpts
    from vo.images.astrometry import WCSSolution, solve_wcs, write_wcs
    from vo.images.extract import read_sources
    from vo.images.image import read_image

    image = read_image(inputs["image"])
    sources = read_sources(inputs["sources"])
    hdr = image.header
    try:
        excerpt = excerpts.get_excerpt(Paths(cfg), cfg, footprint(hdr, image.sci.shape), fetcher(cfg))
        sol = solve_wcs(sources, excerpt, hdr, float(hdr["MJD-OBS"]), cfg["astrometry"], shape=image.sci.shape)
    except excerpts.ExcerptError as exc:  # no overlap: flag, do not crash the workflow
        from astropy.wcs import WCS
        sol = WCSSolution(wcs=WCS(hdr), rms_arcsec=float("nan"), n_stars=0, ok=False, reason=str(exc))
    write_wcs(outputs["wcs"], sol, file_attrs(cfg, "astrometry"))
    if sol.ok:
        log.info("%s %s: WCS rms %.3f\" from %d stars", exposure, ccd, sol.rms_arcsec, sol.n_stars)
    else:
        log.warning("%s %s: astrometry FAILED (%s); the image is flagged", exposure, ccd, sol.reason)


def background_rms(sources, background_file: str) -> float:
    """Background noise (e-/pix) of an image: the source list's ``BKG_RMS`` (the global RMS
    of the same background), else the median of the background file's RMS map (reading the
    64 MB maps of a 2048x4096 CCD costs more than the rest of the zero-point step)."""
    import numpy as np

    from vo.images.background import read_background

    if sources.meta.get("BKG_RMS") is not None:
        return float(sources.meta["BKG_RMS"])
    return float(np.median(read_background(background_file).rms))


def run_zero_point(cfg: dict, exposure: str, ccd: str, inputs: dict, outputs: dict) -> None:
    """Zero point, aperture correction and limiting magnitude; skipped (flagged) without a WCS."""
    import numpy as np

    from vo.images import excerpts, zeropoint
    from vo.images.astrometry import read_wcs
    from vo.images.extract import read_sources
    from vo.images.image import read_image
    from vo.images.psf import read_psf

    sol = read_wcs(inputs["wcs"])
    attrs = file_attrs(cfg, "zero_point")
    if not sol.ok:
        nan = float("nan")
        zp = zeropoint.ZeroPoint(zp=nan, zp_err=nan, colour_term=nan, colour_pivot=nan, apcor=nan,
                                 limmag5=nan, n_stars=0, ok=False,
                                 reason=f"skipped: astrometry failed ({sol.reason})")
        zeropoint.write_zp(outputs["zp"], zp, attrs)
        log.warning("%s %s: zero point skipped: astrometry failed (%s)", exposure, ccd, sol.reason)
        return
    image = read_image(inputs["image"])
    hdr = image.header
    sources = read_sources(inputs["sources"])
    psf = read_psf(inputs["psf"])
    ny, nx = image.sci.shape
    excerpt = excerpts.get_excerpt(Paths(cfg), cfg, footprint(sol.wcs.to_header(relax=True), (ny, nx)),
                                   fetcher(cfg))
    size = 2 * int(np.ceil(4 * float(np.atleast_1d(psf.fwhm(nx / 2, ny / 2))[0]))) + 1
    nea = zeropoint.noise_equivalent_area(psf.evaluate(nx / 2, ny / 2, size))
    zp = zeropoint.fit_zero_point(sources, excerpt, sol, hdr["FILTER"], float(hdr["EXPTIME"]),
                                  cfg["zero_point"], mjd=float(hdr["MJD-OBS"]),
                                  background_rms=background_rms(sources, inputs["background"]),
                                  psf_nea=nea)
    zeropoint.write_zp(outputs["zp"], zp, attrs)
    if zp.ok:
        log.info("%s %s: zp %.3f +- %.3f, limiting mag %.2f", exposure, ccd, zp.zp, zp.zp_err, zp.limmag5)
    else:
        log.warning("%s %s: zero point FAILED (%s)", exposure, ccd, zp.reason)


@skippable("references")
def run_references(cfg: dict, field: str, filt: str, ccd: str, inputs: dict, outputs: dict) -> None:
    """Coadd the reference epochs of one field, filter and CCD onto the best-seeing input's grid.

    Inputs whose astrometry or zero point failed are left out (logged); with no good input (or
    too few) the reference is skipped and so are the subtractions that need it."""
    from vo.images.align import with_wcs
    from vo.images.astrometry import read_wcs
    from vo.images.coadd import ReferenceError, build_reference, write_reference
    from vo.images.image import read_image
    from vo.images.psf import read_psf
    from vo.images.zeropoint import read_zp

    images, psfs, zps = [], [], []
    for img, psf, wcs, zp in zip(inputs["image"], inputs["psf"], inputs["wcs"], inputs["zp"]):
        sol, z = read_wcs(wcs), read_zp(zp)
        if not (sol.ok and z.ok):
            log.warning("reference %s %s %s: leaving out %s (%s)", field, filt, ccd, img,
                        sol.reason or z.reason)
            continue
        images.append(with_wcs(read_image(img), sol.wcs))
        psfs.append(read_psf(psf))
        zps.append(z.zp)
    if not images:
        raise SkipProduct(f"reference {field} {filt} {ccd}: no input with a good WCS and zero point")
    best = min(range(len(images)), key=lambda i: float(psfs[i].fwhm()))
    try:
        ref = build_reference(images, psfs, zps, images[best].wcs, images[best].sci.shape, cfg["references"],
                              cfg["extraction"], name=f"reference {field} {filt} {ccd}")
    except ReferenceError as exc:
        raise SkipProduct(str(exc)) from exc
    write_reference(outputs, ref, file_attrs(cfg, "references"))
    log.info("reference %s %s %s: %d images, zp %.3f", field, filt, ccd, ref.n_images, ref.zp)


@skippable("subtraction")
def run_subtraction(cfg: dict, exposure: str, ccd: str, inputs: dict, outputs: dict) -> None:
    """Align the reference onto the new image and subtract it (ZOGY or Alard-Lupton).

    Skipped (flagged, see :func:`skippable`) when the new image's astrometry or zero point failed,
    the reference does not overlap it, or the pair cannot be subtracted (too few unflagged pixels
    in common, too few stars for Alard-Lupton)."""
    from vo.images.align import align_image, with_wcs
    from vo.images.astrometry import read_wcs
    from vo.images.coadd import read_reference
    from vo.images.image import read_image, write_image
    from vo.images.psf import read_psf
    from vo.images.subtract import SubtractionError, subtract, write_difference
    from vo.images.zeropoint import read_zp

    sol, zp = read_wcs(inputs["wcs"]), read_zp(inputs["zp"])
    if not (sol.ok and zp.ok):
        raise SkipProduct(f"{exposure} {ccd}: cannot subtract: astrometry/zero point failed "
                          f"({sol.reason or zp.reason}) in {inputs['wcs']}")
    new = with_wcs(read_image(inputs["image"]), sol.wcs)
    ref = read_reference({"image": inputs["ref_image"], "psf": inputs["ref_psf"], "sources": inputs["ref_sources"]})
    try:
        aligned, ref_psf = align_image(ref.image, new.wcs, new.sci.shape, psf=ref.psf)
        if not (aligned.flags == 0).any():
            raise SubtractionError(f"{inputs['ref_image']} does not overlap {exposure} {ccd}")
        diff = subtract(new, aligned, read_psf(inputs["psf"]), ref_psf, zp.zp, ref.zp, cfg["subtraction"],
                        method=cfg["subtraction"]["method"])
    except SubtractionError as exc:
        raise SkipProduct(f"{exposure} {ccd}: cannot subtract {inputs['ref_image']}: {exc}") from exc
    except ValueError as exc:
        if "no overlap" not in str(exc):
            raise
        raise SkipProduct(f"{exposure} {ccd}: reference {inputs['ref_image']} does not overlap the image ({exc})") from exc
    write_difference(outputs["difference"], diff, file_attrs(cfg, "subtraction"))
    write_image(outputs["aligned_reference"], aligned, file_attrs(cfg, "subtraction"))
    log.info("%s %s: %s difference written", exposure, ccd, cfg["subtraction"]["method"])


@skippable("detection")
def run_detection(cfg: dict, exposure: str, ccd: str, inputs: dict, outputs: dict) -> None:
    """Candidates above the score threshold (positive and negative) on one difference image."""
    from astropy.wcs import WCS

    from vo.images.detect import detect_candidates, write_candidates
    from vo.images.subtract import read_difference

    diff = read_difference(inputs["difference"])
    cands = detect_candidates(diff, cfg["detection"], wcs=WCS(diff.header))
    write_candidates(outputs["candidates"], cands, file_attrs(cfg, "detection"))
    log.info("%s %s: %d candidates (%d negative)", exposure, ccd, len(cands),
             int(cands["is_negative"].sum()) if len(cands) else 0)


@skippable("cutouts")
def run_cutouts(cfg: dict, exposure: str, ccd: str, inputs: dict, outputs: dict) -> None:
    """New, reference and difference stamps around each candidate."""
    from vo.images.align import with_wcs
    from vo.images.astrometry import read_wcs
    from vo.images.cutouts import make_cutouts, write_cutouts
    from vo.images.detect import read_candidates
    from vo.images.image import read_image
    from vo.images.subtract import read_difference

    new = with_wcs(read_image(inputs["image"]), read_wcs(inputs["wcs"]).wcs)
    cut = make_cutouts(read_candidates(inputs["candidates"]), new, read_image(inputs["aligned_reference"]),
                       read_difference(inputs["difference"]), size=cfg["cutouts"]["size"])
    write_cutouts(outputs["cutouts"], cut, file_attrs(cfg, "cutouts"))
    log.info("%s %s: %d cutouts", exposure, ccd, len(cut))


@skippable("measurements")
def run_measurements(cfg: dict, exposure: str, ccd: str, inputs: dict, outputs: dict) -> None:
    """Fluxes, shapes, dipole and bad-pixel measures of each candidate, with the analytic cuts."""
    from vo.images.cutouts import read_cutouts
    from vo.images.detect import read_candidates
    from vo.images.extract import read_sources
    from vo.images.measure import measure, write_measurements
    from vo.images.subtract import read_difference
    from vo.images.zeropoint import read_zp

    table = measure(read_cutouts(inputs["cutouts"]), read_candidates(inputs["candidates"]),
                    read_difference(inputs["difference"]).psf, read_zp(inputs["zp"]).zp,
                    read_sources(inputs["ref_sources"]), cfg["measurements"],
                    pixel_scale=instrument(cfg).pixel_scale)
    write_measurements(outputs["measurements"], table, file_attrs(cfg, "measurements"))
    log.info("%s %s: %d measurements kept, %d marked bad", exposure, ccd, len(table),
             int(table["is_bad"].sum()) if len(table) else 0)


@skippable("rb_training")
def run_rb_training_set(cfg: dict, exposure: str, ccd: str, inputs: dict, outputs: dict) -> None:
    """Labelled real/bogus candidates of one new CCD: fakes (real) and cosmic rays, bad columns
    and dipoles (bogus) injected, then subtracted, detected and measured like the workflow."""
    from astropy.io import fits

    from vo.images.simulate import read_truth, rng_for
    from vo.images.training import training_set
    from vo.io.fits import write_fits

    new, psf, zp, aligned_ref, ref_psf, ref = _new_and_reference(cfg, inputs)
    truth = None
    truth_file = Paths(cfg).raw_truth(instrument_key(cfg), exposure)
    if truth_file.exists():
        truth = read_truth(truth_file)
        if "ccd" in truth.colnames:
            truth = truth[truth["ccd"] == ccd]
    seed = int(rng_for(cfg["scoring"]["seed"], exposure, ccd).integers(2**31))
    table = training_set(cfg, new, psf, zp.zp, aligned_ref, ref_psf, ref.zp, seed, truth=truth,
                         ref_sources=ref.sources, pixel_scale=instrument(cfg).pixel_scale)
    write_fits(outputs["training_set"], fits.HDUList([fits.PrimaryHDU(), fits.table_to_hdu(table)]),
               file_attrs(cfg, "rb_training"))
    log.info("%s %s: %d training candidates (%d real)", exposure, ccd, len(table), int(table["label"].sum()))


def _new_and_reference(cfg: dict, inputs: dict):
    """(new image with its solved WCS, its PSF, its ZeroPoint, aligned reference image, reference
    PSF on the new grid, Reference) of a new CCD, from the inputs of rb_training_set/efficiency."""
    from vo.images.align import align_psf, with_wcs
    from vo.images.astrometry import read_wcs
    from vo.images.coadd import read_reference
    from vo.images.image import read_image
    from vo.images.psf import read_psf
    from vo.images.zeropoint import read_zp

    new = with_wcs(read_image(inputs["image"]), read_wcs(inputs["wcs"]).wcs)
    ref = read_reference({"image": inputs["ref_image"], "psf": inputs["ref_psf"],
                          "sources": inputs["ref_image"].replace(".image.fits", ".sources.fits")})
    ref_psf = align_psf(ref.psf, ref.image.wcs, new.wcs, new.sci.shape)
    return (new, read_psf(inputs["psf"]), read_zp(inputs["zp"]), read_image(inputs["aligned_reference"]),
            ref_psf, ref)


@skippable("injection")
def run_efficiency(cfg: dict, exposure: str, ccd: str, inputs: dict, outputs: dict) -> None:
    """Inject fakes of known flux into a new CCD, run the same subtraction, detection, cuts and
    real/bogus score, and write the detection efficiency and flux bias per magnitude bin."""
    import numpy as np

    from vo.images import inject, score
    from vo.images.simulate import rng_for
    from vo.images.training import pipeline_features

    new, psf, zp, aligned_ref, ref_psf, ref = _new_and_reference(cfg, inputs)
    p = cfg["injection"]
    seed = int(rng_for(p["seed"], exposure, ccd).integers(2**31))
    mags = inject.draw_magnitudes(p["n_fakes"], p["mag_range"], seed,
                                  limmag=zp.limmag5 if p["relative_to_limit"] else None)
    fake, truth = inject.inject_fakes(new, psf, zp.zp, p["n_fakes"], mags, seed, p)
    meas = pipeline_features(cfg, fake, psf, zp.zp, aligned_ref, ref_psf, ref.zp, ref.sources,
                             pixel_scale=instrument(cfg).pixel_scale)
    algorithm = cfg["scoring"]["algorithm"]
    if algorithm == "democam_rb" and len(meas):
        model = score.load_model(inputs["model"])
        real = score.predict(model, score.feature_matrix(model["features"], meas, None, float(psf.fwhm())))
        kept = meas[(real >= cfg["scoring"]["threshold"]) & ~np.asarray(meas["is_bad"], bool)]
    else:  # braai needs stamps the measurements do not keep: efficiency after the cuts
        kept = meas[~np.asarray(meas["is_bad"], bool)] if len(meas) else meas
    table = inject.efficiency_table(truth, kept, p["match_radius"], p["bin_width"], flux_column="flux_psf")
    inject.write_efficiency(outputs["efficiency"], table, file_attrs(cfg, "injection"))
    log.info("%s %s: %d fakes, %d recovered after cuts and real/bogus", exposure, ccd, len(truth),
             int(table["n_detected"].sum()))


def run_efficiency_summary(cfg: dict, inputs: dict, outputs: dict) -> None:
    """Every CCD's fake-injection efficiency combined into one table and plot per run (skipped CCDs
    left out, logged)."""
    from vo.images import inject

    tables = []
    for f in inputs["efficiency"]:
        why = skipped_reason(f)
        if why is None:
            tables.append(inject.read_efficiency(f))
        else:
            log.warning("efficiency_summary: leaving out %s (skipped: %s)", f, why)
    if not tables:
        raise ValueError(f"efficiency_summary: every efficiency table is skipped ({len(inputs['efficiency'])} files)")
    table = inject.combine_efficiency(tables)
    inject.write_efficiency(outputs["summary"], table, file_attrs(cfg, "injection"))
    inject.plot_efficiency(outputs["plot"], table)
    log.info("efficiency over %d CCD images: %d of %d fakes recovered; 50%% at mag %.2f", len(tables),
             table.meta["N_FOUND"], table.meta["N_FAKES"], table.meta["MAG50"])


def run_train_rb(cfg: dict, inputs: dict, outputs: dict) -> None:
    """Train the democam_rb model on every training set."""
    from astropy.table import Table

    from vo.images import score
    from vo.images.training import train_democam_rb

    files = []
    for f in inputs["training_sets"]:
        why = skipped_reason(f)
        if why is None:
            files.append(f)
        else:
            log.warning("train_rb: leaving out %s (skipped: %s)", f, why)
    if not files:
        raise ValueError(f"train_rb: every training set is skipped ({len(inputs['training_sets'])} files): "
                         "no new image could be subtracted")
    tables = [Table.read(f, hdu=1) for f in files]
    model = train_democam_rb(tables, cfg)
    score.save_model(outputs["model"], model, file_attrs(cfg, "rb_training"))
    log.info("democam_rb trained on %d candidates from %d CCDs", sum(len(t) for t in tables), len(tables))


@skippable("scoring")
def run_scoring(cfg: dict, exposure: str, ccd: str, inputs: dict, outputs: dict) -> None:
    """Real/bogus score of each kept measurement (democam_rb model or braai d6_m7)."""
    import numpy as np

    from vo.images import score
    from vo.images.cutouts import read_cutouts
    from vo.images.measure import read_measurements
    from vo.images.psf import read_psf

    from vo.images.training import select_cutouts

    meas = read_measurements(inputs["measurements"])
    cut = read_cutouts(inputs["cutouts"])
    stamps = select_cutouts(cut, meas["id"])
    if cfg["scoring"]["algorithm"] == "braai_d6_m7":  # braai also needs the new and ref stamps
        order = {int(i): k for k, i in enumerate(cut.candidates["id"])}
        idx = np.array([order[int(i)] for i in meas["id"]], dtype=int)
        stamps.update(new=cut.new[idx], ref=cut.ref[idx])
    algorithm = cfg["scoring"]["algorithm"]
    model = score.load_model(inputs["model"]) if algorithm == "democam_rb" else None
    table = score.score(meas, stamps, algorithm, model=model, pars=cfg["scoring"],
                        fwhm=float(np.atleast_1d(read_psf(inputs["psf"]).fwhm())[0]))
    score.write_scores(outputs["scores"], table, file_attrs(cfg, "scoring"))
    log.info("%s %s: %d of %d candidates score >= %.2f (%s)", exposure, ccd, int(table["is_real"].sum()),
             len(table), cfg["scoring"]["threshold"], algorithm)


@skippable("association")
def run_association(cfg: dict, exposure: str, ccd: str, inputs: dict, outputs: dict) -> None:
    """Ingest one CCD's reference, difference, candidates, measurements and scores, and associate
    its real measurements (not bad, score >= threshold) to sky objects (race-free)."""
    from vo.db import engine as vengine
    from vo.db import ingest_transients

    eng = vengine.engine_from_config(cfg)
    field, filt = new_exposures(cfg)[exposure]
    ingest_transients.ingest_reference(eng, cfg, cfg["images"]["instrument"], field, filt, ccd,
                                       {"image": inputs["reference_image"], "psf": inputs["reference_psf"],
                                        "sources": inputs["reference_sources"]})
    counts = ingest_transients.ingest_transient_products(eng, cfg, cfg["images"]["instrument"], exposure, ccd,
                                                         {k: inputs[k] for k in ("difference", "candidates",
                                                          "cutouts", "measurements", "scores", "image", "zp",
                                                          "reference_image")})
    write_text(outputs["receipt"], json.dumps({"exposure": exposure, "ccd": ccd, "counts": counts}, indent=1,
                                              default=str))
    log.info("%s %s: %s", exposure, ccd, counts)


def run_alerts(cfg: dict, exposure: str, inputs: dict, outputs: dict) -> None:
    """The exposure's AVRO alerts (the file is the source of truth); sent to Kafka when configured."""
    from vo.db import engine as vengine
    from vo.images import alert_packets, alerts

    eng = vengine.engine_from_config(cfg)
    files_by_ccd = {}
    for c, receipt in zip(ccds(cfg), inputs["association"]):
        why = skipped_reason(receipt)
        if why is not None:
            log.warning("%s %s: no alerts (skipped: %s)", exposure, c, why)
            continue
        ins, _ = rule_io("association", cfg, exposure, c)
        files_by_ccd[c] = {k: ins[k] for k in ("measurements", "cutouts", "difference", "scores")}
    packets = alert_packets.build_alerts(eng, cfg, cfg["images"]["instrument"], exposure, files_by_ccd)
    forced = alert_packets.undetected_forced_photometry(eng, cfg, cfg["images"]["instrument"], exposure,
                                                        files_by_ccd)
    alert_packets.write_forced_table(outputs["forced"], forced, file_attrs(cfg, "alerts"))
    alert_packets.write_exposure_alerts(outputs["alerts"], packets, file_attrs(cfg, "alerts"))
    log.info("%s: %d alerts -> %s; forced photometry of %d undetected objects -> %s", exposure, len(packets),
             outputs["alerts"], len(forced), outputs["forced"])
    kw = alerts.alerts_config(cfg)
    if kw["servers"]:
        state = alerts.send_alerts([outputs["alerts"]], **kw)
        log.info("%s: Kafka delivery %s (unsent files can be sent again: vo resend-alerts)", exposure, state)


def run_ingest_images(cfg: dict, exposure: str, ccd: str, inputs: dict, outputs: dict) -> None:
    """Put one CCD's products (and its reference-catalog tiles) into the database."""
    from vo.db import engine as vengine
    from vo.db import ingest_images

    eng = vengine.engine_from_config(cfg)
    header = instrument(cfg).read_exposure_header(inputs["raw"])
    counts = ingest_images.ingest_image_products(eng, cfg, cfg["images"]["instrument"], exposure, ccd,
                                                 dict(inputs), exposure_header=header)
    counts["catalog_excerpts"] = ingest_images.ingest_excerpt_tiles(eng, cfg, excerpt_tile_files(cfg, inputs["image"]))
    receipt = {"exposure": exposure, "ccd": ccd, "counts": counts,
               "provenance_hash": vprov.provenance(cfg, "ingest_images", instrument_key(cfg)).hash}
    write_text(outputs["receipt"], json.dumps(receipt, indent=1, default=str))
    log.info("%s %s: ingested %s", exposure, ccd, counts)
