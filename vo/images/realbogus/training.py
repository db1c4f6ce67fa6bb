"""Labelled training sets of the ``democam_rb`` real/bogus model, from injections into new images.

:func:`training_set` takes one calibrated new image (with its solved WCS, PSF and zero point)
and its aligned reference, adds known things to a copy of the new image and runs the SAME steps
as the workflow on it (:func:`vo.images.subtract.subtract` with the config's ``subtraction``
section, :func:`vo.images.detect.detect_candidates`, :func:`vo.images.detect.cutouts.make_cutouts`,
:func:`vo.images.detect.measure.measure` with the ``measurements`` cuts), then labels each surviving
candidate by what lies under it:

* ``fake`` (label 1, real): point sources of the image's own PSF with Poisson noise
  (:func:`vo.images.inject.inject_fakes`), S/N (in the new image) log-uniform in
  ``scoring.train_snr_range``;
* ``cosmic_ray`` (label 0): hits of 1-3 adjacent pixels (a short track) whose brightest pixel
  is ``scoring.train_cosmic_ray_sigma`` times the local noise, left unflagged (missed by the
  preprocessing);
* ``bad_column`` (label 0): a column segment (``train_bad_column_length`` pix) offset by
  ``train_bad_column_sigma`` times the local noise per pixel, either sign, unflagged (a missed
  defect);
* ``dipole`` (label 0): bright PSF stars of the new image moved by a sub-pixel shift
  (``train_dipole_shift`` pix, random direction): ``F (PSF(x - d) - PSF(x))`` is added at the
  star, the signature of a local misregistration;
* ``artifact`` (label 0): every other candidate of the difference (imperfect subtraction of
  stars, saturated stars, edges) that does not coincide with a true transient or variable
  star of the simulation's truth table (those are real sky changes: left out of the set).

A candidate matches an injected point (fake, cosmic ray) within ``train_match_radius`` pix, a
bad column within that distance of the segment, a dipole within ``max(train_match_radius,
2.5 FWHM)`` of the star (the corrected score, which carries the star's own noise, peaks on the
outer flanks of the two lobes, 1-2.5 FWHM from the star); the same radius around true
transients and variables. Precedence when several
match: fake, dipole, cosmic ray, bad column. Only positive candidates can be fakes (a negative
one next to a fake falls through to the next kind). Everything random comes from one numpy
Generator made from ``seed`` and the image's exposure and CCD names
(:func:`vo.images.instruments.democam.simulate.rng_for`), so a set is reproducible from its config and seed.

:func:`train_democam_rb` stacks sets and fits :func:`vo.images.realbogus.score.train_model` on the
``scoring.features`` columns with ``scoring.seed``.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
from astropy.table import Table, vstack
from scipy.spatial import cKDTree

from vo import config as vconfig
from vo.images.realbogus import score as rbscore
from vo.images.detect.cutouts import make_cutouts
from vo.images.detect import detect_candidates
from vo.images.image import Image
from vo.images.inject import fake_positions, image_name, inject_fakes
from vo.images.detect.measure import measure
from vo.images.extract.psf import PSFModel
from vo.images.instruments.democam.plan import rng_for
from vo.images.subtract import subtract
from vo.images.subtract.tiles import LocalPSF


log = logging.getLogger(__name__)

KINDS = ("fake", "cosmic_ray", "bad_column", "dipole", "artifact")
BOGUS_KINDS = KINDS[1:]
#: truth-table kinds whose candidates are real sky changes, never "artifact"
ASTRO_KINDS = ("transient", "variable")
MAX_CR_PIXELS = 3        # pixels of an injected cosmic-ray track (1..3, adjacent)
MIN_DIPOLE_SNR = 50.0    # PSF stars at least this bright (their fitted S/N) can become dipoles
DIPOLE_RADIUS = 2.5     # dipole lobes are matched this many FWHM from the star (S_corr, with the
                         # star's source noise, peaks on the lobes' outer flanks: 1-2.5 FWHM out)
SPARE_PER_AVOIDED = 6    # extra random positions drawn per position to keep clear of


class TrainingError(ValueError):
    """A training set or model that cannot be made; the message names the image or column."""


def parameters(cfg: dict) -> dict:
    """The config's ``scoring`` section completed with the schema's defaults."""
    return {**vconfig.defaults()["scoring"], **(cfg.get("scoring") or {})}


def _range(p: dict, key: str, positive: bool = True) -> tuple[float, float]:
    lo, hi = (float(v) for v in p[key])
    if not (hi >= lo and (lo > 0 or not positive)):
        raise TrainingError(f"scoring.{key}: need 0 < min <= max, got {p[key]}")
    return lo, hi


def _loguniform(rng: np.random.Generator, lo: float, hi: float, n: int) -> np.ndarray:
    return np.exp(rng.uniform(np.log(lo), np.log(hi), n))


# --------------------------------------------------------------------------- image noise


def sky_variance(image: Image) -> float:
    """Median pixel variance (e-^2) of the unflagged pixels (from the weight map)."""
    good = (image.weight > 0) & (image.flags == 0)
    if not good.any():
        raise TrainingError(f"{image_name(image)}: no unflagged pixel with a weight")
    return float(np.median(1.0 / image.weight[good]))


def flux_for_snr(snr, sky_var: float, nea: float) -> np.ndarray:
    """Point-source flux (e-) of optimal S/N ``snr``: solves ``F^2 = s^2 (F + NEA var)`` (sky
    variance ``sky_var`` e-^2/pix, noise-equivalent area ``nea`` pix)."""
    s2 = np.asarray(snr, np.float64) ** 2
    return s2 / 2 + np.sqrt(s2 * s2 / 4 + s2 * nea * sky_var)


def psf_nea(psf: PSFModel, x: float, y: float) -> float:
    """Noise-equivalent area ``1 / sum p^2`` (pix) of the PSF at (x, y)."""
    half = int(np.ceil(4 * float(np.atleast_1d(psf.fwhm(np.atleast_1d(x), np.atleast_1d(y)))[0])))
    p = psf.evaluate(x, y, 2 * half + 1).astype(np.float64)
    return float(1.0 / np.sum(p * p))


# --------------------------------------------------------------------------- bogus injections


def _local_sigma(image: Image, x, y) -> np.ndarray:
    """Noise (e-) of the pixels nearest (x, y); the median noise where the weight is 0."""
    ix, iy = np.rint(x).astype(int), np.rint(y).astype(int)
    w = image.weight[iy, ix].astype(np.float64)
    med = np.sqrt(sky_variance(image))
    return np.where(w > 0, 1.0 / np.sqrt(np.where(w > 0, w, 1.0)), med)


def add_cosmic_rays(sci: np.ndarray, x, y, peak, rng: np.random.Generator) -> Table:
    """Add cosmic-ray hits to ``sci`` (in place): at each (x, y) a track of 1-3 adjacent pixels in a
    random direction (horizontal, vertical or diagonal), the first pixel ``peak`` e-, the others
    30-100% of it. Returns the hits' centres (x, y: mean of their pixels) and ``npix``."""
    n = len(x)
    npix = rng.integers(1, MAX_CR_PIXELS + 1, n)
    step = np.array([(1, 0), (0, 1), (1, 1), (1, -1)])[rng.integers(0, 4, n)]
    which = np.repeat(np.arange(n), npix)
    k = np.arange(which.size) - np.repeat(np.cumsum(npix) - npix, npix)
    px = np.rint(x).astype(int)[which] + k * step[which, 0]
    py = np.rint(y).astype(int)[which] + k * step[which, 1]
    frac = np.where(k == 0, 1.0, rng.uniform(0.3, 1.0, which.size))
    ny, nx = sci.shape
    px, py = np.clip(px, 0, nx - 1), np.clip(py, 0, ny - 1)
    np.add.at(sci, (py, px), (np.asarray(peak)[which] * frac).astype(sci.dtype))
    cx = np.bincount(which, px, n) / npix
    cy = np.bincount(which, py, n) / npix
    return Table({"x": cx, "y": cy, "npix": npix, "peak": np.asarray(peak, float)})


