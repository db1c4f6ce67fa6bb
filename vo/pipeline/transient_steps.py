"""Rule bodies of the transient steps: references, subtraction, detection, cutouts, measurements,
real/bogus training and scoring, association, injection and alerts.

A body decorated with :func:`~vo.pipeline.image_io.skippable` writes skipped-product markers
instead of failing when its input is skipped or the data cannot be processed.
"""

from __future__ import annotations

import json
import logging

from vo.pipeline.skipped import SkipProduct, first_skipped, skipped_reason
from vo.io.atomic import write_text
from vo.paths import Paths
from vo.pipeline.image_io import ccds, file_attrs, instrument, instrument_key, new_exposures, rule_io, skippable

log = logging.getLogger("vo.images")


@skippable("references", members_optional=True)
def run_references(cfg: dict, exposure: str, ccd: str, inputs: dict, outputs: dict) -> None:
    """Coadd the reference images overlapping new image ``exposure`` ``ccd`` (chosen by the
    reference policy, :mod:`vo.images.reference.pairing`) onto the grid of its planned footprint.

    The grid comes from the plan (header WCS grown by ``references.grid_margin``), not from the new
    image's products: the job needs only the reference images', so it stays outside the new
    image's group of per-CCD jobs.  Inputs whose astrometry, zero point or PSF failed are left out
    (logged); with no reference image overlapping, no good input or too few, the reference is
    skipped (with the reasons) and so are the steps that need it."""
    from vo.images.reference.align import with_wcs
    from vo.images.astrometry import read_wcs
    from vo.images.reference.coadd import ReferenceError, build_reference, write_reference
    from vo.images.reference.pairing import grid_wcs
    from vo.images.image import read_image
    from vo.images.extract.psf import read_psf
    from vo.images.photometry.zeropoint import read_zp
    from vo.pipeline.plan import get_plan

    name = f"reference of {exposure} {ccd}"
    grid = get_plan(cfg).coadd_grid(exposure, ccd)
    if not inputs["image"] or grid is None:
        raise SkipProduct(f"{name}: no reference image covers {cfg['references']['min_overlap']} of it "
                          f"(references.min_overlap) under the reference policy (references.select)")
    images, psfs, zps, left_out = [], [], [], []
    for img, psf, wcs, zp in zip(inputs["image"], inputs["psf"], inputs["wcs"], inputs["zp"]):
        skipped = first_skipped([img, psf, wcs, zp])  # e.g. a blank CCD of a reference exposure
        if skipped is not None:
            left_out.append(f"{img}: {skipped[1]}")
            log.warning("%s: leaving out %s (%s)", name, img, skipped[1])
            continue
        sol, z, model = read_wcs(wcs), read_zp(zp), read_psf(psf)
        if not (sol.ok and z.ok and model.ok):
            why = "; ".join(r for ok, r in ((sol.ok, sol.reason), (z.ok, z.reason), (model.ok, model.why)) if not ok)
            left_out.append(f"{img}: {why}")
            log.warning("%s: leaving out %s (%s)", name, img, why)
            continue
        images.append(with_wcs(read_image(img), sol.wcs))
        psfs.append(model)
        zps.append(z.zp)
    if not images:
        raise SkipProduct(f"{name}: no input with a good WCS, zero point and PSF ({' | '.join(left_out)})")
    target, shape = grid_wcs(grid)
    try:
        ref = build_reference(images, psfs, zps, target, shape, cfg["references"], cfg["extraction"], name=name)
    except ReferenceError as exc:
        raise SkipProduct(str(exc)) from exc
    ref.image.header["CCD"] = (ccd, "the new image's CCD")
    ref.image.header["REFFOR"] = (exposure, "the new exposure this reference is for")
    write_reference(outputs, ref, file_attrs(cfg, "references"))
    log.info("%s: %d images %s, zp %.3f", name, ref.n_images, ref.meta["inputs"], ref.zp)


