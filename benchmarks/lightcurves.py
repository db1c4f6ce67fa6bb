"""Benchmark: reduce + analyse light curves on one core; prints sources per second.

Generates realistic raw photometry (several seasons, three filters, flagged epochs, outliers,
a fainter neighbour inside the search radius), then times, per chunk of sources (an RA bin),
``make_lightcurves`` for every source and one ``analyse_lightcurves`` call on all their light
curves with the simulator on (one injection per light curve).  Writes nothing.

    .venv/bin/python benchmarks/lightcurves.py --sources 2000 --chunk 200
    .venv/bin/python benchmarks/lightcurves.py --profile     # cProfile of the timed part
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import cProfile  # noqa: E402
import pstats  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from vo import config as vconfig  # noqa: E402
from vo.lightcurves.analysis import analyse_lightcurves  # noqa: E402
from vo.lightcurves.reduce import make_lightcurves  # noqa: E402

FILTERS = np.array(["g", "r", "i"], dtype=object)


def make_sources(n: int, rng: np.random.Generator, epochs_per_season: int = 170, n_seasons: int = 4,
                 limiting_mag: float = 20.5) -> list[tuple[pd.DataFrame, dict]]:
    """Raw standard-column photometry and a catalog row for each of ``n`` sources."""
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
        std = pd.DataFrame({"mjd": mjd, "mag": obs_mag, "magerr": err, "filter": filt, "flag": flag,
                            "ra": ra + pos[0], "dec": dec + pos[1], "exptime": 30.0, "oid": oid})
        out.append((std, {"name": name, "ra": ra, "dec": dec, "mag": mag}))
    return out


def run(n_sources: int, chunk: int, seed: int, profile: bool) -> None:
    cfg = vconfig.load_config(overrides={"simulator": {"enabled": True, "injections_per_lightcurve": 1}})
    pars = cfg["DEMO"]["reducer"]
    rng = np.random.default_rng(seed)
    t_reduce = t_analyse = 0.0
    n_lcs = n_epochs = n_det = 0
    prof = cProfile.Profile() if profile else None
    for first in range(0, n_sources, chunk):
        sources = make_sources(min(chunk, n_sources - first), rng)
        if prof:
            prof.enable()
        t0 = time.perf_counter()
        lcs = []
        for std, row in sources:
            lcs.extend(make_lightcurves(std, row, pars, "DEMO"))
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
    total = t_reduce + t_analyse
    print(f"{n_sources} sources, {n_lcs} light curves, {n_epochs} epochs, {n_det} detections "
          f"(real + simulated)")
    print(f"reduce : {t_reduce:7.2f} s  {n_sources / t_reduce:8.1f} sources/s")
    print(f"analyse: {t_analyse:7.2f} s  {n_sources / t_analyse:8.1f} sources/s")
    print(f"total  : {total:7.2f} s  {n_sources / total:8.1f} sources/s (one core)")
    if prof:
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sources", type=int, default=2000, help="number of sources (default 2000)")
    ap.add_argument("--chunk", type=int, default=200, help="sources analysed per call (an RA bin)")
    ap.add_argument("--seed", type=int, default=1, help="random seed of the generated data")
    ap.add_argument("--profile", action="store_true", help="print a cProfile of the timed part")
    args = ap.parse_args(argv)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core
    run(args.sources, args.chunk, args.seed, args.profile)


if __name__ == "__main__":
    main()