def add_bad_columns(sci: np.ndarray, x, y, length, offset) -> Table:
    """Add column segments to ``sci`` (in place): column ``rint(x)``, rows ``rint(y) +- length/2``,
    each pixel offset by ``offset`` (e-, signed). Returns x, y0, y1 (rows, inclusive), offset."""
    ny, nx = sci.shape
    col = np.clip(np.rint(x).astype(int), 0, nx - 1)
    half = np.maximum(np.rint(np.asarray(length) / 2).astype(int), 1)
    y0 = np.clip(np.rint(y).astype(int) - half, 0, ny - 1)
    y1 = np.clip(np.rint(y).astype(int) + half, 0, ny - 1)
    npix = y1 - y0 + 1
    which = np.repeat(np.arange(len(col)), npix)
    rows = y0[which] + np.arange(which.size) - np.repeat(np.cumsum(npix) - npix, npix)
    np.add.at(sci, (rows, col[which]), np.asarray(offset, np.float64)[which].astype(sci.dtype))
    return Table({"x": col.astype(float), "y0": y0, "y1": y1, "offset": np.asarray(offset, float)})


def add_dipoles(sci: np.ndarray, psf: PSFModel, x, y, flux, dx, dy) -> None:
    """Move stars of ``flux`` (e-) at (x, y) by (dx, dy) pix in ``sci`` (in place): adds
    ``flux (PSF(x + dx, y + dy) - PSF(x, y))``, pixel-integrated, noiseless."""
    fwhm = float(np.max(np.atleast_1d(psf.fwhm(np.atleast_1d(x), np.atleast_1d(y)))))
    half = int(np.ceil(4 * fwhm))
    ny, nx = sci.shape
    for sign, (xs, ys) in ((1.0, (x + dx, y + dy)), (-1.0, (x, y))):
        ix, iy, st = psf.render(xs, ys, half)
        inside = (ix >= 0) & (ix < nx) & (iy >= 0) & (iy < ny)
        val = sign * np.asarray(flux, np.float64)[:, None, None] * st
        np.add.at(sci, (iy[inside], ix[inside]), val[inside].astype(sci.dtype))


