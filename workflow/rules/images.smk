# Image pipeline: raw exposures -> calibration -> preprocessing -> extraction -> astrometry
# -> zero point -> ingest, then references -> subtraction -> detection -> cutouts ->
# measurements -> real/bogus training and scoring; one job per CCD up to the measurements
# (those per-CCD steps share a group: one cluster job). Scoring waits for the model trained
# on every CCD, so it, the training sets, the association (ingest + objects, in time order)
# and the alerts (one AVRO file per exposure) run outside the group.


if INSTRUMENT.simulated:

    rule simulate_exposure:
        output:
            raw=str(INSTRUMENT.raw_path(P, "{exposure}")),
            truth=str(P.raw_truth(IKEY, "{exposure}")),
        log:
            P.log("simulate_exposure", "{exposure}"),
        benchmark:
            P.benchmark("simulate_exposure", "{exposure}")
        resources:
            mem_mb=mem(2000),
            runtime=runtime(10),
        conda:
            "../../environment.yml"
        script:
            "../../scripts/simulate_exposure.py"

    rule simulate_calibration:
        output:
            raw=str(INSTRUMENT.raw_path(P, "{calname}")),
        wildcard_constraints:
            calname=_alt(CAL_NAMES),
        log:
            P.log("simulate_calibration", "{calname}"),
        benchmark:
            P.benchmark("simulate_calibration", "{calname}")
        resources:
            mem_mb=mem(2000),
            runtime=runtime(10),
        conda:
            "../../environment.yml"
        script:
            "../../scripts/simulate_calibration.py"


rule master_bias:
    input:
        raw=iio("master_bias", "in", "raw"),
    output:
        bias=ipattern("bias"),
    log:
        ilog("master_bias", "ccd", "vc"),
    benchmark:
        bench_path("master_bias", "ccd", "vc")
    resources:
        mem_mb=mem(4000),
        runtime=runtime(20),
    conda:
        "../../environment.yml"
    script:
        "../../scripts/master_bias.py"


rule master_flat:
    input:
        unpack(iio("master_flat", "in")),
    output:
        flat=ipattern("flat"),
    log:
        ilog("master_flat", "filter", "ccd", "vc"),
    benchmark:
        bench_path("master_flat", "filter", "ccd", "vc")
    resources:
        mem_mb=mem(4000),
        runtime=runtime(20),
    conda:
        "../../environment.yml"
    script:
        "../../scripts/master_flat.py"


rule preprocess:
    input:
        unpack(iio("preprocess", "in")),
    output:
        **iouts(image="image"),
    log:
        ilog("preprocess", "exposure", "ccd", "vc"),
    benchmark:
        bench_path("preprocess", "exposure", "ccd", "vc")
    group:
        "ccd"
    threads: ITHREADS
    resources:
        mem_mb=imem(3000),
        runtime=iruntime(10),
    conda:
        "../../environment.yml"
    script:
        "../../scripts/preprocess.py"


rule extract:
    input:
        image=iio("extract", "in", "image"),
    output:
        **iouts(sources="sources", psf="psf", background="background"),
    log:
        ilog("extract", "exposure", "ccd", "vc"),
    benchmark:
        bench_path("extract", "exposure", "ccd", "vc")
    group:
        "ccd"
    threads: ITHREADS
    resources:
        mem_mb=imem(4000),
        runtime=iruntime(10),
    conda:
        "../../environment.yml"
    script:
        "../../scripts/extract.py"


rule astrometry:
    input:
        unpack(iio("astrometry", "in")),
    output:
        **iouts(wcs="wcs"),
    log:
        ilog("astrometry", "exposure", "ccd", "vc"),
    benchmark:
        bench_path("astrometry", "exposure", "ccd", "vc")
    group:
        "ccd"
    threads: ITHREADS
    resources:
        mem_mb=imem(3000),
        runtime=iruntime(10),
    conda:
        "../../environment.yml"
    script:
        "../../scripts/astrometry.py"


rule zero_point:
    input:
        unpack(iio("zero_point", "in")),
    output:
        **iouts(zp="zp"),
    log:
        ilog("zero_point", "exposure", "ccd", "vc"),
    benchmark:
        bench_path("zero_point", "exposure", "ccd", "vc")
    group:
        "ccd"
    threads: ITHREADS
    resources:
        mem_mb=imem(3000),
        runtime=iruntime(10),
    conda:
        "../../environment.yml"
    script:
        "../../scripts/zero_point.py"


rule ingest_images:
    input:
        unpack(iio("ingest_images", "in")),
    output:
        **iouts(receipt="ingest_images"),
    log:
        ilog("ingest_images", "exposure", "ccd", "vc"),
    benchmark:
        bench_path("ingest_images", "exposure", "ccd", "vc")
    group:
        "ccd"
    threads: ITHREADS
    resources:
        mem_mb=imem(1000),
        runtime=iruntime(10),
    conda:
        "../../environment.yml"
    script:
        "../../scripts/ingest_images.py"


IMAGE_TARGETS = expand(iproduct("ingest_images"), exposure=EXPOSURES, ccd=CCDS)


# -- image pipeline II: references, subtraction, detection, cutouts, measurements ------

rule references:
    input:
        unpack(iio("references", "in")),
    output:
        **iouts(image="reference_image", psf="reference_psf", sources="reference_sources"),
    log:
        ilog("references", "exposure", "ccd", "vc"),
    benchmark:
        bench_path("references", "exposure", "ccd", "vc")
    # not in the "ccd" group: it reads other exposures' CCDs, which would join their group jobs
    threads: ITHREADS
    resources:
        mem_mb=imem(6000),
        runtime=iruntime(30),
    conda:
        "../../environment.yml"
    script:
        "../../scripts/references.py"


