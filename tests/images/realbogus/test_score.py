"""Real/bogus scoring: stamp features, boosted stumps, model files, score tables.

Synthetic difference stamps with a truth label: real = a Moffat point source at a random
sub-pixel position (S/N 5-60); bogus = cosmic rays (1-3 hot pixels), misalignment dipoles
(a bright star shifted by 0.3-1 pix between new and ref), PSF-mismatch residuals (a bright
star convolved with a PSF 15-40% too wide or too narrow) and bad columns. The classifier is
trained on one set and scored on an independent one (other seed).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from astropy.table import Table

from vo import config as vconfig
from vo.images.realbogus import score as S
from vo.images.extract.psf import moffat_pixels

SIZE = 41
FWHM = 3.0
SKY_SIGMA = 10.0  # e- per pixel
KINDS = ("real", "cosmic_ray", "dipole", "psf_mismatch", "bad_column")


def moffat(n, x0, y0, fwhm, beta=3.0):
    """(n, SIZE, SIZE) unit-flux Moffat stamps centred at (x0, y0) offsets from the centre."""
    k = np.arange(SIZE) - SIZE // 2
    xx, yy = np.meshgrid(k, k)
    dx = xx[None] - np.asarray(x0)[:, None, None]
    dy = yy[None] - np.asarray(y0)[:, None, None]
    alpha2 = (fwhm / (2 * np.sqrt(2 ** (1 / beta) - 1))) ** 2
    a = np.full(n, 1 / alpha2)
    return moffat_pixels(dx, dy, a, np.zeros(n), a, np.full(n, beta), subsample=2).astype(np.float64)


def nea(fwhm):
    p = moffat(1, [0.0], [0.0], fwhm)[0]
    return p.sum() ** 2 / (p ** 2).sum()


def synthetic(n_per_kind: int, seed: int):
    """Difference stamps, weights and kind labels (truth)."""
    rng = np.random.default_rng(seed)
    n = n_per_kind
    stamps, kinds = [], []
    sig_psf = SKY_SIGMA * np.sqrt(nea(FWHM))  # PSF-flux noise (e-)
    off = lambda: rng.uniform(-0.5, 0.5, n)  # noqa: E731
    # real point sources, S/N 5-60
    flux = rng.uniform(5, 60, n) * sig_psf
    stamps.append(flux[:, None, None] * moffat(n, off(), off(), FWHM))
    # cosmic rays: 1-3 adjacent hot pixels
    cr = np.zeros((n, SIZE, SIZE))
    c = SIZE // 2
    for i in range(n):
        amp = rng.uniform(8, 100) * SKY_SIGMA
        cr[i, c, c] = amp
        for _ in range(rng.integers(0, 3)):
            dy, dx = rng.integers(-1, 2, 2)
            cr[i, c + dy, c + dx] += amp * rng.uniform(0.2, 1)
    stamps.append(cr)
    # dipoles: a bright star misaligned by 0.3-1 pix
    bright = rng.uniform(50, 400, n) * sig_psf
    shift = rng.uniform(0.3, 1.0, n)
    ang = rng.uniform(0, 2 * np.pi, n)
    x0, y0 = off(), off()
    sx, sy = shift * np.cos(ang) / 2, shift * np.sin(ang) / 2
    stamps.append(bright[:, None, None] * (moffat(n, x0 + sx, y0 + sy, FWHM) - moffat(n, x0 - sx, y0 - sy, FWHM)))
    # PSF mismatch: star seen with a wrong PSF width in the reference
    ratio = rng.choice([-1, 1], n) * rng.uniform(0.15, 0.4, n)
    mis = np.stack([moffat(1, [x0[i]], [y0[i]], FWHM)[0] - moffat(1, [x0[i]], [y0[i]], FWHM * (1 + ratio[i]))[0]
                    for i in range(n)])
    stamps.append(bright[:, None, None] * mis)
    # bad columns through (or next to) the centre
    col = np.zeros((n, SIZE, SIZE))
    for i in range(n):
        col[i, :, c + rng.integers(-1, 2)] = rng.uniform(3, 30) * SKY_SIGMA
    stamps.append(col)
    for kind in KINDS:
        kinds += [kind] * n
    sub = np.concatenate(stamps) + rng.normal(0, SKY_SIGMA, (len(KINDS) * n, SIZE, SIZE))
    weight = np.full(sub.shape, 1 / SKY_SIGMA ** 2, np.float32)
    return sub.astype(np.float32), weight, np.array(kinds)


@pytest.fixture(scope="module")
def data():
    train = synthetic(120, seed=1)
    test = synthetic(120, seed=2)
    return train, test


def test_stamp_features_of_clean_shapes():
    """Noise-free checks of each feature against the shape that made it."""
    n = 3
    psf = 1000 * moffat(n, np.array([0.0, 0.3, -0.4]), np.array([0.0, -0.2, 0.4]), FWHM)
    f = S.stamp_features(psf, FWHM, weight=np.full(psf.shape, 1e-2))
    assert np.all(np.abs(f["stamp_fwhm_ratio"] - 1) < 0.15), f["stamp_fwhm_ratio"]
    assert np.all(f["stamp_elongation"] < 1.05)
    assert np.all(f["stamp_negative_flux_fraction"] == 0)
    np.testing.assert_allclose(f["stamp_offset"], np.hypot([0, 0.3, -0.4], [0, -0.2, 0.4]), atol=0.1)
    # the S/N: aperture flux over sqrt(npix) * sigma
    k = np.arange(SIZE) - SIZE // 2
    npix = ((k[:, None] ** 2 + k[None] ** 2) <= FWHM ** 2).sum()
    ap = [(psf[i] * ((k[:, None] ** 2 + k[None] ** 2) <= FWHM ** 2)).sum() for i in range(n)]
    np.testing.assert_allclose(f["stamp_snr"], np.array(ap) / np.sqrt(npix * 100), rtol=1e-6)
    # a negative point source: S/N negative, shape features as for the positive one
    fneg = S.stamp_features(-psf, FWHM)
    assert np.all(fneg["stamp_snr"] < 0)
    np.testing.assert_allclose(fneg["stamp_fwhm_ratio"], f["stamp_fwhm_ratio"], rtol=1e-6)
    # a single hot pixel is narrower than the PSF and sharp; a dipole is half negative
    hot = np.zeros((1, SIZE, SIZE)); hot[0, 20, 20] = 500
    fh = S.stamp_features(hot, FWHM)
    assert fh["stamp_fwhm_ratio"][0] < 0.3 and fh["stamp_sharpness"][0] > 0.99
    dip = 1000 * (moffat(1, [0.5], [0.0], FWHM) - moffat(1, [-0.5], [0.0], FWHM))
    fd = S.stamp_features(dip, FWHM)
    assert abs(fd["stamp_negative_flux_fraction"][0] - 0.5) < 0.01
    # NaNs off the CCD edge are counted as bad pixels, never crash
    edge = psf[:1].copy(); edge[0, :, :18] = np.nan
    fe = S.stamp_features(edge, FWHM)
    k2 = k[:, None] ** 2 + k[None] ** 2
    assert fe["stamp_bad_pixels"][0] == (((k2 <= (2 * FWHM) ** 2)) & (np.arange(SIZE)[None, :] < 18)).sum()
    assert np.isfinite(fe["stamp_snr"][0])


def test_classifier_separates_real_from_bogus(data, tmp_path):
    (sub, w, kinds), (sub2, w2, kinds2) = data
    pars = {**S.DEFAULT_PARS}
    X = S.feature_matrix(pars["features"], cutouts={"sub": sub, "sub_weight": w}, fwhm=FWHM)
    y = (kinds == "real").astype(int)
    model = S.train_model(X, y, pars, seed=7)
    scores = S.score(None, {"sub": sub2, "sub_weight": w2}, "democam_rb", model, fwhm=FWHM)
    y2 = kinds2 == "real"
    auc = S.roc_auc(scores["score"], y2)
    per_kind = {k: S.roc_auc(np.r_[scores["score"][y2], scores["score"][kinds2 == k]],
                             np.r_[np.ones(y2.sum()), np.zeros((kinds2 == k).sum())])
                for k in KINDS[1:]}
    print(f"\nheld-out AUC {auc:.4f}; per bogus kind {per_kind}; train AUC {model['train_auc']:.4f}")
    assert auc > 0.95
    assert all(v > 0.9 for v in per_kind.values()), per_kind
    assert np.all((scores["score"] >= 0) & (scores["score"] <= 1))
    # fraction of held-out real/bogus on the right side of the threshold
    assert np.mean(scores["is_real"][y2]) > 0.85 and np.mean(scores["is_real"][~y2]) < 0.1
    # deterministic from data, pars and seed; another seed gives another (still good) model
    assert S.train_model(X, y, pars, seed=7)["stumps"] == model["stumps"]
    other = S.train_model(X, y, pars, seed=8)
    assert other["stumps"] != model["stumps"]
    # round trip through the JSON model file
    path = tmp_path / "rb_model.json"
    S.save_model(path, model, {"step": "scoring", "provenance_hash": "abc"})
    back = S.load_model(path)
    assert json.loads(path.read_text())["provenance"]["provenance_hash"] == "abc"
    X2 = S.feature_matrix(model["features"], cutouts={"sub": sub2, "sub_weight": w2}, fwhm=FWHM)
    np.testing.assert_array_equal(S.predict(back, X2), S.predict(model, X2))


def test_measurement_columns_used_as_features(data):
    """Features are read from a measurement table where it has them (mixed with stamp ones)."""
    (sub, w, kinds), _ = data
    st = S.stamp_features(sub, FWHM, w)
    meas = Table({"id": np.arange(len(sub)), "snr": st["stamp_snr"] * 1.0,
                  "fwhm_ratio": st["stamp_fwhm_ratio"] * 1.0})
    names = ["snr", "fwhm_ratio", "stamp_negative_flux_fraction"]
    X = S.feature_matrix(names, meas, {"sub": sub, "sub_weight": w}, fwhm=FWHM)
    np.testing.assert_array_equal(X[:, 0], st["stamp_snr"])
    np.testing.assert_array_equal(X[:, 2], st["stamp_negative_flux_fraction"])
    model = S.train_model(X, kinds == "real", {"n_rounds": 40}, seed=0, feature_names=names)
    out = S.score(meas, {"sub": sub, "sub_weight": w}, "democam_rb", model, fwhm=FWHM)
    np.testing.assert_array_equal(out["id"], meas["id"])
    with pytest.raises(ValueError, match="bogus_feature"):
        S.feature_matrix(["bogus_feature"], meas, {"sub": sub}, fwhm=FWHM)
    with pytest.raises(ValueError, match="FWHM"):
        S.feature_matrix(["stamp_snr"], meas, {"sub": sub})


def test_nan_features_and_bad_models(tmp_path):
    rng = np.random.default_rng(3)
    X = rng.normal(size=(200, 2))
    y = (X[:, 0] > 0).astype(int)
    X[::7, 1] = np.nan
    model = S.train_model(X, y, {"n_rounds": 30}, seed=1, feature_names=["a", "b"])
    p = S.predict(model, np.array([[2.0, np.nan], [-2.0, np.nan]]))
    assert p[0] > 0.8 and p[1] < 0.2
    with pytest.raises(ValueError, match="both classes"):
        S.train_model(X, np.zeros(200), {}, seed=1, feature_names=["a", "b"])
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(S.ModelError, match="bad.json"):
        S.load_model(bad)
    bad.write_text(json.dumps({"algorithm": "democam_rb"}))
    with pytest.raises(S.ModelError, match="bad.json"):
        S.load_model(bad)
    with pytest.raises(S.ModelError, match="trained model"):
        S.score(None, {"sub": np.zeros((1, 41, 41))}, "democam_rb", None, fwhm=3)


def test_score_table_file_round_trip(tmp_path, data):
    (sub, w, kinds), _ = data
    model = S.train_model(S.feature_matrix(S.STAMP_FEATURES, cutouts={"sub": sub}, fwhm=FWHM),
                          kinds == "real", {"n_rounds": 20}, seed=0)
    meas = Table({"id": np.arange(10), "x": np.arange(10) * 1.5})
    out = S.score(meas, {"sub": sub[:10]}, "democam_rb", model, {"threshold": 0.3}, fwhm=FWHM)
    path = tmp_path / "ccd.scores.fits"
    S.write_scores(path, out, {"step": "scoring", "provenance_hash": "0123456789"})
    back = S.read_scores(path)
    np.testing.assert_array_equal(back["score"], out["score"])
    np.testing.assert_array_equal(back["is_real"], out["score"] >= 0.3)
    assert back.meta["algorithm"] == "democam_rb" and back.meta["threshold"] == 0.3
    assert list(back["algorithm"]) == ["democam_rb"] * 10
    from astropy.io import fits
    assert fits.getheader(path)["VO_HASH"] == "0123456789"
    # empty candidate list: an empty table, not a crash
    empty = S.score(meas[:0], {"sub": sub[:0]}, "democam_rb", model, fwhm=FWHM)
    assert len(empty) == 0
    S.write_scores(tmp_path / "empty.fits", empty)
    assert len(S.read_scores(tmp_path / "empty.fits")) == 0
    with pytest.raises(Exception, match="missing.fits"):
        S.read_scores(tmp_path / "missing.fits")


def test_config_defaults_match_module():
    cfg = vconfig.load_config()
    sc = cfg["scoring"]
    for key in ("features", "n_rounds", "learning_rate", "max_bins", "l2", "subsample",
                "min_hessian", "threshold", "braai_normalization"):
        assert sc[key] == S.DEFAULT_PARS[key], key
    assert isinstance(sc["seed"], int)