def _dipole_stars(psf: PSFModel, n: int, rng: np.random.Generator, shape, margin: int) -> Table:
    """Up to ``n`` random stars of the PSF fit (S/N >= MIN_DIPOLE_SNR, ``margin`` from the edges)."""
    stars = getattr(psf, "stars", None)
    if stars is None or n == 0 or len(stars) == 0:
        return Table({"x": np.zeros(0), "y": np.zeros(0), "flux": np.zeros(0)})
    ny, nx = shape
    x, y, f = (np.asarray(stars[c], float) for c in ("x", "y", "flux"))
    snr = np.asarray(stars["snr"], float) if "snr" in stars.colnames else np.full(len(x), np.inf)
    ok = ((snr >= MIN_DIPOLE_SNR) & np.isfinite(f) & (f > 0) & (x >= margin) & (x <= nx - 1 - margin)
          & (y >= margin) & (y <= ny - 1 - margin))
    idx = np.flatnonzero(ok)
    pick = np.sort(rng.choice(idx, size=min(n, idx.size), replace=False)) if idx.size else idx
    return Table({"x": x[pick], "y": y[pick], "flux": f[pick]})


def _positions(image: Image, n: int, rng, margin: int, min_sep: float, avoid) -> tuple[np.ndarray, np.ndarray]:
    """``n`` random positions (``fake_positions``) at least ``min_sep`` pix from each other and
    from the (m, 2) points ``avoid``."""
    avoid = np.asarray(avoid, float).reshape(-1, 2)
    x, y = fake_positions(image, n + SPARE_PER_AVOIDED * len(avoid), rng, margin, min_sep, image_name(image))
    if len(avoid):
        d, _ = cKDTree(avoid).query(np.column_stack([x, y]))
        x, y = x[d >= min_sep], y[d >= min_sep]
    if len(x) < n:
        raise TrainingError(f"{image_name(image)}: room for only {len(x)} of {n} injections; "
                            f"lower the scoring.train_* counts or injection.min_separation")
    return x[:n], y[:n]


# --------------------------------------------------------------------------- labels


def _near_points(cx, cy, px, py, radius: float) -> np.ndarray:
    """Index of the nearest point (px, py) within ``radius`` of each candidate; -1: none."""
    if len(px) == 0 or len(cx) == 0:
        return np.full(len(cx), -1)
    d, i = cKDTree(np.column_stack([px, py])).query(np.column_stack([cx, cy]), distance_upper_bound=radius)
    return np.where(np.isfinite(d), i, -1)


