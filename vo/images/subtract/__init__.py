"""Image subtraction (subtraction step): new image minus an aligned reference, by ZOGY
(:mod:`.zogy`, the default) or Alard-Lupton (:mod:`.alard_lupton`), and the difference FITS file.

Both methods first subtract each image's sky (sep background), build variance maps from the
weights, and inpaint every flagged, zero-weight or non-finite pixel of either image with a
smooth local mean (:func:`.common.inpaint`) BEFORE any convolution, so bad values never ring;
the OR of both images' flags is then grown by ``flag_grow`` x FWHM (the reach of the kernels'
cores) and the border of that width is flagged EDGE.

File layout (:func:`write_difference`): PRIMARY (method and figures, ``VO_META`` JSON, provenance),
DIFF (e- of the new image, with the new image's WCS), ERROR (1-sigma of DIFF, e-), SCORE and
SCORR (sigma), FLUX and FLUXERR (PSF flux of a point source at each pixel, e-), FLAGS (uint16),
PSF (unit-sum PSF of DIFF; the central tile's), and when the PSFs vary over the CCD PSFGRID
(the PSF of DIFF per tile, (n_ty n_tx, k, k), core edges TILEY/TILEX in its header) and KERNGRID
(per tile the kernel that makes a new image's point source its profile in DIFF; detection fits
each candidate with ``kernel * P_new(x, y)``: :func:`.tiles.templates`).
Spatially varying PSFs: ZOGY runs per tile (:mod:`.tiles`, ``tile_size``); Alard-Lupton's kernel
varies as a polynomial (``al_spatial_order``) and its kernel grid is evaluated per tile.
"""

from __future__ import annotations

import json
import os

import numpy as np
from astropy.io import fits
from scipy import ndimage

from vo.images import flags as pixflags
from vo.images.image import data_cards
from vo.images.subtract.common import (Difference, SubtractionError, flux_ratio, grow_flags, noise_stats,
                                       parameters, prepare)
from vo.io.fits import FitsError, open_fits, write_fits

METHODS = ("zogy", "alard_lupton")
MAP_HDUS = {"DIFF": "diff", "ERROR": "diff_err", "SCORE": "score", "SCORR": "score_corr",
            "FLUX": "flux", "FLUXERR": "flux_err", "FLAGS": "flags"}
BUNITS = {"DIFF": "electron", "ERROR": "electron", "SCORE": "sigma", "SCORR": "sigma",
          "FLUX": "electron", "FLUXERR": "electron"}


def stamp_fwhm(stamp: np.ndarray, upsample: int = 4) -> float:
    """FWHM (pix) of a centred PSF stamp: diameter of the circle with the area above half maximum
    (on a cubic-spline upsampled copy, so it is meaningful for FWHM of 2-3 pix)."""
    fine = ndimage.zoom(np.asarray(stamp, np.float64), upsample, order=3)
    area = np.count_nonzero(fine >= fine.max() / 2) / upsample ** 2
    return float(2 * np.sqrt(area / np.pi))


def _widest(psf, shape, n: int = 5) -> float:
    """Largest FWHM (pix) of a PSF model on an n x n grid over an image of ``shape``."""
    if getattr(psf, "order", 0) == 0:
        return float(psf.fwhm())
    ny, nx = shape
    gx, gy = np.meshgrid(np.linspace(0, nx - 1, n), np.linspace(0, ny - 1, n))
    return float(np.nanmax(psf.fwhm(gx.ravel(), gy.ravel())))


