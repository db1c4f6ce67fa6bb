"""Spatially varying PSFs (issue 12): a DemoCam-rendered 4096x2048 CCD whose PSF FWHM grows by 30%
from the centre to the corners (the simulator's ``r^2`` law), reference 3.0 pix at the centre and
deeper, new image 3.3 pix (and the reverse: the new image sharper, so Alard-Lupton convolves it).

Both images are extracted (spatially varying PSF models), subtracted by ZOGY (per tile, each
with its PSFs: :mod:`vo.images.subtract.tiles`) and Alard-Lupton (spatially varying kernel),
and searched; fakes (point sources of the new image's true PSF at sub-pixel positions, S/N ~170,
away from stars) in each corner and at the centre must come back with median flux near the truth
per region (one kernel from the CCD centre gave 0.81-0.87 in the corners; now both within 1%), and
the chi^2 of DIFF / ERROR on the sky must be 0.9-1.1 in every quadrant. Run with ``-s`` for the figures.
"""

from __future__ import annotations

import numpy as np
import pytest
from astropy.wcs import WCS
from scipy import ndimage
from scipy.spatial import cKDTree

from vo.images.detect import detect_candidates
from vo.images.extract import extract
from vo.images.image import Image
from vo.images.instruments.democam.render import render_point_sources
from vo.images.subtract import subtract

SHAPE = (4096, 2048)
VARIATION = 0.3
FAKE_FLUX = 30000.0  # e-: S/N ~170 on a 300 e- sky at FWHM 3.3 pix
REGIONS = {"centre": (0.5, 0.5), "lower left": (0.13, 0.065), "lower right": (0.87, 0.065),
           "upper left": (0.13, 0.935), "upper right": (0.87, 0.935)}


def fwhm_at(x, y, f0):
    """The simulator's law: FWHM(r) = f0 (1 + VARIATION r^2), r = distance from the centre / to a corner."""
    ny, nx = SHAPE
    r2 = ((x - (nx - 1) / 2) ** 2 + (y - (ny - 1) / 2) ** 2) / (((nx - 1) / 2) ** 2 + ((ny - 1) / 2) ** 2)
    return f0 * (1 + VARIATION * r2)


def render(stars, f0, sky, seed, fakes=None) -> Image:
    rng = np.random.default_rng(seed)
    x, y, flux = stars
    img = render_point_sources(SHAPE, x, y, flux, fwhm_at(x, y, f0), 3.0)
    if fakes is not None:
        img += render_point_sources(SHAPE, fakes[0], fakes[1], np.full(len(fakes[0]), FAKE_FLUX),
                                    fwhm_at(fakes[0], fakes[1], f0), 3.0)
    sci = (rng.poisson(img + sky) - sky + rng.normal(0, 5.0, SHAPE)).astype(np.float32)
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval, w.wcs.crpix = [10.0, 0.0], [SHAPE[1] / 2, SHAPE[0] / 2]
    w.wcs.cd = [[-0.26 / 3600, 0], [0, 0.26 / 3600]]
    header = w.to_header()
    header["SATURATE"] = 1e7
    weight = (1 / (sky + 25.0 + np.maximum(img, 0))).astype(np.float32)
    return Image(sci=sci, weight=weight, flags=np.zeros(SHAPE, np.uint16), header=header)


@pytest.fixture(scope="module", params=[(3.0, 3.3), (3.3, 3.0)], ids=["new-broader", "new-sharper"])
def scene(request):
    f_ref, f_new = request.param
    rng = np.random.default_rng(0)
    ny, nx = SHAPE
    n = 2000
    stars = (rng.uniform(5, nx - 5, n), rng.uniform(5, ny - 5, n), 10 ** rng.uniform(3, 5.5, n))
    fx, fy, lab = [], [], []
    for name, (u, v) in REGIONS.items():
        g = np.arange(-3, 4) * 64.0  # one fake per 64-pix background mesh: denser biases the sky
        gx, gy = np.meshgrid(u * nx + g, v * ny + g)
        fx.append(gx.ravel() + rng.uniform(-0.5, 0.5, gx.size))
        fy.append(gy.ravel() + rng.uniform(-0.5, 0.5, gy.size))
        lab += [name] * gx.size
    fx, fy, lab = np.concatenate(fx), np.concatenate(fy), np.array(lab)
    far = cKDTree(np.c_[stars[0], stars[1]]).query(np.c_[fx, fy])[0] > 20
    fakes = (fx[far], fy[far], lab[far])
    ref = render(stars, f_ref, 80.0, 1)
    new = render(stars, f_new, 300.0, 2, fakes)
    return {"stars": stars, "fakes": fakes, "ref": ref, "new": new, "ex_ref": extract(ref), "f_new": f_new,
            "ex_new": extract(new), "name": request.node.callspec.id if hasattr(request.node, "callspec") else ""}


