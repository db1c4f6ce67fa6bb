# Ingest: the only rules that write to the database (idempotent, transactional).


rule ingest:
    input:
        unpack(io("ingest", "in")),
    output:
        receipt=P.pattern("ingest"),
    log:
        log_path("ingest", "obs", "ra_bin", "vc"),
    benchmark:
        bench_path("ingest", "obs", "ra_bin", "vc")
    resources:
        mem_mb=mem(1000),
        runtime=runtime(20),
    conda:
        "../../environment.yml"
    script:
        "../../scripts/ingest.py"
