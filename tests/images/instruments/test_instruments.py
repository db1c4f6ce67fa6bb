"""Instrument base: FITS sections, header merging, reading sections and clear errors."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from vo import config as vconfig
from vo.images.instruments import get_instrument, parse_section
from vo.images.instruments.base import Instrument, format_section, merge_headers, raw_name
from vo.io.fits import FitsError


def cfg_for(tmp_path, **images):
    return vconfig.load_config(overrides={"project": {"data_root": str(tmp_path)},
                                          "images": {"instrument": "DECam", **images}})


def raw_file(path, sections=("N4", "S7"), obstype="object", filt="r DECam SDSS c0002 6415.0 1480.0",
             compressed=False):
    """A small raw-like DECam file: two amplifiers with overscan on either side."""
    primary = fits.PrimaryHDU()
    primary.header.update({"OBSTYPE": obstype, "FILTER": filt, "MJD-OBS": 58000.25, "EXPTIME": 90.0,
                           "RA": "21:07:20.5", "DEC": "-65:57:58.2", "AIRMASS": 1.2})
    hdus = [primary]
    for i, name in enumerate(sections):
        data = np.full((20, 28), 1000 + i, dtype=np.uint16)
        data[:, 4:14] += 50   # amp A data
        data[:, 14:24] += 80  # amp B data
        h = fits.Header({"EXTNAME": name, "DETPOS": name, "DATASEC": "[5:24,1:20]",
                         "DATASECA": "[5:14,1:20]", "BIASSECA": "[1:4,1:20]",
                         "DATASECB": "[15:24,1:20]", "BIASSECB": "[25:28,1:20]",
                         "GAINA": 4.0, "GAINB": 4.2, "RDNOISEA": 6.0, "RDNOISEB": 6.5,
                         "SATURATA": 45000.0, "SATURATB": 42000.0})
        hdus.append(fits.CompImageHDU(data, header=h) if compressed else fits.ImageHDU(data, header=h))
    fits.HDUList(hdus).writeto(path, overwrite=True)
    return path


def test_parse_section():
    assert parse_section("[33:544,1:1024]") == (slice(0, 1024), slice(32, 544))
    assert parse_section("[10:1,5:6]") == (slice(4, 6), slice(0, 10))  # reversed range
    assert format_section(parse_section("[3:7,2:9]")) == "[3:7,2:9]"
    with pytest.raises(ValueError, match="BIASSECA"):
        parse_section("[1:4 1:20]", "BIASSECA")
    with pytest.raises(ValueError, match="1-based"):
        parse_section("[0:4,1:20]")


def test_get_instrument(tmp_path):
    cfg = cfg_for(tmp_path)
    assert get_instrument("decam", cfg).name == "DECam"
    assert get_instrument("DemoCam", cfg).name == "DemoCam"
    with pytest.raises(KeyError, match="HSC"):
        get_instrument("HSC", cfg)


def test_merge_headers_and_names():
    p = fits.Header({"FILTER": "g", "EXPTIME": 30.0, "NAXIS": 0})
    e = fits.Header({"EXTNAME": "C01", "EXPTIME": 31.0})
    m = merge_headers(p, e)
    assert m["FILTER"] == "g" and m["EXPTIME"] == 31.0 and m["EXTNAME"] == "C01"
    assert raw_name("/a/b/c4d_1.fits.fz") == "c4d_1" and raw_name("x.fits") == "x"


@pytest.mark.parametrize("compressed", [False, True])
def test_read_section_geometry(tmp_path, compressed):
    path = raw_file(tmp_path / ("raw.fits.fz" if compressed else "raw.fits"), compressed=compressed)
    inst = get_instrument("DECam", cfg_for(tmp_path))
    sec = inst.read_section(path, "S7")
    assert sec.data.dtype == np.float32 and sec.data.shape == (20, 28)
    assert sec.datasec == (slice(0, 20), slice(4, 24))
    assert sec.overscans == [((slice(0, 20), slice(4, 14)), (slice(0, 20), slice(0, 4))),
                             ((slice(0, 20), slice(14, 24)), (slice(0, 20), slice(24, 28)))]
    assert sec.gain == [4.0, 4.2] and sec.read_noise == [6.0, 6.5] and sec.saturation == 42000.0
    # overscan subtraction with these slices leaves the per-amp signal
    (da, oa), (db, ob) = sec.overscans
    assert np.all(sec.data[da] - np.median(sec.data[oa]) == 50)
    assert np.all(sec.data[db] - np.median(sec.data[ob]) == 80)
    gmap = sec.amp_values(sec.gain)
    assert gmap.shape == (20, 20) and np.all(gmap[:, :10] == 4.0) and np.all(gmap[:, 10:] == 4.2)
    assert sec.header["FILTER"].startswith("r DECam")  # inherited from the primary header
    info = inst.read_exposure_header(path)
    assert info["filter"] == "r" and info["exptime"] == 90.0 and info["mjd"] == 58000.25
    assert info["ra"] == pytest.approx((21 + 7 / 60 + 20.5 / 3600) * 15)
    assert info["dec"] == pytest.approx(-(65 + 57 / 60 + 58.2 / 3600))


def test_missing_section_names_file_and_section(tmp_path):
    path = raw_file(tmp_path / "raw.fits")
    inst = get_instrument("DECam", cfg_for(tmp_path))
    with pytest.raises(FitsError) as err:
        inst.read_section(path, "N31")
    assert str(path) in str(err.value) and "N31" in str(err.value) and "S7" in str(err.value)


def test_truncated_and_missing_files(tmp_path):
    path = raw_file(tmp_path / "raw.fits")
    blob = path.read_bytes()
    cut = tmp_path / "cut.fits"
    cut.write_bytes(blob[: len(blob) - 2880 - 1000])
    inst = get_instrument("DECam", cfg_for(tmp_path))
    for call in (lambda: inst.read_section(cut, "S7"), lambda: inst.read_exposure_header(cut)):
        with pytest.raises(FitsError, match="cut.fits"):
            call()
    junk = tmp_path / "junk.fits"
    junk.write_bytes(b"not a fits file at all" * 200)
    with pytest.raises(FitsError, match="junk.fits"):
        inst.read_section(junk, "S7")
    with pytest.raises(FitsError, match="nope.fits: file not found"):
        inst.read_section(tmp_path / "nope.fits", "S7")
    bad = tmp_path / "badsec.fits"
    raw_file(bad)
    with fits.open(bad, mode="update") as hdul:
        hdul[1].header["BIASSECA"] = "[1:4,1:99]"
    with pytest.raises(FitsError, match="outside"):
        inst.read_section(bad, "N4")


def test_raw_folder_scan(tmp_path):
    cfg = cfg_for(tmp_path)
    folder = tmp_path / "DECAM" / "raw"
    folder.mkdir(parents=True)
    raw_file(folder / "c4d_bias1.fits", obstype="zero")
    raw_file(folder / "c4d_flat1.fits.fz", obstype="dome flat", compressed=True)
    raw_file(folder / "c4d_obj1.fits")
    raw_file(folder / "c4d_obj2.fits.fz", compressed=True)
    inst = get_instrument("DECam", cfg)
    assert inst.exposure_names(cfg) == ["c4d_obj1", "c4d_obj2"]
    assert inst.calibration_names(cfg) == {"bias": ["c4d_bias1"], "flat": {"r": ["c4d_flat1"]}}
    from vo.paths import Paths
    assert inst.raw_path(Paths(cfg), "c4d_obj2").name == "c4d_obj2.fits.fz"
    assert inst.raw_path(Paths(cfg), "c4d_obj1").name == "c4d_obj1.fits"
    assert inst.exposure_filter(Paths(cfg), "c4d_obj2") == "r"
    listed = cfg_for(tmp_path, exposures=["c4d_obj2"], bias_exposures=["b"], flat_exposures={"g": ["f"]})
    assert inst.exposure_names(listed) == ["c4d_obj2"]
    assert inst.calibration_names(listed) == {"bias": ["b"], "flat": {"g": ["f"]}}


def test_kind_and_filter_parsing():
    assert Instrument.exposure_kind("zero") == "bias" and Instrument.exposure_kind("DOME FLAT") == "flat"
    assert Instrument.exposure_kind(None) == "object"
    assert Instrument().parse_filter("i DECam SDSS c0003 7835.0 1470.0") == "i"


def test_no_science_exposure_is_an_error_naming_the_folder(tmp_path):
    """A DECam config whose raw folder is missing, empty or holds only calibrations plans nothing:
    an error naming the folder and what was found, not zero image jobs without a word."""
    cfg = cfg_for(tmp_path)
    inst = get_instrument("DECam", cfg)
    folder = tmp_path / "DECAM" / "raw"
    with pytest.raises(ValueError, match=r"no science exposure in the raw folder .*DECAM/raw \(the folder does not exist\)"):
        inst.exposure_names(cfg)
    folder.mkdir(parents=True)
    with pytest.raises(ValueError, match=r"no \.fits/\.fits\.fz file\); put the raw files there or list them in images.exposures"):
        inst.exposure_names(cfg)
    raw_file(folder / "c4d_bias1.fits", obstype="zero")
    with pytest.raises(ValueError, match=r"1 raw files, none an object exposure \(kinds: \['bias'\]\)"):
        inst.exposure_names(cfg)
