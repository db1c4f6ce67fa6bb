"""Master calibration frames: bias (ADU) and flat (per filter, median 1) of one CCD.

Each calibration frame is overscan-corrected and trimmed exactly like a science frame
(:func:`vo.images.calibrate.preprocess.overscan_corrected`, settings in the ``calibration`` config
section), then the frames are combined pixel by pixel with a sigma-clipped mean
(:func:`clipped_mean`).  Flats are bias-subtracted and converted to electrons before they
are combined, so the master flat holds only the pixel response (the gains of the
amplifiers are applied separately in preprocessing), each frame normalised by its median.
"""

from __future__ import annotations

import os

import numpy as np
from astropy.io import fits

from vo.images.calibrate.preprocess import overscan_corrected, to_electrons
from vo.io.fits import FitsError, open_fits, write_fits

#: rows combined at once (bounds the memory of the stacked chunk)
CHUNK_ROWS = 256


def clipped_mean(frames: list[np.ndarray], nsigma: float, noise: float) -> np.ndarray:
    """Pixel-wise sigma-clipped mean of equally shaped frames (float32).

    Around the median of each pixel's stack, values further than ``nsigma`` sigma are
    rejected; sigma is the larger of the stack's robust scatter (1.4826 MAD) and ``noise``
    (the expected noise of one frame, so a few frames with tied values never reject
    everything).  Rows are combined in chunks of :data:`CHUNK_ROWS`.
    """
    out = np.empty(frames[0].shape, dtype=np.float32)
    for r0 in range(0, out.shape[0], CHUNK_ROWS):
        stack = np.stack([f[r0:r0 + CHUNK_ROWS] for f in frames]).astype(np.float32, copy=False)
        med = np.median(stack, axis=0)
        dev = np.abs(stack - med)
        sigma = np.maximum(1.4826 * np.median(dev, axis=0), np.float32(noise))
        keep = dev <= nsigma * sigma
        n = keep.sum(axis=0)
        mean = np.where(keep, stack, 0).sum(axis=0) / np.maximum(n, 1)
        out[r0:r0 + CHUNK_ROWS] = np.where(n > 0, mean, med)
    return out


def _where(section, i: int) -> str:
    name = getattr(section, "path", None) or section.header.get("FILENAME", f"frame {i}")
    return f"{name}: ccd {section.ccd}"


def _corrected(sections, overscan: dict, what: str) -> tuple[list[np.ndarray], list]:
    if not sections:
        raise ValueError(f"{what}: no calibration frames given")
    frames, amps = [], None
    for i, sec in enumerate(sections):
        adu, amps, _ = overscan_corrected(sec, overscan, _where(sec, i))
        if frames and adu.shape != frames[0].shape:
            raise ValueError(f"{_where(sec, i)}: {what} frame shape {adu.shape} differs from "
                             f"{frames[0].shape} of {_where(sections[0], 0)}")
        if sec.ccd != sections[0].ccd:
            raise ValueError(f"{_where(sec, i)}: {what} frames mix ccds {sections[0].ccd} and {sec.ccd}")
        frames.append(adu)
    return frames, amps


def master_bias(sections: list, pars: dict) -> np.ndarray:
    """Master bias (ADU, trimmed grid, float32) of one CCD from raw bias sections.

    ``pars`` is the ``calibration`` config section (sigma_clip and the overscan settings).
    """
    frames, amps = _corrected(sections, pars, "bias")
    noise = float(np.median([a.read_noise / a.gain for a in amps]))  # ADU
    return clipped_mean(frames, pars["sigma_clip"], noise)


def master_flat(sections: list, bias: np.ndarray | None, pars: dict) -> np.ndarray:
    """Master flat (trimmed grid, float32, median 1) of one CCD and filter.

    Each raw flat section is overscan-corrected, bias-subtracted (``bias`` in ADU),
    converted to electrons and divided by its median before the clipped mean.
    Raises ValueError naming the frame for a frame whose median is below 10x the read noise.
    """
    frames, amps = _corrected(sections, pars, "flat")
    noises = []
    for i, frame in enumerate(frames):
        if bias is not None:
            if bias.shape != frame.shape:
                raise ValueError(f"{_where(sections[i], i)}: master bias shape {bias.shape} "
                                 f"differs from the flat's {frame.shape}")
            frame -= bias
        to_electrons(frame, amps)
        level = float(np.nanmedian(frame[::4, ::4]))
        rn = max(a.read_noise for a in amps)
        if not level > 10 * rn:
            raise ValueError(f"{_where(sections[i], i)}: flat frame has median {level:.1f} e- "
                             f"(read noise {rn} e-); a flat needs an illumination well above it")
        frame /= np.float32(level)
        noises.append(np.sqrt(rn ** 2 + level) / level)
    flat = clipped_mean(frames, pars["sigma_clip"], max(noises))
    flat /= np.float32(np.nanmedian(flat))
    return flat


def write_master(path: str | os.PathLike, data: np.ndarray, attrs: dict | None, kind: str,
                 ccd: str, filt: str | None = None, n_frames: int | None = None) -> None:
    """Write a master frame (``kind`` bias or flat) atomically with provenance."""
    if kind not in ("bias", "flat"):
        raise ValueError(f"{path}: master kind must be bias or flat, got {kind!r}")
    hdu = fits.PrimaryHDU(np.asarray(data, dtype=np.float32))
    h = hdu.header
    h["CALTYPE"] = (kind, "master calibration frame")
    h["CCD"] = (str(ccd), "section (CCD) name")
    if filt is not None:
        h["FILTER"] = str(filt)
    if n_frames is not None:
        h["NCOMBINE"] = (int(n_frames), "frames combined")
    h["BUNIT"] = ("adu" if kind == "bias" else "", "bias in ADU; flat dimensionless (median 1)")
    write_fits(path, fits.HDUList([hdu]), attrs)


def read_master(path: str | os.PathLike, kind: str | None = None) -> tuple[np.ndarray, fits.Header]:
    """(data float32, header) of a master frame; FitsError naming the file if it is not one
    (or not of ``kind``)."""
    with open_fits(path) as hdul:
        hdu = hdul[0]
        if hdu.data is None or hdu.data.ndim != 2:
            raise FitsError(f"{path}: no 2-D master frame in the primary HDU")
        found = hdu.header.get("CALTYPE")
        if kind is not None and found != kind:
            raise FitsError(f"{path}: expected a master {kind}, found CALTYPE={found!r}")
        return np.asarray(hdu.data, dtype=np.float32), hdu.header.copy()