def _near_columns(cx, cy, cols: Table, radius: float) -> np.ndarray:
    """Index of a bad-column segment within ``radius`` of each candidate; -1: none."""
    out = np.full(len(cx), -1)
    if len(cols) == 0 or len(cx) == 0:
        return out
    x, y0, y1 = (np.asarray(cols[c], float) for c in ("x", "y0", "y1"))
    dy = np.maximum(np.maximum(y0[None, :] - cy[:, None], cy[:, None] - y1[None, :]), 0)
    d = np.hypot(cx[:, None] - x[None, :], dy)
    best = np.argmin(d, axis=1)
    return np.where(d[np.arange(len(cx)), best] <= radius, best, -1)


def label_candidates(cand: Table, fakes: Table, crs: Table, cols: Table, dipoles: Table,
                     astro: Table | None, radius: float,
                     dipole_radius: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(kind (str), source index in its injection table (-1 for artifacts), keep) per candidate.

    ``keep`` is False for candidates on a true transient or variable of ``astro`` (x, y) that
    no injection explains (real sky changes are neither real injections nor bogus)."""
    cx, cy = np.asarray(cand["x"], float), np.asarray(cand["y"], float)
    n = len(cand)
    kind = np.full(n, "artifact", dtype="U10")
    src = np.full(n, -1)
    done = np.zeros(n, bool)
    pos = ~np.asarray(cand["is_negative"], bool)
    matches = (("fake", np.where(pos, _near_points(cx, cy, fakes["x"], fakes["y"], radius), -1)),
               ("dipole", _near_points(cx, cy, dipoles["x"], dipoles["y"], dipole_radius)),
               ("cosmic_ray", _near_points(cx, cy, crs["x"], crs["y"], radius)),
               ("bad_column", _near_columns(cx, cy, cols, radius)))
    for name, idx in matches:
        hit = (idx >= 0) & ~done
        kind[hit], src[hit] = name, idx[hit]
        done |= hit
    keep = np.ones(n, bool)
    if astro is not None and len(astro):
        on_sky = _near_points(cx, cy, np.asarray(astro["x"], float), np.asarray(astro["y"], float),
                              dipole_radius) >= 0
        keep = done | ~on_sky
    return kind, src, keep


# --------------------------------------------------------------------------- training set


def select_cutouts(cutouts, ids) -> dict:
    """The difference stamps (``sub``, ``sub_weight``, ``sub_flags``) of the candidates ``ids``,
    in that order, as the mapping :func:`vo.images.realbogus.score.score` takes (measurements keep only the
    candidates that survive the drop cuts; cutouts hold every candidate)."""
    all_ids = np.asarray(cutouts.candidates["id"])
    order = np.argsort(all_ids, kind="stable")
    ids = np.asarray(ids)
    pos = np.searchsorted(all_ids[order], ids)
    pos = np.clip(pos, 0, max(len(all_ids) - 1, 0))
    if len(ids) and not np.array_equal(all_ids[order][pos], ids):
        raise TrainingError("measurements name candidate ids that are not in the cutouts")
    rows = order[pos]
    return {k: getattr(cutouts, k)[rows] for k in ("sub", "sub_weight", "sub_flags")}


def pipeline_features(cfg: dict, new: Image, new_psf: PSFModel, new_zp: float, aligned_ref: Image,
                      ref_psf: PSFModel, ref_zp: float, ref_sources: Table | None = None,
                      pixel_scale: float | None = None, keep_dropped: bool = False) -> Table:
    """Subtraction, detection, cutouts and measurements of the workflow on one new image, with
    the ``stamp_*`` features (:func:`vo.images.realbogus.score.stamp_features`, relative to the
    FWHM of the difference's PSF: a candidate has that width, not the new image's) added to the surviving measurements (to all of them with ``keep_dropped``)."""
    diff = subtract(new, aligned_ref, new_psf, ref_psf, new_zp, ref_zp, cfg["subtraction"],
                    method=cfg["subtraction"]["method"])
    cand = detect_candidates(diff, cfg["detection"], wcs=new.wcs, new_psf=new_psf)
    cut = make_cutouts(cand, new, aligned_ref, diff, size=cfg["cutouts"]["size"])
    # as the workflow's measurements and scoring: each candidate with the difference's PSF where it is
    meas = measure(cut, cand, LocalPSF(diff, new_psf), new_zp, ref_sources, cfg["measurements"],
                   pixel_scale=pixel_scale, keep_dropped=keep_dropped)
    stamps = select_cutouts(cut, meas["id"])
    st = rbscore.stamp_features(stamps["sub"], rbscore.candidate_fwhm(meas, float(diff.meta["fwhm"])),
                                stamps["sub_weight"], stamps["sub_flags"])
    for c in st.colnames:
        meas[c] = st[c]
    snr = dict(zip(np.asarray(cand["id"]), np.asarray(cand["snr"], float)))
    meas["snr"] = np.array([snr[i] for i in np.asarray(meas["id"])], float) if len(meas) else np.zeros(0)
    return meas


def training_set(cfg: dict, new: Image, new_psf: PSFModel, new_zp: float, aligned_ref: Image,
                 ref_psf: PSFModel, ref_zp: float, seed: int, truth: Table | None = None,
                 ref_sources: Table | None = None, pixel_scale: float | None = None) -> Table:
    """Labelled candidates of one new image with injected real and bogus sources.

    Parameters
    ----------
    cfg : full config (sections ``scoring`` (the ``train_*`` parameters), ``injection``
        (``stamp_size``, ``margin``, ``min_separation``), ``subtraction``, ``detection``,
        ``cutouts``, ``measurements``).
    new : calibrated new image (e-) whose header carries the solved WCS.
    new_psf, new_zp : its PSF model and zero point (``m = -2.5 log10(flux_e-) + zp``).
    aligned_ref, ref_psf, ref_zp : the reference resampled onto the new grid, its PSF on that
        grid and zero point (as the subtraction step makes them).
    seed : int; with the image's EXPOSURE and CCD header names, seeds every random draw.
    truth : optional Table (x, y in pix of the new image, kind) of the simulation's truth for
        this CCD: candidates on a ``transient`` or ``variable`` source are left out.
    ref_sources, pixel_scale : as :func:`vo.images.detect.measure.measure` (``ref_distance``).

    Returns
    -------
    Table, one row per labelled candidate: id, x, y (pix), ra, dec, is_negative, snr (detection
    S/N, signed), every :data:`vo.images.detect.measure.FEATURES` column, the ``stamp_*`` features,
    is_bad, ``label`` (1 real, 0 bogus), ``kind`` (:data:`KINDS`), ``source`` (row of the
    injected object in its kind's list; -1 for artifacts), ``inj_snr`` (expected S/N of a fake
    in the new image; NaN otherwise). Meta: counts injected (N_FAKE, N_FAKE_SNR10: fakes of
    expected S/N >= 10 on unflagged reference pixels, N_COSMIC_RAY,
    N_BAD_COLUMN, N_DIPOLE), N_ASTRO (candidates left out on true sky changes), SEED, IMAGE.
    """
    p = parameters(cfg)
    inj = {**vconfig.defaults()["injection"], **(cfg.get("injection") or {})}
    name = image_name(new)
    new.check(name)
    rng = rng_for(int(seed), "democam_rb training", name)
    margin, min_sep = int(inj["margin"]), float(inj["min_separation"])
    radius = float(p["train_match_radius"])
    ny, nx = new.shape
    fwhm = float(new_psf.fwhm())
    counts = {k: int(p[f"train_{k}"]) for k in ("fakes", "cosmic_rays", "bad_columns", "dipoles")}
    if any(v < 0 for v in counts.values()):
        raise TrainingError(f"scoring.train_* counts must be >= 0, got {counts}")

    # dipole stars first: the other injections keep clear of them (and of true sky changes)
    dip = _dipole_stars(new_psf, counts["dipoles"], rng, new.shape, margin)
    lo, hi = _range(p, "train_dipole_shift")
    shift = rng.uniform(lo, hi, len(dip))
    angle = rng.uniform(0, 2 * np.pi, len(dip))
    dip["dx"], dip["dy"] = shift * np.cos(angle), shift * np.sin(angle)
    avoid = [np.column_stack([dip["x"], dip["y"]])]
    if truth is not None and len(truth):
        astro = truth[np.isin(np.asarray(truth["kind"]).astype(str), ASTRO_KINDS)]
        avoid.append(np.column_stack([np.asarray(astro["x"], float), np.asarray(astro["y"], float)]))
    else:
        astro = None
    n_pts = counts["fakes"] + counts["cosmic_rays"] + counts["bad_columns"]
    x, y = _positions(new, n_pts, rng, margin, min_sep, np.concatenate(avoid))
    nf, nc = counts["fakes"], counts["cosmic_rays"]

    # real: fakes with S/N log-uniform in train_snr_range (in the new image)
    var, nea = sky_variance(new), psf_nea(new_psf, (nx - 1) / 2, (ny - 1) / 2)
    snr = _loguniform(rng, *_range(p, "train_snr_range"), nf)
    mags = new_zp - 2.5 * np.log10(flux_for_snr(snr, var, nea))
    img, fakes = inject_fakes(new, new_psf, new_zp, nf, mags, seed=rng, pars=inj, positions=(x[:nf], y[:nf]))
    sci = img.sci.astype(np.float64)

    # bogus: cosmic rays, bad columns (unflagged), dipoles
    xc, yc = x[nf:nf + nc], y[nf:nf + nc]
    crs = add_cosmic_rays(sci, xc, yc, _loguniform(rng, *_range(p, "train_cosmic_ray_sigma"), nc)
                          * _local_sigma(new, xc, yc), rng)
    xb, yb = x[nf + nc:], y[nf + nc:]
    nb = len(xb)
    length = rng.uniform(*_range(p, "train_bad_column_length"), nb)
    offset = (_loguniform(rng, *_range(p, "train_bad_column_sigma"), nb) * rng.choice([-1.0, 1.0], nb)
              * _local_sigma(new, xb, yb))
    cols = add_bad_columns(sci, xb, yb, length, offset)
    if len(dip):
        add_dipoles(sci, new_psf, np.asarray(dip["x"]), np.asarray(dip["y"]), np.asarray(dip["flux"]),
                    np.asarray(dip["dx"]), np.asarray(dip["dy"]))
    img = replace(img, sci=sci.astype(np.float32))

    meas = pipeline_features(cfg, img, new_psf, new_zp, aligned_ref, ref_psf, ref_zp, ref_sources, pixel_scale,
                             keep_dropped=True)
    kind, src, keep = label_candidates(meas, fakes, crs, cols, dip, astro, radius,
                                       max(radius, DIPOLE_RADIUS * fwhm))
    out = meas[keep]
    out["kind"], out["source"] = kind[keep], src[keep]
    out["label"] = (out["kind"] == "fake").astype(np.int8)
    fake_snr = np.asarray(fakes["snr"], float)
    out["inj_snr"] = np.where(out["kind"] == "fake", fake_snr[np.clip(out["source"], 0, max(nf - 1, 0))]
                              if nf else np.nan, np.nan)
    fx, fy = np.rint(fakes["x"]).astype(int), np.rint(fakes["y"]).astype(int)
    covered = (aligned_ref.weight[fy, fx] > 0) & (aligned_ref.flags[fy, fx] == 0)
    out.meta = {"N_FAKE": nf, "N_FAKE_SNR10": int(np.sum((fake_snr >= 10) & covered)), "N_COSMIC_RAY": nc,
                "N_BAD_COLUMN": nb, "N_DIPOLE": len(dip), "N_ASTRO": int((~keep).sum()), "SEED": int(seed), "IMAGE": name}
    log.info("%s: training set of %d candidates (%s); %d on true sky changes left out", name, len(out),
             ", ".join(f"{k} {int((out['kind'] == k).sum())}" for k in KINDS), int((~keep).sum()))
    return out


def train_democam_rb(tables: list[Table], cfg: dict) -> dict:
    """Fit the ``democam_rb`` model to stacked training sets (:func:`training_set`) on the
    ``scoring.features`` columns, with ``scoring.seed``; returns the model dict of
    :func:`vo.images.realbogus.score.train_model` (plus ``n_by_kind``: rows of each kind)."""
    p = parameters(cfg)
    if not tables:
        raise TrainingError("train_democam_rb: no training set given")
    t = vstack([Table(x, copy=False) for x in tables], metadata_conflicts="silent")
    names = list(p["features"])
    missing = [c for c in (*names, "label") if c not in t.colnames]
    if missing:
        raise TrainingError(f"train_democam_rb: training sets lack columns {missing} "
                            f"(scoring.features must name measurement or stamp_* features)")
    X = np.stack([np.asarray(t[c], np.float64) for c in names], axis=1)
    model = rbscore.train_model(X, np.asarray(t["label"], int), p, seed=int(p["seed"]), feature_names=names)
    kinds = np.asarray(t["kind"]).astype(str)
    model["n_by_kind"] = {k: int((kinds == k).sum()) for k in KINDS}
    return model

