"""DECam: section names, header parsing and reading real DECam stamps (TPV WCS kept)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning

from vo import config as vconfig
from vo.images.instruments import get_instrument
from vo.images.instruments.decam import BAD_SECTIONS, ccdnum
from vo.io.fits import FitsError
from testdata import DATA as TEST_DATA

DATA = TEST_DATA / "decam"
STAMPS = sorted(DATA.glob("DEC-OBS*.mini.fits"))


@pytest.fixture
def decam(tmp_path):
    cfg = vconfig.load_config(overrides={"project": {"data_root": str(tmp_path)},
                                         "images": {"instrument": "DECam"}})
    return get_instrument("DECam", cfg)


def wcs_of(header):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        return WCS(header)


def test_section_names(decam):
    names = decam.section_names()
    assert len(names) == 62 and len(set(names)) == 62
    assert set(names) == {f"S{i}" for i in range(1, 32)} | {f"N{i}" for i in range(1, 32)}
    assert {"S7", "N30", "S30", "N31"} <= set(names) and set(BAD_SECTIONS) <= set(names)
    assert ccdnum("S29") == 1 and ccdnum("N31") == 62
    with pytest.raises(KeyError, match="FS1"):
        ccdnum("FS1")  # focus CCD, not a science CCD


def test_stamps_present():
    assert len(STAMPS) >= 2, "tests/data/decam/ stamps missing"


@pytest.mark.parametrize("path", STAMPS, ids=lambda p: p.name)
def test_header_parsing_real_stamps(decam, path):
    h = fits.getheader(path)
    info = decam.read_exposure_header(path)
    assert info["filter"] == "i"  # from 'i DECam SDSS c0003 7835.0 1470.0'
    assert info["exptime"] == 330.0 and info["mjd"] == pytest.approx(h["MJD-OBS"])
    assert info["airmass"] == h["AIRMASS"]
    assert info["ra"] == pytest.approx(h["RA_EXP"]) and info["dec"] == pytest.approx(h["DEC_EXP"])
    assert info["kind"] == "object" and info["exposure"] == path.name[:-5]
    assert ccdnum(h["DETPOS"].strip()) == h["CCDNUM"]  # our numbering is DECam's


@pytest.mark.parametrize("path", STAMPS, ids=lambda p: p.name)
def test_read_real_stamp(decam, path):
    h = fits.getheader(path)
    sec = decam.read_section(path, "N6")
    assert sec.ccd == "N6" and sec.data.dtype == np.float32 and sec.data.shape == (256, 256)
    np.testing.assert_allclose(sec.data, fits.getdata(path).astype(np.float32))
    assert sec.datasec == (slice(0, 256), slice(0, 256)) and sec.overscans == []
    assert sec.gain == pytest.approx(h["GAIN"]) and sec.read_noise == pytest.approx(h["RDNOISE"])
    assert sec.saturation == pytest.approx(h["SATURATE"])
    assert sec.bad_pixel_mask is None
    assert sec.amp_values(sec.gain).shape == (256, 256)
    with pytest.raises(FitsError, match="S5"):
        decam.read_section(path, "S5")


@pytest.mark.parametrize("path", STAMPS, ids=lambda p: p.name)
def test_tpv_wcs_preserved(decam, path):
    sec = decam.read_section(path, "N6")
    original, ours = wcs_of(fits.getheader(path)), wcs_of(sec.header)
    yy, xx = np.mgrid[0:256:15, 0:256:15]
    a = SkyCoord(*original.all_pix2world(xx.ravel(), yy.ravel(), 0), unit="deg")
    b = SkyCoord(*ours.all_pix2world(xx.ravel(), yy.ravel(), 0), unit="deg")
    assert a.separation(b).arcsec.max() < 1e-3
    # the TPV terms matter here: dropping them moves the sky position by far more than 1 mas
    plain = sec.header.copy()
    for key in [k for k in plain if k.startswith("PV")]:
        del plain[key]
    c = SkyCoord(*wcs_of(plain).all_pix2world(xx.ravel(), yy.ravel(), 0), unit="deg")
    assert a.separation(c).arcsec.max() > 1.0


def test_compressed_raw_layout_from_real_stamp(decam, tmp_path):
    """A DECam-style raw file (primary + DETPOS extensions with two amplifiers and overscan),
    fpack-compressed, built around a real stamp: geometry and keywords parse per amplifier."""
    stamp = fits.getdata(STAMPS[0]).astype(np.float32)
    h0 = fits.getheader(STAMPS[0])
    rng = np.random.default_rng(1)
    raw = np.empty((256, 256 + 2 * 16), dtype=np.float32)
    raw[:, 16:272] = stamp / 4.0 + 1500.0
    raw[:, :16] = 1500.0 + rng.normal(0, 2.0, (256, 16))
    raw[:, 272:] = 1500.0 + rng.normal(0, 2.0, (256, 16))
    raw = np.clip(np.rint(raw), 0, 65535).astype(np.uint16)
    primary = fits.PrimaryHDU()
    for key in ("FILTER", "EXPTIME", "MJD-OBS", "DATE-OBS", "AIRMASS"):
        primary.header[key] = h0[key]
    primary.header["RA"], primary.header["DEC"] = "21:07:20.79", "-65:57:58.2"
    primary.header["OBSTYPE"] = "object"
    ext = fits.Header({"DETPOS": "N6", "EXTNAME": "N6", "CCDNUM": 37,
                       "DATASECB": "[17:144,1:256]", "BIASSECB": "[1:16,1:256]",
                       "DATASECA": "[145:272,1:256]", "BIASSECA": "[273:288,1:256]",
                       "GAINA": h0["GAINA"], "GAINB": h0["GAINB"], "RDNOISEA": h0["RDNOISEA"],
                       "RDNOISEB": h0["RDNOISEB"], "SATURATA": h0["SATURATA"], "SATURATB": h0["SATURATB"]})
    path = tmp_path / "c4d_test.fits.fz"
    fits.HDUList([primary, fits.CompImageHDU(raw, header=ext)]).writeto(path)
    sec = decam.read_section(path, "N6")
    np.testing.assert_array_equal(sec.data, raw.astype(np.float32))
    assert sec.datasec == (slice(0, 256), slice(16, 272))
    assert sec.gain == pytest.approx([h0["GAINA"], h0["GAINB"]])
    assert sec.read_noise == pytest.approx([h0["RDNOISEA"], h0["RDNOISEB"]])
    assert sec.saturation == pytest.approx(min(h0["SATURATA"], h0["SATURATB"]))
    (da, oa), (db, ob) = sec.overscans
    assert da[1] == slice(144, 272) and oa[1] == slice(272, 288) and ob[1] == slice(0, 16)
    info = decam.read_exposure_header(path)
    assert info["filter"] == "i" and info["exposure"] == "c4d_test"
    assert info["ra"] == pytest.approx(316.836625, abs=1e-3)
