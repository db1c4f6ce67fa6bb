"""Rule bodies of the image steps from raw exposures to zero points (and their ingest).

Each ``run_<rule>(cfg, *job, inputs, outputs)`` reads its inputs, calls the science in
``vo.images`` and writes every output atomically (see :mod:`vo.steps` for the table of rules).
"""

from __future__ import annotations

import json
import logging
import os

from vo import provenance as vprov
from vo.io.atomic import write_text
from vo.paths import Paths
from vo.pipeline.image_io import file_attrs, instrument, instrument_key, skippable
from vo.pipeline.skipped import SkipProduct

log = logging.getLogger("vo.images")



# -- rule bodies ---------------------------------------------------------------------------
def run_simulate_exposure(cfg: dict, exposure: str, inputs: dict, outputs: dict) -> None:
    """DemoCam: simulate one raw science exposure and its truth table."""
    from vo.images.instruments.democam import simulate

    simulate.write_exposure(cfg, exposure, raw_path=outputs["raw"], truth_path=outputs["truth"])
    log.info("simulated %s -> %s", exposure, outputs["raw"])


def run_simulate_calibration(cfg: dict, exposure: str, inputs: dict, outputs: dict) -> None:
    """DemoCam: simulate one raw calibration exposure (bias or flat)."""
    from vo.images.instruments.democam import simulate

    simulate.write_calibration(cfg, exposure, raw_path=outputs["raw"])
    log.info("simulated calibration %s -> %s", exposure, outputs["raw"])


def _sections(cfg: dict, files: list[str], ccd: str) -> list:
    inst = instrument(cfg)
    return [inst.read_section(f, ccd) for f in files]


def run_master_bias(cfg: dict, ccd: str, inputs: dict, outputs: dict) -> None:
    """Master bias of one CCD from the bias exposures (ADU, overscan-corrected)."""
    from vo.images.calibrate import calibration

    bias = calibration.master_bias(_sections(cfg, inputs["raw"], ccd), cfg["calibration"])
    calibration.write_master(outputs["bias"], bias, file_attrs(cfg, "calibration"), "bias", ccd,
                             n_frames=len(inputs["raw"]))
    log.info("master bias %s from %d frames", ccd, len(inputs["raw"]))


def run_master_flat(cfg: dict, ccd: str, filt: str, inputs: dict, outputs: dict) -> None:
    """Master flat of one CCD and filter (normalised to median 1)."""
    from vo.images.calibrate import calibration

    bias, _ = calibration.read_master(inputs["bias"], "bias")
    flat = calibration.master_flat(_sections(cfg, inputs["raw"], ccd), bias, cfg["calibration"])
    calibration.write_master(outputs["flat"], flat, file_attrs(cfg, "calibration"), "flat", ccd,
                             filt=filt, n_frames=len(inputs["raw"]))
    log.info("master flat %s %s from %d frames", ccd, filt, len(inputs["raw"]))


@skippable("preprocessing")
def run_preprocess(cfg: dict, exposure: str, ccd: str, inputs: dict, outputs: dict) -> None:
    """Overscan, trim, bias, flat, gain, weights and flags of one CCD (or, for calibrated images,
    the image read with its weights and masks)."""
    from vo.images.calibrate import calibration
    from vo.images.image import write_image
    from vo.images.calibrate.preprocess import BlankDataError, check_not_blank, preprocess

    inst = instrument(cfg)
    try:  # a blank CCD is flagged with its cause (skipped products), the night goes on
        if getattr(inst, "calibrated", False):  # an already calibrated image: read as it is
            image = inst.read_image(inputs["raw"], ccd, exposure)
            check_not_blank(image.sci, f"{inputs['raw']}: exposure {exposure} ccd {ccd}")
            write_image(outputs["image"], image, file_attrs(cfg, "preprocessing"))
            log.info("%s %s: calibrated image read from %s", exposure, ccd, inputs["raw"])
            return
        meta = {"instrument": cfg["images"]["instrument"], **inst.read_exposure_header(inputs["raw"])}
        raw = inst.read_section(inputs["raw"], ccd)
        bias, _ = calibration.read_master(inputs["bias"], "bias")
        flat = calibration.read_master(inputs["flat"], "flat")[0] if cfg["preprocessing"]["flat"] else None
        image = preprocess(raw, bias, flat, cfg["preprocessing"], overscan=cfg["calibration"], meta=meta,
                           filename=inputs["raw"])
    except BlankDataError as exc:
        raise SkipProduct(str(exc)) from exc
    write_image(outputs["image"], image, file_attrs(cfg, "preprocessing"))
    log.info("%s %s: preprocessed, %d flagged pixels", exposure, ccd, int((image.flags != 0).sum()))


