"""Benchmark: reduce + analyse light curves on one core; prints sources per second.

Generates realistic raw photometry (about 1900 epochs per source over four seasons in three
filters, in random time order, with flagged epochs, outliers and a fainter neighbour inside
the search radius), then times, per chunk of sources (an RA bin),

* reduce: ``concat_sources`` + ``make_lightcurves_many`` on the sources' raw columns (numpy
  arrays, as :func:`vo.io.hdf5.read_columns` reads them from a raw store), and
* analyse: one ``analyse_lightcurves`` call on all their light curves, with the simulator on
  (one injection per light curve),

and prints sources per second for each and for both (the goal: 500 sources/s on one core).
Everything runs ``--repeat`` times on the same data and the fastest run is reported (other
work on the machine only slows runs down).  The process pins itself to one core.  Writes
nothing, except with ``--rules``, which instead times the workflow's rule bodies
(:func:`vo.pipeline.lightcurves.run_reduce` and :func:`vo.pipeline.lightcurves.run_analysis`, HDF5 and netCDF
reading and writing included) on one DEMO RA bin in a temporary folder.

    taskset -c 0 .venv/bin/python benchmarks/lightcurves.py            # 2000 sources, best of 3
    .venv/bin/python benchmarks/lightcurves.py --sources 2000 --chunk 200 --repeat 3
    .venv/bin/python benchmarks/lightcurves.py --per-source             # make_lightcurves per source
    .venv/bin/python benchmarks/lightcurves.py --profile                # cProfile of the timed part
    .venv/bin/python benchmarks/lightcurves.py --rules 500              # rule bodies, 500 DEMO sources
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import cProfile  # noqa: E402
import pstats  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from vo import config as vconfig  # noqa: E402
from vo.lightcurves.analysis import analyse_lightcurves  # noqa: E402
from vo.lightcurves.reduce import concat_sources, make_lightcurves, make_lightcurves_many  # noqa: E402

FILTERS = np.array(["g", "r", "i"], dtype=object)


def make_sources(n: int, rng: np.random.Generator, epochs_per_season: int = 170, n_seasons: int = 4,
                 limiting_mag: float = 20.5) -> list[tuple[dict, dict]]:
    """Raw standard columns ({name: array}) and a catalog row for each of ``n`` sources."""
    out = []
    per_source = epochs_per_season * n_seasons * FILTERS.size
    for k in range(n):
        name = f"BENCH{k:06d}"
        ra, dec, mag = rng.uniform(0, 1), rng.uniform(-30, 60), rng.uniform(15.0, 20.0)
        m = rng.poisson(per_source)
        season = rng.integers(0, n_seasons, m)
        mjd = 58200.0 + season * 365.0 + rng.uniform(0, 200.0, m)
        filt = FILTERS[rng.integers(0, FILTERS.size, m)]
        colour = np.where(filt == "g", 0.3, np.where(filt == "i", -0.2, 0.0))
        true = mag + colour
        err = np.sqrt(0.01 ** 2 + (0.2 * 10 ** (0.4 * (true - limiting_mag))) ** 2)
        obs_mag = true + err * rng.standard_normal(m)
        flag = (rng.random(m) < 0.03).astype(np.int64)
        outlier = rng.random(m) < 0.005
        obs_mag[outlier] += rng.normal(0, 1.0, outlier.sum())
        oid = np.full(m, 1000 + k, dtype=np.int64)
        pos = rng.normal(0, 0.1 / 3600, (2, m))
        neighbour = rng.random(m) < 0.05  # a fainter object 2 arcsec away
        oid[neighbour] += 1_000_000
        obs_mag[neighbour] = true[neighbour] + 2.0
        pos[0, neighbour] += 2.0 / 3600 / np.cos(np.radians(dec))
        cols = {"mjd": mjd, "mag": obs_mag, "magerr": err, "filter": filt, "flag": flag,
                "ra": ra + pos[0], "dec": dec + pos[1], "exptime": np.full(m, 30.0), "oid": oid}
        out.append((cols, {"name": name, "ra": ra, "dec": dec, "mag": mag}))
    return out


def reduce_chunk(sources, pars: dict, per_source: bool) -> list:
    """Light curves of a chunk of sources: all at once, or source by source (``per_source``)."""
    if per_source:
        return [lc for cols, row in sources
                for lc in make_lightcurves(pd.DataFrame(cols), row, pars, "DEMO")]
    std, starts = concat_sources([cols for cols, _ in sources])
    return make_lightcurves_many(std, starts, [row for _, row in sources], pars, "DEMO")


def run(n_sources: int, chunk: int, seed: int, repeat: int, profile: bool, per_source: bool) -> None:
    cfg = vconfig.load_config(overrides={"simulator": {"enabled": True, "injections_per_lightcurve": 1}})
    pars = cfg["DEMO"]["reducer"]
    rng = np.random.default_rng(seed)
    chunks = [make_sources(min(chunk, n_sources - first), rng) for first in range(0, n_sources, chunk)]
    prof = cProfile.Profile() if profile else None
    runs = []
    for _ in range(max(1, repeat)):
        t_reduce = t_analyse = 0.0
        n_lcs = n_epochs = n_det = 0
        for sources in chunks:
            if prof:
                prof.enable()
            t0 = time.perf_counter()
            lcs = reduce_chunk(sources, pars, per_source)
            t1 = time.perf_counter()
            result = analyse_lightcurves(lcs, cfg, "DEMO")
            t2 = time.perf_counter()
            if prof:
                prof.disable()
            t_reduce += t1 - t0
            t_analyse += t2 - t1
            n_lcs += len(lcs)
            n_epochs += int(result.summary["n_epochs"].sum())
            n_det += len(result.detections)
            del lcs, result
        runs.append((t_reduce + t_analyse, t_reduce, t_analyse))
    total, t_reduce, t_analyse = min(runs)
    print(f"{n_sources} sources ({n_epochs / n_sources:.0f} epochs each), {n_lcs} light curves, "
          f"{n_epochs} epochs, {n_det} detections (real + simulated); chunks of {chunk} sources; "
          f"{'source by source' if per_source else 'batched'} reduction; best of {len(runs)} runs "
          f"(totals: {', '.join(f'{r[0]:.2f}' for r in runs)} s)")
    print(f"reduce : {t_reduce:7.2f} s  {n_sources / t_reduce:8.1f} sources/s")
    print(f"analyse: {t_analyse:7.2f} s  {n_sources / t_analyse:8.1f} sources/s")
    print(f"total  : {total:7.2f} s  {n_sources / total:8.1f} sources/s (reduce + analyse, one core)")
    if prof:
        pstats.Stats(prof).sort_stats(os.environ.get("BENCH_SORT", "tottime")).print_stats(int(os.environ.get("BENCH_TOP", "25")))


def run_rules(n_sources: int, seed: int, repeat: int, profile: bool) -> None:
    """Time the reduce and analysis rule bodies on one DEMO RA bin of ``n_sources`` targets."""
    import json

    from vo.pipeline import lightcurves as workflow
    from vo.catalog import write_targets
    from vo.lightcurves.observatories import get_observatory
    from vo.paths import Paths

    with tempfile.TemporaryDirectory(prefix="vo_bench_") as tmp:
        os.environ["VO_DATA"] = tmp
        cfg = vconfig.load_config()
        rng = np.random.default_rng(seed)
        ra_bin = 123
        targets = pd.DataFrame({"name": [f"BENCH{k:06d}" for k in range(n_sources)],
                                "ra": ra_bin + rng.uniform(0, 1, n_sources),
                                "dec": rng.uniform(-30, 60, n_sources),
                                "mag": rng.uniform(15.0, 20.0, n_sources)})
        ins, outs = workflow.rule_io("reduce", cfg, "DEMO", ra_bin)
        for p in list(ins.values()) + list(outs.values()):
            os.makedirs(os.path.dirname(p), exist_ok=True)
        write_targets(ins["targets"], targets)
        t0 = time.perf_counter()
        store = Paths(cfg).raw_photometry("DEMO", ra_bin)
        manifest = get_observatory("DEMO", cfg).download_all_sources(targets, store)
        with open(ins["manifest"], "w") as f:
            json.dump(manifest, f)
        print(f"(simulated and stored {n_sources} DEMO sources in {time.perf_counter() - t0:.1f} s, "
              f"{os.path.getsize(store) / 1e6:.0f} MB)")
        a_ins, a_outs = workflow.rule_io("analysis", cfg, "DEMO", ra_bin)
        runs = []
        prof = cProfile.Profile() if profile else None
        for _ in range(max(1, repeat)):
            if prof:
                prof.enable()
            t0 = time.perf_counter()
            workflow.run_reduce(cfg, "DEMO", ra_bin, ins, outs)
            t1 = time.perf_counter()
            workflow.run_analysis(cfg, "DEMO", ra_bin, a_ins, a_outs)
            t2 = time.perf_counter()
            if prof:
                prof.disable()
            runs.append((t2 - t0, t1 - t0, t2 - t1))
        total, t_reduce, t_analyse = min(runs)
        size = os.path.getsize(outs["reduced"]) / 1e6
        print(f"rule bodies on {n_sources} DEMO sources (RA bin {ra_bin}, reduced file {size:.0f} MB); "
              f"best of {len(runs)} runs")
        print(f"run_reduce  : {t_reduce:7.2f} s  {n_sources / t_reduce:8.1f} sources/s")
        print(f"run_analysis: {t_analyse:7.2f} s  {n_sources / t_analyse:8.1f} sources/s")
        print(f"total       : {total:7.2f} s  {n_sources / total:8.1f} sources/s (one core)")
        if prof:
            pstats.Stats(prof).sort_stats(os.environ.get("BENCH_SORT", "tottime")).print_stats(
                int(os.environ.get("BENCH_TOP", "25")))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sources", type=int, default=2000, help="number of sources (default 2000)")
    ap.add_argument("--chunk", type=int, default=200, help="sources reduced and analysed per call (an RA bin)")
    ap.add_argument("--seed", type=int, default=1, help="random seed of the generated data")
    ap.add_argument("--repeat", type=int, default=3, help="runs on the same data; the fastest is reported")
    ap.add_argument("--per-source", action="store_true", help="reduce source by source (make_lightcurves)")
    ap.add_argument("--profile", action="store_true", help="print a cProfile of the timed part")
    ap.add_argument("--rules", type=int, metavar="N", default=0,
                    help="instead, time run_reduce + run_analysis on one DEMO RA bin of N sources")
    args = ap.parse_args(argv)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core
    if args.rules:
        run_rules(args.rules, args.seed, args.repeat, args.profile)
    else:
        run(args.sources, args.chunk, args.seed, args.repeat, args.profile, args.per_source)


if __name__ == "__main__":
    main()
