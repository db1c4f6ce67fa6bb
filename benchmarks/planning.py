"""Benchmark: how long ``snakemake -n`` (planning, no job run) takes at survey scale.

Three configurations, each written with its inputs into a temporary data root (not timed):

* ``decam``: one DECam-sized night, ``--exposures`` (100) science exposures x 62 CCDs through
  the image steps that exist for DECam (master bias and flats, preprocess, extract,
  astrometry, zero point, ingest), light curves off, with ``images.jobs: exposure`` (one job
  per exposure and step, its 62 CCDs in ``resources.threads`` processes).  The raw folder holds
  header-only FITS files (primary HDU with ``OBSTYPE``, ``FILTER``, ``MJD-OBS``, ``EXPTIME``,
  ``RA``, ``DEC``: all that planning reads): the science exposures in four filters, ``--bias``
  bias frames and ``--flats`` dome flats per filter.  The workflow finds them by scanning the
  raw folder's headers (``images.exposures``, ``bias_exposures``, ``flat_exposures`` null), as
  a real night would be run.
* ``decam-ccd``: the same night with ``images.jobs: ccd`` (one job per CCD and step, 31,000
  jobs): Snakemake's own cost per job makes this one slow (see the README).
* ``catalog``: a ``--targets`` (1.28 million, the size of the Gaia EDR3 white-dwarf
  catalog) row parquet catalog with positions over the whole sky (every RA bin, 360) and
  proper motions, two observatories (DEMO, ZTF), images off.

For each, the dry run ``python -m snakemake -n --snakefile workflow/Snakefile --configfile
CFG`` runs ``--repeat`` times in a fresh process pinned to one core (``taskset -c 0``; its
standard output, the job list, goes to a pipe and is parsed for the job count); the best
and all wall times are printed.  ``--profile N`` runs it once more under cProfile and
prints the N most expensive functions (cumulative).  Goal: each dry run < 30 s.

    taskset -c 0 .venv/bin/python benchmarks/planning.py                 # all three, best of 2
    .venv/bin/python benchmarks/planning.py --only decam --profile 25
    .venv/bin/python benchmarks/planning.py --root /tmp/plan --keep      # keep the inputs
"""

from __future__ import annotations

import argparse
import os
import pstats
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from astropy.io import fits

REPO = Path(__file__).resolve().parents[1]
SNAKEFILE = REPO / "workflow" / "Snakefile"
DECAM_FILTERS = ("g", "r", "i", "z")
GOAL_S = 30.0


def _raw_header(kind: str, filt: str, mjd: float, exptime: float, ra: float, dec: float) -> fits.Header:
    """Primary header of a DECam raw exposure with what planning reads (FILTER as DECam writes it)."""
    h = fits.Header()
    h["OBSTYPE"] = {"object": "object", "bias": "zero", "flat": "dome flat"}[kind]
    h["FILTER"] = f"{filt} DECam SDSS c0001 4720.0 1520.0" if filt else "block"
    h["MJD-OBS"] = mjd
    h["EXPTIME"] = exptime
    h["RA"], h["DEC"] = ra, dec
    return h


def write_decam_night(root: Path, n_exposures: int, n_bias: int, n_flats: int, jobs: str = "exposure") -> dict:
    """Header-only DECam raw files of one night under ``root/DECAM/raw``; returns the config."""
    raw = root / "DECAM" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    mjd0 = 60000.0

    def write(name, header):
        fits.PrimaryHDU(header=header).writeto(raw / f"{name}.fits", overwrite=True)

    for i in range(n_bias):
        write(f"c4d_bias_{i:03d}", _raw_header("bias", "", mjd0 - 0.1, 0.0, 0.0, 0.0))
    for f in DECAM_FILTERS:
        for i in range(n_flats):
            write(f"c4d_flat_{f}_{i:03d}", _raw_header("flat", f, mjd0 - 0.05, 10.0, 0.0, 0.0))
    rng = np.random.default_rng(1)
    for i in range(n_exposures):
        write(f"c4d_{1000000 + i:07d}", _raw_header("object", DECAM_FILTERS[i % len(DECAM_FILTERS)],
                                                     mjd0 + i * 0.003, 90.0, float(rng.uniform(0, 360)),
                                                     float(rng.uniform(-60, 0))))
    return {"project": {"name": "PLANDECAM", "obs_names": []},
            "images": {"enabled": True, "instrument": "DECam", "jobs": jobs}, "resources": {"threads": 8}}


