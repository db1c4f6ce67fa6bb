"""braai d6_m7 in numpy (vo.images.realbogus.braai): layers against definitional implementations, the
whole network against a slow reference forward pass, braai's preprocessing, and the real ZTF
alert packets of tests/data/ztf_alerts (scores in [0, 1] that rank the packets like their
``rb`` field; these 2018 packets predate the ``drb`` field, so there is no drb to reproduce)."""

from __future__ import annotations

import hashlib
import json
import shutil
import tarfile
from pathlib import Path

import fastavro
import numpy as np
import pytest
from scipy.signal import correlate
from scipy.stats import spearmanr

from vo.images.realbogus import braai as B
from vo.images.realbogus import score as S
from testdata import DATA as TEST_DATA

DATA = TEST_DATA
ALERTS = DATA / "ztf_alerts" / "ztf_public_20180819_mod1000.tar.gz"


@pytest.fixture(scope="module")
def model():
    return B.load_braai(DATA / "braai")


@pytest.fixture(scope="module")
def packets():
    """Cutouts and candidate fields of the 30 real ZTF alerts."""
    sci, ref, diff, cand = [], [], [], []
    with tarfile.open(ALERTS) as tar:
        for member in tar.getmembers():
            if not member.isfile():
                continue
            for alert in fastavro.reader(tar.extractfile(member)):
                where = f"{ALERTS.name}:{member.name}"
                sci.append(B.decode_cutout(alert["cutoutScience"]["stampData"], where))
                ref.append(B.decode_cutout(alert["cutoutTemplate"]["stampData"], where))
                diff.append(B.decode_cutout(alert["cutoutDifference"]["stampData"], where))
                cand.append(alert["candidate"])
    return sci, ref, diff, cand


def test_conv2d_matches_scipy_correlate():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 11, 9, 3)).astype(np.float32)
    k = rng.normal(size=(3, 3, 3, 4)).astype(np.float32)
    b = rng.normal(size=4).astype(np.float32)
    ref = np.stack([np.stack([correlate(x[n], k[..., o], mode="valid")[..., 0] + b[o] for o in range(4)], -1)
                    for n in range(2)])
    np.testing.assert_allclose(B.conv2d(x, k, b), ref, rtol=1e-5, atol=1e-5)
    # strides 2: every other output pixel of the stride-1 result
    np.testing.assert_allclose(B.conv2d(x, k, b, (2, 2)), ref[:, ::2, ::2], rtol=1e-5, atol=1e-5)
    # 'same': zero padding by 1 on each side for a 3x3 kernel
    xp = np.pad(x, [(0, 0), (1, 1), (1, 1), (0, 0)])
    same = np.stack([np.stack([correlate(xp[n], k[..., o], mode="valid")[..., 0] + b[o] for o in range(4)], -1)
                     for n in range(2)])
    np.testing.assert_allclose(B.conv2d(x, k, b, padding="same"), same, rtol=1e-5, atol=1e-5)


def test_max_pool_matches_loops():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 13, 10, 3))
    out = B.max_pool(x, (4, 4))
    assert out.shape == (2, 3, 2, 3)
    for i in range(3):
        for j in range(2):
            np.testing.assert_array_equal(out[:, i, j], x[:, 4 * i:4 * i + 4, 4 * j:4 * j + 4].max(axis=(1, 2)))
    with pytest.raises(B.BraaiError, match="strides"):
        B.max_pool(x, (2, 2), (1, 1))


