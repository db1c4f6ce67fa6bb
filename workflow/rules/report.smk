# Report: runtime and memory per rule, from the benchmark files of every job (`benchmark:`),
# made once every product of the run exists (snakemake --report shows it under "Benchmarks").


rule benchmark_table:
    input:
        PRODUCTS,
    output:
        table=report(
            P.benchmark_summary(),
            caption="../report/benchmarks.rst",
            category="Benchmarks",
        ),
    log:
        P.log("benchmark_table"),
    localrule: True
    run:
        from vo.pipeline.status import benchmark_table, write_benchmark_html

        write_benchmark_html(benchmark_table(CFG, P), output.table, log=log[0])