@skippable("subtraction")
def run_subtraction(cfg: dict, exposure: str, ccd: str, inputs: dict, outputs: dict) -> None:
    """Align the reference onto the new image and subtract it (ZOGY or Alard-Lupton).

    The flux ratio comes from the stars both images see where enough match (and they beat the
    zero points' precision), else from the zero points (:func:`vo.images.subtract.matching.subtraction_zero_point`):
    a new image whose zero point failed is still subtracted, and the difference's ``MAGZP`` is the
    reference's carried over by the ratio.  Skipped (flagged, see :func:`skippable`) when the
    new image's astrometry failed, neither a zero point nor enough common stars exist, its PSF
    model failed its check, the reference does not overlap it, or the pair cannot be subtracted
    (too few unflagged pixels in common, too few stars for Alard-Lupton)."""
    from vo.images.reference.align import align_image, with_wcs
    from vo.images.astrometry import read_wcs
    from vo.images.reference.coadd import read_reference
    from vo.images.extract import read_sources
    from vo.images.image import read_image, write_image
    from vo.images.extract.psf import read_psf
    from vo.images.subtract import SubtractionError, subtract, write_difference
    from vo.images.subtract.matching import flux_ratio, subtraction_zero_point
    from vo.images.photometry.zeropoint import read_zp

    sol, zp = read_wcs(inputs["wcs"]), read_zp(inputs["zp"])
    if not sol.ok:
        raise SkipProduct(f"{exposure} {ccd}: cannot subtract: astrometry failed ({sol.reason}) in {inputs['wcs']}")
    new_psf = read_psf(inputs["psf"])
    if not new_psf.ok:
        raise SkipProduct(f"{exposure} {ccd}: cannot subtract: PSF model flagged ({new_psf.why}) in {inputs['psf']}")
    new = with_wcs(read_image(inputs["image"]), sol.wcs)
    ref = read_reference({"image": inputs["ref_image"], "psf": inputs["ref_psf"], "sources": inputs["ref_sources"]})
    if not ref.psf.ok:
        raise SkipProduct(f"{exposure} {ccd}: cannot subtract: the reference's PSF model is flagged "
                          f"({ref.psf.why}) in {inputs['ref_psf']}")
    ratio = flux_ratio(read_sources(inputs["sources"]), sol.wcs, ref.sources, ref.image.wcs)
    try:
        new_zp, scale = subtraction_zero_point(zp.zp, zp.zp_err, zp.ok, ref.zp, ratio)
    except ValueError as exc:
        raise SkipProduct(f"{exposure} {ccd}: cannot subtract: {exc}; zero point: {zp.reason} "
                          f"({inputs['zp']})") from exc
    try:
        aligned, ref_psf = align_image(ref.image, new.wcs, new.sci.shape, psf=ref.psf)
        if not (aligned.flags == 0).any():
            raise SubtractionError(f"{inputs['ref_image']} does not overlap {exposure} {ccd}")
        diff = subtract(new, aligned, new_psf, ref_psf, new_zp, ref.zp, cfg["subtraction"],
                        method=cfg["subtraction"]["method"])
    except SubtractionError as exc:
        raise SkipProduct(f"{exposure} {ccd}: cannot subtract {inputs['ref_image']}: {exc}") from exc
    except ValueError as exc:
        if "no overlap" not in str(exc):
            raise
        raise SkipProduct(f"{exposure} {ccd}: reference {inputs['ref_image']} does not overlap the image ({exc})") from exc
    diff.meta.update(flux_scale=scale, image_zp=zp.zp if zp.ok else None)
    write_difference(outputs["difference"], diff, file_attrs(cfg, "subtraction"))
    write_image(outputs["aligned_reference"], aligned, file_attrs(cfg, "subtraction"))
    log.info("%s %s: %s difference written", exposure, ccd, cfg["subtraction"]["method"])


@skippable("detection")
def run_detection(cfg: dict, exposure: str, ccd: str, inputs: dict, outputs: dict) -> None:
    """Candidates above the score threshold (positive and negative) on one difference image."""
    from astropy.wcs import WCS

    from vo.images.detect import detect_candidates, write_candidates
    from vo.images.extract.psf import read_psf
    from vo.images.subtract import read_difference

    diff = read_difference(inputs["difference"])
    cands = detect_candidates(diff, cfg["detection"], wcs=WCS(diff.header), new_psf=read_psf(inputs["psf"]))
    write_candidates(outputs["candidates"], cands, file_attrs(cfg, "detection"))
    log.info("%s %s: %d candidates (%d negative)", exposure, ccd, len(cands),
             int(cands["is_negative"].sum()) if len(cands) else 0)


