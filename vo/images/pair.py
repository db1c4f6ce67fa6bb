"""One call for people who have two FITS files: subtract a reference from a new image.

:func:`subtract_images` (and :func:`subtract_files`, behind ``vo subtract``) does what the
workflow's steps do for a pair, from images alone:

1. extraction of each image (background, sources, PSF model: :func:`vo.images.extract.extract`);
2. registration: the reference's sources are carried onto the new image's pixel grid by the two
   headers' WCS and matched to the new image's; the median offset of the matches (pix) corrects
   the reference's WCS (a shift of ``CRPIX``, exact for TAN/TPV/SIP), because the headers of two
   independently solved images disagree by a few tenths of a pixel, enough to leave a dipole
   at every star;
3. the flux ratio reference/new from the PSF fluxes of the matched unflagged stars (sigma-clipped
   median): only the ratio matters, no absolute zero point is needed;
4. the reference resampled onto the new grid (:func:`vo.images.reference.align.align_image`);
   several references are coadded there (:func:`vo.images.reference.coadd.build_reference`);
5. subtraction (ZOGY or Alard-Lupton, :func:`vo.images.subtract.subtract`) and detection of
   candidates (:func:`vo.images.detect.detect_candidates`).

Raises :class:`PairError` naming the images for pairs that do not overlap or share too few stars.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.table import Table
from astropy.wcs import WCS
from scipy.spatial import cKDTree

from vo.images.detect import detect_candidates
from vo.images.extract import Extraction, extract
from vo.images.image import Image
from vo.images.reference.align import align_image, with_wcs
from vo.images.reference.coadd import ReferenceError, build_reference
from vo.images.subtract import subtract
from vo.images.subtract.common import Difference, SubtractionError
from vo.images.subtract.matching import bright, flux_ratio, match_sources

log = logging.getLogger(__name__)

ZP_NEW = 25.0          # arbitrary zero point of the new image: only the ratio enters
MIN_MATCHES = 3


class PairError(ValueError):
    """Images that cannot be subtracted; the message names them and the reason."""


@dataclass
class PairResult:
    """What :func:`subtract_images` made.

    difference : the Difference on the new image's grid. candidates : the detections (Table).
    new : the new image's Extraction. reference_sources : the (coadded) reference's sources with
    x, y on the new grid (pix). meta : per reference its name, offset (dx, dy: pix on the new
    grid, applied), matches, flux ratio (reference / new) and its scatter.
    """

    difference: Difference
    candidates: Table
    new: Extraction
    reference_sources: Table
    meta: dict = field(default_factory=dict)


def _name(image: Image, default: str) -> str:
    return str(image.header.get("EXPOSURE", default)) if image.header is not None else default


def shifted_wcs(wcs: WCS, dx: float, dy: float) -> WCS:
    """``wcs`` whose pixel grid is moved by (dx, dy) pix: pixel (x + dx, y + dy) of the result is
    where pixel (x, y) of ``wcs`` was on the sky (CRPIX + shift; distortions move with it)."""
    out = wcs.deepcopy()
    out.wcs.crpix = out.wcs.crpix + np.array([dx, dy])
    if out.sip is not None:
        out.sip = type(out.sip)(out.sip.a, out.sip.b, out.sip.ap, out.sip.bp, out.wcs.crpix)
    out.wcs.set()
    return out


def register(new: Image, new_ex: Extraction, ref: Image, ref_ex: Extraction, name: str) -> tuple[Image, dict]:
    """The reference with its WCS corrected onto the new image's sources, and the match figures
    (offset, matches, flux ratio reference/new with its robust scatter)."""
    ny, nx = ref.shape
    cx, cy = new.wcs.world_to_pixel(ref.wcs.pixel_to_world([0, nx - 1, nx - 1, 0], [0, 0, ny - 1, ny - 1]))
    if (np.max(cx) < 0 or np.min(cx) > new.shape[1] - 1 or np.max(cy) < 0
            or np.min(cy) > new.shape[0] - 1 or not np.all(np.isfinite(np.r_[cx, cy]))):
        raise PairError(f"{name} does not overlap the new image {_name(new, 'new')} (its corners fall at "
                        f"x {np.min(cx):.0f}..{np.max(cx):.0f}, y {np.min(cy):.0f}..{np.max(cy):.0f} on "
                        f"the new grid of {new.shape[1]} x {new.shape[0]} pix)")
    i_new, i_ref, dx, dy = match_sources(new_ex.sources, new.wcs, ref_ex.sources, ref.wcs)
    if i_new.size < MIN_MATCHES:
        raise PairError(f"{name}: only {i_new.size} bright stars in common with the new image "
                        f"(need {MIN_MATCHES}): do the images overlap, are their WCS right?")
    mx, my = float(np.median(dx)), float(np.median(dy))
    # the offset is measured on the new grid; move the reference's grid by the same amount in its
    # own pixels through the local Jacobian of the reference -> new pixel map
    xr, yr = float(np.median(ref_ex.sources["x"][i_ref])), float(np.median(ref_ex.sources["y"][i_ref]))
    sky = ref.wcs.pixel_to_world([xr, xr + 1, xr], [yr, yr, yr + 1])
    px, py = new.wcs.world_to_pixel(sky)
    J = np.array([[px[1] - px[0], px[2] - px[0]], [py[1] - py[0], py[2] - py[0]]])
    sx, sy = np.linalg.solve(J, [mx, my])
    corrected = with_wcs(ref, shifted_wcs(ref.wcs, -sx, -sy))
    fr = flux_ratio(new_ex.sources, new.wcs, ref_ex.sources, ref.wcs, i_new, i_ref)
    info = {"name": name, "offset": [mx, my], "matches": int(i_new.size), "flux_ratio": fr.ratio,
            "flux_ratio_scatter": fr.scatter, "ratio_stars": fr.n}
    log.info("%s: offset (%.3f, %.3f) pix from %d stars, flux ratio %.4f", name, mx, my, i_new.size,
             info["flux_ratio"])
    return corrected, info


def common_stars(new_src: Table, ref_src: Table, radius: float = 1.5) -> Table:
    """The new image's unflagged sources of S/N >= MATCH_SNR with a reference source within
    ``radius`` pix (both on the new grid): x, y, flux (e-). Alard-Lupton fits its kernel on
    these: a source of one image only (a transient) cannot constrain it."""
    b = bright(new_src)
    t = Table({"x": np.asarray(new_src["x"], float)[b], "y": np.asarray(new_src["y"], float)[b],
               "flux": np.asarray(new_src["flux_psf"], float)[b]})
    if len(t) == 0 or len(ref_src) == 0:
        return t[:0]
    d, _ = cKDTree(np.c_[ref_src["x"], ref_src["y"]]).query(np.c_[t["x"], t["y"]])
    return t[d < radius]


def subtract_images(new: Image, refs: list[Image], method: str = "zogy", pars: dict | None = None,
                    extraction: dict | None = None, detection: dict | None = None,
                    references: dict | None = None) -> PairResult:
    """Subtract the reference(s) from ``new`` (see the module doc); images in e- with a WCS.

    ``pars``, ``extraction``, ``detection``, ``references``: the config sections of those steps
    (missing keys take the defaults).
    """
    if not refs:
        raise PairError("no reference image given")
    name_new = _name(new, "new")
    new_ex = extract(new, extraction, name=name_new)
    regs, exs, zps, infos = [], [], [], []
    for k, ref in enumerate(refs):
        name = _name(ref, f"reference {k + 1}")
        ref_ex = extract(ref, extraction, name=name)
        reg, info = register(new, new_ex, ref, ref_ex, name)
        regs.append(reg), exs.append(ref_ex), infos.append(info)
        zps.append(ZP_NEW + 2.5 * np.log10(info["flux_ratio"]))
    try:
        if len(refs) == 1:
            aligned, ref_psf = align_image(regs[0], new.wcs, new.shape, psf=exs[0].psf)
            ref_zp = zps[0]
            ref_src = exs[0].sources.copy()
            ref_src["x"], ref_src["y"] = new.wcs.world_to_pixel(
                regs[0].wcs.pixel_to_world(np.asarray(ref_src["x"]), np.asarray(ref_src["y"])))
        else:
            coadd = build_reference(regs, [e.psf for e in exs], zps, new.wcs, new.shape,
                                    {**(references or {}), "min_coverage": 1}, extraction,
                                    name=f"coadd of {len(refs)} references")
            aligned, ref_psf, ref_zp, ref_src = coadd.image, coadd.psf, coadd.zp, coadd.sources
    except (ValueError, ReferenceError) as exc:
        raise PairError(f"{name_new}: the reference does not overlap it ({exc})") from exc
    if not (aligned.flags == 0).any():
        raise PairError(f"{name_new}: the reference does not overlap it (no common unflagged pixel)")
    try:
        diff = subtract(new, aligned, new_ex.psf, ref_psf, ZP_NEW, ref_zp, pars, method=method,
                        stars=common_stars(new_ex.sources, ref_src))
    except SubtractionError as exc:
        raise PairError(f"{name_new}: cannot subtract: {exc}") from exc
    cands = detect_candidates(diff, detection, wcs=new.wcs, new_psf=new_ex.psf)
    return PairResult(difference=diff, candidates=cands, new=new_ex, reference_sources=ref_src,
                      meta={"references": infos, "reference_zp_offset": ref_zp - ZP_NEW})


def subtract_files(new: str | os.PathLike, refs, out: str | os.PathLike, method: str = "zogy",
                   candidates: str | os.PathLike | None = None, cfg: dict | None = None,
                   read_kw: dict | None = None) -> PairResult:
    """Subtract FITS file(s) ``refs`` from ``new`` and write the difference file ``out``
    (:func:`vo.images.subtract.write_difference`: DIFF, ERROR, SCORE, SCORR, FLUX, FLUXERR,
    FLAGS, PSF) and the candidate table (``candidates``, default ``out`` with
    ``.candidates.fits``). Images are read with :func:`vo.images.calibrate.calibrated.read_calibrated`
    (NOIRLab CP ``*_ooi_*`` files with :func:`~vo.images.calibrate.calibrated.read_instcal`)
    (``read_kw``: its keyword arguments, e.g. ``gain``); ``cfg`` a config whose ``subtraction``,
    ``extraction``, ``detection`` and ``references`` sections are used (defaults otherwise).
    Both files are written atomically."""
    from vo.images.calibrate.calibrated import read_calibrated, read_instcal
    from vo.images.detect import write_candidates
    from vo.images.subtract import write_difference

    def read(path):  # a CP InstCal image brings its weight and mask files along
        reader = read_instcal if "_ooi_" in Path(path).name else read_calibrated
        return reader(path, **(read_kw or {}))

    refs = [refs] if isinstance(refs, (str, os.PathLike)) else list(refs)
    cfg = cfg or {}
    new_img = read(new)
    ref_imgs = [read(r) for r in refs]
    result = subtract_images(new_img, ref_imgs, method, cfg.get("subtraction"), cfg.get("extraction"),
                             cfg.get("detection"), cfg.get("references"))
    out = Path(out)
    cand_path = Path(candidates) if candidates else out.with_name(out.name.split(".fits")[0] + ".candidates.fits")
    result.difference.meta["registration"] = result.meta["references"]
    write_difference(out, result.difference)
    write_candidates(cand_path, result.candidates)
    return result