def reference_forward(directory: Path, x: np.ndarray) -> np.ndarray:
    """Slow definitional forward pass (float64 loops over channels, the test's own reading of
    the Keras files), for comparison with the vectorised one."""
    import h5py

    arch = json.loads((directory / "d6_m7.architecture.json").read_text())
    with h5py.File(directory / "d6_m7.weights.h5") as f:
        w = {name: (f[name][name]["kernel:0"][()], f[name][name]["bias:0"][()])
             for name in ("conv1", "conv2", "conv3", "conv4", "fc_1", "fc_out")}
    a = x.astype(np.float64)
    for layer in arch["config"]["layers"]:
        cfg = layer["config"]
        if layer["class_name"] == "Conv2D":
            k, b = w[cfg["name"]]
            h, wd = a.shape[1] - 2, a.shape[2] - 2
            out = np.zeros((a.shape[0], h, wd, k.shape[3]))
            for o in range(k.shape[3]):
                for c in range(k.shape[2]):
                    for n in range(a.shape[0]):
                        out[n, :, :, o] += correlate(a[n, :, :, c], k[:, :, c, o], mode="valid")
                out[..., o] += b[o]
            a = np.maximum(out, 0)
        elif layer["class_name"] == "MaxPooling2D":
            p = cfg["pool_size"][0]
            h, wd = a.shape[1] // p, a.shape[2] // p
            a = np.array([[[a[n, i * p:(i + 1) * p, j * p:(j + 1) * p].max(axis=(0, 1)) for j in range(wd)]
                           for i in range(h)] for n in range(a.shape[0])])
        elif layer["class_name"] == "Flatten":
            a = a.reshape(a.shape[0], -1)
        elif layer["class_name"] == "Dense":
            k, b = w[cfg["name"]]
            a = a @ k + b
            a = np.maximum(a, 0) if cfg["activation"] == "relu" else 1 / (1 + np.exp(-a))
    return a[:, 0]


def test_network_matches_reference_forward(model, packets):
    sci, ref, diff, _ = packets
    x = B.make_triplets(sci[:3], ref[:3], diff[:3])
    np.testing.assert_allclose(model.predict(x), reference_forward(DATA / "braai", x), atol=2e-5)
    # the architecture as read from the JSON: braai d6_m7's VGG6
    assert [l.kind for l in model.layers] == ["conv", "conv", "pool", "conv", "conv", "pool", "flatten",
                                              "dense", "dense"]
    assert model.input_shape == (63, 63, 3)


def test_preprocessing():
    rng = np.random.default_rng(2)
    st = rng.normal(size=(2, 63, 63))
    st[0, 5, :] = 0  # a zero row stays zero
    st[1, 7, 9] = np.nan
    rows = B.normalize_stamps(st, "rows")
    norms = np.sqrt((rows ** 2).sum(axis=-1))
    assert np.all(norms[0, 5] == 0) and np.allclose(np.delete(norms[0], 5), 1) and np.allclose(norms[1], 1)
    assert rows[1, 7, 9] == 0
    glob = B.normalize_stamps(st, "global")
    np.testing.assert_allclose(np.sqrt((glob ** 2).sum(axis=(1, 2))), 1)
    with pytest.raises(ValueError, match="normalisation"):
        B.normalize_stamps(st, "max")
    # a 51x63 edge cutout is padded at the end with 1e-9 (braai), or about the centre
    small = np.ones((1, 51, 63))
    end = B.fit_to_size(small)
    assert end.shape == (1, 63, 63) and np.all(end[0, 51:] == 1e-9) and np.all(end[0, :51] == 1)
    cen = B.fit_to_size(np.ones((1, 41, 41)), pad="centre")
    assert np.all(cen[0, 11:52, 11:52] == 1) and cen[0, 10, 31] == 1e-9
    big = np.arange(71 * 71, dtype=float).reshape(1, 71, 71)
    assert B.fit_to_size(big)[0, 31, 31] == big[0, 35, 35]
    trip = B.make_triplets(st[0], st[0] * 5, -st[0])
    assert trip.shape == (1, 63, 63, 3) and trip.dtype == np.float32
    np.testing.assert_allclose(trip[0, :, :, 0], trip[0, :, :, 1], atol=1e-7)


