"""Deep reference coadds (references step): calibrated images of one field, filter and CCD
resampled onto a common grid, scaled to a common zero point and averaged with point-source
optimal weights; the coadd gets a weight map, flags, a PSF and a source list (both from
:func:`vo.images.extract.extract` run on the coadd) and its zero point.

Per input ``i`` (zero point ``zp_i``, sky noise ``sigma_i`` (e-), PSF noise-equivalent area
``NEA_i`` (pix)):

* sky background (SExtractor mesh ``background_mesh``) subtracted, then resampled with
  :func:`vo.images.reference.align.align_image` (flux-conserving; per-pixel variance; flags);
* flux scale ``s_i = 10 ** (0.4 (zp - zp_i))`` to the common zero point ``zp`` (config, or the
  median of the inputs);
* weight ``a_i = 1 / (s_i^2 sigma_i^2 NEA_i)`` (``psf_noise``: the point-source S/N^2 an image
  brings), constant over the image (per-pixel data-derived weights would bias fluxes: bright
  pixels get less weight), zero where the aligned pixel is flagged.

Coadd ``C = sum a_i s_i I_i / sum a_i`` per pixel, variance ``sum a_i^2 s_i^2 var_i / (sum a_i)^2``
(so the per-pixel pull is 1; neighbouring pixels are correlated by the resampling: header
``NCORR`` is the input-weighted mean of the aligned images' factors, see :mod:`vo.images.reference.align`;
the normalised noise autocorrelation, ``NACF*`` keys, is the inputs' covariances summed with their
coadd coefficients squared).
A pixel with fewer than ``min_coverage`` unflagged inputs gets the OR of the inputs' flags and
weight 0.  Units: e- at the common zero point (``m = -2.5 log10(flux) + zp``), sky ~ 0.

Files (:func:`write_reference`): the coadd image (:func:`vo.images.image.write_image` layout with
``MAGZP``, ``NCOMBINE``, ``NCORR``, ``REFINPUT``), its PSF (:func:`vo.images.extract.psf.write_psf`) and
its sources (:func:`vo.images.extract.write_sources`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from vo import config as vconfig
from vo.images import flags as pixflags
from vo.images.reference.align import align_image, read_noise_acf, replace_wcs, write_noise_acf
from vo.images.extract.background import measure_background
from vo.images.extract import error_map, extract, image_name, read_sources, write_sources
from vo.images.image import Image, read_image, write_image
from vo.images.extract.psf import PSFModel, read_psf, write_psf
from vo.images.photometry.zeropoint import noise_equivalent_area
from vo.io.fits import FitsError


#: header keys copied from the first input to the coadd
COPY_KEYS = ("INSTRUME", "FILTER", "CCD")
FILES = ("image", "psf", "sources")


class ReferenceError(ValueError):
    """No reference can be built from these inputs; the message names them and the problem."""


@dataclass
class Reference:
    """A deep coadd and what the subtraction needs from it.

    image : Image on the target grid (e- at ``zp``, sky-subtracted; weight 1/e-^2; flags).
    psf : PSFModel fitted on the coadd.
    zp : zero point (mag) of the coadd's fluxes.
    n_images : number of inputs.
    meta : inputs (names), scales, weights, sky noise and NEA per input, NCORR, ...
    sources : source table of the coadd (``extract`` columns), or None.
    """

    image: Image
    psf: PSFModel
    zp: float
    n_images: int
    meta: dict = field(default_factory=dict)
    sources: Table | None = None


def parameters(pars: dict | None = None) -> dict:
    """The ``references`` config section completed with the schema's defaults."""
    return {**vconfig.defaults()["references"], **(pars or {})}


def psf_nea(psf: PSFModel) -> float:
    """Noise-equivalent area (pix) of the PSF at the image centre."""
    ny, nx = psf.shape
    size = 2 * int(np.ceil(4 * psf.fwhm())) + 1
    return noise_equivalent_area(psf.evaluate((nx - 1) / 2, (ny - 1) / 2, size))


def sky_noise(image: Image) -> float:
    """Median per-pixel noise (e-) of the unflagged pixels (the sky noise of a sparse field)."""
    good = (image.flags == 0) & (image.weight > 0)
    if not good.any():
        raise ReferenceError(f"{image_name(image.header)}: every pixel is flagged")
    return float(np.median(error_map(image.weight[good])))


def input_weight(scale: float, sigma: float, nea: float, weighting: str) -> float:
    """Per-image coadd weight (see the module doc)."""
    if weighting == "psf_noise":
        return 1.0 / (scale ** 2 * sigma ** 2 * nea)
    if weighting == "noise":
        return 1.0 / (scale ** 2 * sigma ** 2)
    if weighting == "equal":
        return 1.0
    raise ValueError(f"references.weighting: unknown value {weighting!r} (psf_noise, noise, equal)")


