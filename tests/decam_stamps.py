"""The six real DECam i-band stamps of one field (tests/data/decam/, from sfft's test data) as
:class:`~vo.images.image.Image` objects in e-, read as any calibrated FITS image is
(:func:`vo.images.calibrate.calibrated.read_calibrated`: the header's GAIN and SATURATE, noise
from the sky RMS plus the sources' Poisson noise, saturation and cosmic rays flagged)."""

from __future__ import annotations

import pytest

from testdata import DATA
from vo.images.calibrate.calibrated import read_calibrated
from vo.images.image import Image

STAMPS = ["DEC-OBS04a", "DEC-OBS04b", "DEC-OBS04e", "DEC-OBS18a", "DEC-OBS18b", "DEC-OBS18e"]


def load_stamp(name: str, folder=None) -> Image:
    """A DECam stamp as an Image in e-."""
    path = (folder or DATA / "decam") / f"{name}.mini.fits"
    if not path.exists():
        pytest.fail(f"{path} missing (copy of ../shared/data/real/decam_stamps/{path.name})")
    return read_calibrated(path)