def write_catalog(root: Path, n_targets: int) -> dict:
    """A parquet catalog of ``n_targets`` rows over the whole sky; returns the config."""
    rng = np.random.default_rng(2)
    n = int(n_targets)
    df = pd.DataFrame({
        "source_id": np.arange(n, dtype=np.int64) + 10**15,
        "ra": rng.uniform(0.0, 360.0, n), "dec": np.degrees(np.arcsin(rng.uniform(-1.0, 1.0, n))),
        "phot_g_mean_mag": rng.uniform(14.0, 21.0, n), "pmra": rng.normal(0.0, 20.0, n),
        "pmdec": rng.normal(0.0, 20.0, n), "parallax": rng.uniform(0.1, 20.0, n)})
    path = root / "catalog_1p28M.parquet"
    df.to_parquet(path)
    return {"project": {"name": "PLANCAT", "obs_names": ["DEMO", "ZTF"]},
            "catalog": {"default": None, "filename": str(path),
                        "columns": {"name": "source_id", "mag": "phot_g_mean_mag", "filter": "G"}},
            "images": {"enabled": False}}


def dry_run_cmd(cfgfile: Path, profile_out: Path | None = None) -> list[str]:
    """The planning command: ``snakemake -n`` on one core (under cProfile when asked)."""
    py = [sys.executable] + (["-m", "cProfile", "-o", str(profile_out)] if profile_out else [])
    cmd = py + ["-m", "snakemake", "-n", "--snakefile", str(SNAKEFILE), "--directory", str(REPO),
                "--configfile", str(cfgfile), "--cores", "1"]
    return (["taskset", "-c", "0"] if shutil.which("taskset") else []) + cmd


def time_dry_run(cfgfile: Path, root: Path, profile_out: Path | None = None) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds (user + system), number of jobs planned) of one dry run in a
    fresh process (CPU time is what the wall time would be on an idle core)."""
    env = dict(os.environ, VO_DATA=str(root))
    env.pop("VO_DB_URL", None)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    out = subprocess.run(dry_run_cmd(cfgfile, profile_out), capture_output=True, text=True, env=env, cwd=REPO)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode != 0:
        raise RuntimeError(f"dry run of {cfgfile} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    m = re.search(r"^total\s+(\d+)", out.stdout + out.stderr, re.M)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return wall, cpu, int(m.group(1)) if m else 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", choices=("decam", "decam-ccd", "catalog"), help="run one configuration")
    ap.add_argument("--exposures", type=int, default=100, help="DECam science exposures (62 CCDs each)")
    ap.add_argument("--bias", type=int, default=10, help="DECam bias frames")
    ap.add_argument("--flats", type=int, default=5, help="DECam dome flats per filter")
    ap.add_argument("--targets", type=int, default=1_280_000, help="catalog rows")
    ap.add_argument("--repeat", type=int, default=2, help="dry runs per configuration (best is reported)")
    ap.add_argument("--profile", type=int, default=0, metavar="N", help="cProfile once; print top N")
    ap.add_argument("--root", default=None, help="data root for the inputs (default: a temporary folder)")
    ap.add_argument("--keep", action="store_true", help="keep the data root")
    args = ap.parse_args(argv)

    root = Path(args.root or tempfile.mkdtemp(prefix="vo_planning_"))
    root.mkdir(parents=True, exist_ok=True)
    setups = {"decam": lambda: write_decam_night(root, args.exposures, args.bias, args.flats),
              "decam-ccd": lambda: write_decam_night(root, args.exposures, args.bias, args.flats, jobs="ccd"),
              "catalog": lambda: write_catalog(root, args.targets)}
    names = [args.only] if args.only else list(setups)
    rows = []
    try:
        for name in names:
            cfgfile = root / f"{name}.yaml"
            cfgfile.write_text(yaml.safe_dump(setups[name]()))
            walls, cpus, n_jobs = [], [], 0
            for _ in range(args.repeat):
                wall, cpu, n_jobs = time_dry_run(cfgfile, root)
                walls.append(wall)
                cpus.append(cpu)
            rows.append((name, n_jobs, min(walls), min(cpus)))
            print(f"{name:8s} {n_jobs:7d} jobs  dry run best {min(walls):6.2f} s wall, {min(cpus):6.2f} s CPU  "
                  f"(all wall: {', '.join(f'{w:.2f}' for w in walls)})  goal < {GOAL_S:.0f} s", flush=True)
            if args.profile:
                prof = root / f"{name}.prof"
                time_dry_run(cfgfile, root, prof)
                pstats.Stats(str(prof)).sort_stats("cumulative").print_stats(args.profile)
    finally:
        if not args.keep and not args.root:
            shutil.rmtree(root, ignore_errors=True)
    print("\n| configuration | jobs | `snakemake -n` wall (best) | CPU (best) | goal |\n|---|---|---|---|---|")
    for name, n_jobs, wall, cpu in rows:
        print(f"| {name} | {n_jobs} | {wall:.1f} s | {cpu:.1f} s | < {GOAL_S:.0f} s |")
    return 0 if all(wall < GOAL_S for _, _, wall, _ in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
