"""Real/bogus scores of difference-image candidates (the ``scoring`` step).

Two scorers (config ``scoring.algorithm``):

* ``democam_rb``: gradient-boosted decision stumps (Newton boosting of the logistic loss,
  Friedman 2001 with the second-order leaf values of XGBoost) on candidate features, trained
  by a workflow rule on DemoCam injections (real: injected point sources; bogus: subtraction
  artifacts, cosmic rays, bad columns, misalignment dipoles) with :func:`train_model`.
  Features are measurement columns (``vo.images.detect.measure``) or the stamp features of
  :func:`stamp_features` (names ``stamp_*``), computed here from the difference cutouts.
  Why stumps (and not a logistic regression): the telling features are not monotonic
  (a cosmic ray is narrower than the PSF, a bad column wider); why hand-written (and not
  scikit-learn or xgboost): ~80 lines of numpy keep the model a small JSON file, bit-for-bit
  reproducible from the config and the seed, with no heavy dependency.
* ``braai_d6_m7``: ZTF's braai CNN (:mod:`vo.images.realbogus.braai`) on the new/ref/sub cutouts,
  cropped or padded (centred) to 63x63.

Score tables (:func:`write_scores`) are FITS binary tables (HDU ``SCORES``: ``score`` in
[0, 1], ``is_real`` (score >= threshold), ``algorithm``) with the provenance cards.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Mapping

import numpy as np
from astropy.io import fits
from astropy.table import Table
from scipy.stats import rankdata

from vo.images.extract.psf import PSFModel
from vo.io.atomic import write_text
from vo.io.fits import FitsError, open_fits, write_fits


ALGORITHMS = ("democam_rb", "braai_d6_m7")
STAMP_FEATURES = ("stamp_snr", "stamp_fwhm_ratio", "stamp_elongation", "stamp_negative_flux_fraction",
                  "stamp_negative_pixel_fraction", "stamp_bad_pixels", "stamp_offset", "stamp_sharpness")
#: measurement columns copied to the score table to identify the rows (when present)
ID_COLUMNS = ("id", "candidate_id", "measurement_id", "x", "y", "ra", "dec")
#: training defaults (the config's ``scoring`` section overrides them)
DEFAULT_PARS = {"features": list(STAMP_FEATURES), "n_rounds": 150, "learning_rate": 0.2,
                "max_bins": 32, "l2": 1.0, "subsample": 0.8, "min_hessian": 1.0, "threshold": 0.5,
                "braai_normalization": "rows", "braai_model_dir": None}
MODEL_KIND = "boosted_stumps"
WINDOW_ITERATIONS = 5  # re-centrings of the Gaussian window of the stamp moments


class ModelError(ValueError):
    """A model file or dict that cannot be used; the message names it."""


# --------------------------------------------------------------------------- stamp features


def _field(obj, name: str, default=None):
    """``obj[name]`` for mappings, ``obj.name`` otherwise (cutouts may be either)."""
    if isinstance(obj, Mapping):
        return obj.get(name, default)
    return getattr(obj, name, default)


def stamp_features(sub: np.ndarray, fwhm: float, weight: np.ndarray | None = None,
                   flags: np.ndarray | None = None, radius: float = 2.0) -> Table:
    """Shape and sign features of difference stamps centred on the candidates.

    Parameters
    ----------
    sub : (N, S, S) array
        Difference stamps (e-), the candidate at the central pixel; NaN where off the CCD.
    fwhm : float or (N,) array
        FWHM (pix) of the difference's PSF, per stamp where the PSF varies over the CCD (the
        measurements' ``fwhm_psf``: with one central value, point sources in the corners of a
        CCD whose PSF is 15% wider there read ``stamp_fwhm_ratio`` 1.15, like bad columns).
    weight : (N, S, S) array, optional
        Inverse variance (1/e-^2), 0 where flagged; without it the noise is the MAD of the
        stamp's pixels beyond ``radius`` FWHM.
    flags : (N, S, S) uint array, optional
        Pixel flags; flagged pixels are left out.
    radius : float
        Radius (in FWHM) of the region the sign, bad-pixel and significance features use.

    Returns
    -------
    Table with (one row per stamp):
    ``stamp_snr`` (aperture S/N in a 1-FWHM radius, signed), ``stamp_fwhm_ratio`` (FWHM from
    Gaussian-windowed second moments over the same for the PSF: ~1 for a point source, < 1 for
    a cosmic ray), ``stamp_elongation`` (axis ratio of the windowed moments), ``stamp_negative_flux_fraction``
    (negative over absolute flux within ``radius``), ``stamp_negative_pixel_fraction`` (fraction
    of the 3-sigma pixels that are negative), ``stamp_bad_pixels`` (flagged or NaN pixels within
    ``radius``), ``stamp_offset`` (windowed centroid from the centre, pix), ``stamp_sharpness``
    (brightest central 3x3 pixel over the aperture flux).
    """
    sub = np.asarray(sub, np.float64)
    if sub.ndim != 3 or sub.shape[1] != sub.shape[2] or sub.shape[1] % 2 == 0:
        raise ValueError(f"stamp features: stamps must be (N, S, S) with S odd, got {sub.shape}")
    n, size, _ = sub.shape
    fwhm = np.broadcast_to(np.asarray(fwhm, np.float64), (n,))  # one per stamp, or one for all
    if not np.all(np.isfinite(fwhm) & (fwhm > 0)):
        bad_fwhm = fwhm[~(np.isfinite(fwhm) & (fwhm > 0))][:3]
        raise ValueError(f"stamp features: PSF FWHM must be positive, got {bad_fwhm}")
    f3 = fwhm[:, None, None]
    k = np.arange(size) - size // 2
    xx, yy = np.meshgrid(k, k)
    r2 = (xx * xx + yy * yy).astype(np.float64)
    bad = ~np.isfinite(sub)
    if weight is not None:
        bad |= ~(np.asarray(weight) > 0)
    if flags is not None:
        bad |= np.asarray(flags) != 0
    d = np.where(bad, 0.0, sub)
    good = ~bad
    region = r2 <= (radius * f3) ** 2
    if weight is not None:
        var = np.where(good, 1.0 / np.where(good, weight, 1.0), 0.0)
    else:
        outer = np.where(good & ~region, sub, np.nan).reshape(n, -1)
        med = np.nanmedian(outer, axis=1, keepdims=True)
        sig = 1.4826 * np.nanmedian(np.abs(outer - med), axis=1)
        sig = np.where(np.isfinite(sig) & (sig > 0), sig, 1.0)
        var = np.where(good, sig[:, None, None] ** 2, 0.0)
    ap = r2 <= f3 ** 2
    flux_ap = (d * ap).sum(axis=(1, 2))
    err_ap = np.sqrt((var * ap).sum(axis=(1, 2)))
    snr = flux_ap / np.where(err_ap > 0, err_ap, np.inf)
    absflux = (np.abs(d) * region).sum(axis=(1, 2))
    neg_flux = (-np.minimum(d, 0) * region).sum(axis=(1, 2)) / np.where(absflux > 0, absflux, 1.0)
    significant = (np.abs(d) > 3 * np.sqrt(var)) & good & region
    n_sig = significant.sum(axis=(1, 2))
    neg_pix = (significant & (d < 0)).sum(axis=(1, 2)) / np.maximum(n_sig, 1)
    # Gaussian-windowed moments of the candidate-signed, positive part of the stamp
    sign = np.where(flux_ap < 0, -1.0, 1.0)[:, None, None]
    mx, my, tr, det = _windowed_moments(np.maximum(d * sign, 0), xx, yy, fwhm)
    disc = np.sqrt(np.maximum(tr * tr / 4 - det, 0))
    lmax, lmin = tr / 2 + disc, np.maximum(tr / 2 - disc, 1e-3)
    # over the same moments of a point source: a pixel-integrated Moffat (beta 3) of this FWHM,
    # so pixelisation and wings cancel (with the analytic Gaussian value, point sources read
    # 1.05 at FWHM 3.5 pix but 1.17 at 2 pix, and a classifier trained at one seeing failed at
    # the other)
    # (the point source's trace per FWHM to 0.01 pix: one rendering per distinct value)
    if np.all(fwhm == fwhm[:1]):
        trace_ps = _point_source_trace(float(fwhm[0]), size) if n else 1.0
    else:
        uniq, inv = np.unique(np.round(fwhm, 2), return_inverse=True)
        trace_ps = np.array([_point_source_trace(float(f), size) for f in uniq])[inv.ravel()]
    fwhm_ratio = np.sqrt(np.maximum(tr, 0) / trace_ps)
    c = size // 2
    core = (d * sign)[:, c - 1:c + 2, c - 1:c + 2].reshape(n, -1).max(axis=1)
    sharp = core / np.where(flux_ap * sign[:, 0, 0] > 0, flux_ap * sign[:, 0, 0], np.nan)
    out = Table()
    out["stamp_snr"] = snr
    out["stamp_fwhm_ratio"] = fwhm_ratio
    out["stamp_elongation"] = np.sqrt(lmax / lmin)
    out["stamp_negative_flux_fraction"] = neg_flux
    out["stamp_negative_pixel_fraction"] = neg_pix
    out["stamp_bad_pixels"] = (bad & region).sum(axis=(1, 2)).astype(np.float64)
    out["stamp_offset"] = np.hypot(mx, my)
    out["stamp_sharpness"] = sharp
    return out


def _windowed_moments(pos, xx, yy, fwhm):
    """Centroid and trace, determinant of the second moments of ``pos`` (N, S, S) under a
    Gaussian window of the PSF's width, re-centred on the windowed centroid (as SExtractor's
    XWIN: unbiased for a symmetric source, where a window fixed at the stamp centre halves the
    offset). Returns mx, my (pix from the centre), trace and determinant (pix^2, pix^4)."""
    n = pos.shape[0]
    fwhm = np.broadcast_to(np.asarray(fwhm, np.float64), (n,))  # one per stamp, or one for all
    s2 = (fwhm[:, None, None] / 2.3548) ** 2
    mx = my = np.zeros(n)
    for _ in range(WINDOW_ITERATIONS):
        wr2 = (xx - np.clip(mx, -fwhm, fwhm)[:, None, None]) ** 2 + (yy - np.clip(my, -fwhm, fwhm)[:, None, None]) ** 2
        p = np.exp(-wr2 / (2 * s2)) * pos
        m0 = p.sum(axis=(1, 2))
        m0 = np.where(m0 > 0, m0, np.nan)
        mx, my = (p * xx).sum(axis=(1, 2)) / m0, (p * yy).sum(axis=(1, 2)) / m0
        mx, my = np.nan_to_num(mx), np.nan_to_num(my)
    dx, dy = xx - mx[:, None, None], yy - my[:, None, None]
    mxx, myy = (p * dx * dx).sum(axis=(1, 2)) / m0, (p * dy * dy).sum(axis=(1, 2)) / m0
    mxy = (p * dx * dy).sum(axis=(1, 2)) / m0
    return mx, my, mxx + myy, mxx * myy - mxy * mxy


@functools.lru_cache(maxsize=64)
def _point_source_trace(fwhm: float, size: int) -> float:
    """Windowed second-moment trace (pix^2) of a centred pixel-integrated Moffat (beta 3) of
    ``fwhm`` (pix) on a ``size`` x ``size`` stamp."""
    stamp = PSFModel.round(fwhm, 3.0, (size, size)).evaluate(np.array([0.0]), np.array([0.0]), size)
    stamp = stamp.astype(np.float64)
    k = np.arange(size) - size // 2
    xx, yy = np.meshgrid(k, k)
    return float(_windowed_moments(stamp, xx, yy, fwhm)[2][0])


def candidate_fwhm(measurements: Table | None, default: float):
    """FWHM (pix) of the difference's PSF at each candidate: the measurements' ``fwhm_psf`` (the
    local PSF, :class:`vo.images.subtract.tiles.LocalPSF`) where it is finite and positive,
    else ``default`` (the difference's central FWHM); a scalar without the column."""
    if measurements is None or "fwhm_psf" not in measurements.colnames or len(measurements) == 0:
        return float(default)
    f = np.asarray(measurements["fwhm_psf"], np.float64)
    return np.where(np.isfinite(f) & (f > 0), f, float(default))


def feature_matrix(names, measurements: Table | None = None, cutouts=None,
                   fwhm: float | None = None) -> np.ndarray:
    """(N, F) float64 matrix of features ``names``: measurement columns, or ``stamp_*``
    features computed from ``cutouts`` (``sub``, ``sub_weight``, ``sub_flags``) with ``fwhm``
    (pix). Raises ValueError naming a feature that is neither."""
    names = list(names)
    cols = {}
    stamp_needed = [n for n in names if measurements is None or n not in measurements.colnames]
    if stamp_needed:
        unknown = [n for n in stamp_needed if n not in STAMP_FEATURES]
        if unknown:
            raise ValueError(f"features {unknown} are neither measurement columns nor stamp "
                             f"features ({', '.join(STAMP_FEATURES)})")
        if cutouts is None or _field(cutouts, "sub") is None:
            raise ValueError(f"features {stamp_needed} need the difference cutouts ('sub')")
        if fwhm is None:
            raise ValueError(f"features {stamp_needed} need the PSF FWHM (pix)")
        st = stamp_features(_field(cutouts, "sub"), fwhm, _field(cutouts, "sub_weight"),
                            _field(cutouts, "sub_flags"))
        cols.update({n: np.asarray(st[n], np.float64) for n in stamp_needed})
    for n in names:
        if n not in cols:
            cols[n] = np.asarray(measurements[n], np.float64)
    if not names:
        raise ValueError("no features given")
    return np.stack([cols[n] for n in names], axis=1)


# --------------------------------------------------------------------------- boosted stumps


def _sigmoid(z):
    return 0.5 * (1 + np.tanh(0.5 * z))


def train_model(features: np.ndarray, labels: np.ndarray, pars: dict | None = None, seed: int = 0,
                feature_names=None) -> dict:
    """Fit gradient-boosted stumps (logistic loss) to ``features`` (N, F) and 0/1 ``labels``.

    ``pars`` (see :data:`DEFAULT_PARS`): ``n_rounds`` stumps, ``learning_rate`` (shrinkage),
    ``max_bins`` candidate thresholds per feature (quantiles of the training data), ``l2`` (leaf
    regularisation, in units of the Hessian), ``subsample`` (fraction of rows drawn, without
    replacement, for each stump, from a numpy Generator seeded with ``seed``), ``min_hessian``
    (least Hessian weight on each side of a split). NaNs are replaced by each feature's training
    median. Returns the model dict (JSON-serialisable) that :func:`predict` and :func:`save_model`
    take; the same inputs, pars and seed give the same model.
    """
    p = {**DEFAULT_PARS, **(pars or {})}
    X = np.asarray(features, np.float64)
    y = np.asarray(labels, np.float64).ravel()
    names = list(feature_names) if feature_names is not None else list(p["features"])
    if X.ndim != 2 or X.shape[0] != y.size:
        raise ValueError(f"train_model: features {X.shape} and labels {y.shape} do not match")
    if X.shape[1] != len(names):
        raise ValueError(f"train_model: {X.shape[1]} feature columns but {len(names)} names")
    if not np.isin(y, (0, 1)).all() or y.min() == y.max():
        raise ValueError("train_model: labels must be 0/1 with both classes present")
    n, nf = X.shape
    fill = np.nanmedian(np.where(np.isfinite(X), X, np.nan), axis=0)
    fill = np.where(np.isfinite(fill), fill, 0.0)
    X = _clean(X, fill)
    # candidate thresholds: interior quantiles of each feature
    qs = np.linspace(0, 1, int(p["max_bins"]) + 1)[1:-1]
    edges = [np.unique(np.quantile(X[:, j], qs)) for j in range(nf)]
    bins = np.stack([np.searchsorted(edges[j], X[:, j], side="left") for j in range(nf)], axis=1)
    nb = max(len(e) for e in edges) + 1
    offs = np.arange(nf) * nb
    rng = np.random.default_rng(seed)
    base = float(np.log(y.mean() / (1 - y.mean())))
    f = np.full(n, base)
    lam, eta, hmin = float(p["l2"]), float(p["learning_rate"]), float(p["min_hessian"])
    m = max(int(round(float(p["subsample"]) * n)), 2)
    stumps = {"feature": [], "threshold": [], "left": [], "right": []}
    for _ in range(int(p["n_rounds"])):
        prob = _sigmoid(f)
        g, h = prob - y, prob * (1 - prob)
        rows = np.sort(rng.choice(n, size=m, replace=False)) if m < n else np.arange(n)
        idx = (bins[rows] + offs).ravel()
        # gradient and Hessian sums per (feature, bin): one bincount each over all features
        G = np.bincount(idx, np.repeat(g[rows], nf), nf * nb).reshape(nf, nb)
        H = np.bincount(idx, np.repeat(h[rows], nf), nf * nb).reshape(nf, nb)
        GL, HL = np.cumsum(G, axis=1)[:, :-1], np.cumsum(H, axis=1)[:, :-1]
        Gt, Ht = G.sum(axis=1, keepdims=True), H.sum(axis=1, keepdims=True)
        GR, HR = Gt - GL, Ht - HL
        gain = GL ** 2 / (HL + lam) + GR ** 2 / (HR + lam) - Gt ** 2 / (Ht + lam)
        valid = (HL >= hmin) & (HR >= hmin)
        for j in range(nf):
            valid[j, len(edges[j]):] = False  # no threshold beyond this feature's edges
        if not valid.any():
            break
        gain = np.where(valid, gain, -np.inf)
        j, b = np.unravel_index(np.argmax(gain), gain.shape)
        left = -GL[j, b] / (HL[j, b] + lam) * eta
        right = -GR[j, b] / (HR[j, b] + lam) * eta
        thr = float(edges[j][b])
        f += np.where(X[:, j] <= thr, left, right)
        for key, val in zip(stumps, (int(j), thr, float(left), float(right))):
            stumps[key].append(val)
    model = {"algorithm": "democam_rb", "kind": MODEL_KIND, "features": names,
             "fill": [float(v) for v in fill], "base": base, "stumps": stumps, "seed": int(seed),
             "pars": {k: p[k] for k in ("n_rounds", "learning_rate", "max_bins", "l2", "subsample",
                                        "min_hessian")},
             "n_train": int(n), "n_real": int(y.sum())}
    model["train_auc"] = roc_auc(predict(model, features), y)
    return model


def _clean(X: np.ndarray, fill) -> np.ndarray:
    """NaN -> the fill value of its feature; +-inf kept (thresholds are finite)."""
    return np.where(np.isnan(X), np.asarray(fill, np.float64)[None, :], X)


def predict(model: dict, features: np.ndarray) -> np.ndarray:
    """Scores in [0, 1] of ``features`` (N, F), columns in the order of ``model["features"]``."""
    _check_model(model, "model")
    X = np.asarray(features, np.float64)
    if X.ndim != 2 or X.shape[1] != len(model["features"]):
        raise ValueError(f"predict: features of shape {X.shape}, model has {len(model['features'])}")
    X = _clean(X, model["fill"])
    s = model["stumps"]
    j = np.asarray(s["feature"], int)
    z = np.where(X[:, j] <= np.asarray(s["threshold"]), np.asarray(s["left"]), np.asarray(s["right"]))
    return _sigmoid(model["base"] + z.sum(axis=1))


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U / (n_pos n_neg), ties counted half)."""
    scores, labels = np.asarray(scores, float), np.asarray(labels).astype(bool)
    npos, nneg = labels.sum(), (~labels).sum()
    if npos == 0 or nneg == 0:
        raise ValueError("roc_auc: both classes are needed")
    r = rankdata(scores)
    return float((r[labels].sum() - npos * (npos + 1) / 2) / (npos * nneg))


def _check_model(model, where: str) -> None:
    keys = ("algorithm", "kind", "features", "fill", "base", "stumps")
    if not isinstance(model, dict) or any(k not in model for k in keys):
        raise ModelError(f"{where}: not a democam_rb model (needs keys {', '.join(keys)})")
    if model["kind"] != MODEL_KIND:
        raise ModelError(f"{where}: model kind {model['kind']!r}, expected {MODEL_KIND!r}")
    s = model["stumps"]
    lengths = {len(s.get(k, ())) for k in ("feature", "threshold", "left", "right")}
    if len(lengths) != 1 or len(model["fill"]) != len(model["features"]):
        raise ModelError(f"{where}: inconsistent stump or feature lists")


def save_model(path: str | os.PathLike, model: dict, attrs: dict | None = None) -> None:
    """Write the model as JSON atomically (``attrs``: provenance, stored under ``provenance``)."""
    _check_model(model, str(path))
    write_text(path, json.dumps({**model, "provenance": attrs or {}}, indent=1, sort_keys=True,
                                default=str))


def load_model(path: str | os.PathLike) -> dict:
    """Read a model written by :func:`save_model`; ModelError naming the file if unusable."""
    try:
        with open(path) as f:
            model = json.load(f)
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: cannot read the model: {exc}") from exc
    _check_model(model, str(path))
    return model


# --------------------------------------------------------------------------- scoring


def score(measurements: Table | None, cutouts, algorithm: str = "democam_rb", model=None,
          pars: dict | None = None, fwhm: float | None = None) -> Table:
    """Real/bogus score of each candidate.

    Parameters
    ----------
    measurements : Table or None
        One row per candidate (``vo.images.detect.measure``), in the order of ``cutouts``.
    cutouts : Cutouts or mapping
        With (N, S, S) ``new``, ``ref``, ``sub`` stamps (``sub_weight``, ``sub_flags`` optional).
    algorithm : ``democam_rb`` or ``braai_d6_m7``
    model : dict (democam_rb, from :func:`train_model`/:func:`load_model`) or
        :class:`vo.images.realbogus.braai.BraaiModel` (None: d6_m7 from ``braai_model_dir``, by default
        the files shipped in ``vo/data/braai``).
    pars : the config's ``scoring`` section (``threshold``, ``braai_normalization``,
        ``braai_model_dir``).
    fwhm : FWHM of the difference's PSF (pix) for the ``stamp_*`` features, where the
        measurements have no local one (``fwhm_psf``, :func:`candidate_fwhm`).

    Returns
    -------
    Table: the identifying measurement columns present (:data:`ID_COLUMNS`), ``score`` (float32,
    [0, 1]), ``is_real`` (score >= threshold), ``algorithm``; meta ``algorithm``, ``threshold``.
    """
    p = {**DEFAULT_PARS, **(pars or {})}
    if algorithm not in ALGORITHMS:
        raise ValueError(f"scoring algorithm {algorithm!r}: expected one of {ALGORITHMS}")
    if algorithm == "democam_rb":
        if model is None:
            raise ModelError("democam_rb scoring needs a trained model (train_model/load_model)")
        n = len(measurements) if measurements is not None else len(_field(cutouts, "sub"))
        fw = candidate_fwhm(measurements, fwhm) if fwhm is not None else None
        values = (predict(model, feature_matrix(model["features"], measurements, cutouts, fw))
                  if n else np.empty(0))
    else:
        from vo.images.realbogus import braai

        stamps = [_field(cutouts, k) for k in ("new", "ref", "sub")]
        if any(s is None for s in stamps):
            raise ValueError("braai scoring needs the new, ref and sub cutouts")
        if model is None:
            model = braai.load_braai(p["braai_model_dir"])
        values = (braai.score_triplets(*stamps, model=model, normalization=p["braai_normalization"],
                                       pad="centre") if len(stamps[2]) else np.empty(0))
    out = Table()
    if measurements is not None:
        if len(measurements) != len(values):
            raise ValueError(f"scoring: {len(measurements)} measurements but {len(values)} cutouts")
        for col in ID_COLUMNS:
            if col in measurements.colnames:
                out[col] = measurements[col]
    out["score"] = np.clip(values, 0, 1).astype(np.float32)
    out["is_real"] = is_real(out["score"], p["threshold"])
    out["algorithm"] = np.full(len(values), algorithm, dtype=f"U{len(algorithm)}")
    out.meta.update({"algorithm": algorithm, "threshold": float(p["threshold"])})
    return out


def write_scores(path: str | os.PathLike, scores: Table, attrs: dict | None = None) -> None:
    """Write a score table atomically as FITS (HDU ``SCORES``, algorithm in its header)."""
    table = Table(scores, copy=False)
    table.meta = {}  # the header cards below carry the meta
    hdu = fits.BinTableHDU(table, name="SCORES")
    hdu.header["ALGORITH"] = (scores.meta.get("algorithm", ""), "real/bogus scorer")
    hdu.header["RBTHRESH"] = (scores.meta.get("threshold", np.nan), "score threshold of is_real")
    write_fits(path, fits.HDUList([fits.PrimaryHDU(), hdu]), attrs)


def is_real(score, threshold: float) -> np.ndarray:
    """True where a real/bogus score (0-1) counts as real: at or above ``threshold``
    (``scoring.threshold``).  The one place the threshold is applied: scoring, the efficiency of
    injected fakes, association to objects and the alerts all ask here."""
    return np.asarray(score) >= threshold


def read_scores(path: str | os.PathLike) -> Table:
    """Read a score table written by :func:`write_scores` (FitsError naming the file)."""
    with open_fits(path, required=("SCORES",)) as hdul:
        t = Table(hdul["SCORES"].data)
        hdr = hdul["SCORES"].header
    for col in ("score", "is_real", "algorithm"):
        if col not in t.colnames:
            raise FitsError(f"{path}: SCORES has no column {col!r}")
    t["is_real"] = t["is_real"].astype(bool)
    t.meta.update({"algorithm": hdr.get("ALGORITH", ""), "threshold": hdr.get("RBTHRESH", np.nan)})
    return t