rule subtraction:
    input:
        unpack(iio("subtraction", "in")),
    output:
        **iouts(difference="difference", aligned_reference="aligned_reference", temporary=("aligned_reference",)),
    log:
        ilog("subtraction", "exposure", "ccd", "vc"),
    benchmark:
        bench_path("subtraction", "exposure", "ccd", "vc")
    group:
        "ccd"
    threads: ITHREADS
    resources:
        mem_mb=imem(6000),
        runtime=iruntime(20),
    conda:
        "../../environment.yml"
    script:
        "../../scripts/subtraction.py"


rule detection:
    input:
        unpack(iio("detection", "in")),
    output:
        **iouts(candidates="candidates"),
    log:
        ilog("detection", "exposure", "ccd", "vc"),
    benchmark:
        bench_path("detection", "exposure", "ccd", "vc")
    group:
        "ccd"
    threads: ITHREADS
    resources:
        mem_mb=imem(4000),
        runtime=iruntime(10),
    conda:
        "../../environment.yml"
    script:
        "../../scripts/detection.py"


rule cutouts:
    input:
        unpack(iio("cutouts", "in")),
    output:
        **iouts(cutouts="cutouts"),
    log:
        ilog("cutouts", "exposure", "ccd", "vc"),
    benchmark:
        bench_path("cutouts", "exposure", "ccd", "vc")
    group:
        "ccd"
    threads: ITHREADS
    resources:
        mem_mb=imem(4000),
        runtime=iruntime(10),
    conda:
        "../../environment.yml"
    script:
        "../../scripts/cutouts.py"


rule measurements:
    input:
        unpack(iio("measurements", "in")),
    output:
        **iouts(measurements="measurements"),
    log:
        ilog("measurements", "exposure", "ccd", "vc"),
    benchmark:
        bench_path("measurements", "exposure", "ccd", "vc")
    group:
        "ccd"
    threads: ITHREADS
    resources:
        mem_mb=imem(2000),
        runtime=iruntime(10),
    conda:
        "../../environment.yml"
    script:
        "../../scripts/measurements.py"


rule rb_training_set:
    input:
        unpack(iio("rb_training_set", "in")),
    output:
        **iouts(training_set="training_set"),
    log:
        ilog("rb_training_set", "exposure", "ccd", "vc"),
    benchmark:
        bench_path("rb_training_set", "exposure", "ccd", "vc")
    threads: ITHREADS
    resources:
        mem_mb=imem(6000),
        runtime=iruntime(20),
    conda:
        "../../environment.yml"
    script:
        "../../scripts/rb_training_set.py"


rule train_rb:
    input:
        unpack(iio("train_rb", "in")),
    output:
        model=ipattern("rb_model"),
    log:
        ilog("train_rb", "vc"),
    benchmark:
        bench_path("train_rb", "vc")
    resources:
        mem_mb=mem(4000),
        runtime=runtime(30),
    conda:
        "../../environment.yml"
    script:
        "../../scripts/train_rb.py"


rule scoring:
    input:
        unpack(iio("scoring", "in")),
    output:
        **iouts(scores="scores"),
    log:
        ilog("scoring", "exposure", "ccd", "vc"),
    benchmark:
        bench_path("scoring", "exposure", "ccd", "vc")
    threads: ITHREADS
    resources:
        mem_mb=imem(3000),
        runtime=iruntime(10),
    conda:
        "../../environment.yml"
    script:
        "../../scripts/scoring.py"


rule association:
    input:
        unpack(iio("association", "in")),
    output:
        **iouts(receipt="association"),
    log:
        ilog("association", "exposure", "ccd", "vc"),
    benchmark:
        bench_path("association", "exposure", "ccd", "vc")
    threads: ITHREADS
    resources:
        mem_mb=imem(2000),
        runtime=iruntime(10),
    conda:
        "../../environment.yml"
    script:
        "../../scripts/association.py"


rule alerts:
    input:
        unpack(iio("alerts", "in")),
    output:
        alerts=ipattern("alerts"),
        forced=ipattern("forced"),
    log:
        ilog("alerts", "exposure", "vc"),
    benchmark:
        bench_path("alerts", "exposure", "vc")
    resources:
        mem_mb=mem(2000),
        runtime=runtime(10),
    conda:
        "../../environment.yml"
    script:
        "../../scripts/alerts.py"


rule efficiency:
    input:
        unpack(iio("efficiency", "in")),
    output:
        **iouts(efficiency="efficiency_fakes"),
    log:
        ilog("efficiency", "exposure", "ccd", "vc"),
    benchmark:
        bench_path("efficiency", "exposure", "ccd", "vc")
    threads: ITHREADS
    resources:
        mem_mb=imem(6000),
        runtime=iruntime(20),
    conda:
        "../../environment.yml"
    script:
        "../../scripts/efficiency.py"


rule efficiency_summary:
    input:
        unpack(iio("efficiency_summary", "in")),
    output:
        summary=ipattern("efficiency_summary"),
        plot=report(ipattern("efficiency_plot"), category="Transients", caption="../report/image_efficiency.rst"),
    log:
        ilog("efficiency_summary", "vc"),
    benchmark:
        bench_path("efficiency_summary", "vc")
    resources:
        mem_mb=mem(1000),
        runtime=runtime(5),
    conda:
        "../../environment.yml"
    script:
        "../../scripts/efficiency_summary.py"


IMAGE_TARGETS += expand(iproduct("alerts"), exposure=list(NEW_EXPOSURES))
if NEW_EXPOSURES:
    IMAGE_TARGETS.append(iproduct("efficiency_summary"))