@skippable("cutouts")
def run_cutouts(cfg: dict, exposure: str, ccd: str, inputs: dict, outputs: dict) -> None:
    """New, reference and difference stamps around each candidate."""
    from vo.images.reference.align import with_wcs
    from vo.images.astrometry import read_wcs
    from vo.images.detect.cutouts import make_cutouts, write_cutouts
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
    """Fluxes, shapes, dipole and bad-pixel measures of each candidate, with the analytic cuts; PSF
    fluxes with the difference's PSF where each candidate is (a spatially varying PSF)."""
    from vo.images.detect.cutouts import read_cutouts
    from vo.images.detect import read_candidates
    from vo.images.extract import read_sources
    from vo.images.detect.measure import measure, write_measurements
    from vo.images.subtract import magnitude_zero_point, read_difference

    from vo.images.extract.psf import read_psf
    from vo.images.subtract.tiles import LocalPSF

    diff = read_difference(inputs["difference"])
    local = LocalPSF(diff, read_psf(inputs["psf"]))  # each one's own PSF
    table = measure(read_cutouts(inputs["cutouts"]), read_candidates(inputs["candidates"]), local,
                    magnitude_zero_point(diff),  # the image's own, or carried over from the reference
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

    from vo.images.instruments.democam.plan import rng_for
    from vo.images.instruments.democam.simulate import read_truth
    from vo.images.realbogus.training import training_set
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
    from vo.images.reference.align import align_psf, with_wcs
    from vo.images.astrometry import read_wcs
    from vo.images.reference.coadd import read_reference
    from vo.images.image import read_image
    from vo.images.extract.psf import read_psf
    from vo.images.photometry.zeropoint import read_zp

    zp = read_zp(inputs["zp"])
    if not zp.ok:  # the difference may exist (flux ratio from matched stars), fakes of known magnitude not
        raise SkipProduct(f"fakes need the new image's zero point, which failed ({zp.reason}) in {inputs['zp']}")
    new = with_wcs(read_image(inputs["image"]), read_wcs(inputs["wcs"]).wcs)
    ref = read_reference({"image": inputs["ref_image"], "psf": inputs["ref_psf"],
                          "sources": inputs["ref_image"].replace(".image.fits", ".sources.fits")})
    ref_psf = align_psf(ref.psf, ref.image.wcs, new.wcs, new.sci.shape)
    return (new, read_psf(inputs["psf"]), zp, read_image(inputs["aligned_reference"]),
            ref_psf, ref)


@skippable("injection")
def run_efficiency(cfg: dict, exposure: str, ccd: str, inputs: dict, outputs: dict) -> None:
    """Inject fakes of known flux into a new CCD, run the same subtraction, detection, cuts and
    real/bogus score, and write the detection efficiency and flux bias per magnitude bin."""
    import numpy as np

    from vo.images import inject

    from vo.images.realbogus import score
    from vo.images.instruments.democam.plan import rng_for
    from vo.images.realbogus.training import pipeline_features

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
        kept = meas[score.is_real(real, cfg["scoring"]["threshold"]) & ~np.asarray(meas["is_bad"], bool)]
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
        log.warning("efficiency_summary: every efficiency table is skipped (%d files): an empty summary",
                    len(inputs["efficiency"]))
    table = inject.combine_efficiency(tables)
    inject.write_efficiency(outputs["summary"], table, file_attrs(cfg, "injection"))
    inject.plot_efficiency(outputs["plot"], table, "" if tables else "no efficiency: every CCD image skipped")
    log.info("efficiency over %d CCD images: %d of %d fakes recovered; 50%% at mag %.2f", len(tables),
             table.meta["N_FOUND"], table.meta["N_FAKES"], table.meta["MAG50"])


def run_train_rb(cfg: dict, inputs: dict, outputs: dict) -> None:
    """Train the democam_rb model on every training set."""
    from astropy.table import Table

    from vo.images.realbogus import score
    from vo.images.realbogus.training import train_democam_rb

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

    from vo.images.realbogus import score
    from vo.images.detect.cutouts import read_cutouts
    from vo.images.detect.measure import read_measurements
    from vo.images.realbogus.training import select_cutouts
    from vo.images.subtract import difference_fwhm

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
                        fwhm=difference_fwhm(inputs["difference"]))
    score.write_scores(outputs["scores"], table, file_attrs(cfg, "scoring"))
    log.info("%s %s: %d of %d candidates score >= %.2f (%s)", exposure, ccd, int(table["is_real"].sum()),
             len(table), cfg["scoring"]["threshold"], algorithm)


@skippable("association")
def run_association(cfg: dict, exposure: str, ccd: str, inputs: dict, outputs: dict) -> None:
    """Ingest one CCD's reference, difference, candidates, measurements and scores, and associate
    its real measurements (not bad, score >= threshold) to sky objects (race-free)."""
    from vo.db import engine as vengine
    from vo.ingest import transients as ingest_transients

    eng = vengine.engine_from_config(cfg)
    _, filt = new_exposures(cfg)[exposure]
    # a reference is coadded on one new image's grid: its row's "field" is that exposure
    ingest_transients.ingest_reference(eng, cfg, cfg["images"]["instrument"], exposure, filt, ccd,
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
    from vo.images import alerts
    from vo.pipeline import alert_packets

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
