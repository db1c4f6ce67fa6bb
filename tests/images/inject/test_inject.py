"""Fake injection (vo.images.inject): flux, position, Poisson noise and weights of the fakes
against the injection truth; recovery by the real extraction step (efficiency and flux bias vs
magnitude); the efficiency table; files and errors."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from vo import config as vconfig
from vo.images import flags as pixflags
from vo.images import inject as I
from vo.images.extract import extract
from vo.images.image import Image
from vo.images.extract.psf import PSFModel
from vo.io.fits import FitsError

FWHM, BETA = 3.0, 3.0
SKY, RN = 200.0, 5.0
ZP = 28.0
BAD_COL = 37


def moffat_psf(shape, fwhm=FWHM, beta=BETA) -> PSFModel:
    alpha = fwhm / (2 * np.sqrt(2 ** (1 / beta) - 1))
    return PSFModel.constant(1 / alpha ** 2, 0.0, 1 / alpha ** 2, beta, shape, subsample=3)


def make_image(shape=(400, 400), seed=0) -> Image:
    """Sky-subtracted noise image (e-) with a TAN WCS and a flagged bad column."""
    rng = np.random.default_rng(seed)
    ny, nx = shape
    sci = (rng.poisson(SKY, shape) - SKY + rng.normal(0, RN, shape)).astype(np.float32)
    weight = np.full(shape, 1 / (SKY + RN ** 2), np.float32)
    flags = np.zeros(shape, pixflags.DTYPE)
    flags[:, BAD_COL] = pixflags.BAD
    weight[:, BAD_COL] = 0
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [150.0, 2.0]
    w.wcs.crpix = [nx / 2, ny / 2]
    w.wcs.cdelt = [-0.5 / 3600, 0.5 / 3600]
    header = w.to_header()
    header["EXPOSURE"], header["CCD"], header["SATURATE"] = "dc_f00_r_003", "C01", 60000.0
    return Image(sci=sci, weight=weight, flags=flags, header=header)


def test_fakes_have_the_psf_flux_and_poisson_noise():
    image = make_image()
    psf = moffat_psf(image.shape)
    n = 120
    mags = I.draw_magnitudes(n, (16.5, 19.5), seed=5)
    new, truth = I.inject_fakes(image, psf, ZP, n, mags, seed=11, pars={"stamp_size": 25})
    assert len(truth) == n and np.all(truth["mag"] == mags)
    np.testing.assert_allclose(truth["flux"], 10 ** (-0.4 * (mags - ZP)))
    # positions: inside the margin, on unflagged pixels, apart from each other
    x, y = np.asarray(truth["x"]), np.asarray(truth["y"])
    assert x.min() >= 20 and x.max() <= 379 and y.min() >= 20 and y.max() <= 379
    assert np.all(image.flags[np.rint(y).astype(int), np.rint(x).astype(int)] == 0)
    d2 = (x[:, None] - x[None]) ** 2 + (y[:, None] - y[None]) ** 2
    assert np.sqrt(d2[~np.eye(n, dtype=bool)].min()) >= 15
    # sky positions from the image WCS
    ra, dec = image.wcs.all_pix2world(x, y, 0)
    np.testing.assert_allclose(truth["ra"], ra)
    # what was added, fake by fake (the fakes do not overlap: 15 pix apart, 25 pix stamps
    # overlap at most in their far wings, which the model below includes)
    ix, iy, p = psf.render(x, y, 12)
    lam = np.zeros(image.shape)
    np.add.at(lam, (iy, ix), truth["flux"][:, None, None] * p)
    added = new.sci.astype(np.float64) - image.sci
    d = added[iy, ix]
    L = lam[iy, ix]
    flux = np.asarray(truth["flux"])
    # unweighted linear PSF fit of each fake's amplitude (other fakes' wings subtracted)
    others = L - flux[:, None, None] * p
    amp = ((d - others) * p).sum(axis=(1, 2)) / (p ** 2).sum(axis=(1, 2))
    amp_sigma = np.sqrt(flux * (p ** 3).sum(axis=(1, 2))) / (p ** 2).sum(axis=(1, 2))
    pull = (amp - flux) / amp_sigma
    print(f"\namplitude pulls: mean {pull.mean():.3f} std {pull.std():.3f}")
    assert abs(pull.mean()) < 4 / np.sqrt(n) and 0.8 < pull.std() < 1.2
    # first moments of the added counts at the true sub-pixel positions
    own = d - others
    cx = (own * ix).sum(axis=(1, 2)) / own.sum(axis=(1, 2))
    assert np.median(np.abs(cx - x)) < 0.05
    # Poisson noise: pixel pulls of the added counts about the expectation
    sel = lam > 20
    r = (added[sel] - lam[sel]) / np.sqrt(lam[sel])
    print(f"pixel pulls: mean {r.mean():.4f} std {r.std():.4f} ({sel.sum()} pixels)")
    assert abs(r.mean()) < 0.02 and abs(r.std() - 1) < 0.02
    # nothing added outside the stamps; weights: variance grows by the expected counts
    assert np.all(added[lam == 0] == 0)
    good = image.weight > 0
    np.testing.assert_allclose(1 / new.weight[good], 1 / image.weight[good] + lam[good], rtol=1e-5)
    assert np.all(new.weight[~good] == 0) and np.all(new.flags[:, BAD_COL] & pixflags.BAD)
    # expected S/N: the optimal PSF S/N with the new variances
    w_new = new.weight.astype(np.float64)[iy, ix]  # 0 on the bad column: no information there
    np.testing.assert_allclose(truth["snr"], flux * np.sqrt((p ** 2 * w_new).sum(axis=(1, 2))), rtol=1e-4)
    # deterministic from the seed; the input image is left alone
    again, t2 = I.inject_fakes(image, psf, ZP, n, mags, seed=11, pars={"stamp_size": 25})
    np.testing.assert_array_equal(again.sci, new.sci)
    other, t3 = I.inject_fakes(image, psf, ZP, n, mags, seed=12, pars={"stamp_size": 25})
    assert not np.array_equal(t3["x"], truth["x"])
    assert np.all(image.sci == make_image().sci)


def test_saturated_fakes_are_flagged():
    image = make_image((120, 120))
    psf = moffat_psf(image.shape)
    new, truth = I.inject_fakes(image, psf, ZP, 1, np.array([13.0]), seed=1,
                                positions=(np.array([60.3]), np.array([59.8])))
    assert truth["flux"][0] * 0.1 > 60000  # the central pixel alone exceeds SATURATE
    hit = (new.flags & pixflags.SATURATED) != 0
    assert hit[60, 60] and np.all(new.weight[hit] == 0)
    assert np.all(new.sci[hit] >= 60000)


def test_efficiency_and_flux_bias_through_extraction():
    """Fakes from 4 mag above to 1 mag below the 5-sigma limit, recovered by the real
    extraction step: efficiency ~1 at S/N >= 10, low at S/N < 3, PSF fluxes unbiased."""
    image = make_image((600, 600), seed=3)
    psf = moffat_psf(image.shape)
    nea = 1 / (psf.evaluate(300.0, 300.0, 41) ** 2).sum()
    limflux = 5 * np.sqrt(nea * (SKY + RN ** 2))  # background-limited 5-sigma flux
    limmag = ZP - 2.5 * np.log10(limflux)
    n = 300
    mags = I.draw_magnitudes(n, (-4.0, 1.0), seed=2, limmag=limmag)
    new, truth = I.inject_fakes(image, psf, ZP, n, mags, seed=4, pars={"min_separation": 20.0})
    ex = extract(new, vconfig.load_config()["extraction"])
    src = ex.sources
    eff = I.efficiency_table(truth, src, radius=1.5, bin_width=0.5, flux_column="flux_psf")
    eff.pprint(max_width=200)
    assert eff["n_injected"].sum() == n
    bright = eff["median_snr"] >= 10
    faint = eff["median_snr"] < 3
    assert bright.sum() >= 3 and faint.sum() >= 1
    assert eff["n_detected"][bright].sum() >= 0.95 * eff["n_injected"][bright].sum()
    assert np.all(eff["efficiency"][faint] < 0.5)
    # monotonic within errors from bright to faint
    e = np.asarray(eff["efficiency"])
    assert np.all(np.diff(e) < 3 * np.asarray(eff["efficiency_err"])[1:] + 1e-9)
    # PSF fluxes of the extraction step vs the injected fluxes: within 2% for S/N >= 50, 4%
    # for S/N >= 20 (the extraction's own PSF fit sits 1-3% low here: its fitted Moffat beta is
    # 3.1 for the true 3.0, which the zero point's aperture correction absorbs in the pipeline)
    snr = np.asarray(eff["median_snr"])
    assert np.all(np.abs(eff["flux_bias"][snr >= 50]) < 0.02), eff["flux_bias"][snr >= 50]
    assert np.all(np.abs(eff["flux_bias"][snr >= 20]) < 0.04), eff["flux_bias"][snr >= 20]


def test_efficiency_table_counts_and_matching():
    truth = Table({"x": [10.0, 50.0, 90.0, 130.0, 170.0], "y": [10.0] * 5,
                   "mag": [18.1, 18.2, 18.7, 19.3, 19.4], "flux": [1000.0] * 5})
    det = Table({"x": [10.5, 50.0, 51.0, 131.9, 300.0], "y": [10.0, 11.0, 10.0, 10.0, 10.0],
                 "flux": [1100.0, 900.0, 1000.0, 950.0, 5.0]})
    idx, dist = I.match_fakes(truth, det, radius=1.5)
    # fake 1: two detections within 1.5 pix (1.0 and 1.0 away): one is taken; fake 3 at 1.9: none
    assert list(idx[[0, 2, 3, 4]]) == [0, -1, -1, -1] and idx[1] in (1, 2)
    eff = I.efficiency_table(truth, det, radius=1.5, bin_width=0.5)
    assert list(eff["mag_lo"]) == [18.0, 18.5, 19.0]
    assert list(eff["n_injected"]) == [2, 1, 2] and list(eff["n_detected"]) == [2, 0, 0]
    assert eff["efficiency"][0] == 1 and eff["efficiency"][2] == 0
    assert np.isnan(eff["flux_bias"][1])
    assert eff["flux_bias"][0] == pytest.approx(np.median([0.1, det["flux"][idx[1]] / 1000 - 1]))
    # one-to-one: a single detection between two fakes counts once
    two = Table({"x": [0.0, 2.0], "y": [0.0, 0.0], "mag": [20.0, 20.0], "flux": [1.0, 1.0]})
    one = Table({"x": [1.0], "y": [0.0], "flux": [1.0]})
    assert I.efficiency_table(two, one, radius=1.5)["n_detected"].sum() == 1
    empty = I.efficiency_table(truth, det[:0], radius=1.5)
    assert empty["n_detected"].sum() == 0 and np.all(np.isnan(empty["flux_bias"]))


def test_combined_efficiency_equals_one_table_of_all_fakes(tmp_path):
    """Two CCDs' tables (different magnitude ranges, so different bins) combined give the counts
    and efficiencies of one table made from all their fakes together, the 50% magnitude, a plot."""
    rng = np.random.default_rng(8)
    n = 400
    mag = rng.uniform(18, 23, n)
    truth = Table({"x": np.arange(n) * 10.0, "y": np.zeros(n), "mag": mag, "flux": 10 ** (-0.4 * (mag - 30))})
    found = rng.random(n) < 1 / (1 + np.exp((mag - 21.3) / 0.3))  # 50% at 21.3
    det = Table({"x": truth["x"][found], "y": truth["y"][found], "flux": truth["flux"][found] * 1.01})
    first = truth["mag"] < 20.6
    parts = [I.efficiency_table(truth[sel], det, radius=1.0, bin_width=0.5, flux_column="flux")
             for sel in (first, ~first)]
    assert parts[0]["mag_lo"][-1] == parts[1]["mag_lo"][0]  # a shared bin, counted from both
    comb = I.combine_efficiency(parts)
    whole = I.efficiency_table(truth, det, radius=1.0, bin_width=0.5, flux_column="flux")
    assert list(comb["mag_lo"]) == list(whole["mag_lo"])
    assert list(comb["n_injected"]) == list(whole["n_injected"]) and list(comb["n_detected"]) == list(whole["n_detected"])
    np.testing.assert_allclose(comb["efficiency"], whole["efficiency"])
    np.testing.assert_allclose(comb["efficiency_err"], whole["efficiency_err"])
    ok = np.isfinite(comb["flux_bias"])
    np.testing.assert_allclose(comb["flux_bias"][ok], 0.01, atol=1e-9)
    assert comb.meta["MAG50"] == pytest.approx(21.3, abs=0.25) and comb.meta["N_FAKES"] == n
    I.write_efficiency(tmp_path / "s.fits", comb)
    back = I.read_efficiency(tmp_path / "s.fits")
    assert back.meta["MAG50"] == pytest.approx(comb.meta["MAG50"]) and list(back["n_detected"]) == list(comb["n_detected"])
    I.plot_efficiency(tmp_path / "s.png", comb)
    assert (tmp_path / "s.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # every CCD skipped: an empty summary that is still written, read back and plotted
    empty = I.combine_efficiency([])
    assert len(empty) == 0 and empty.meta["N_FAKES"] == 0 and np.isnan(empty.meta["MAG50"])
    I.write_efficiency(tmp_path / "e.fits", empty)
    assert len(I.read_efficiency(tmp_path / "e.fits")) == 0 and np.isnan(I.read_efficiency(tmp_path / "e.fits").meta["MAG50"])
    I.plot_efficiency(tmp_path / "e.png", empty, "no efficiency: every CCD image skipped")


def test_files_and_errors(tmp_path):
    image = make_image((150, 150))
    psf = moffat_psf(image.shape)
    new, truth = I.inject_fakes(image, psf, ZP, 5, (18.0, 19.0), seed=0)
    attrs = {"step": "injection", "provenance_hash": "feedc0ffee"}
    I.write_fakes(tmp_path / "f.fits", truth, attrs)
    back = I.read_fakes(tmp_path / "f.fits")
    np.testing.assert_array_equal(back["x"], truth["x"])
    assert back.meta["ZP"] == ZP and fits.getheader(tmp_path / "f.fits")["VO_HASH"] == "feedc0ffee"
    eff = I.efficiency_table(truth, Table({"x": truth["x"], "y": truth["y"], "flux": truth["flux"]}), 1.0)
    I.write_efficiency(tmp_path / "e.fits", eff, attrs)
    np.testing.assert_array_equal(I.read_efficiency(tmp_path / "e.fits")["efficiency"], eff["efficiency"])
    with pytest.raises(FitsError, match="nothere.fits"):
        I.read_fakes(tmp_path / "nothere.fits")
    with pytest.raises(FitsError, match="FAKES"):
        I.read_fakes(tmp_path / "e.fits")
    with pytest.raises(I.InjectionError, match="dc_f00_r_003/C01.*3 finite"):
        I.inject_fakes(image, psf, ZP, 3, np.array([18.0, 19.0]), seed=0)
    with pytest.raises(I.InjectionError, match="room for only"):
        I.inject_fakes(image, psf, ZP, 200, (18.0, 19.0), seed=0)
    with pytest.raises(I.InjectionError, match="stamp_size"):
        I.inject_fakes(image, psf, ZP, 2, (18.0, 19.0), seed=0, pars={"stamp_size": 10})
    with pytest.raises(I.InjectionError, match="zero point"):
        I.inject_fakes(image, psf, float("nan"), 2, (18.0, 19.0), seed=0)
    assert not list(tmp_path.glob(".*tmp*"))


def test_config_defaults_match_module():
    inj = vconfig.load_config()["injection"]
    for key, value in I.DEFAULT_PARS.items():
        assert inj[key] == value, key
