"""Benchmark: the per-CCD image pipeline on one 2048x4096 DemoCam CCD on one core.

Sets up (not counted in the goals) a DemoCam data root with one CCD of ``--shape`` pixels
(default 4096 x 2048, realistic star density: ``DemoCam.star_density`` = 8 stars/arcmin^2
to G = 21, about 4600 stars on the CCD) and three epochs of one field: simulated bias and
flat frames, master bias and flat, the Gaia excerpt tiles of the footprint in the cache, the
two reference epochs calibrated, ingested and coadded into the reference
(``run_references``), and the new (third) epoch calibrated, subtracted and turned into a
real/bogus training set on which the ``democam_rb`` model is trained (``run_rb_training_set``,
``run_train_rb``).  Then times every per-CCD rule body of :mod:`vo.pipeline.images` on the new
epoch, each in a FRESH subprocess pinned to one core (``taskset -c 0`` where available, else
``sched_setaffinity``; BLAS/OpenMP threads 1), reading and writing the real files:

* preprocess (raw + master bias/flat -> image FITS), extract (image -> sources, PSF,
  background), astrometry (excerpt from the cache + WCS fit), zero point;
* ingest_images (the CCD's products into the SQLite database), references (the reference
  epochs' CCDs coadded over the new CCD's planned footprint: one job per new CCD), subtraction (align the
  reference + ZOGY + both FITS written), detection, cutouts, measurements, scoring
  (``democam_rb``), association (ingest of the transient products + objects), alerts (AVRO
  file of the one-CCD exposure);
* and, inside subtraction, two in-process parts on the same inputs: ``align`` (only
  :func:`vo.images.reference.align.align_image` of the reference onto the new grid) and ``zogy`` (only
  :func:`vo.images.subtract.subtract` on the aligned pair, no file I/O).

Database steps (ingest_images, association, alerts) start every run from a copy of the
database as it was before the step (sqlite3 backup API, not timed), so each repetition is a
first ingest, not an idempotent no-op re-ingest.

Per step: wall and CPU time of the rule body (best of ``--repeat`` runs in that process,
imports excluded), peak RSS of the process (``VmHWM``) and its increment over the RSS after
the imports, and the tracemalloc peak of Python-visible allocations (numpy arrays included; a
separate run, since tracing slows the step).  Prints a table and the totals against the
goals: preprocess + extract + astrometry + zero point < 3 s and < 1 GB peak memory; ZOGY
subtraction < 2 s; the whole per-CCD pipeline (preprocess to alerts; each rule is its own
process, so its peak memory is the largest step's) < 10 s and < 1.5 GB.

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
import sqlite3  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

CALIBRATION_STEPS = ("preprocess", "extract", "astrometry", "zero_point")
TRANSIENT_STEPS = ("ingest_images", "references", "subtraction", "detection", "cutouts", "measurements", "scoring",
                   "association", "alerts")
STEPS = CALIBRATION_STEPS + TRANSIENT_STEPS       # the per-CCD pipeline, in workflow order
PARTS = ("align", "zogy")                          # in-process parts of subtraction (not summed)
DB_STEPS = ("ingest_images", "association", "alerts")
GOAL_CAL_SECONDS, GOAL_CAL_BYTES = 3.0, 1 << 30
GOAL_ZOGY_SECONDS = 2.0
GOAL_SECONDS, GOAL_BYTES = 10.0, int(1.5 * (1 << 30))
REFERENCE_EPOCHS = 2
MIB = 1 << 20


def make_config(root: str, shape: list[int]) -> dict:
    from vo import config as vconfig

    return vconfig.load_config(overrides={
        "project": {"data_root": root}, "images": {"enabled": True}, "scoring": {"algorithm": "democam_rb"},
        "subtraction": {"method": "zogy"}, "database": {"url": None},
        "DemoCam": {"n_ccds": 1, "ccd_shape": shape, "n_exposures": REFERENCE_EPOCHS + 1,
                    "reference_epochs": REFERENCE_EPOCHS, "n_bias": 3, "n_flats": 2}})


def new_exposure(cfg: dict) -> str:
    """The one new (subtracted) exposure of the config."""
    from vo.pipeline import images as R

    (exposure,) = R.new_exposures(cfg)
    return exposure


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


# -- the database between runs -----------------------------------------------------------------
def db_file(cfg: dict) -> str:
    from vo.db.engine import url_from_config

    url = url_from_config(cfg)
    if not url.startswith("sqlite:///"):
        raise RuntimeError(f"benchmark expects the SQLite database of its data root, got {url}")
    return url[len("sqlite:///"):]


def snapshot_file(cfg: dict, step: str) -> str:
    return f"{db_file(cfg)}.before_{step}"


def copy_db(src: str, dst: str) -> None:
    """Copy an SQLite database (WAL included) with the backup API."""
    with sqlite3.connect(src) as s, sqlite3.connect(dst) as d:
        s.backup(d)
    s.close()
    d.close()


# -- setup (not counted) ----------------------------------------------------------------------
def _calibrate(R, cfg: dict, exposure: str, ccd: str, steps=CALIBRATION_STEPS) -> None:
    for step in steps:
        getattr(R, f"run_{step}")(cfg, exposure, ccd, *R.rule_io(step, cfg, exposure, ccd))


def setup(root: str, shape: list[int]) -> dict:
    """Simulate and calibrate the epochs, build the reference, train democam_rb, init the DB."""
    from vo.db import engine as vengine

    from vo.pipeline import images as R

    cfg = make_config(root, shape)
    ccd = R.ccds(cfg)[0]
    exposure = new_exposure(cfg)
    t = {}
    t0 = time.perf_counter()
    cal = R.instrument(cfg).calibration_names(cfg)
    for name in cal["bias"] + cal["flat"]["r"]:
        R.run_simulate_calibration(cfg, name, *R.rule_io("simulate_calibration", cfg, name))
    R.run_master_bias(cfg, ccd, *R.rule_io("master_bias", cfg, ccd=ccd))
    R.run_master_flat(cfg, ccd, "r", *R.rule_io("master_flat", cfg, ccd=ccd, filt="r"))
    t["calibrations"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    for e in R.exposures(cfg):
        R.run_simulate_exposure(cfg, e, *R.rule_io("simulate_exposure", cfg, e))
    t["simulate"] = time.perf_counter() - t0
    # reference epochs: calibrated (fills the excerpt cache too), ingested, coadded
    t0 = time.perf_counter()
    members = sorted({e for e, _ in R.reference_images(cfg, exposure, ccd)})
    for e in members:
        _calibrate(R, cfg, e, ccd, CALIBRATION_STEPS + ("ingest_images",))
    R.run_references(cfg, exposure, ccd, *R.rule_io("references", cfg, exposure, ccd))
    t["reference"] = time.perf_counter() - t0
    # democam_rb: training set of the new epoch (calibrated and subtracted once here) + training
    t0 = time.perf_counter()
    _calibrate(R, cfg, exposure, ccd, CALIBRATION_STEPS + ("subtraction", "rb_training_set"))
    R.run_train_rb(cfg, *R.rule_io("train_rb", cfg))
    t["train_rb"] = time.perf_counter() - t0
    vengine.engine_from_config(cfg).dispose()
    from vo.images.astrometry.excerpts import get_excerpt
    from vo.images.image import read_image
    from vo.paths import Paths

    image = read_image(R.rule_io("extract", cfg, exposure, ccd)[0]["image"])
    ex = get_excerpt(Paths(cfg), cfg, R.footprint(image.header, image.sci.shape), R.fetcher(cfg))
    return {"times": t, "excerpt_stars": len(ex), "tiles": len(ex.meta["tiles"]), "exposure": exposure,
            "references": members}


# -- one step in a fresh process -----------------------------------------------------------------
def pin_to_one_core() -> None:
    if hasattr(os, "sched_setaffinity"):
        try:
            os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
        except OSError:
            pass


def import_all() -> None:
    """Every module the rule bodies import lazily, so that imports are not timed."""
    import vo.db.engine, vo.ingest.images, vo.ingest.transients  # noqa: E401, F401
    import vo.pipeline.alert_packets, vo.images.alerts, vo.images.reference.align  # noqa: E401, F401
    import vo.images.astrometry, vo.images.extract.background, vo.images.calibrate.calibration  # noqa: E401, F401
    import vo.images.reference.coadd, vo.images.detect.cutouts, vo.images.detect, vo.images.astrometry.excerpts  # noqa: E401, F401
    import vo.images.extract, vo.images.image, vo.images.detect.measure, vo.images.calibrate.preprocess  # noqa: E401, F401
    import vo.images.extract.psf, vo.images.realbogus.score, vo.images.subtract, vo.images.subtract.zogy  # noqa: E401, F401
    import vo.images.realbogus.training, vo.images.photometry.zeropoint  # noqa: E401, F401


def step_callable(cfg: dict, step: str):
    """(run, before): ``run()`` is what is timed; ``before()`` runs untimed before each run."""
    from vo.pipeline import images as R

    ccd = R.ccds(cfg)[0]
    exposure = new_exposure(cfg)
    before = lambda: None  # noqa: E731
    if step in DB_STEPS:
        snap, db = snapshot_file(cfg, step), db_file(cfg)
        before = lambda: copy_db(snap, db)  # noqa: E731
    if step == "alerts":
        io = R.rule_io("alerts", cfg, exposure)
        return (lambda: R.run_alerts(cfg, exposure, *io)), before
    if step in STEPS:
        io = R.rule_io(step, cfg, exposure, ccd)
        body = getattr(R, f"run_{step}")
        return (lambda: body(cfg, exposure, ccd, *io)), before
    # the parts of subtraction, on inputs read here (not timed)
    from vo.images.reference.align import align_image, with_wcs
    from vo.images.astrometry import read_wcs
    from vo.images.reference.coadd import read_reference
    from vo.images.image import read_image
    from vo.images.extract.psf import read_psf
    from vo.images.subtract import subtract
    from vo.images.photometry.zeropoint import read_zp

    inputs, _ = R.rule_io("subtraction", cfg, exposure, ccd)
    new = with_wcs(read_image(inputs["image"]), read_wcs(inputs["wcs"]).wcs)
    ref = read_reference({"image": inputs["ref_image"], "psf": inputs["ref_psf"], "sources": inputs["ref_sources"]})
    if step == "align":
        return (lambda: align_image(ref.image, new.wcs, new.sci.shape, psf=ref.psf)), before
    aligned, ref_psf = align_image(ref.image, new.wcs, new.sci.shape, psf=ref.psf)
    new_psf, new_zp = read_psf(inputs["psf"]), read_zp(inputs["zp"]).zp
    return (lambda: subtract(new, aligned, new_psf, ref_psf, new_zp, ref.zp, cfg["subtraction"],
                             method="zogy", workers=1)), before


def run_step(root: str, shape: list[int], step: str, repeat: int, trace: bool, profile: int) -> dict:
    """Time ``step`` in this process (called in the child); returns the measures."""
    import logging
    import tracemalloc

    import_all()
    logging.basicConfig(level=logging.WARNING)
    cfg = make_config(root, shape)
    run, before = step_callable(cfg, step)
    out = {"step": step, "rss_imports": current_rss()}
    if trace:
        before()
        tracemalloc.start()
        run()
        out["tracemalloc_peak"] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return out
    times, cpus = [], []
    for _ in range(repeat):
        before()
        t0, c0 = time.perf_counter(), time.process_time()
        run()
        times.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    out.update(wall_s=min(times), walls=times, cpu_s=min(cpus), rss_peak=rss_bytes())
    if profile:
        import cProfile
        import io as _io
        import pstats

        before()
        prof = cProfile.Profile()
        prof.enable()
        run()
        prof.disable()
        s = _io.StringIO()
        pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(profile)
        s.write("\n-- by cumulative time --\n")
        pstats.Stats(prof, stream=s).sort_stats("cumulative").print_stats(profile)
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


# -- SExtractor on the same image ------------------------------------------------------------------
# the bar for extract is "at least as fast as SExtractor alone on the same image": timed here
# on this machine (apt: source-extractor) with our detection settings and the outputs our
# extraction gives (windowed positions, two apertures, half-light radius, shape, flags; AUTO
# photometry stands in for our PSF fit), and with a minimal parameter list for comparison
SEX_PARAMS = {"like ours": ["XWIN_IMAGE", "YWIN_IMAGE", "ERRX2WIN_IMAGE", "ERRY2WIN_IMAGE", "FLUX_AUTO",
                            "FLUXERR_AUTO", "FLUX_APER(2)", "FLUXERR_APER(2)", "FLUX_RADIUS", "A_IMAGE",
                            "B_IMAGE", "THETA_IMAGE", "FLAGS", "BACKGROUND"],
              "minimal": ["X_IMAGE", "Y_IMAGE", "FLUX_AUTO", "FLAGS"]}


def sextractor_times(cfg: dict, repeat: int) -> dict:
    """Best-of-``repeat`` wall time (s) of SExtractor on the new CCD's image, per parameter list;
    empty where SExtractor is not installed."""
    from vo.images.extract import parameters
    from vo.pipeline import images as R

    exe = shutil.which("source-extractor") or shutil.which("sex")
    share = "/usr/share/source-extractor"
    if not exe or not os.path.exists(f"{share}/default.conv"):
        return {}
    p = parameters(cfg.get("extraction"))
    image = R.rule_io("extract", cfg, new_exposure(cfg), R.ccds(cfg)[0])[0]["image"]
    version = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout.split()
    out = {"version": " ".join(version[:4]) if len(version) >= 4 else exe}
    with tempfile.TemporaryDirectory() as tmp:
        for label, params in SEX_PARAMS.items():
            with open(f"{tmp}/p.param", "w") as f:
                f.write("\n".join(params) + "\n")
            cmd = [exe, f"{image}[1]", "-PARAMETERS_NAME", f"{tmp}/p.param", "-FILTER_NAME", f"{share}/default.conv",
                   "-WEIGHT_TYPE", "MAP_WEIGHT", "-WEIGHT_IMAGE", f"{image}[2]", "-DETECT_THRESH", str(p["threshold"]),
                   "-DETECT_MINAREA", str(p["minarea"]), "-DEBLEND_NTHRESH", str(p["deblend_nthresh"]),
                   "-DEBLEND_MINCONT", str(p["deblend_cont"]), "-BACK_SIZE", str(p["back_size"]),
                   "-BACK_FILTERSIZE", str(p["back_filter_size"]), "-PHOT_APERTURES", "7,12", "-NTHREADS", "1",
                   "-CATALOG_TYPE", "FITS_1.0", "-CATALOG_NAME", f"{tmp}/cat.fits", "-VERBOSE_TYPE", "QUIET",
                   "-CHECKIMAGE_TYPE", "NONE", "-GAIN", "1.0"]
            if shutil.which("taskset"):
                cmd = ["taskset", "-c", str(sorted(os.sched_getaffinity(0))[0])] + cmd
            best = float("inf")
            for _ in range(repeat):
                t0 = time.perf_counter()
                subprocess.run(cmd, check=True, capture_output=True, cwd=tmp)
                best = min(best, time.perf_counter() - t0)
            out[label] = best
    return out


# -- report ----------------------------------------------------------------------------------------
def _row(m: dict) -> str:
    return (f"{m['step']:<16}{m['wall_s']:>9.3f}{m['cpu_s']:>8.3f}{m['rss_peak'] / MIB:>14.0f}"
            f"{(m['rss_peak'] - m['rss_imports']) / MIB:>10.0f}{m['tracemalloc_peak'] / MIB:>17.0f}")


def _goal(label: str, value: float, limit: float, unit: str) -> str:
    fmt = "{:.2f} s" if unit == "s" else "{:.0f} MiB"
    shown = value if unit == "s" else value / MIB
    lim = f"{limit:.3g} s" if unit == "s" else f"{limit / MIB:.0f} MiB"
    return f"  {label:<52}{fmt.format(shown):>10}  (goal < {lim}: {'met' if value < limit else 'NOT met'})"


def report(rows: dict, repeat: int, sex: dict) -> None:
    print(f"\n{'step':<16}{'wall s':>9}{'CPU s':>8}{'RSS peak MiB':>14}{'RSS +MiB':>10}{'tracemalloc MiB':>17}")
    for group, names in (("calibration", CALIBRATION_STEPS), ("transients", TRANSIENT_STEPS)):
        for s in names:
            print(_row(rows[s]))
        wall = sum(rows[s]["wall_s"] for s in names)
        cpu = sum(rows[s]["cpu_s"] for s in names)
        peak = max(rows[s]["rss_peak"] for s in names)
        print(f"{'= ' + group:<16}{wall:>9.3f}{cpu:>8.3f}{peak / MIB:>14.0f}")
    wall = sum(rows[s]["wall_s"] for s in STEPS)
    cpu = sum(rows[s]["cpu_s"] for s in STEPS)
    peak = max(rows[s]["rss_peak"] for s in STEPS)
    print(f"{'= per-CCD total':<16}{wall:>9.3f}{cpu:>8.3f}{peak / MIB:>14.0f}")
    print("\nparts of subtraction, in process on the same inputs (included in subtraction above):")
    for s in PARTS:
        print(_row({**rows[s], "step": "  " + s}))
    rest = rows["subtraction"]["wall_s"] - rows["align"]["wall_s"] - rows["zogy"]["wall_s"]
    print(f"{'  file I/O etc.':<16}{rest:>9.3f}   (subtraction - align - zogy: reading inputs, writing "
          f"the difference and the aligned reference)")
    print(f"(wall: best of {repeat}; CPU: process time, less sensitive to other load on the machine; "
          f"load average now {os.getloadavg()[0]:.1f})")
    cal_wall = sum(rows[s]["wall_s"] for s in CALIBRATION_STEPS)
    cal_peak = max(rows[s]["rss_peak"] for s in CALIBRATION_STEPS)
    print("\ngoals:")
    print(_goal("preprocess + extract + astrometry + zero point", cal_wall, GOAL_CAL_SECONDS, "s"))
    print(_goal("  peak memory (RSS)", cal_peak, GOAL_CAL_BYTES, "B"))
    if sex:
        print(_goal("extract vs SExtractor alone (issue 12)", rows["extract"]["wall_s"], sex["like ours"], "s"))
        print(f"    ({sex['version']} on the same image, one core, best of {repeat}: "
              f"{sex['like ours']:.2f} s with our outputs, {sex['minimal']:.2f} s with {', '.join(SEX_PARAMS['minimal'])})")
    else:
        print("  extract vs SExtractor alone: SExtractor not installed (apt install source-extractor)")
    print(_goal("ZOGY subtraction (vo.images.subtract.subtract)", rows["zogy"]["wall_s"], GOAL_ZOGY_SECONDS, "s"))
    print(_goal("whole per-CCD pipeline (preprocess .. alerts)", wall, GOAL_SECONDS, "s"))
    print(_goal("  peak memory (RSS, largest step)", peak, GOAL_BYTES, "B"))


def products_line(cfg: dict) -> str:
    """What the timed run of the new CCD produced (so that no step timed an empty product)."""
    from vo.pipeline import images as R
    from vo.images.alerts import read_alerts
    from vo.images.detect import read_candidates
    from vo.images.detect.measure import read_measurements
    from vo.images.realbogus.score import read_scores

    ccd, exposure = R.ccds(cfg)[0], new_exposure(cfg)
    out = {s: R.rule_io(s, cfg, exposure, ccd)[1] for s in ("detection", "measurements", "scoring", "association")}
    cands = read_candidates(out["detection"]["candidates"])
    meas = read_measurements(out["measurements"]["measurements"])
    scores = read_scores(out["scoring"]["scores"])
    with open(out["association"]["receipt"]) as f:
        counts = json.load(f)["counts"]
    n_alerts = len(read_alerts(R.rule_io("alerts", cfg, exposure)[1]["alerts"]))
    return (f"products of {exposure}: {len(cands)} candidates ({int(cands['is_negative'].sum())} negative), "
            f"{len(meas)} measurements kept ({int(meas['is_bad'].sum())} bad), {int(scores['is_real'].sum())} "
            f"scored real, association {counts}, {n_alerts} alerts")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", type=int, nargs=2, default=[4096, 2048], metavar=("NY", "NX"))
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per step (best is reported)")
    ap.add_argument("--root", help="data root (default: a temporary folder, removed afterwards)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary data root")
    ap.add_argument("--profile", type=int, default=0, help="print the top N cProfile entries per step")
    ap.add_argument("--child", choices=STEPS + PARTS, help=argparse.SUPPRESS)
    ap.add_argument("--trace", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    os.environ.pop("VO_DB_URL", None)  # the SQLite database of the benchmark's own data root
    if a.child:
        pin_to_one_core()
        print(json.dumps(run_step(a.root, a.shape, a.child, a.repeat, a.trace, a.profile)))
        return 0

    root = a.root or tempfile.mkdtemp(prefix="vo-bench-images-")
    os.environ["VO_DATA"] = root  # the config's data_root is the same; VO_DATA must not differ
    try:
        pin_to_one_core()
        from astropy.utils.exceptions import AstropyWarning

        with warnings.catch_warnings():  # header fixes and HIERARCH cards of the setup's files
            warnings.simplefilter("ignore", AstropyWarning)
            info = setup(root, a.shape)
        t = info["times"]
        print(f"DemoCam CCD {a.shape[0]}x{a.shape[1]}, new exposure {info['exposure']} against a reference of "
              f"{', '.join(info['references'])}; {info['excerpt_stars']} Gaia excerpt stars ({info['tiles']} cached "
              f"tiles); one core.\nsetup (not counted): calibrations {t['calibrations']:.1f} s, simulate "
              f"{len(info['references']) + 1} exposures {t['simulate']:.1f} s, reference epochs + coadd "
              f"{t['reference']:.1f} s, democam_rb training set + model {t['train_rb']:.1f} s")
        cfg = make_config(root, a.shape)
        rows = {}
        for step in STEPS[:STEPS.index("subtraction")] + PARTS + STEPS[STEPS.index("subtraction"):]:
            if step in DB_STEPS:
                copy_db(db_file(cfg), snapshot_file(cfg, step))
            m = child(root, a.shape, step, a.repeat, False, a.profile)
            m.update(child(root, a.shape, step, 1, True, 0))
            rows[step] = m
        report(rows, a.repeat, sextractor_times(cfg, a.repeat))
        print(products_line(cfg))
        if a.profile:
            for step, m in rows.items():
                print(f"\n===== cProfile {step} (wall {m['wall_s']:.2f} s) =====\n{m['profile']}")
        return 0
    finally:
        if not a.root and not a.keep:
            shutil.rmtree(root, ignore_errors=True)
        elif a.keep:
            print(f"data kept in {root}")


if __name__ == "__main__":
    sys.exit(main())
