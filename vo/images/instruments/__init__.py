"""Cameras: sections (CCDs), header keywords and reading raw exposures (DemoCam, DECam), and any
camera's calibrated images (calibrated)."""

from __future__ import annotations

from vo.images.instruments.base import Instrument, RawSection, parse_section

__all__ = ["get_instrument", "Instrument", "RawSection", "parse_section", "INSTRUMENTS"]

INSTRUMENTS = ("DemoCam", "DECam", "calibrated")


def get_instrument(name: str, cfg: dict) -> Instrument:
    """The instrument ``name`` (``"DemoCam"``, ``"DECam"``, ``"calibrated"``: any camera's calibrated
    images, :mod:`vo.images.instruments.calibrated`; case-insensitive) for config ``cfg``."""
    key = str(name).lower()
    if key == "democam":
        from vo.images.instruments.democam import DemoCam
        return DemoCam(cfg)
    if key == "decam":
        from vo.images.instruments.decam import DECam
        return DECam(cfg)
    if key == "calibrated":
        from vo.images.instruments.calibrated import Calibrated
        return Calibrated(cfg)
    raise KeyError(f"unknown instrument {name!r}; known: {', '.join(INSTRUMENTS)}")