@skippable("extraction")
def run_extract(cfg: dict, exposure: str, ccd: str, inputs: dict, outputs: dict) -> None:
    """Background, sources, PSF and photometry of one CCD."""
    from vo.images.extract.background import write_background
    from vo.images.extract import extract, write_sources
    from vo.images.image import read_image
    from vo.images.extract.psf import write_psf

    image = read_image(inputs["image"])
    ex = extract(image, cfg["extraction"], name=f"{exposure} {ccd} ({inputs['image']})")
    attrs = file_attrs(cfg, "extraction")
    write_sources(outputs["sources"], ex.sources, attrs)
    write_psf(outputs["psf"], ex.psf, attrs)
    write_background(outputs["background"], ex.background, attrs)
    log.info("%s %s: %d sources, FWHM %.2f pix", exposure, ccd, len(ex.sources), ex.meta.get("fwhm", float("nan")))


def fetcher(cfg: dict):
    """Reference-catalog fetcher: the instrument's own where it has one (a simulated camera's,
    offline), else the files of ``catalog_excerpts.files`` (relative patterns under the data
    root), else the Gaia archive."""
    from vo.images.astrometry import excerpts

    own = instrument(cfg).catalog_fetcher()
    if own is not None:
        return own
    pars = cfg["catalog_excerpts"]
    if pars["files"]:
        root = Paths(cfg).data_root
        return excerpts.file_fetcher([p if os.path.isabs(p) else str(root / p) for p in pars["files"]],
                                     pars["catalog"])
    return excerpts.GaiaArchiveFetcher.from_config(cfg)


def footprint(header, shape):
    """Sky corners (4, 2) in degrees of an image (its corner pixels' centres) from its header WCS."""
    from astropy.wcs import WCS

    from vo.sky import corners

    ny, nx = shape
    return corners(WCS(header), nx, ny, edge=0.0)


def excerpt_tile_files(cfg: dict, image_file: str) -> list[str]:
    """The cached reference-catalog tiles that cover an image (those present on disk)."""
    from astropy.io import fits

    from vo.images.astrometry import excerpts

    pars = cfg["catalog_excerpts"]
    hdr = fits.getheader(image_file, "SCI")
    pix = excerpts.tiles_for_footprint(footprint(hdr, (hdr["NAXIS2"], hdr["NAXIS1"])), pars["nside"],
                                       pars["margin"])
    files = [Paths(cfg).excerpt_tile(pars["catalog"], int(excerpts.tile_uniq(pars["nside"], p))) for p in pix]
    return [str(f) for f in files if f.exists()]


