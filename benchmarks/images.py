"""Benchmark: the image pipeline on one 2048x4096 DemoCam CCD on one core.

Sets up (not counted in the goal) a DemoCam data root with one CCD of ``--shape`` pixels
(default 4096 x 2048, realistic star density: ``DemoCam.star_density`` = 8 stars/arcmin^2
to G = 21, about 4600 stars on the CCD): simulated bias and flat frames, master bias and flat,
one science exposure, and the Gaia excerpt tiles of its footprint in the cache.  Then times
the rule bodies of :mod:`vo.images.rules` that the goal counts, each in a FRESH subprocess
pinned to one core (``taskset -c 0`` where available, else ``sched_setaffinity``; BLAS/OpenMP
threads 1), reading and writing the real files:

* preprocess (raw + master bias/flat -> image FITS), extract (image -> sources, PSF,
  background), astrometry (excerpt from the cache + WCS fit), zero point.

Per step: wall and CPU time of the rule body (best of ``--repeat`` runs in that process,
imports excluded), peak RSS of the process (``VmHWM``) and its increment over the RSS after
the imports, and the tracemalloc peak of Python-visible allocations (numpy arrays included; a
separate run, since tracing slows the step).  Prints a table and the total of the four steps
against the goals: < 3 s and < 1 GB peak memory.

    .venv/bin/python benchmarks/images.py                     # 4096 x 2048, best of 3
    .venv/bin/python benchmarks/images.py --profile 15        # + cProfile top 15 per step
    .venv/bin/python benchmarks/images.py --shape 1024 1024 --root /tmp/bench --keep
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

STEPS = ("preprocess", "extract", "astrometry", "zero_point")
GOAL_SECONDS, GOAL_BYTES = 3.0, 1 << 30
EXPOSURE = "dc_f00_r_000"


def make_config(root: str, shape: list[int]) -> dict:
    from vo import config as vconfig

    return vconfig.load_config(overrides={
        "project": {"data_root": root}, "images": {"enabled": True},
        "DemoCam": {"n_ccds": 1, "ccd_shape": shape, "n_exposures": 1, "n_bias": 3, "n_flats": 2}})


def rss_bytes() -> int:
    """Peak resident set size of this process so far (bytes).

    ``VmHWM`` of /proc/self/status where available: ``ru_maxrss`` would also count the
    parent's peak, which Linux folds into it when the child is spawned (vfork + exec)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def current_rss() -> int:
    """Current resident set size (bytes), from /proc (0 where unavailable)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


# -- setup (not counted) ----------------------------------------------------------------------
def setup(root: str, shape: list[int]) -> dict:
    """Simulate calibrations and the exposure, make master frames, fill the excerpt cache."""
    from vo.images import excerpts
    from vo.images import rules as R
    from vo.images.image import read_image
    from vo.paths import Paths

    cfg = make_config(root, shape)
    ccd = R.ccds(cfg)[0]
    t0 = time.perf_counter()
    R.run_simulate_exposure(cfg, EXPOSURE, *R.rule_io("simulate_exposure", cfg, EXPOSURE))
    t_sim = time.perf_counter() - t0
    cal = R.instrument(cfg).calibration_names(cfg)
    t0 = time.perf_counter()
    for name in cal["bias"] + cal["flat"]["r"]:
        R.run_simulate_calibration(cfg, name, *R.rule_io("simulate_calibration", cfg, name))
    R.run_master_bias(cfg, ccd, *R.rule_io("master_bias", cfg, ccd=ccd))
    R.run_master_flat(cfg, ccd, "r", *R.rule_io("master_flat", cfg, ccd=ccd, filt="r"))
    t_cal = time.perf_counter() - t0
    # the excerpt tiles of the footprint (as astrometry will ask for them) into the cache:
    # preprocess once here for the header WCS of the trimmed grid (the timed run rewrites it)
    R.run_preprocess(cfg, EXPOSURE, ccd, *R.rule_io("preprocess", cfg, EXPOSURE, ccd))
    image = read_image(R.rule_io("extract", cfg, EXPOSURE, ccd)[0]["image"])
    ex = excerpts.get_excerpt(Paths(cfg), cfg, R.footprint(image.header, image.sci.shape), R.fetcher(cfg))
    return {"simulate_s": t_sim, "calibration_s": t_cal, "excerpt_stars": len(ex),
            "tiles": len(ex.meta["tiles"])}


# -- one step in a fresh process -----------------------------------------------------------------
def pin_to_one_core() -> None:
    if hasattr(os, "sched_setaffinity"):
        try:
            os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
        except OSError:
            pass


def run_step(root: str, shape: list[int], step: str, repeat: int, trace: bool, profile: int) -> dict:
    """Time rule ``step`` in this process (called in the child); returns the measures."""
    import logging
    import tracemalloc

    # every module the rule bodies import lazily, so that imports are not timed
    import vo.images.astrometry, vo.images.background, vo.images.calibration  # noqa: E401, F401
    import vo.images.excerpts, vo.images.extract, vo.images.image, vo.images.preprocess  # noqa: E401, F401
    import vo.images.psf, vo.images.zeropoint  # noqa: E401, F401
    from vo.images import rules as R

    logging.basicConfig(level=logging.WARNING)
    cfg = make_config(root, shape)
    ccd = R.ccds(cfg)[0]
    io = R.rule_io(step, cfg, EXPOSURE, ccd)
    body = getattr(R, f"run_{step}")
    out = {"step": step, "rss_imports": current_rss()}
    if trace:
        tracemalloc.start()
        body(cfg, EXPOSURE, ccd, *io)
        out["tracemalloc_peak"] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return out
    times, cpus = [], []
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        body(cfg, EXPOSURE, ccd, *io)
        times.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    out.update(wall_s=min(times), walls=times, cpu_s=min(cpus), rss_peak=rss_bytes())
    if profile:
        import cProfile
        import io as _io
        import pstats

        prof = cProfile.Profile()
        prof.enable()
        body(cfg, EXPOSURE, ccd, *io)
        prof.disable()
        s = _io.StringIO()
        pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(profile)
        out["profile"] = s.getvalue()
    return out


def child(root: str, shape: list[int], step: str, repeat: int, trace: bool, profile: int) -> dict:
    """Run one step in a fresh interpreter on one core; returns its JSON measures."""
    cmd = [sys.executable, __file__, "--child", step, "--root", root, "--shape", *map(str, shape),
           "--repeat", str(repeat), "--profile", str(profile)] + (["--trace"] if trace else [])
    if shutil.which("taskset"):
        cmd = ["taskset", "-c", str(sorted(os.sched_getaffinity(0))[0])] + cmd
    res = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "VO_DATA": root})
    if res.returncode != 0:
        raise RuntimeError(f"step {step} failed:\n{res.stderr[-4000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", type=int, nargs=2, default=[4096, 2048], metavar=("NY", "NX"))
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per step (best is reported)")
    ap.add_argument("--root", help="data root (default: a temporary folder, removed afterwards)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary data root")
    ap.add_argument("--profile", type=int, default=0, help="print the top N cProfile entries per step")
    ap.add_argument("--child", choices=STEPS, help=argparse.SUPPRESS)
    ap.add_argument("--trace", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        pin_to_one_core()
        print(json.dumps(run_step(a.root, a.shape, a.child, a.repeat, a.trace, a.profile)))
        return 0

    root = a.root or tempfile.mkdtemp(prefix="vo-bench-images-")
    os.environ["VO_DATA"] = root  # the config's data_root is the same; VO_DATA must not differ
    try:
        pin_to_one_core()
        info = setup(root, a.shape)
        print(f"DemoCam CCD {a.shape[0]}x{a.shape[1]}, {info['excerpt_stars']} Gaia excerpt stars "
              f"({info['tiles']} cached tiles); one core; setup: simulate exposure "
              f"{info['simulate_s']:.2f} s, calibrations {info['calibration_s']:.2f} s (not counted)")
        rows = []
        for step in STEPS:
            m = child(root, a.shape, step, a.repeat, False, a.profile)
            m.update(child(root, a.shape, step, 1, True, 0))
            rows.append(m)
        mib = 1 << 20
        print(f"\n{'step':<12}{'wall s':>9}{'CPU s':>8}{'RSS peak MiB':>14}{'RSS +MiB':>10}"
              f"{'tracemalloc MiB':>17}")
        for m in rows:
            print(f"{m['step']:<12}{m['wall_s']:>9.3f}{m['cpu_s']:>8.3f}{m['rss_peak'] / mib:>14.0f}"
                  f"{(m['rss_peak'] - m['rss_imports']) / mib:>10.0f}{m['tracemalloc_peak'] / mib:>17.0f}")
        total = sum(m["wall_s"] for m in rows)
        cpu = sum(m["cpu_s"] for m in rows)
        peak = max(m["rss_peak"] for m in rows)
        print(f"{'total':<12}{total:>9.3f}{cpu:>8.3f}{peak / mib:>14.0f}")
        print(f"(wall: best of {a.repeat}; CPU: process time, less sensitive to other load on the "
              f"machine; load average now {os.getloadavg()[0]:.1f})")
        print(f"\ngoal: preprocess + extract + astrometry + zero point < {GOAL_SECONDS:.0f} s: "
              f"{total:.2f} s ({'met' if total < GOAL_SECONDS else 'NOT met'}); peak memory < 1 GB: "
              f"{peak / mib:.0f} MiB RSS ({'met' if peak < GOAL_BYTES else 'NOT met'})")
        if a.profile:
            for m in rows:
                print(f"\n===== cProfile {m['step']} (tottime) =====\n{m['profile']}")
        return 0
    finally:
        if not a.root and not a.keep:
            shutil.rmtree(root, ignore_errors=True)
        elif a.keep:
            print(f"data kept in {root}")


if __name__ == "__main__":
    sys.exit(main())