def subtract(new, ref, new_psf, ref_psf, new_zp: float, ref_zp: float, pars: dict | None = None,
             method: str | None = None, stars=None, workers: int = 1) -> Difference:
    """Subtract ``ref`` (already aligned onto ``new``'s pixel grid) from ``new``.

    Parameters
    ----------
    new, ref : vo.images.image.Image (sci e-, weight 1/e-^2, flags); same shape.
    new_psf, ref_psf : vo.images.extract.psf.PSFModel of each image (evaluated at the CCD centre).
    new_zp, ref_zp : zero points (``m = -2.5 log10(flux_e-) + zp``) giving the flux ratio.
    pars : the ``subtraction`` config section (missing keys take the schema defaults).
    method : "zogy" or "alard_lupton" (default: ``pars["method"]``).
    stars : Alard-Lupton only: Table with x, y, flux of stars on the new grid (e.g. the new image's
        sources) to fit the kernel on; default: the new PSF model's stars.
    workers : scipy.fft workers (1: one core).

    Returns
    -------
    Difference (see :class:`vo.images.subtract.common.Difference`), in e- of the new image.

    Raises
    ------
    SubtractionError naming the problem: shapes that differ, no zero point, an unknown method,
    an image with no usable pixel, too few stars for Alard-Lupton.
    """
    p = parameters(pars)
    method = method or p["method"]
    if method not in METHODS:
        raise SubtractionError(f"unknown subtraction method {method!r}; use one of {', '.join(METHODS)}")
    fr = flux_ratio(new_zp, ref_zp)
    fwhm_n, fwhm_r = float(new_psf.fwhm()), float(ref_psf.fwhm())
    fwhm = max(fwhm_n, fwhm_r)
    prep = prepare(new, ref, p, fwhm)
    # stamps wide enough for the widest PSF on the CCD (corners 30% wider than the centre: a
    # kernel cut at the centre's size lost a third of its weight there, fluxes 1-2% off)
    half = int(np.ceil(p["kernel_size"] * max(fwhm, _widest(new_psf, prep.new.shape), _widest(ref_psf, prep.new.shape))))
    from vo.images.subtract.zogy import centred_stamp

    pn, pr = centred_stamp(new_psf, prep.new.shape, half), centred_stamp(ref_psf, prep.new.shape, half)
    varying = getattr(new_psf, "order", 0) > 0 or getattr(ref_psf, "order", 0) > 0
    tile = int(p["tile_size"])
    if method == "zogy" and varying and 0 < tile < max(prep.new.shape) / 1.5:
        from vo.images.subtract.tiles import subtract_tiles
        from vo.images.subtract.zogy import zogy

        d, info = subtract_tiles(prep, new_psf, ref_psf, half, tile, lambda sub, a, b: zogy(
            sub, a, b, fr, float(p["astrometric_sigma"]), float(p["psf_error"]), workers))
    elif method == "zogy":
        from vo.images.subtract.zogy import zogy

        d, info = zogy(prep, pn, pr, fr, float(p["astrometric_sigma"]), float(p["psf_error"]), workers)
    else:
        from vo.images.subtract.alard_lupton import alard_lupton

        d, info = alard_lupton(prep, pn, pr, fwhm_n, fwhm_r, fr, p,
                               stars if stars is not None else getattr(new_psf, "stars", None))
    d.flags = grow_flags(prep.flags, int(np.ceil(p["flag_grow"] * fwhm)))
    d.header = data_cards(new.header) if getattr(new, "header", None) is not None else None
    kc = info.pop("kernel_centre", None)
    d.meta = {"method": method, "fwhm": stamp_fwhm(d.psf), "fwhm_new": fwhm_n, "fwhm_ref": fwhm_r,
              "new_zp": float(new_zp), "ref_zp": float(ref_zp), **info, **noise_stats(d)}
    if kc is not None:
        d.meta["kernel_centre_shape"] = list(kc.shape)
    return d


# --------------------------------------------------------------------------- files


