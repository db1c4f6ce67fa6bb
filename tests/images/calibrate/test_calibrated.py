"""Calibrated FITS images from any telescope (vo.images.calibrate.calibrated.read_calibrated): the
real DECam stamps and small synthetic files for each convention and each error."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from testdata import DATA
from vo.images import flags as pixflags
from vo.images.calibrate.calibrated import CalibratedImageError, read_calibrated

STAMP = DATA / "decam" / "DEC-OBS18a.mini.fits"


def _wcs_header(shape=(64, 64)) -> fits.Header:
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [150.0, 2.0]
    w.wcs.crpix = [shape[1] / 2, shape[0] / 2]
    w.wcs.cd = [[-0.27 / 3600, 0], [0, 0.27 / 3600]]
    return w.to_header()


def _file(tmp_path, data, name="img.fits", wcs=True, extra=None, hdus=()):
    h = _wcs_header(data.shape) if wcs else fits.Header()
    h.update(extra or {})
    path = tmp_path / name
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(data, header=h, name="IMG"), *hdus]).writeto(path)
    return path


def test_real_decam_stamp_in_electrons():
    im = read_calibrated(STAMP)
    raw = fits.getdata(STAMP)
    gain = fits.getheader(STAMP)["GAIN"]
    np.testing.assert_allclose(im.sci, (raw * gain).astype(np.float32), rtol=1e-6)
    assert im.header["BUNIT"] == "electron" and im.header["SATURATE"] == pytest.approx(
        fits.getheader(STAMP)["SATURATE"] * gain)
    good = im.flags == 0
    assert good.mean() > 0.95 and np.all(im.weight[good] > 0) and np.all(im.weight[~good] == 0)
    # the noise model: sky pixels' scatter matches 1/sqrt(weight) (pull std ~1)
    rng_sky = np.abs(im.sci - np.median(im.sci)) < 3 * np.median(1 / np.sqrt(im.weight[good]))
    pull = (im.sci - np.median(im.sci))[good & rng_sky] * np.sqrt(im.weight[good & rng_sky])
    assert 0.85 < 1.4826 * np.median(np.abs(pull)) < 1.15
    assert im.wcs.has_celestial


def test_conventions_weight_mask_and_units(tmp_path):
    rng = np.random.default_rng(1)
    data = rng.normal(100, 5, (64, 64)).astype(np.float32)
    data[10, 10] = np.nan
    ivar = np.full(data.shape, 1 / 25.0, np.float32)
    mask = np.zeros(data.shape, np.int16)
    mask[20, 20], mask[30, 30], mask[40, 40] = 1, 4, 8
    path = _file(tmp_path, data, extra={"BUNIT": "electrons", "SATLEVEL": 130.0, "FILTNAM": "r"},
                 hdus=[fits.ImageHDU(ivar, name="WHT"), fits.ImageHDU(mask, name="DQ")])
    im = read_calibrated(path, weight="WHT", mask="DQ", mask_bits={4: "saturated"}, cosmic_rays=False)
    assert im.header["FILTER"] == "r" and im.header["SATURATE"] == 130.0   # gain 1: electrons
    assert im.flags[10, 10] & pixflags.NAN and im.weight[10, 10] == 0
    assert im.flags[20, 20] == pixflags.BAD and im.flags[30, 30] == pixflags.SATURATED
    assert im.flags[40, 40] == pixflags.BAD
    ok = im.flags == 0
    np.testing.assert_allclose(im.weight[ok], 1 / 25.0)
    # a gain given by value converts ADU and scales the inverse variance
    im2 = read_calibrated(path, weight="WHT", gain=2.0, cosmic_rays=False)
    np.testing.assert_allclose(im2.sci[ok], 2 * data[ok], rtol=1e-6)
    np.testing.assert_allclose(im2.weight[ok], 1 / 100.0, rtol=1e-6)
    # keywords mapped in the config
    p3 = _file(tmp_path, data, "k.fits", extra={"MYGAIN": 3.0})
    assert read_calibrated(p3, keywords={"gain": "MYGAIN"}, cosmic_rays=False).sci[0, 0] == \
        pytest.approx(3 * data[0, 0])


def test_errors_name_the_file_and_key(tmp_path):
    data = np.ones((32, 32), np.float32)
    with pytest.raises(CalibratedImageError, match=r"adu\.fits: no gain keyword \(tried GAIN, EGAIN"):
        read_calibrated(_file(tmp_path, data, "adu.fits"))
    with pytest.raises(CalibratedImageError, match="nowcs.fits: no celestial WCS"):
        read_calibrated(_file(tmp_path, data, "nowcs.fits", wcs=False, extra={"GAIN": 1.0}))
    with pytest.raises(CalibratedImageError, match="g0.fits: gain must be > 0"):
        read_calibrated(_file(tmp_path, data, "g0.fits", extra={"GAIN": 0.0}))
    with pytest.raises(CalibratedImageError, match=r"w.fits: no weight HDU 'WHT'"):
        read_calibrated(_file(tmp_path, data, "w.fits", extra={"GAIN": 1.0}), weight="WHT")
    with pytest.raises(CalibratedImageError, match="m.fits.*mask_bits maps 2 to unknown flag 'HOT'"):
        read_calibrated(_file(tmp_path, data, "m.fits", extra={"GAIN": 1.0},
                              hdus=[fits.ImageHDU(np.zeros((32, 32), np.int16), name="DQ")]),
                        mask="DQ", mask_bits={2: "HOT"})
    with pytest.raises(CalibratedImageError, match="missing.fits: no such file"):
        read_calibrated(tmp_path / "missing.fits")
    bad = tmp_path / "text.fits"
    bad.write_text("not fits")
    with pytest.raises(CalibratedImageError, match="text.fits: not a readable FITS"):
        read_calibrated(bad)