def subtract_background(image: Image, mesh: int) -> Image:
    """``image`` with its sep background subtracted (flagged pixels excluded from the estimate)."""
    mask = (image.flags != 0) | ~(image.weight > 0) | ~np.isfinite(image.sci)
    bkg = measure_background(image.sci, mask, mesh)
    return Image(sci=(image.sci - bkg.bg).astype(np.float32), weight=image.weight, flags=image.flags,
                 header=image.header)


def _check_inputs(images, psfs, zps, p) -> list[str]:
    names = [image_name(getattr(im, "header", None)) for im in images]
    if not (len(images) == len(psfs) == len(zps)):
        raise ReferenceError(f"reference: {len(images)} images, {len(psfs)} PSFs and {len(zps)} zero points "
                             "must be as many")
    _check_depth(images, names, p)
    bad = [n for n, z in zip(names, zps) if not np.isfinite(float(z))]
    if bad:
        raise ReferenceError(f"reference: no valid zero point for {bad} (failed calibration): leave them out")
    return names


def _check_depth(images, names, p, what: str = "images") -> None:
    """``references.min_images`` counts exposures: two CCDs of one exposure covering parts of the
    grid add no depth."""
    exposures = {str(im.header.get("EXPOSURE", n)) for im, n in zip(images, names)}
    if len(exposures) < int(p["min_images"]):
        raise ReferenceError(f"reference: {len(images)} {what} of {len(exposures)} exposure(s) ({names}) "
                             f"< references.min_images = {p['min_images']}")


