# Light curves: catalog -> targets per RA bin -> download -> reduce -> analysis -> combine.


rule run_config:
    output:
        config=RUN_CONFIG,
        provenance=P.provenance_file(),
    params:
        run_hash=vprov.run_hash(CFG),
    log:
        P.log("run_config"),
    benchmark:
        P.benchmark("run_config")
    localrule: True
    conda:
        "../../environment.yml"
    script:
        "../../scripts/run_config.py"


rule targets:
    output:
        targets=rule_io("targets", CFG, ra_bins=BINS)[1]["targets"],
    log:
        P.log("targets"),
    benchmark:
        P.benchmark("targets")
    resources:
        mem_mb=mem(2000),
        runtime=runtime(10),
    conda:
        "../../environment.yml"
    script:
        "../../scripts/targets.py"


rule download:
    input:
        targets=io("download", "in", "targets"),
    output:
        manifest=P.pattern("download"),
    log:
        log_path("download", "obs", "ra_bin", "vc"),
    benchmark:
        bench_path("download", "obs", "ra_bin", "vc")
    resources:
        mem_mb=mem(1000),
        runtime=runtime(120),
    retries: 1
    conda:
        "../../environment.yml"
    script:
        "../../scripts/download.py"


rule reduce:
    input:
        unpack(io("reduce", "in")),
    output:
        reduced=P.pattern("reduce"),
    log:
        log_path("reduce", "obs", "ra_bin", "vc"),
    benchmark:
        bench_path("reduce", "obs", "ra_bin", "vc")
    resources:
        mem_mb=mem(2000),
        runtime=runtime(30),
    conda:
        "../../environment.yml"
    script:
        "../../scripts/reduce.py"


rule analysis:
    input:
        reduced=io("analysis", "in", "reduced"),
    output:
        analysis=P.pattern("analysis"),
        histograms=P.pattern("histograms"),
    log:
        log_path("analysis", "obs", "ra_bin", "vc"),
    benchmark:
        bench_path("analysis", "obs", "ra_bin", "vc")
    resources:
        mem_mb=mem(2000),
        runtime=runtime(30),
    conda:
        "../../environment.yml"
    script:
        "../../scripts/analysis.py"


rule combine:
    input:
        histograms=io("combine", "in", "histograms"),
    output:
        histograms=P.pattern("combine"),
        efficiency=P.pattern("efficiency"),
    log:
        log_path("combine", "obs", "vc"),
    benchmark:
        bench_path("combine", "obs", "vc")
    resources:
        mem_mb=mem(2000),
        runtime=runtime(10),
    conda:
        "../../environment.yml"
    script:
        "../../scripts/combine.py"


rule plots:
    input:
        unpack(io("plots", "in")),
    output:
        plot=report(
            P.pattern("plots"),
            caption="../report/detections.rst",
            category="Light curves",
            subcategory="{obs}",
        ),
        table=report(
            P.pattern("plots").replace(".png", "_efficiency.html"),
            caption="../report/efficiency.rst",
            category="Efficiency",
            subcategory="{obs}",
        ),
    log:
        log_path("plots", "obs", "vc"),
    benchmark:
        bench_path("plots", "obs", "vc")
    resources:
        mem_mb=mem(2000),
        runtime=runtime(10),
    conda:
        "../../environment.yml"
    script:
        "../../scripts/plots.py"