def write_difference(path: str | os.PathLike, d: Difference, attrs: dict | None = None) -> None:
    """Write ``d`` atomically to one FITS file (HDUs in the module docstring), with provenance."""
    for hdu, name in MAP_HDUS.items():
        arr = getattr(d, name)
        if np.shape(arr) != d.diff.shape:
            raise ValueError(f"{path}: {name} shape {np.shape(arr)} differs from diff {d.diff.shape}")
    primary = fits.PrimaryHDU()
    h = primary.header
    h["METHOD"] = (d.meta.get("method", ""), "subtraction method")
    h["FWHM"] = (float(d.meta.get("fwhm", np.nan)), "FWHM of the difference PSF (pix)")
    zp = magnitude_zero_point(d)
    if np.isfinite(zp):
        h["MAGZP"] = (zp, "m = -2.5 log10(DIFF e-) + MAGZP")
    h["VO_META"] = json.dumps(d.meta, sort_keys=True, default=float)
    hdus = [primary]
    wcs_cards = data_cards(d.header) if d.header is not None else fits.Header()
    for hdu, name in MAP_HDUS.items():
        arr = getattr(d, name)
        arr = np.asarray(arr, pixflags.DTYPE if name == "flags" else np.float32)
        hd = fits.ImageHDU(arr, header=wcs_cards.copy(), name=hdu)
        if hdu in BUNITS:
            hd.header["BUNIT"] = BUNITS[hdu]
        if name == "flags":
            for key, value, comment in pixflags.header_cards():
                hd.header[key] = (value, comment)
        hdus.append(hd)
    hdus.append(fits.ImageHDU(np.asarray(d.psf, np.float32), name="PSF"))
    # per tile: the PSF of DIFF, and what a new image's point source becomes in DIFF
    for name, grid in (("PSFGRID", d.psf_grid), ("KERNGRID", d.kernel_grid)):
        if grid is not None:  # (n_ty * n_tx, k, k), the cores' edges in the header
            hdu = fits.ImageHDU(np.asarray(grid, np.float32).reshape(-1, *grid.shape[2:]), name=name)
            hdu.header["NTILEY"], hdu.header["NTILEX"] = grid.shape[0], grid.shape[1]
            hdu.header["TILEY"] = (json.dumps([int(v) for v in d.tile_edges[0]]), "core edges in y (pix)")
            hdu.header["TILEX"] = (json.dumps([int(v) for v in d.tile_edges[1]]), "core edges in x (pix)")
            hdus.append(hdu)
    write_fits(path, fits.HDUList(hdus), attrs)


def magnitude_zero_point(d: Difference) -> float:
    """Zero point (mag) of the difference's fluxes (e- of the new image): the new image's own
    (``meta["image_zp"]``), else the one the subtraction used (``meta["new_zp"]``: carried over
    from the reference by matched stars where the new image's calibration failed), else NaN."""
    for key in ("image_zp", "new_zp"):
        v = (d.meta or {}).get(key)
        if v is not None and np.isfinite(float(v)):
            return float(v)
    return float("nan")


def difference_fwhm(path: str | os.PathLike) -> float:
    """FWHM (pix) of the difference PSF of a file written by :func:`write_difference` (the
    width candidates on it have), from its primary header."""
    with open_fits(path) as hdul:
        if "FWHM" not in hdul[0].header:
            raise FitsError(f"{path}: no FWHM in the primary header (not a difference file?)")
        return float(hdul[0].header["FWHM"])


def read_difference(path: str | os.PathLike) -> Difference:
    """Read a file written by :func:`write_difference` (:class:`FitsError` naming the file for a
    missing HDU or maps whose shapes disagree)."""
    with open_fits(path, required=tuple(MAP_HDUS) + ("PSF",)) as hdul:
        arrays = {}
        shape = hdul["DIFF"].data.shape if hdul["DIFF"].data is not None else None
        for hdu, name in MAP_HDUS.items():
            data = hdul[hdu].data
            if data is None or data.shape != shape:
                raise FitsError(f"{path}: {hdu} HDU shape {None if data is None else data.shape} "
                                f"differs from DIFF {shape}")
            arrays[name] = np.asarray(data, pixflags.DTYPE if name == "flags" else np.float32)
        try:
            meta = json.loads(hdul[0].header.get("VO_META", "{}"))
        except json.JSONDecodeError as exc:
            raise FitsError(f"{path}: VO_META is not valid JSON ({exc})") from exc
        header = data_cards(hdul["DIFF"].header)
        header.remove("BUNIT", ignore_missing=True)
        grids, edges = {}, None
        for name in ("PSFGRID", "KERNGRID"):
            if name in hdul:
                g = hdul[name]
                try:
                    grids[name] = np.asarray(g.data, np.float32).reshape(
                        int(g.header["NTILEY"]), int(g.header["NTILEX"]), *g.data.shape[1:])
                    edges = (np.array(json.loads(g.header["TILEY"])), np.array(json.loads(g.header["TILEX"])))
                except (KeyError, ValueError) as exc:
                    raise FitsError(f"{path}: {name} HDU is malformed ({exc})") from exc
        return Difference(psf=np.asarray(hdul["PSF"].data, np.float32), meta=meta, header=header,
                          psf_grid=grids.get("PSFGRID"), kernel_grid=grids.get("KERNGRID"),
                          tile_edges=edges, **arrays)


__all__ = ["Difference", "SubtractionError", "subtract", "write_difference",
           "read_difference", "difference_fwhm", "magnitude_zero_point", "parameters", "stamp_fwhm"]
