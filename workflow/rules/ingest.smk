# Ingest: the only rules that write to the database (idempotent, transactional).


rule ingest:
    input:
        unpack(io("ingest", "in")),
    output:
        receipt=P.pattern("ingest"),
    log:
        log_path("ingest", "obs", "ra_bin"),
    benchmark:
        bench_path("ingest", "obs", "ra_bin")
    resources:
        mem_mb=mem(1000),
        runtime=runtime(20),
    script:
        "../../scripts/ingest.py"
