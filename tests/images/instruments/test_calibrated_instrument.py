"""vo.images.instruments.calibrated: any camera's calibrated FITS files as a workflow instrument
(here the Legacy Surveys' real DECam InstCal cutouts of testcase6, tests/data/legacypipe_cp/)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from astropy.io import fits

from testdata import DATA
from vo import config as vconfig
from vo.images.instruments import get_instrument
from vo.images.instruments.calibrated import SINGLE
from vo.io.fits import FitsError
from vo.pipeline.plan import build_plan

TC6 = DATA / "legacypipe_cp" / "testcase6"
OOI = str(TC6 / "images" / "**" / "*_ooi_*.fits.gz")


def config(tmp_path, **calibrated) -> dict:
    return vconfig.load_config(overrides={
        "project": {"data_root": str(tmp_path), "obs_names": []},
        "images": {"enabled": True, "instrument": "calibrated"},
        "calibrated": {"files": [OOI], **calibrated},
        "references": {"select": "before", "before": "2018-12-01", "min_images": 1}})


def test_files_sections_and_images_read_as_they_are(tmp_path):
    inst = get_instrument("calibrated", config(tmp_path))
    assert len(inst.files) == 6 and all("_ooi_" in p.name for p in inst.files.values())  # companions are not exposures
    assert inst.section_names() == [SINGLE]  # cutouts of two CCDs: one section each
    name = "c4d_181214_050844_ooi_g_ls9.S9"
    info = inst.read_exposure_header(inst.files[name])
    assert info["filter"] == "g" and info["mjd"] == pytest.approx(58466.2144, abs=1e-3)
    image = inst.read_image(inst.files[name], SINGLE, name)
    h = image.header
    assert (h["FILTER"], h["EXPOSURE"], h["CCD"], h["DETPOS"]) == ("g", name, SINGLE, "S9")
    assert h["INSTRUME"] == "calibrated" and h["CAMERA"] == "DECam"  # the camera picks the photometric system
    assert h["INSTCAL"].startswith("oow yes, ood yes") and image.sci.dtype == np.float32
    rows = inst.image_rows(inst.cfg, [name], [SINGLE])
    assert len(rows) == 1 and rows[0]["corners"].shape == (4, 2) and rows[0]["seeing"] == pytest.approx(6.25, abs=0.01)


def test_the_plan_pairs_images_by_sky_and_filter_not_by_ccd(tmp_path):
    plan = build_plan(config(tmp_path))
    news = plan.new_exposures()
    assert sorted(news) == sorted(e for e in plan.exposures if e.endswith(".S9"))  # 2018-12 epochs
    for e, (patch, filt) in news.items():
        (ref,) = plan.reference_images(e, SINGLE)
        assert ref[0].endswith(".S4") and plan.filters[ref[0]] == filt == plan.filters[e]
        assert patch == "p00"
    assert plan.bias == [] and plan.flats == {}


def test_bad_file_collections_name_the_files(tmp_path):
    raw = tmp_path / "CALIBRATED" / "raw"
    (raw / "a").mkdir(parents=True)
    (raw / "b").mkdir()
    src = next(TC6.glob("images/**/*_ooi_g_*.fits.gz"))
    shutil.copy(src, raw / "a" / "x.fits.gz")
    shutil.copy(src, raw / "b" / "x.fits.gz")
    with pytest.raises(FitsError, match=r"two files give exposure 'x'"):
        get_instrument("calibrated", config(tmp_path, files=["*/x.fits.gz"])).exposure_names(config(tmp_path))
    with pytest.raises(FitsError, match=r"no FITS file matches"):
        cfg = config(tmp_path, files=["nothing/*.fits"])
        get_instrument("calibrated", cfg).exposure_names(cfg)
    # a two-CCD file among single-image files
    with fits.open(src) as hdul:
        two = fits.HDUList([hdul[0].copy(), hdul[1].copy(), hdul[1].copy()])
    two[2].header["EXTNAME"] = two[2].header["DETPOS"] = "S10"
    two.writeto(raw / "b" / "y.fits")
    with pytest.raises(FitsError, match=r"image sections .* differ"):
        get_instrument("calibrated", config(tmp_path, files=["a/x.fits.gz", "b/y.fits"])).section_names()
