"""DemoCam, the simulated camera (see :mod:`vo.images.instruments.democam.simulate` for what its data contain)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vo.images.instruments.base import Instrument, Slices
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

    def image_rows(self, cfg: dict, exposures: list[str], ccds: list[str]) -> list[dict]:
        """Footprints, times, seeing (arcsec) and 5-sigma depth (mag) of the planned exposures'
        CCDs, from the plan and the WCS its raw headers will carry (no file is read)."""
        from astropy.wcs import WCS
        from vo.sky import corners

        fp = plan.focal_plane(cfg)
        geometry = {g.name: g for g in fp.ccds}
        scale = float(self.pars["pixel_scale"])
        rows = []
        for exposure in exposures:
            x = plan.exposure_plan(cfg, exposure)
            sigma_pix = x["fwhm"] / scale / 2.3548
            depth = x["zp"] - 2.5 * np.log10(5.0 * np.sqrt(4.0 * np.pi * sigma_pix ** 2 * x["sky"]))
            for ccd in ccds:
                g = geometry[ccd]
                wcs = WCS(plan.ccd_wcs_header(cfg, fp, g, x["header_ra"], x["header_dec"], x["header_rotation"]))
                rows.append({"exposure": exposure, "ccd": ccd, "filter": x["filter"], "mjd": x["mjd"],
                             "seeing": x["fwhm"], "depth": float(depth), "corners": corners(wcs, g.nx, g.ny),
                             "shape": (g.ny, g.nx)})
        return rows

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
