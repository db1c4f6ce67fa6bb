"""Real data, issue 12's bar: the reference is the coadd of DEC-OBS04a/b/e and each DEC-OBS18
is subtracted from it with :func:`vo.images.pair.subtract_images` (registration by the
stars: the two series are offset by ~0.5 pix although their headers agree; flux ratio from the
stars; coadd on the new grid; ZOGY).

* reduced chi^2 of DIFF / ERROR over pure-sky pixels (unflagged, > 3 FWHM from every source)
  within 0.9-1.1;
* unflagged 5-sigma candidates on the sky at most 2x the Gaussian expectation (or its Poisson
  99% bound, when that is larger: the expectation is ~0.01 on a 256x256 stamp);
* 50+ fakes (the new image's PSF model at sub-pixel positions, Poisson noise added, S/N 10-50,
  > 3 FWHM from every source) recovered >= 95% (a positive candidate within 1.5 pix) with
  median detected / injected flux within 0.98-1.02.

Run with ``-s`` for the figures.
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest
from scipy import stats
from scipy.spatial import cKDTree

from decam_stamps import load_stamp
from test_subtract_decam import count_peaks, n_independent, sky_mask
from vo.images.image import Image
from vo.images.pair import subtract_images

NEW = ["DEC-OBS18a", "DEC-OBS18b", "DEC-OBS18e"]
REFS = ["DEC-OBS04a", "DEC-OBS04b", "DEC-OBS04e"]
METHODS = ["zogy", "alard_lupton"]
ROUNDS = 5  # of 20 fakes: the median of 100 is good to ~0.6% (per-fake scatter ~5%)


@pytest.fixture(scope="module")
def refs():
    return [load_stamp(n) for n in REFS]


@pytest.fixture(scope="module", params=[(n, m) for n in NEW for m in METHODS], ids=lambda p: f"{p[0]}-{p[1]}")
def result(request, refs):
    name, method = request.param
    new = load_stamp(name)
    return name, method, new, subtract_images(new, refs, method=method)


def test_coadd_reference_noise_and_false_candidates(result):
    name, method, new, r = result
    d = r.difference
    fwhm = max(d.meta["fwhm_new"], d.meta["fwhm_ref"])
    sky = sky_mask(d, [r.new.sources, r.reference_sources], fwhm)
    assert sky.sum() > 10_000
    chi2 = float(np.mean((d.diff[sky] / d.diff_err[sky]) ** 2))
    exp5 = n_independent(d, sky) * 2 * stats.norm.sf(5)
    n5 = count_peaks(d.score_corr, sky, 5)
    unflagged = r.candidates[r.candidates["flags"] == 0]
    print(f"\n{name} - coadd(04a,b,e) {method}: offsets "
          f"{[tuple(round(v, 2) for v in i['offset']) for i in r.meta['references']]} pix, flux ratios "
          f"{[round(i['flux_ratio'], 3) for i in r.meta['references']]}; sky chi2 {chi2:.3f}; 5-sigma on "
          f"sky {n5} (expected {exp5:.2g}); unflagged candidates anywhere {len(unflagged)}")
    assert 0.9 <= chi2 <= 1.1
    assert n5 <= max(2 * exp5, stats.poisson.ppf(0.99, exp5))
    assert all(abs(i["offset"][0]) < 1 and abs(i["offset"][1]) < 1 for i in r.meta["references"])


def _fake_positions(new_src, shape, fwhm, n, rng, margin):
    src = np.concatenate([np.c_[s["x"], s["y"]] for s in new_src])
    out = []
    for _ in range(20000):
        p = rng.uniform(margin, np.array(shape[::-1]) - margin)
        if np.all(np.hypot(*(src - p).T) > 3 * fwhm) and all(np.hypot(*(p - q)) > 4 * fwhm for q in out):
            out.append(p)
            if len(out) == n:
                break
    return np.array(out)


def _inject(image: Image, psf, xy, flux, rng) -> Image:
    ix, iy, st = psf.render(xy[:, 0], xy[:, 1], int(np.ceil(5 * psf.fwhm())))
    inside = (ix >= 0) & (ix < image.shape[1]) & (iy >= 0) & (iy < image.shape[0])
    add = np.zeros(image.shape)
    np.add.at(add, (iy[inside], ix[inside]), (flux[:, None, None] * st)[inside])
    sci = image.sci + (add + rng.normal(size=add.shape) * np.sqrt(add)).astype(np.float32)
    var = np.where(image.weight > 0, 1 / np.maximum(image.weight, 1e-30), 0) + add
    weight = np.where(image.weight > 0, 1 / np.maximum(var, 1e-30), 0).astype(np.float32)
    return Image(sci=sci, weight=weight, flags=image.flags, header=image.header)


def test_fakes_recovered_with_unbiased_flux(result, refs):
    name, method, new, r = result
    psf, rms = r.new.psf, float(r.new.background.globalrms)
    fwhm = psf.fwhm()
    nea = 1 / np.sum(psf.evaluate(128.0, 128.0, 41) ** 2)
    rng = np.random.default_rng(zlib.crc32(f"{name} {method}".encode()))  # not hash(): salted per process
    truth, found = [], []
    for _ in range(ROUNDS):              # rounds of ~20 fakes, each > 4 FWHM from the others
        xy = _fake_positions([r.new.sources, r.reference_sources], new.shape, fwhm, 20, rng, margin=int(4 * fwhm))
        snr = rng.uniform(10, 50, len(xy))
        flux = snr ** 2 / 2 * (1 + np.sqrt(1 + 4 * nea * rms ** 2 / snr ** 2))  # S/N = f / sqrt(f + NEA rms^2)
        fr = subtract_images(_inject(new, psf, xy, flux, rng), refs, method=method)
        c = fr.candidates[~fr.candidates["is_negative"]]
        d, i = cKDTree(np.c_[c["x"], c["y"]]).query(xy)
        truth.append(np.c_[xy, flux, snr])
        found.append(np.c_[d, np.asarray(c["flux"])[np.minimum(i, len(c) - 1)]])
    truth, found = np.concatenate(truth), np.concatenate(found)
    hit = found[:, 0] < 1.5
    ratio = found[hit, 1] / truth[hit, 2]
    print(f"\n{name} {method}: {len(truth)} fakes S/N 10-50: recovered {hit.mean():.3f}; median "
          f"flux ratio {np.median(ratio):.4f} (16-84%: {np.percentile(ratio, 16):.3f}-"
          f"{np.percentile(ratio, 84):.3f}); missed S/N {np.round(truth[~hit, 3], 1)}")
    assert len(truth) >= 50
    assert hit.mean() >= 0.95
    assert 0.98 <= np.median(ratio) <= 1.02
