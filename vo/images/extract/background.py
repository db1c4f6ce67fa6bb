"""Sky background and its RMS with sep (SExtractor's algorithm), and their FITS file."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import sep
from astropy.io import fits

from vo.io.fits import FitsError, open_fits, write_fits


@dataclass
class Background:
    """Background map and its RMS.

    Attributes
    ----------
    bg, rms : 2-D float32 arrays
        Sky level and its per-pixel noise (e-), bicubic-spline interpolated between meshes.
    globalback, globalrms : float
        Mesh medians of the background and of its RMS (e-).
    mesh, filter_size : int
        Mesh size (pix) and median-filter size (meshes) used.
    """

    bg: np.ndarray
    rms: np.ndarray
    globalback: float
    globalrms: float
    mesh: int = 64
    filter_size: int = 3


def measure_background(sci: np.ndarray, mask: np.ndarray | None, mesh: int = 64,
                       filter_size: int = 3) -> Background:
    """SExtractor background (sigma-clipped mode per ``mesh`` x ``mesh`` box, median filtered
    over ``filter_size`` boxes, bicubic spline) of ``sci`` (e-), ignoring pixels where ``mask``.

    Defaults are SExtractor's (BACK_SIZE 64, BACK_FILTERSIZE 3).
    """
    data = np.ascontiguousarray(sci, dtype=np.float32)
    if mask is not None:
        mask = np.ascontiguousarray(mask, dtype=bool)
        if mask.any():
            data = np.where(mask, np.float32(0), data)  # masked values (maybe NaN) never reach sep
    b = _sep_background(data, mask, mesh, filter_size)
    return Background(bg=b.back(dtype=np.float32), rms=b.rms(dtype=np.float32),
                      globalback=float(b.globalback), globalrms=float(b.globalrms),
                      mesh=int(mesh), filter_size=int(filter_size))


def subtract_background(data: np.ndarray, mask: np.ndarray | None, mesh: int = 64,
                        filter_size: int = 3) -> None:
    """Subtract the :func:`measure_background` sky map of ``data`` (e-) from ``data`` itself, in place,
    without building the map or the RMS (sep's ``subfrom``: the same values as ``data -= bg``).

    ``data``: C-contiguous float32 array whose pixels under ``mask`` are finite (e.g. set to 0).
    """
    if data.dtype != np.float32 or not data.flags.c_contiguous:
        raise ValueError(f"subtract_background needs a C-contiguous float32 array, got {data.dtype} "
                         f"(C-contiguous: {data.flags.c_contiguous})")
    if mask is not None:
        mask = np.ascontiguousarray(mask, dtype=bool)
    _sep_background(data, mask, mesh, filter_size).subfrom(data)


def _sep_background(data: np.ndarray, mask: np.ndarray | None, mesh: int, filter_size: int) -> sep.Background:
    return sep.Background(data, mask=mask, bw=int(mesh), bh=int(mesh), fw=int(filter_size),
                          fh=int(filter_size))


def write_background(path: str | os.PathLike, bkg: Background, attrs: dict | None = None) -> None:
    """Write HDUs BACKGROUND and RMS (float32, e-) atomically, with provenance."""
    primary = fits.PrimaryHDU()
    h = primary.header
    h["BACKGND"] = (bkg.globalback, "global background (e-)")
    h["BKG_RMS"] = (bkg.globalrms, "global background RMS (e-)")
    h["BACKSIZE"] = (bkg.mesh, "background mesh size (pix)")
    h["BACKFILT"] = (bkg.filter_size, "background median filter size (meshes)")
    hdus = [primary, fits.ImageHDU(np.asarray(bkg.bg, np.float32), name="BACKGROUND"),
            fits.ImageHDU(np.asarray(bkg.rms, np.float32), name="RMS")]
    for hdu in hdus[1:]:
        hdu.header["BUNIT"] = "electron"
    write_fits(path, fits.HDUList(hdus), attrs)


def read_background(path: str | os.PathLike) -> Background:
    """Read a file written by :func:`write_background` (clear :class:`FitsError` on bad files)."""
    with open_fits(path, required=("BACKGROUND", "RMS")) as hdul:
        bg = np.asarray(hdul["BACKGROUND"].data, np.float32)
        rms = np.asarray(hdul["RMS"].data, np.float32)
        if bg.shape != rms.shape:
            raise FitsError(f"{path}: BACKGROUND {bg.shape} and RMS {rms.shape} differ in shape")
        h = hdul[0].header
        return Background(bg=bg, rms=rms, globalback=float(h.get("BACKGND", np.median(bg))),
                          globalrms=float(h.get("BKG_RMS", np.median(rms))),
                          mesh=int(h.get("BACKSIZE", 64)), filter_size=int(h.get("BACKFILT", 3)))
