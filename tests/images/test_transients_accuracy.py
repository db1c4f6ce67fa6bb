"""DemoCam accuracy bars of the transient pipeline (image pipeline II), against the truth table.

The real rule bodies (:mod:`vo.pipeline.images`) run in a temporary data root on a DemoCam
config made for statistics: 2 CCDs of 1024x1024, 5 epochs of one field (the first 2 build the
reference coadd, the last 3 are "new"), ``n_transients`` raised to 40 per CCD area (their S/N
is drawn log-uniformly in 3-100 per epoch by the simulator).  Every step runs, from the
simulation through calibration, references, subtraction, detection, cutouts, measurements,
the democam_rb training set and model, scoring, and association (SQLite in the data root).

Definitions (per new exposure, CCD and truth transient):

* **S/N** of a truth transient: ``flux / sqrt(FLUXERR(x, y)^2 + flux)`` with its true flux
  (e-): the noise of PSF photometry on the difference at its position, ``FLUXERR`` being the
  difference's alpha-error map (ZOGY: noise of BOTH the new image and the reference, from their
  weight maps) and ``flux`` the transient's own Poisson noise.
* **eligible**: centre on the CCD, more than ``EDGE`` pix from its edges (the difference flags
  the border), and no flagged difference pixel at its position (bad columns, saturated stars:
  pixels the pipeline is told not to trust).  The number left out is reported.
* **detected**: a candidate (either sign) within ``MATCH_RADIUS`` pix; **kept**: its
  measurement survives the ``drop`` cuts, is not marked bad and scores >= ``scoring.threshold``;
  **associated to the right object**: that measurement has an object in the database, and all
  the object's other measurements are of the same truth transient (nearest truth transient
  within ``MATCH_RADIUS``).  A transient seen in several epochs must be one object.
* **false candidates**: kept measurements (not dropped, not bad, score >= threshold) farther
  than ``FALSE_RADIUS`` pix from every truth transient and variable star.
* **flux bias**: median of ``flux_psf / flux_true - 1`` over the detected, kept transients.

Bars (issue "Image pipeline II"): >= 95% of eligible transients with S/N >= 10 recovered
(detected, kept, right object); >= 50% at S/N 5 (those with 4.5 <= S/N < 5.5); PSF flux
unbiased to 2%; at most 2 false candidates per CCD.  Run with ``-s`` for the figures.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from scipy.spatial import cKDTree

from vo import config as vconfig
from vo.pipeline import images as R

from democam import democam_config, make

CCD_SHAPE = [1024, 1024]
N_CCDS = 2
N_EXPOSURES = 6
REFERENCE_EPOCHS = 2
N_TRANSIENTS = 100  # per CCD area
MATCH_RADIUS = 1.5  # pix: a candidate / measurement of a truth transient
FALSE_RADIUS = 2.0  # pix: a kept measurement this far from every transient/variable is false
EDGE = 10  # pix: transients this close to the CCD border are not eligible


def demo_config(root) -> dict:
    return democam_config(root, project="TRACC", n_ccds=N_CCDS, ccd_shape=CCD_SHAPE, n_exposures=N_EXPOSURES,
                          reference_epochs=REFERENCE_EPOCHS, n_transients=N_TRANSIENTS)


def run_pipeline(cfg: dict) -> None:
    """Everything from the simulation through association (in time order: each association job
    waits for the previous exposure's, as in the workflow)."""
    make(cfg, "association", "ingest_images")


@dataclass
class CCDResult:
    """One new exposure and CCD: truth transients and what became of them."""

    exposure: str
    ccd: str
    transients: "np.ndarray"  # structured: source_id, x, y, flux, snr_truth, snr, eligible
    detected: np.ndarray
    kept: np.ndarray          # detected and measured (not dropped)
    good: np.ndarray          # kept, not bad
    real: np.ndarray          # good and score >= threshold
    flux_meas: np.ndarray     # PSF flux of the matched measurement (NaN where none)
    meas_object: dict = field(default_factory=dict)  # measurement row_index -> object id
    tr_row: np.ndarray = None  # measurement row_index of each transient (-1 where none)
    n_false: int = 0
    false_rows: list = field(default_factory=list)


def _nearest(tree_xy: np.ndarray, xy: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Index of the nearest point of tree_xy within radius for each xy (-1 where none)."""
    if len(tree_xy) == 0 or len(xy) == 0:
        return np.full(len(xy), -1), np.full(len(xy), np.inf)
    d, i = cKDTree(tree_xy).query(xy, distance_upper_bound=radius)
    return np.where(np.isfinite(d), i, -1), d


def analyse_ccd(cfg: dict, exposure: str, ccd: str, objects_by_file: dict) -> CCDResult:
    from vo.images.detect import read_candidates
    from vo.images.detect.measure import read_measurements
    from vo.images.realbogus.score import read_scores
    from vo.images.instruments.democam.simulate import read_truth
    from vo.images.subtract import read_difference
    from vo.paths import Paths

    truth = read_truth(Paths(cfg).raw_truth(R.instrument_key(cfg), exposure))
    truth = truth[truth["ccd"] == ccd]
    tr = truth[truth["kind"] == "transient"]
    ny, nx = CCD_SHAPE
    x, y, flux = (np.asarray(tr[c], float) for c in ("x", "y", "flux"))
    on = (x >= 0) & (x <= nx - 1) & (y >= 0) & (y <= ny - 1)
    tr, x, y, flux = tr[on], x[on], y[on], flux[on]
    diff = read_difference(R.rule_io("detection", cfg, exposure, ccd)[0]["difference"])
    ix, iy = np.rint(x).astype(int), np.rint(y).astype(int)
    ferr = np.asarray(diff.flux_err, float)[iy, ix]
    snr = flux / np.sqrt(ferr ** 2 + flux)
    eligible = ((x >= EDGE) & (x <= nx - 1 - EDGE) & (y >= EDGE) & (y <= ny - 1 - EDGE)
                & (diff.flags[iy, ix] == 0) & np.isfinite(ferr))
    txy = np.column_stack([x, y])

    cands = read_candidates(R.rule_io("detection", cfg, exposure, ccd)[1]["candidates"])
    ci, _ = _nearest(np.column_stack([cands["x"], cands["y"]]), txy, MATCH_RADIUS)
    mfile = R.rule_io("measurements", cfg, exposure, ccd)[1]["measurements"]
    meas = read_measurements(mfile)
    scores = read_scores(R.rule_io("scoring", cfg, exposure, ccd)[1]["scores"])
    assert np.array_equal(np.asarray(scores["id"]), np.asarray(meas["id"]))
    thr = float(cfg["scoring"]["threshold"])
    is_real = (~np.asarray(meas["is_bad"], bool)) & (np.asarray(scores["score"], float) >= thr)
    mi, _ = _nearest(np.column_stack([meas["x"], meas["y"]]), txy, MATCH_RADIUS)
    has = mi >= 0
    good = has.copy()
    good[has] = ~np.asarray(meas["is_bad"], bool)[mi[has]]
    real = has.copy()
    real[has] = is_real[mi[has]]
    fmeas = np.full(len(tr), np.nan)
    fmeas[has] = np.asarray(meas["flux_psf"], float)[mi[has]]

    # false candidates: real measurements far from every transient and variable star
    var = truth[np.isin(truth["kind"], ["transient", "variable"])]
    vi, _ = _nearest(np.column_stack([var["x"], var["y"]]), np.column_stack([meas["x"], meas["y"]]),
                     FALSE_RADIUS)
    false_rows = np.flatnonzero(is_real & (vi < 0)).tolist()
    dtype = [("source_id", "i8"), ("x", "f8"), ("y", "f8"), ("flux", "f8"), ("snr_truth", "f8"),
             ("snr", "f8"), ("eligible", "?")]
    rec = np.zeros(len(tr), dtype)
    rec["source_id"], rec["x"], rec["y"], rec["flux"] = tr["source_id"], x, y, flux
    rec["snr_truth"], rec["snr"], rec["eligible"] = tr["snr"], snr, eligible
    return CCDResult(exposure, ccd, rec, ci >= 0, has, good, real, fmeas,
                     meas_object=objects_by_file.get(str(Path(mfile).resolve()), {}), tr_row=mi, n_false=len(false_rows),
                     false_rows=[(int(meas["id"][k]), float(meas["x"][k]), float(meas["y"][k]),
                                  float(meas["snr_psf"][k]), float(scores["score"][k])) for k in false_rows])


def objects_by_measurement_file(cfg: dict) -> dict:
    """{measurements file (absolute path): {row_index: object_id}} from the database."""
    from vo.db import engine as vengine
    from vo.db import models as m

    root = vconfig.data_root(cfg)
    t = m.Measurement.__table__
    out: dict = {}
    with vengine.engine_from_config(cfg).connect() as conn:
        for fn, row, obj in conn.execute(sa.select(t.c.filename, t.c.row_index, t.c.object_id)):
            path = str((root / fn).resolve())
            if obj is not None:
                out.setdefault(path, {})[int(row)] = int(obj)
    return out


def right_objects(results: list[CCDResult]) -> None:
    """Set ``r.right`` (real and associated to an object holding only this transient) per result."""
    owner: dict[int, set] = {}  # object id -> truth source ids of its measurements (None: no transient)
    for r in results:
        for row, obj in r.meas_object.items():
            k = np.flatnonzero(r.tr_row == row)
            owner.setdefault(obj, set()).add(int(r.transients["source_id"][k[0]]) if k.size else None)
    for r in results:
        right = np.zeros(len(r.transients), bool)
        for j in np.flatnonzero(r.real):
            obj = r.meas_object.get(int(r.tr_row[j]))
            right[j] = obj is not None and owner[obj] == {int(r.transients["source_id"][j])}
        r.right = right
    # one object per transient across epochs
    per_source: dict[int, set] = {}
    for r in results:
        for j in np.flatnonzero(r.right):
            per_source.setdefault(int(r.transients["source_id"][j]), set()).add(r.meas_object[int(r.tr_row[j])])
    for r in results:
        for j in np.flatnonzero(r.right):
            if len(per_source[int(r.transients["source_id"][j])]) > 1:
                r.right[j] = False


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> list[CCDResult]:
    mp = pytest.MonkeyPatch()
    mp.delenv("VO_DATA", raising=False)  # the config's data_root must win
    mp.delenv("VO_DB_URL", raising=False)
    try:
        cfg = demo_config(tmp_path_factory.mktemp("transients_accuracy"))
        run_pipeline(cfg)
        objs = objects_by_measurement_file(cfg)
        out = [analyse_ccd(cfg, e, c, objs) for e in R.new_exposures(cfg) for c in R.ccds(cfg)]
        right_objects(out)
        return out
    finally:
        mp.undo()


def funnel(results, sel_fn) -> dict:
    """Counts of eligible transients selected by ``sel_fn(snr)`` through each stage."""
    out = {k: 0 for k in ("n", "detected", "kept", "good", "real", "right")}
    for r in results:
        s = r.transients["eligible"] & sel_fn(r.transients["snr"])
        out["n"] += int(s.sum())
        for k in ("detected", "kept", "good", "real", "right"):
            out[k] += int((s & getattr(r, k)).sum())
    return out


def _fmt(f):
    n = max(f["n"], 1)
    return (f"{f['n']} transients: detected {f['detected']} ({f['detected'] / n:.1%}), not dropped "
            f"{f['kept']}, not bad {f['good']}, score >= thr {f['real']}, right object {f['right']} "
            f"({f['right'] / n:.1%})")


def test_enough_transients(results):
    n_all = sum(len(r.transients) for r in results)
    n_el = sum(int(r.transients["eligible"].sum()) for r in results)
    print(f"\n{n_all} transients on the new CCDs, {n_el} eligible ({n_all - n_el} at the border or on "
          f"flagged pixels)")
    hi = funnel(results, lambda s: s >= 10)
    mid = funnel(results, lambda s: (s >= 4.5) & (s < 5.5))
    assert hi["n"] >= 60 and mid["n"] >= 8, (hi, mid)


def test_recovered_at_snr_10(results):
    f = funnel(results, lambda s: s >= 10)
    print(f"\nS/N >= 10: {_fmt(f)}")
    assert f["right"] >= 0.95 * f["n"], f


def test_recovered_at_snr_5(results):
    f = funnel(results, lambda s: (s >= 4.5) & (s < 5.5))
    print(f"\n4.5 <= S/N < 5.5: {_fmt(f)}")
    for lo, hi in ((3, 4), (4, 5), (5, 6), (6, 8), (8, 10), (10, 20), (20, 1e9)):
        print(f"  [{lo}, {hi}): {_fmt(funnel(results, lambda s: (s >= lo) & (s < hi)))}")
    assert f["right"] >= 0.5 * f["n"], f


def test_flux_unbiased(results):
    ratios, snrs = [], []
    for r in results:
        s = r.transients["eligible"] & r.real
        ratios.append(r.flux_meas[s] / r.transients["flux"][s] - 1)
        snrs.append(r.transients["snr"][s])
    ratio, snr = np.concatenate(ratios), np.concatenate(snrs)
    med = float(np.median(ratio))
    err = 1.2533 * np.std(ratio) / np.sqrt(ratio.size)
    bright = snr >= 20
    print(f"\nflux_psf / flux_true - 1: median {med:+.4f} +- {err:.4f} ({ratio.size} transients); "
          f"S/N >= 20: {np.median(ratio[bright]):+.4f} ({int(bright.sum())})")
    assert ratio.size >= 50
    assert abs(med) < 0.02


def test_false_candidates(results):
    for r in results:
        print(f"\n{r.exposure} {r.ccd}: {r.n_false} false candidates {r.false_rows}")
    worst = max(r.n_false for r in results)
    assert worst <= 2, [(r.exposure, r.ccd, r.n_false) for r in results]
