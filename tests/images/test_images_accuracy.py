"""DemoCam accuracy bars of the image pipeline, checked against the simulation's truth table.

The real rule bodies (:mod:`vo.pipeline.images`: simulate, master bias/flat, preprocess,
extract, astrometry, zero point) run in a temporary data root on a small DemoCam config: one
1024x1024 CCD, the best- and worst-seeing exposures of six planned (0.9" and 1.8" FWHM at
0.5"/pix for the default seed; both with transients).  Then, per
exposure, against the truth (:func:`vo.images.instruments.democam.simulate.read_truth`):

* astrometry: the fitted WCS evaluated at the TRUE pixel positions of every star on the CCD
  vs the TRUE sky positions (the accuracy of the WCS itself: rms < 0.05"), and the solver's
  own ``ASTR_RMS`` (rms of its matched stars' residuals, as recorded: < 0.05"); reported and
  loosely bounded: the rms of the measured positions of clean stars (S/N >= 20,
  unsaturated, isolated) mapped through the fitted WCS vs their true sky positions (WCS
  error plus centroid noise);
* zero point within 0.01 mag of the true one;
* completeness: >= 95% of the resolvable stars with true S/N >= 10 have a source within 1 pix
  (S/N from the true flux and the image noise, ``flux / sqrt(flux + NEA (sky + rn^2))`` with
  the NEA of the true Moffat PSF).  "Resolvable": unsaturated, centre >= 3 pix from the
  edges (the EDGE flag covers 2), no flagged pixel within 1 FWHM, and no other source
  brighter than 10% of the star within 1.5 FWHM (an unresolved blend is one detection).
  The raw completeness of all unsaturated S/N >= 10 stars is reported and must be >= 90%;
* PSF fluxes unbiased to 1%: median of ``flux_psf / flux_true - 1`` over unflagged,
  unsaturated, isolated stars (no other source above 1% of its flux within 3 FWHM) with
  S/N >= 20.

Run with ``-s`` to see the figures (one line per exposure and bar).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.table import Table
import astropy.units as u
from scipy import ndimage
from scipy.spatial import cKDTree

from vo.pipeline import images as R

from democam import democam_config, make

CCD_SHAPE = [1024, 1024]
N_EXPOSURES = 6  # planned; the best- and worst-seeing ones of these are run
MATCH_RADIUS = 1.0  # pix


def demo_config(root, **democam) -> dict:
    """A small DemoCam config in data root ``root`` (1 CCD, 2 exposures, few calibrations)."""
    return democam_config(root, ccd_shape=CCD_SHAPE, n_exposures=N_EXPOSURES, **democam)


def extreme_seeing(cfg: dict) -> list[str]:
    """The best- and the worst-seeing planned exposures (only these are simulated)."""
    from vo.images.instruments.democam.plan import exposure_plan

    names = sorted(R.exposures(cfg), key=lambda e: exposure_plan(cfg, e)["fwhm"])
    return [names[0], names[-1]]


def run_pipeline(cfg: dict, exposures: list[str]) -> dict:
    """Run every rule body of the DemoCam chain; returns {exposure: (inputs, outputs)} of zero_point."""
    ccd = R.ccds(cfg)[0]
    make(cfg, "zero_point", exposures=exposures)
    return {exp: R.rule_io("zero_point", cfg, exp, ccd) for exp in exposures}


@dataclass
class Result:
    """Products of one exposure read back from their files, with its truth."""

    exposure: str
    truth: Table      # every truth source near this CCD (incl. just outside)
    ccd_truth: dict   # the CCD's row of truth.meta["ccds"]
    sources: Table
    sol: object       # WCSSolution read from the file
    zp: object        # ZeroPoint read from the file
    flags: np.ndarray
    beta: float
    read_noise: float


def load_result(cfg: dict, exposure: str, io: tuple[dict, dict]) -> Result:
    from vo.images.astrometry import read_wcs
    from vo.images.extract import read_sources
    from vo.images.image import read_image
    from vo.images.instruments.democam.simulate import read_truth
    from vo.images.photometry.zeropoint import read_zp
    from vo.paths import Paths

    inputs, outputs = io
    ccd = R.ccds(cfg)[0]
    truth = read_truth(Paths(cfg).raw_truth(R.instrument_key(cfg), exposure))
    rows = truth.meta["ccds"]
    row = rows[rows["ccd"] == ccd][0]
    return Result(exposure=exposure, truth=truth[truth["ccd"] == ccd],
                  ccd_truth={k: row[k] for k in rows.colnames}, sources=read_sources(inputs["sources"]),
                  sol=read_wcs(inputs["wcs"]), zp=read_zp(outputs["zp"]),
                  flags=read_image(inputs["image"]).flags, beta=cfg["DemoCam"]["moffat_beta"],
                  read_noise=float(np.mean([row["read_noise_a"], row["read_noise_b"]])))


# -- measures -------------------------------------------------------------------------------
def true_snr(r: Result) -> np.ndarray:
    """Expected S/N of each truth source: flux / sqrt(flux + NEA (sky + rn^2)), NEA of the true PSF."""
    from vo.images.instruments.democam.render import moffat_neff

    nea = moffat_neff(np.asarray(r.truth["fwhm"]), r.beta)
    flux = np.asarray(r.truth["flux"], float)
    return flux / np.sqrt(flux + nea * (r.ccd_truth["sky"] + r.read_noise ** 2))


def nearest_source(r: Result) -> tuple[np.ndarray, np.ndarray]:
    """(distance (pix), index) of the nearest extracted source of every truth source."""
    return cKDTree(np.c_[r.sources["x"], r.sources["y"]]).query(np.c_[r.truth["x"], r.truth["y"]])


def neighbour_free(r: Result, radius: float, ratio: float) -> np.ndarray:
    """True where no other truth source brighter than ``ratio`` x the source lies within ``radius`` pix."""
    xy = np.c_[r.truth["x"], r.truth["y"]]
    flux = np.asarray(r.truth["flux"], float)
    i, j = cKDTree(xy).query_pairs(radius, output_type="ndarray").T
    bad = np.zeros(len(xy), bool)
    bad[i[flux[j] > ratio * flux[i]]] = True
    bad[j[flux[i] > ratio * flux[j]]] = True
    return ~bad


def is_star(r: Result) -> np.ndarray:
    return np.isin(np.asarray(r.truth["kind"]), ["star", "variable"]) & np.asarray(r.truth["inside"], bool)


def astrometry_measures(r: Result) -> dict:
    """rms (arcsec) of the fitted WCS at true pixel positions, and of matched stars' measured positions."""
    star = is_star(r)
    t = r.truth[star]
    true = SkyCoord(t["ra"] * u.deg, t["dec"] * u.deg)
    wcs_err = r.sol.wcs.pixel_to_world(t["x"], t["y"]).separation(true).arcsec
    d, j = nearest_source(r)
    fwhm = r.ccd_truth["fwhm_pix"]
    clean = (d < MATCH_RADIUS) & (true_snr(r) >= 20) & ~np.asarray(r.truth["saturated"], bool) \
        & neighbour_free(r, 3 * fwhm, 0.01) & (np.asarray(r.sources["flags"])[j] == 0)
    clean = clean[star]
    meas = r.sol.wcs.pixel_to_world(r.sources["x"][j[star][clean]], r.sources["y"][j[star][clean]])
    star_err = meas.separation(true[clean]).arcsec
    return {"wcs_rms": float(np.sqrt(np.mean(wcs_err ** 2))), "wcs_max": float(wcs_err.max()),
            "n_wcs": int(star.sum()), "matched_rms": float(np.sqrt(np.mean(star_err ** 2))),
            "n_matched": int(clean.sum()), "solver_rms": float(r.sol.rms_arcsec),
            "solver_n": int(r.sol.n_stars)}