@pytest.mark.parametrize("method", ["zogy", "alard_lupton"])
def test_fluxes_and_noise_across_the_ccd(scene, method):
    s = scene
    d = subtract(s["new"], s["ref"], s["ex_new"].psf, s["ex_ref"].psf, 25.0, 25.0, {"method": method},
                 method=method)
    cands = detect_candidates(d, new_psf=s["ex_new"].psf)
    pos = cands[~cands["is_negative"]]
    fx, fy, lab = s["fakes"]
    dist, i = cKDTree(np.c_[pos["x"], pos["y"]]).query(np.c_[fx, fy])
    assert np.all(dist < 1.0), "a fake not found"
    ratio = np.asarray(pos["flux"])[i] / FAKE_FLUX
    ny, nx = SHAPE
    occupied = np.zeros(SHAPE, bool)
    for x, y in ((s["stars"][0], s["stars"][1]), (fx, fy)):
        occupied[np.clip(np.rint(y).astype(int), 0, ny - 1), np.clip(np.rint(x).astype(int), 0, nx - 1)] = True
    sky = ~ndimage.binary_dilation(occupied, iterations=12) & (d.flags == 0)
    print(f"\n{method}: PSF models order {s['ex_new'].psf.order}/{s['ex_ref'].psf.order}, FWHM centre "
          f"{s['ex_new'].psf.fwhm():.2f}, tiles {d.meta.get('tiles')}")
    tx, ty = np.asarray(pos["x"])[i], np.asarray(pos["y"])[i]
    model_err = s["ex_new"].psf.fwhm(tx, ty) / fwhm_at(tx, ty, s["f_new"]) - 1
    meds = {}
    for name in REGIONS:
        sel = lab == name
        meds[name] = float(np.median(ratio[sel]))
        print(f"  {name}: {sel.sum()} fakes, median flux ratio {meds[name]:.4f}; PSF model FWHM error there "
              f"{np.median(model_err[sel]):+.4f}")
    # issue 12's bar, 1% for both (one kernel from the CCD centre: 13-19%). Alard-Lupton read
    # 0.988-1.013 while its background terms were fitted on the star stamps alone (a -2.6 e-/pix
    # pedestal over the whole difference); with the residual background fitted on the sky,
    # 0.994-1.005 (ZOGY 0.994-1.009)
    bound = 0.01
    assert all(abs(m - 1) < bound for m in meds.values()), meds
    # the measurements step fits each candidate with its own PSF too (LocalPSF); the central
    # difference PSF alone reads the corners off by several per cent
    from vo.images.detect.cutouts import make_cutouts
    from vo.images.detect.measure import measure_features
    from vo.images.subtract.tiles import LocalPSF

    found = pos[i]
    cut = make_cutouts(found, s["new"], s["ref"], d)
    local = measure_features(cut, found, LocalPSF(d, s["ex_new"].psf), None)
    central = measure_features(cut, found, d.psf, None)
    for name in REGIONS:
        sel = lab == name
        m_local = float(np.median(np.asarray(local["flux_psf"])[sel] / FAKE_FLUX))
        m_central = float(np.median(np.asarray(central["flux_psf"])[sel] / FAKE_FLUX))
        print(f"  {name}: measurements' PSF flux ratio {m_local:.4f} (central PSF only: {m_central:.4f})")
        assert abs(m_local - 1) < bound, (name, m_local)
    for qy in (slice(0, ny // 2), slice(ny // 2, ny)):
        for qx in (slice(0, nx // 2), slice(nx // 2, nx)):
            m = sky[qy, qx]
            chi2 = float(np.mean((d.diff[qy, qx][m] / d.diff_err[qy, qx][m]) ** 2))
            print(f"  quadrant y {qy.start}-{qy.stop} x {qx.start}-{qx.stop}: chi2 {chi2:.3f} on {m.sum()} sky pixels")
            assert 0.9 <= chi2 <= 1.1