def test_real_ztf_packets_scores_follow_rb(model, packets):
    sci, ref, diff, cand = packets
    assert len(cand) == 30
    assert {s.shape for s in sci} == {(63, 63), (51, 63)}  # one packet cut by the CCD edge
    scores = B.score_triplets(sci, ref, diff, model)
    rb = np.array([c["rb"] for c in cand])
    assert np.all((scores >= 0) & (scores <= 1)) and np.all(np.isfinite(scores))
    drb = [c.get("drb") for c in cand]
    if any(v is not None for v in drb):  # newer packets: reproduce ZTF's own drb
        have = np.array([v is not None for v in drb])
        assert np.max(np.abs(scores[have] - np.array([v for v in drb if v is not None]))) < 1e-3
    rho = spearmanr(scores, rb).statistic
    auc = S.roc_auc(scores, rb >= 0.5)
    glob = B.score_triplets(sci, ref, diff, model, normalization="global")
    rho_g = spearmanr(glob, rb).statistic
    print(f"\nbraai d6_m7 vs rb on 30 ZTF packets: Spearman {rho:.3f}, AUC(rb >= 0.5) {auc:.3f} "
          f"({(rb < 0.5).sum()} packets with rb < 0.5); with whole-stamp normalisation: Spearman {rho_g:.3f}")
    assert rho > 0.6 and auc > 0.8
    assert rho > rho_g  # braai's row normalisation for d6_m7 is the one the network was trained with
    # the score step on 41x41 cutouts (centre crops of the packets' 63x63 ones)
    full = [i for i, s in enumerate(sci) if s.shape == (63, 63)]
    cut = {k: np.stack([a[i][11:52, 11:52] for i in full]) for k, a in (("new", sci), ("ref", ref), ("sub", diff))}
    t = S.score(None, cut, "braai_d6_m7", model)
    assert len(t) == len(full) and np.all((t["score"] >= 0) & (t["score"] <= 1))
    assert spearmanr(t["score"], rb[full]).statistic > 0.4


def test_shipped_model_equals_test_copy():
    for name in ("d6_m7.weights.h5", "d6_m7.architecture.json", "LICENSE"):
        digests = {hashlib.sha256((d / name).read_bytes()).hexdigest() for d in (B.MODEL_DIR, DATA / "braai")}
        assert len(digests) == 1, name
    assert "MIT" in (B.MODEL_DIR / "LICENSE").read_text()


def test_bad_model_files(tmp_path):
    with pytest.raises(B.BraaiError, match="nothere.*d6_m7.architecture.json"):
        B.load_braai(tmp_path / "nothere")
    for name in ("d6_m7.weights.h5", "d6_m7.architecture.json"):
        shutil.copy(DATA / "braai" / name, tmp_path / name)
    arch = json.loads((tmp_path / "d6_m7.architecture.json").read_text())
    arch["config"]["layers"].insert(2, {"class_name": "BatchNormalization", "config": {"name": "bn"}})
    (tmp_path / "d6_m7.architecture.json").write_text(json.dumps(arch))
    with pytest.raises(B.BraaiError, match="BatchNormalization"):
        B.load_braai(tmp_path)
    arch["config"]["layers"].pop(2)
    arch["config"]["layers"][0]["config"]["kernel_size"] = [5, 5]
    arch["config"]["layers"][3]["config"]["rate"] = 0.1  # dropout: irrelevant at inference
    del arch["config"]["layers"][2]  # drop the first max-pooling: dense weights no longer fit
    (tmp_path / "d6_m7.architecture.json").write_text(json.dumps(arch))
    with pytest.raises(B.BraaiError, match="do not fit"):
        B.load_braai(tmp_path)
    (tmp_path / "d6_m7.weights.h5").write_bytes(b"not hdf5")
    with pytest.raises(B.BraaiError, match="d6_m7.weights.h5"):
        B.load_braai(tmp_path)
    with pytest.raises(ValueError, match="alert 7.*cannot decode"):
        B.decode_cutout(b"\x1f\x8bgarbage", "alert 7")