def completeness_measures(r: Result) -> dict:
    """Fractions of S/N >= 10 stars with a source within 1 pix (all unsaturated; resolvable)."""
    ny, nx = r.flags.shape
    fwhm = r.ccd_truth["fwhm_pix"]
    d, _ = nearest_source(r)
    found = d < MATCH_RADIUS
    x, y = np.asarray(r.truth["x"]), np.asarray(r.truth["y"])
    base = is_star(r) & (true_snr(r) >= 10) & ~np.asarray(r.truth["saturated"], bool)
    away = (x >= 3) & (x <= nx - 4) & (y >= 3) & (y <= ny - 4)
    near_flag = ndimage.maximum_filter(r.flags != 0, size=2 * int(np.ceil(fwhm)) + 1)
    ix, iy = np.clip(np.rint(x).astype(int), 0, nx - 1), np.clip(np.rint(y).astype(int), 0, ny - 1)
    resolvable = base & away & ~near_flag[iy, ix] & neighbour_free(r, 1.5 * fwhm, 0.1)
    return {"all": float(found[base].mean()), "n_all": int(base.sum()),
            "missed_all": int((base & ~found).sum()),
            "resolvable": float(found[resolvable].mean()), "n_resolvable": int(resolvable.sum()),
            "missed_resolvable": int((resolvable & ~found).sum()),
            "blended_missed": int((base & away & ~neighbour_free(r, 1.5 * fwhm, 0.1) & ~found).sum()),
            "edge_missed": int((base & ~away & ~found).sum())}


