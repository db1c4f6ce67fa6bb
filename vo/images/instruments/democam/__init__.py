"""DemoCam, the simulated camera (see :mod:`vo.images.instruments.democam.simulate` for what its data contain)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vo.images.instruments.base import Instrument, ReferencePlan, Slices
from vo.images.instruments.democam import plan


class DemoCam(Instrument):
    """The simulated multi-CCD camera configured by the ``DemoCam`` config section.

    Exposure names, filters and calibration frames follow from the config alone (no file is
    read), so a workflow can plan the simulation before any raw file exists.
    """

    name = plan.INSTRUMENT
    simulated = True
    keywords = {**Instrument.keywords, "section": ("EXTNAME", "CCDNAME")}

    def __init__(self, cfg: dict):
        super().__init__(cfg)
        self.pars = cfg["DemoCam"]
        self.pixel_scale = float(self.pars["pixel_scale"])
        self.filters = tuple(self.pars["filters"])
        self.default_gain = float(np.mean(self.pars["gain"]))
        self.default_read_noise = float(self.pars["read_noise"])

    def section_names(self) -> list[str]:
        return plan.ccd_names(self.cfg)

    def exposure_names(self, cfg: dict) -> list[str]:
        """``images.exposures`` or every simulated science exposure (``dc_f00_r_000``, ...)."""
        return list(cfg["images"].get("exposures") or plan.science_exposure_names(cfg))

    def calibration_names(self, cfg: dict) -> dict:
        return plan.calibration_names(cfg)

    def reference_plan(self, cfg: dict, exposures: list[str]) -> ReferencePlan:
        """The first ``DemoCam.reference_epochs`` exposures of each field and filter build its
        reference (when there are ``references.min_images``); the later ones are new."""
        n_ref = cfg["DemoCam"]["reference_epochs"]
        parsed = {e: plan.parse_exposure(cfg, e) for e in exposures}
        sets: dict[tuple[str, str], list[str]] = {}
        for e, (field, filt, index) in parsed.items():
            if index < n_ref:
                sets.setdefault((f"f{field:02d}", filt), []).append(e)
        sets = {k: v for k, v in sets.items() if len(v) >= cfg["references"]["min_images"]}
        later = [e for e, (_, _, index) in parsed.items() if index >= n_ref]
        new = {e: (f"f{parsed[e][0]:02d}", parsed[e][1]) for e in later}
        return ReferencePlan(sets, {e: k for e, k in new.items() if k in sets},
                             [e for e, k in new.items() if k not in sets])

    def catalog_fetcher(self):
        """Tiles of the simulated Gaia-like catalog (offline)."""
        from vo.images.astrometry.excerpts import TableFetcher

        return TableFetcher(lambda: plan.gaia_catalog(self.cfg), name="DemoCam simulated catalog")

    def raw_path(self, paths, exposure: str) -> Path:
        """``.fits.fz`` when ``DemoCam.compress`` is set, else ``.fits``."""
        return paths.raw_exposure(self.name, exposure, suffix=".fits.fz" if self.pars["compress"] else ".fits")

    def exposure_filter(self, paths, exposure: str) -> str:
        """Filter from the exposure name (no file needed)."""
        return plan.exposure_filter(self.cfg, exposure)

    def bad_pixel_mask(self, ccd: str, datasec: Slices) -> np.ndarray | None:
        """The simulated bad columns (True = bad) over the data region."""
        mask = plan.bad_pixel_mask(self.cfg, ccd)
        ny, nx = datasec[0].stop - datasec[0].start, datasec[1].stop - datasec[1].start
        if mask.shape != (ny, nx):
            raise ValueError(f"DemoCam {ccd}: data region {nx}x{ny} does not match DemoCam.ccd_shape "
                             f"{list(self.pars['ccd_shape'])} (file simulated with another config?)")
        return mask
