"""Master bias and flat (vo.images.calibrate.calibration) from synthetic raw calibration sections.

The raw sections come from :func:`test_preprocess.make_section` (two amplifiers with
overscan, a fixed bias pattern, per-amplifier gains, a flat pattern, integer ADU); their
truth is the bias pattern and the flat.
"""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from test_preprocess import CAL, GAINS, PARS, READ_NOISE, RawSection, bias_pattern, make_section, true_flat
from vo.images.calibrate.calibration import clipped_mean, master_bias, master_flat, read_master, write_master
from vo.images.calibrate.preprocess import preprocess
from vo.io.fits import FitsError, read_provenance

NY, NX = 256, 192


@pytest.fixture(scope="module")
def truth():
    rng = np.random.default_rng(100)
    return {"pattern": bias_pattern(NY, NX, rng), "flat": true_flat(NY, NX, rng)}


def _biases(truth, n, rng, n_cr=15):
    return [make_section(rng, ny=NY, nx=NX, sky=0.0, n_stars=0, n_cr=n_cr, pattern=truth["pattern"],
                         bad_column=False, saturated_star=False, level_offset=rng.uniform(-20, 20))[0]
            for _ in range(n)]


def _flats(truth, n, rng, level=40000.0, n_cr=10):
    return [make_section(rng, ny=NY, nx=NX, sky=level * rng.uniform(0.7, 1.3), n_stars=0, n_cr=n_cr,
                         flat=truth["flat"], pattern=truth["pattern"], bad_column=False,
                         saturated_star=False)[0] for _ in range(n)]


def test_master_bias_recovers_the_pattern(truth):
    rng = np.random.default_rng(1)
    frames = _biases(truth, 7, rng)
    bias = master_bias(frames, CAL)
    assert bias.shape == (NY, NX) and bias.dtype == np.float32
    diff = bias - truth["pattern"]
    expected = READ_NOISE / min(GAINS) / np.sqrt(7)  # ADU, noise of the mean
    assert abs(diff.mean()) < 0.05
    assert diff.std() < 1.25 * expected
    # cosmic rays of single frames are clipped: no pixel far from the pattern
    assert np.abs(diff).max() < 8 * expected
    plain = np.mean([f.data[f.datasec] for f in frames], axis=0)
    assert np.abs(plain - plain.mean() - (truth["pattern"] - truth["pattern"].mean())).max() > 50


def test_clipped_mean_with_few_integer_frames():
    """Integer data and ties (MAD = 0) must not reject everything; outliers go."""
    rng = np.random.default_rng(2)
    frames = [np.round(rng.normal(100, 0.3, (64, 64))).astype(np.float32) for _ in range(3)]
    frames[1][10, 10] = 5000
    out = clipped_mean(frames, 3.0, noise=0.3)
    assert np.all(np.isfinite(out)) and out[10, 10] < 101
    assert abs(out.mean() - np.mean(frames[0])) < 0.1


def test_master_flat_and_flat_field(truth):
    rng = np.random.default_rng(3)
    bias = master_bias(_biases(truth, 5, rng), CAL)
    flat = master_flat(_flats(truth, 5, rng), bias, CAL)
    assert flat.dtype == np.float32 and np.median(flat) == pytest.approx(1.0, abs=1e-6)
    lit = truth["flat"] > 0.6
    ratio = flat[lit] / truth["flat"][lit]
    assert abs(np.median(ratio) - 1) < 0.002 and ratio.std() < 0.004
    # no gain step between the amplifiers (the flat is made in electrons)
    assert abs(np.median(flat[:, NX // 2 - 20:NX // 2]) / np.median(truth["flat"][:, NX // 2 - 20:NX // 2])
               - np.median(flat[:, NX // 2:NX // 2 + 20]) / np.median(truth["flat"][:, NX // 2:NX // 2 + 20])) < 0.002
    # a new flat-illuminated frame, preprocessed with the masters, is flat to 0.5%
    raw, _ = make_section(rng, ny=NY, nx=NX, sky=20000.0, n_stars=0, n_cr=0, flat=truth["flat"],
                          pattern=truth["pattern"], bad_column=False, saturated_star=False)
    img = preprocess(raw, bias, flat, PARS, CAL)
    good = img.flags == 0
    rel = np.where(good, img.sci / np.median(img.sci[good]) - 1, np.nan)
    blocks = np.nanmean(rel.reshape(8, 32, 6, 32), axis=(1, 3))
    assert np.nanmax(np.abs(blocks)) < 0.005
    slope = np.polyfit((truth["flat"] - 1)[good], rel[good], 1)[0]
    assert abs(slope) < 0.1
    unflat = preprocess(raw, bias, None, PARS, CAL).sci
    assert np.nanmax(np.abs(np.nanmean(np.where(good, unflat / np.median(unflat[good]) - 1, np.nan)
                                       .reshape(8, 32, 6, 32), axis=(1, 3)))) > 0.02


def test_calibration_errors(truth):
    rng = np.random.default_rng(4)
    with pytest.raises(ValueError, match="no calibration frames"):
        master_bias([], CAL)
    a = _biases(truth, 1, rng, n_cr=0)[0]
    small, _ = make_section(rng, ny=NY // 2, nx=NX, sky=0.0, n_stars=0, n_cr=0, bad_column=False,
                            saturated_star=False)
    with pytest.raises(ValueError, match=r"synth_001\.fits: ccd S1: bias frame shape"):
        master_bias([a, small], CAL)
    other = RawSection(**{**a.__dict__, "ccd": "S2"})
    with pytest.raises(ValueError, match="mix ccds S1 and S2"):
        master_bias([a, other], CAL)
    with pytest.raises(ValueError, match=r"synth_001\.fits: ccd S1: flat frame has median"):
        master_flat([a], master_bias([a], CAL), CAL)  # a bias is no flat


def test_master_files(tmp_path, truth):
    rng = np.random.default_rng(5)
    bias = master_bias(_biases(truth, 3, rng, n_cr=0), CAL)
    attrs = {"step": "calibration", "provenance_hash": "0123456789", "code_version": "1",
             "parameters": {"calibration.sigma_clip": 3.0}, "upstreams": {}, "project": "T", "obs": "SYNTH"}
    path = tmp_path / "SYNTH_bias_S1.fits"
    write_master(path, bias, attrs, "bias", "S1", n_frames=3)
    data, header = read_master(path, "bias")
    np.testing.assert_array_equal(data, bias)
    assert header["CCD"] == "S1" and header["NCOMBINE"] == 3
    assert read_provenance(header)["provenance_hash"] == "0123456789"
    with pytest.raises(FitsError, match=r"SYNTH_bias_S1\.fits: expected a master flat"):
        read_master(path, "flat")
    cut = tmp_path / "cut.fits"
    cut.write_bytes(path.read_bytes()[:-3000])
    with pytest.raises(FitsError, match="cut.fits"):
        read_master(cut)
    with pytest.raises(ValueError, match="bias or flat"):
        write_master(tmp_path / "x.fits", bias, attrs, "dark", "S1")
    assert not (tmp_path / "x.fits").exists()
    with fits.open(path) as hdul:
        assert hdul[0].data.dtype.kind == "f" and hdul[0].header["CALTYPE"] == "bias"