def flux_measures(r: Result) -> dict:
    """Median fractional PSF-flux bias of clean isolated stars with S/N >= 20 (and >= 100)."""
    d, j = nearest_source(r)
    snr = true_snr(r)
    clean = is_star(r) & (d < MATCH_RADIUS) & (snr >= 20) & ~np.asarray(r.truth["saturated"], bool) \
        & neighbour_free(r, 3 * r.ccd_truth["fwhm_pix"], 0.01) & (np.asarray(r.sources["flags"])[j] == 0)
    ratio = np.asarray(r.sources["flux_psf"])[j] / np.asarray(r.truth["flux"]) - 1
    bright = clean & (snr >= 100)
    return {"bias": float(np.median(ratio[clean])), "n": int(clean.sum()),
            "bias_bright": float(np.median(ratio[bright])), "n_bright": int(bright.sum())}


# -- the tests ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def results(tmp_path_factory) -> list[Result]:
    mp = pytest.MonkeyPatch()
    mp.delenv("VO_DATA", raising=False)  # the config's data_root must win
    try:
        cfg = demo_config(tmp_path_factory.mktemp("images_accuracy"))
        ios = run_pipeline(cfg, extreme_seeing(cfg))
        return [load_result(cfg, exp, io) for exp, io in ios.items()]
    finally:
        mp.undo()


def test_two_seeings(results):
    """The exposures differ in seeing, so the bars hold for more than one PSF."""
    fwhm = [r.ccd_truth["fwhm_pix"] for r in results]
    assert fwhm[1] - fwhm[0] > 1.0, fwhm
    assert all(r.sol.ok and r.zp.ok for r in results), [(r.sol.reason, r.zp.reason) for r in results]


def test_astrometric_rms(results):
    for r in results:
        m = astrometry_measures(r)
        print(f"\n{r.exposure}: fitted WCS at true positions rms {m['wcs_rms']:.4f}\" (max "
              f"{m['wcs_max']:.4f}\", {m['n_wcs']} stars); matched stars' measured positions rms "
              f"{m['matched_rms']:.4f}\" ({m['n_matched']}); solver ASTR_RMS {m['solver_rms']:.4f}\" "
              f"({m['solver_n']})")
        assert m["n_wcs"] > 300 and m["n_matched"] > 100, m
        assert m["wcs_rms"] < 0.05, m  # the bar: accuracy of the fitted WCS
        assert m["solver_rms"] < 0.05, m  # the rms the pipeline records (ASTR_RMS)
        # matched_rms adds the centroid noise of S/N >= 20 stars (0.01-0.047" over seeds 1-7,
        # growing with the FWHM): reported, not a WCS property, so only bounded loosely
        assert m["matched_rms"] < 0.1, m


def test_zero_point(results):
    for r in results:
        dzp = r.zp.zp - r.ccd_truth["zp"]
        print(f"\n{r.exposure}: zp {r.zp.zp:.4f} +- {r.zp.zp_err:.4f}, true {r.ccd_truth['zp']:.4f}, "
              f"diff {dzp:+.4f} mag ({r.zp.n_stars} stars)")
        assert r.zp.ok and r.zp.n_stars >= 50, r.zp
        assert abs(dzp) < 0.01


def test_completeness(results):
    for r in results:
        c = completeness_measures(r)
        print(f"\n{r.exposure}: S/N>=10 extracted: resolvable {c['resolvable']:.4f} of "
              f"{c['n_resolvable']} ({c['missed_resolvable']} missed); all unsaturated "
              f"{c['all']:.4f} of {c['n_all']} ({c['missed_all']} missed: {c['blended_missed']} "
              f"blends within 1.5 FWHM, {c['edge_missed']} at the edges)")
        assert c["n_resolvable"] > 300, c
        assert c["resolvable"] >= 0.95, c
        assert c["all"] >= 0.90, c


def test_psf_flux_unbiased(results):
    for r in results:
        f = flux_measures(r)
        print(f"\n{r.exposure}: PSF flux bias median {f['bias']:+.4f} ({f['n']} stars S/N>=20), "
              f"{f['bias_bright']:+.4f} ({f['n_bright']} stars S/N>=100)")
        assert f["n"] > 100 and f["n_bright"] > 30, f
        assert abs(f["bias"]) < 0.01, f
        assert abs(f["bias_bright"]) < 0.01, f
