"""Benchmark: bulk ingest into PostgreSQL; prints rows per second (the goal: 50,000 rows/s).

Starts its own temporary PostgreSQL server (:func:`vo.db.testing.temporary_server`; or uses
``--url``) and times the ingest functions of the workflow on synthetic products:

* light curves: :func:`vo.ingest.lightcurves.ingest_lightcurves`, the database part of
  :func:`vo.ingest.lightcurves.ingest_reduced_file` (lookups, checksum of the file, the
  ``lightcurves`` rows), one transaction per reduced file of ``--per-file`` light curves;
  the files are real (:func:`vo.lightcurves.datasets.write_lightcurves`), their index
  tables read beforehand.  ``lightcurve files`` times the whole ``ingest_reduced_file``
  (reading the index from the HDF5 file and its checksum included) for the files of a new
  reduction (``insert``) and for those files changed (``update``).  The ``sources`` rows the
  light curves hang from are ingested first (:func:`vo.ingest.lightcurves.ingest_sources`).
* measurements: :func:`vo.ingest.transients.write_transient_products`, one transaction
  per CCD of ``--per-ccd`` measurements, with their real/bogus scores (a ``scores`` row
  each) and the association of the real ones (``--real``) to sky objects, half of them
  objects of the CCD before.  The products are built in memory as
  :func:`vo.ingest.transients.read_transient_products` returns them (the files are not
  read); the parent rows (images, zero points, a reference) are inserted first, untimed.

Each kind is timed into empty tables (``insert``), the same again (``again``: idempotent,
nothing changes) and with every value changed (``update``).  ``--jobs N`` runs N processes
at once, each on its share of the files or CCDs (rows/s is then the total of all).  Next to
the wall-clock rate, the CPU seconds of the client processes and of the server's processes
give rows per CPU-second: what the rate would be on idle cores, one client and one server
process at a time.

    .venv/bin/python benchmarks/ingest.py                       # 200,000 rows of each kind
    .venv/bin/python benchmarks/ingest.py --jobs 8              # 8 ingest jobs at once
    .venv/bin/python benchmarks/ingest.py --executemany         # without COPY, for comparison
    .venv/bin/python benchmarks/ingest.py --url sqlite:////tmp/bench.sqlite   # another database
    .venv/bin/python benchmarks/ingest.py --profile             # cProfile of the timed parts
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import multiprocessing as mp
import os
import pstats
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import sqlalchemy as sa

from vo import provenance as vprov
from vo.db import bulk, get_engine, init_db
from vo.ingest import lightcurves as ing
from vo.db import models as m
from vo.db import testing as dbtest
from vo.ingest import testing as itest
from vo.ingest.transients import write_transient_products
from vo.lightcurves.datasets import Lightcurve, read_lightcurve_index, write_lightcurves

PROJECT = "BENCH"
OBS = "DEMO"
INSTRUMENT = "DemoCam"
FILTERS = ("g", "r", "i")
N_SEASONS = 4


class Clock:
    """CPU seconds of this process and its finished children, and of the server's processes
    (children of the postmaster, from /proc: a local temporary server only)."""

    def __init__(self, server=None):
        self.postmaster = None
        if server is not None:
            self.postmaster = int((server.workdir / "data" / "postmaster.pid").read_text().split()[0])
        self.tick = os.sysconf("SC_CLK_TCK")

    def server_seconds(self) -> float:
        """utime + stime of the live server processes, plus cutime + cstime of the
        postmaster (its finished children: backends of closed connections)."""
        if self.postmaster is None:
            return 0.0
        total = 0
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()  # fields 3, 4, ... of proc(5)
            except OSError:
                continue
            if int(fields[1]) == self.postmaster:  # ppid
                total += int(fields[11]) + int(fields[12])
            elif stat.parent.name == str(self.postmaster):
                total += int(fields[13]) + int(fields[14])
        return total / self.tick

    def __call__(self) -> tuple[float, float, float]:
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        return time.perf_counter(), time.process_time() + kids.ru_utime + kids.ru_stime, self.server_seconds()


class Runner:
    """Runs units of work (``fn(engine, unit)``) in this process or in ``jobs`` processes,
    and times them."""

    def __init__(self, url: str, clock: Clock, jobs: int = 1, profiler=None):
        self.url, self.clock, self.jobs, self.profiler = url, clock, jobs, profiler
        self.engine = get_engine(url)

    def _job(self, fn, units):
        engine = get_engine(self.url)
        for unit in units:
            fn(engine, unit)
        engine.dispose()

    def run(self, label: str, n_rows: int, fn, units: list) -> float:
        """Run ``fn`` on every unit; print and return rows per second (wall clock)."""
        t0, c0, s0 = self.clock()
        if self.jobs == 1:
            if self.profiler is not None:
                self.profiler.enable()
            for unit in units:
                fn(self.engine, unit)
            if self.profiler is not None:
                self.profiler.disable()
        else:
            self.engine.dispose()  # no connection crosses the fork
            ctx = mp.get_context("fork")
            procs = [ctx.Process(target=self._job, args=(fn, units[j::self.jobs])) for j in range(self.jobs)]
            for p in procs:
                p.start()
            for p in procs:
                p.join()
            if any(p.exitcode for p in procs):
                raise RuntimeError(f"{label}: an ingest job failed")
        t1, c1, s1 = self.clock()
        rate = n_rows / (t1 - t0)
        print(f"  {label:<26} {n_rows:>9,d} rows in {t1 - t0:6.2f} s: {rate:>8,.0f} rows/s   CPU: client "
              f"{c1 - c0:5.2f} s + server {s1 - s0:5.2f} s = {n_rows / (c1 - c0 + s1 - s0):>8,.0f} rows/CPU-s",
              flush=True)
        return rate


# -- light curves ---------------------------------------------------------------------------
def _lightcurve_products(root: Path, n_lcs: int, per_file: int, shift: float = 0.0, folder: str = "reduce"):
    """Targets table and reduced files (paths) of ``n_lcs`` light curves (3 filters, 4
    seasons per source); ``shift`` changes every statistic (the ``update`` run)."""
    rng = np.random.default_rng(1)
    per_source = len(FILTERS) * N_SEASONS
    n_src = -(-n_lcs // per_source)
    names = np.array([f"J{i:08d}" for i in range(n_src)], dtype=object)
    targets = pd.DataFrame({"name": names, "ra": rng.uniform(0, 360, n_src),
                            "dec": np.degrees(np.arcsin(rng.uniform(-1, 1, n_src))),
                            "mag": rng.uniform(14, 21, n_src)})
    paths = []
    n_epochs = 5
    for f0 in range(0, n_lcs, per_file):
        n = min(per_file, n_lcs - f0)
        columns = {"mjd": rng.uniform(58000, 59000, n * n_epochs), "flux": rng.normal(100, 5, n * n_epochs)}
        lcs = []
        for j in range(n):
            src, rest = divmod(f0 + j, per_source)
            season, filt = divmod(rest, len(FILTERS))
            attrs = {"source_name": names[src], "obs": OBS, "filter": FILTERS[filt], "season": season,
                     "reduction_number": rest + 1, "reduction_total": per_source, "n_epochs": n_epochs,
                     "flux_mean": 100.0 + shift + j * 1e-3, "flux_rms": 5.0, "mag_mean": 18.9 - shift,
                     "mjd_start": 58000.0 + season * 365, "mjd_end": 58200.0 + season * 365}
            lc = Lightcurve.in_block(attrs, columns, (j * n_epochs, (j + 1) * n_epochs))
            lc._filekey = f"{names[src]}_{OBS}_{FILTERS[filt]}_s{season}"
            lcs.append(lc)
        path = root / PROJECT / folder / f"{OBS}_photometry_RA{len(paths):03d}_reduced.h5"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_lightcurves(path, lcs, {"step": "reduce"})
        paths.append(path)
    return targets, paths


def bench_lightcurves(runner: Runner, n_lcs: int, per_file: int) -> dict:
    engine = runner.engine
    prov = vprov.Provenance("reduce", OBS, "1", {"bench": True}, {})
    with tempfile.TemporaryDirectory(prefix="vo-bench-lc-") as tmp:
        root = Path(tmp)
        print(f"writing {n_lcs:,d} light curves in files of {per_file:,d} ...", flush=True)
        targets, paths = _lightcurve_products(root, n_lcs, per_file)
        ing.in_transaction(engine, ing.ingest_provenances, [prov])
        out = {"sources": runner.run("sources (insert)", len(targets),
                                     lambda eng, t: ing.in_transaction(eng, ing.ingest_sources, t, PROJECT),
                                     [targets])}

        def db_part(eng, unit):
            path, lcs = unit
            ing.in_transaction(eng, ing.ingest_lightcurves, lcs, path, root, prov.hash, PROJECT)

        units = [(p, read_lightcurve_index(p)) for p in paths]
        for label in ("insert", "again"):
            out[f"lightcurves {label}"] = runner.run(f"lightcurves ({label})", n_lcs, db_part, units)
        _, paths = _lightcurve_products(root, n_lcs, per_file, shift=1.0)
        units = [(p, read_lightcurve_index(p)) for p in paths]
        out["lightcurves update"] = runner.run("lightcurves (update)", n_lcs, db_part, units)
        # whole files: a new reduction (another provenance, new rows), then those files changed
        prov2 = vprov.Provenance("reduce", OBS, "1", {"bench": 2}, {})
        ing.in_transaction(engine, ing.ingest_provenances, [prov2])
        for label, shift in (("insert", 0.0), ("update", 2.0)):
            _, paths = _lightcurve_products(root, n_lcs, per_file, shift=shift, folder="reduce2")
            out[f"lightcurve files {label}"] = runner.run(
                f"lightcurve files ({label})", n_lcs,
                lambda eng, p: ing.ingest_reduced_file(eng, p, root, prov2.hash, PROJECT), paths)
    return out


# -- measurements ---------------------------------------------------------------------------
def _ccd_products(provs: dict, c: int, n: int, real: float, shift: float = 0.0):
    """CCD ``c``'s products: ``n`` measurements, the first ``real`` fraction real, half of
    those at the positions of the previous CCD's (objects seen again); of the others, half
    fail the analytic cuts and half have a low score."""
    n_real = int(round(real * n))
    rng = np.random.default_rng(c)
    ra, dec = rng.uniform(150.0, 150.5, n), rng.uniform(2.0, 2.5, n)
    if c % 2 == 1:
        prev = np.random.default_rng(c - 1)
        ra[: n_real // 2] = prev.uniform(150.0, 150.5, n)[: n_real // 2]
        dec[: n_real // 2] = prev.uniform(2.0, 2.5, n)[: n_real // 2]
    i = np.arange(n)
    bad = (i >= n_real) & (i % 2 == 0)
    score = np.where(i < n_real, 0.9, 0.1)
    return itest.transient_products(provs, f"e{c:05d}", ra, dec, bad, score, flux_shift=shift)


def bench_measurements(runner: Runner, n_meas: int, per_ccd: int, real: float) -> dict:
    provs = itest.transient_provenances(INSTRUMENT)
    n_ccds = -(-n_meas // per_ccd)
    itest.insert_transient_parents(runner.engine, provs,
                                    {f"e{c:05d}": 60310.0 + 0.01 * c for c in range(n_ccds)})
    sizes = [min(per_ccd, n_meas - c * per_ccd) for c in range(n_ccds)]
    out = {}
    for label, shift in (("insert", 0.0), ("again", 0.0), ("update", 1.0)):
        prods = [_ccd_products(provs, c, n, real, shift) for c, n in enumerate(sizes)]
        out[f"measurements {label}"] = runner.run(
            f"measurements ({label})", n_meas,
            lambda eng, p: ing.in_transaction(eng, write_transient_products, p), prods)
    with runner.engine.connect() as conn:
        n_obj = conn.scalar(sa.select(sa.func.count()).select_from(m.SkyObject))
        n_rows = conn.scalar(sa.select(sa.func.count()).select_from(m.Measurement))
    print(f"  ({n_ccds} CCDs of {per_ccd:,d}; {n_rows:,d} measurement rows, {n_obj:,d} objects)")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", help="database URL (default: a temporary PostgreSQL server)")
    ap.add_argument("--lightcurves", type=int, default=200_000, help="light-curve rows (0: skip)")
    ap.add_argument("--per-file", type=int, default=20_000, help="light curves per reduced file")
    ap.add_argument("--measurements", type=int, default=200_000, help="measurement rows (0: skip)")
    ap.add_argument("--per-ccd", type=int, default=5_000, help="measurements per CCD (transaction)")
    ap.add_argument("--real", type=float, default=0.1, help="fraction of real (associated) measurements")
    ap.add_argument("--jobs", type=int, default=1, help="ingest processes at once")
    ap.add_argument("--executemany", action="store_true",
                    help="no COPY: executemany batches, as on SQLite (for comparison)")
    ap.add_argument("--profile", action="store_true", help="print a cProfile of the timed parts (--jobs 1)")
    args = ap.parse_args(argv)
    profiler = cProfile.Profile() if args.profile else None
    if args.executemany:
        bulk.COPY_MIN_ROWS = sys.maxsize

    with contextlib.ExitStack() as stack:
        url, clock = args.url, Clock()
        if url is None:
            server = stack.enter_context(dbtest.temporary_server())
            url, clock = server.url(server.create_database("vo_bench")), Clock(server)
        runner = Runner(url, clock, args.jobs, profiler)
        stack.callback(lambda: runner.engine.dispose())
        init_db(runner.engine)
        print(f"database: {runner.engine.dialect.name} {runner.engine.dialect.server_version_info}; "
              f"{args.jobs} job(s); {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
        if args.lightcurves:
            bench_lightcurves(runner, args.lightcurves, args.per_file)
        if args.measurements:
            bench_measurements(runner, args.measurements, args.per_ccd, args.real)
    if profiler is not None:
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(40)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