def build_reference(images: list[Image], psfs: list[PSFModel], zps: list[float], target_wcs: WCS,
                    target_shape, pars: dict | None = None, extraction: dict | None = None,
                    name: str = "reference") -> Reference:
    """Coadd calibrated images onto the grid ``target_wcs``, ``target_shape`` (ny, nx).

    Parameters
    ----------
    images : Images whose headers hold their SOLVED WCS (:func:`vo.images.reference.align.with_wcs`).
    psfs : their PSF models; zps : their zero points (mag, ``m = -2.5 log10(flux_e-) + zp``).
    pars : the ``references`` config section; extraction : the ``extraction`` section (PSF and
        sources of the coadd).
    name : the coadd's ``EXPOSURE`` header value.

    Raises
    ------
    ReferenceError : too few images, mismatched lists, a NaN zero point, no overlap.
    """
    p = parameters(pars)
    names = _check_inputs(images, psfs, zps, p)
    zps = [float(z) for z in zps]
    zp = float(np.median(zps)) if p["zero_point"] is None else float(p["zero_point"])
    ny, nx = (int(v) for v in target_shape)
    num = np.zeros((ny, nx), np.float32)
    den = np.zeros((ny, nx), np.float32)
    vnum = np.zeros((ny, nx), np.float32)
    count = np.zeros((ny, nx), np.int16)
    flag_or = np.zeros((ny, nx), pixflags.DTYPE)
    scales, weights, sigmas, neas, ncorr, acfs, off_grid, used = [], [], [], [], [], [], [], []
    for im, psf, zp_i, nm in zip(images, psfs, zps, names):
        s = 10 ** (0.4 * (zp - zp_i))
        sigma, nea = sky_noise(im), psf_nea(psf)
        a = input_weight(s, sigma, nea, p["weighting"])
        try:
            al = align_image(subtract_background(im, int(p["background_mesh"])), target_wcs, (ny, nx))
        except ValueError as exc:
            if "no overlap" not in str(exc):
                raise ReferenceError(f"reference {name}: input {nm}: {exc}") from exc
            off_grid.append(nm)  # planned from header WCSs; the solved WCS puts it off the grid
            continue
        used.append((im, nm, zp_i))
        good = al.flags == 0
        num += np.where(good, np.float32(a * s) * al.sci, 0)
        den += np.where(good, np.float32(a), 0)
        var = np.zeros((ny, nx), np.float32)
        np.divide(1, al.weight, out=var, where=good)
        vnum += np.float32(a * a * s * s) * var
        count += good
        flag_or |= al.flags
        scales.append(s), weights.append(a), sigmas.append(sigma), neas.append(nea)
        ncorr.append(float(al.header["NCORR"]))
        rho = read_noise_acf(al.header)
        if rho is not None:  # covariance contributed to the coadd: (a s)^2 var rho
            acfs.append(float(a * a * s * s) * float(np.median(var[::7, ::7][good[::7, ::7]])) * rho)
    if off_grid:
        if not used:
            raise ReferenceError(f"reference {name}: no overlap between the inputs and the grid ({off_grid})")
        _check_depth([u[0] for u in used], [u[1] for u in used], p, "images on the grid")
        images, names, zps = [u[0] for u in used], [u[1] for u in used], [u[2] for u in used]
    ok = (count >= int(p["min_coverage"])) & (den > 0)
    sci = np.zeros((ny, nx), np.float32)
    weight = np.zeros((ny, nx), np.float32)
    np.divide(num, den, out=sci, where=ok)
    np.divide(den * den, vnum, out=weight, where=ok & (vnum > 0))
    flg = np.where(ok & (weight > 0), 0, flag_or | np.where(flag_or == 0, pixflags.BAD, 0)).astype(pixflags.DTYPE)
    weight[flg != 0] = 0
    sci[flg != 0] = 0
    w = np.asarray(weights) / np.sum(weights)
    header = _coadd_header(images, scales, w, zp, target_wcs, name, names, float(np.dot(w, ncorr)))
    if acfs:
        acf = np.sum(acfs, axis=0)
        write_noise_acf(header, acf / acf[acf.shape[0] // 2, acf.shape[1] // 2])
    coadd = Image(sci=sci, weight=weight, flags=flg, header=header)
    ex = extract(coadd, extraction, name=f"{name} ({len(images)} images)")
    meta = {"inputs": names, "zps": zps, "scales": scales, "weights": list(w), "sky_sigma": sigmas,
            "nea": neas, "ncorr": float(header["NCORR"]), "fwhm": ex.meta["fwhm"],
            "coverage_fraction": float(ok.mean()), "off_grid": off_grid}
    return Reference(image=coadd, psf=ex.psf, zp=zp, n_images=len(images), meta=meta, sources=ex.sources)


def _coadd_header(images, scales, w, zp, target_wcs, name, names, ncorr) -> fits.Header:
    h0 = images[0].header
    h = fits.Header()
    for key in COPY_KEYS:
        if key in h0:
            h[key] = (h0[key], h0.comments[key])
    h["EXPOSURE"] = (name, "reference coadd")
    mjd = np.array([float(im.header.get("MJD-OBS", np.nan)) for im in images])
    if np.isfinite(mjd).all():
        h["MJD-OBS"] = (float(np.dot(w, mjd)), "weighted mean MJD of the inputs")
        h["MJD-BEG"], h["MJD-END"] = (float(mjd.min()), "first input MJD"), (float(mjd.max()), "last input MJD")
    sat = [s * float(im.header["SATURATE"]) for s, im in zip(scales, images) if "SATURATE" in im.header]
    if sat:
        h["SATURATE"] = (min(sat), "lowest scaled input saturation (e- at MAGZP)")
    h["GAIN"] = (1.0, "e-; weights carry the noise")
    h["BUNIT"] = ("electron", "e- at the zero point MAGZP")
    h["MAGZP"] = (zp, "m = -2.5 log10(flux) + MAGZP")
    h["NCOMBINE"] = (len(images), "input images")
    h["NCORR"] = (ncorr, "var of large-area sums / sum of pixel variances")
    h["REFINPUT"] = json.dumps(names)
    return replace_wcs(h, target_wcs)


# --------------------------------------------------------------------------- files


def reference_paths(prefix: str | os.PathLike) -> dict[str, str]:
    """File names of a reference from a path prefix: ``{prefix}.image.fits``, ``.psf.fits``, ``.sources.fits``."""
    return {k: f"{os.fspath(prefix)}.{k}.fits" for k in FILES}


def _paths(paths) -> dict[str, str]:
    if isinstance(paths, (str, os.PathLike)):
        return reference_paths(paths)
    missing = [k for k in FILES if k not in paths]
    if missing:
        raise ValueError(f"reference paths lack {missing} (need {FILES})")
    return {k: os.fspath(paths[k]) for k in FILES}


def write_reference(paths, ref: Reference, attrs: dict | None = None) -> dict[str, str]:
    """Write the coadd, its PSF and its sources (each file atomic, with provenance ``attrs``).

    ``paths``: a prefix (see :func:`reference_paths`) or a dict with keys image, psf, sources.
    Returns the dict of paths written.
    """
    paths = _paths(paths)
    if ref.sources is None:
        raise ValueError("write_reference: the reference has no source table")
    header = ref.image.header.copy()
    header["MAGZP"] = (ref.zp, "m = -2.5 log10(flux) + MAGZP")
    header["NCOMBINE"] = (ref.n_images, "input images")
    write_image(paths["image"], Image(sci=ref.image.sci, weight=ref.image.weight, flags=ref.image.flags,
                                      header=header), attrs)
    write_psf(paths["psf"], ref.psf, attrs)
    write_sources(paths["sources"], ref.sources, attrs)
    return paths


def read_reference(paths) -> Reference:
    """Read a reference written by :func:`write_reference` (clear :class:`FitsError` naming the file)."""
    paths = _paths(paths)
    image = read_image(paths["image"])
    for key in ("MAGZP", "NCOMBINE"):
        if key not in image.header:
            raise FitsError(f"{paths['image']}: missing header keyword {key} (not a reference coadd)")
    meta = {"inputs": json.loads(image.header.get("REFINPUT", "[]")), "ncorr": float(image.header.get("NCORR", 1.0))}
    return Reference(image=image, psf=read_psf(paths["psf"]), zp=float(image.header["MAGZP"]),
                     n_images=int(image.header["NCOMBINE"]), meta=meta, sources=read_sources(paths["sources"]))