@skippable("astrometry")
def run_astrometry(cfg: dict, exposure: str, ccd: str, inputs: dict, outputs: dict) -> None:
    """Fit the WCS against the reference catalog; a failure is flagged in the file, not raised (a
    calibrated image keeps its own WCS, with the reason in the file).  An unreachable catalog
    server is not a failure of the image: the job fails (retried), no flagged WCS is stored that a
    rerun would keep once the server is back."""
    from vo.images.astrometry import excerpts
    from vo.images.astrometry import WCSSolution, solve_wcs, write_wcs
    from vo.images.extract import read_sources
    from vo.images.image import read_image

    image = read_image(inputs["image"])
    sources = read_sources(inputs["sources"])
    hdr = image.header
    try:
        excerpt = excerpts.get_excerpt(Paths(cfg), cfg, footprint(hdr, image.sci.shape), fetcher(cfg))
        sol = solve_wcs(sources, excerpt, hdr, float(hdr["MJD-OBS"]), cfg["astrometry"], shape=image.sci.shape)
    except excerpts.CatalogOfflineError:  # transient: the job fails (Snakemake retries), nothing is stored
        raise
    except excerpts.ExcerptError as exc:  # no overlap: flag, do not crash the workflow
        from astropy.wcs import WCS
        sol = WCSSolution(wcs=WCS(hdr), rms_arcsec=float("nan"), n_stars=0, ok=False, reason=str(exc))
    if not sol.ok and getattr(instrument(cfg), "calibrated", False):
        # a calibrated image's own WCS (a survey pipeline's, fitted to Gaia) beats none: kept, and said
        from astropy.wcs import WCS
        sol = WCSSolution(wcs=WCS(hdr), rms_arcsec=float("nan"), n_stars=0, ok=True,
                          reason=f"the image's own WCS kept (refit failed: {sol.reason})")
        log.warning("%s %s: %s", exposure, ccd, sol.reason)
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

    from vo.images.extract.background import read_background

    if sources.meta.get("BKG_RMS") is not None:
        return float(sources.meta["BKG_RMS"])
    return float(np.median(read_background(background_file).rms))


@skippable("zero_point")
def run_zero_point(cfg: dict, exposure: str, ccd: str, inputs: dict, outputs: dict) -> None:
    """Zero point, aperture correction and limiting magnitude; skipped (flagged) without a WCS."""
    import numpy as np

    from vo.images.astrometry import excerpts

    from vo.images.photometry import zeropoint
    from vo.images.astrometry import read_wcs
    from vo.images.extract import read_sources
    from vo.images.image import read_image
    from vo.images.extract.psf import read_psf

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
    from vo.images.photometry.photometric import system_for

    try:
        zp = zeropoint.fit_zero_point(sources, excerpt, sol, hdr["FILTER"], float(hdr["EXPTIME"]),
                                      cfg["zero_point"], mjd=float(hdr["MJD-OBS"]),
                                      background_rms=background_rms(sources, inputs["background"]),
                                      psf_nea=nea, system=system_for(hdr.get("CAMERA", hdr.get("INSTRUME"))),
                                      release=cfg["catalog_excerpts"]["catalog"])
    except (ValueError, KeyError) as exc:  # cannot calibrate: flagged with the reason, not a failed job
        nan = float("nan")
        zp = zeropoint.ZeroPoint(zp=nan, zp_err=nan, colour_term=nan, colour_pivot=nan, apcor=nan,
                                 limmag5=nan, n_stars=0, ok=False, reason=f"cannot calibrate: {exc}")
    zeropoint.write_zp(outputs["zp"], zp, attrs)
    if zp.ok:
        log.info("%s %s: zp %.3f +- %.3f, limiting mag %.2f", exposure, ccd, zp.zp, zp.zp_err, zp.limmag5)
    else:
        log.warning("%s %s: zero point FAILED (%s)", exposure, ccd, zp.reason)



@skippable("ingest_images")
def run_ingest_images(cfg: dict, exposure: str, ccd: str, inputs: dict, outputs: dict) -> None:
    """Put one CCD's products (and its reference-catalog tiles) into the database."""
    from vo.db import engine as vengine
    from vo.ingest import images as ingest_images
    from vo.ingest import tiles as ingest_tiles

    eng = vengine.engine_from_config(cfg)
    header = instrument(cfg).read_exposure_header(inputs["raw"])
    counts = ingest_images.ingest_image_products(eng, cfg, cfg["images"]["instrument"], exposure, ccd,
                                                 dict(inputs), exposure_header=header)
    counts["catalog_excerpts"] = ingest_tiles.ingest_excerpt_tiles(eng, cfg, excerpt_tile_files(cfg, inputs["image"]))
    receipt = {"exposure": exposure, "ccd": ccd, "counts": counts,
               "provenance_hash": vprov.provenance(cfg, "ingest_images", instrument_key(cfg)).hash}
    write_text(outputs["receipt"], json.dumps(receipt, indent=1, default=str))
    log.info("%s %s: ingested %s", exposure, ccd, counts)
