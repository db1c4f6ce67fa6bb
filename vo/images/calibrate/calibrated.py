"""Already-calibrated FITS images from any telescope as :class:`~vo.images.image.Image` objects.

Most users hold images someone else reduced (a survey's processed frames, cutouts, a
colleague's FITS): bias, flat and usually sky already removed, a celestial WCS in the header.
:func:`read_calibrated` turns one into the pipeline's Image (science in e-, inverse variance in
1/e-^2, pixel flags) without preprocessing:

* the data HDU: the one named, or the first HDU with a 2-D image; a file written by
  :func:`vo.images.image.write_image` (SCI/WEIGHT/FLAGS) is read as it is;
* header keywords through a mapping (``keywords``: our name -> the header's name or a list of
  names tried in order), with defaults for common conventions (:data:`KEYWORDS`). A keyword
  given by value (``gain=4.0``) wins over the header;
* the gain converts to e-: the header's value, 1 when ``BUNIT`` says electrons, else an error
  naming the file and the keys tried (a wrong gain makes every error bar wrong, silently);
* the noise: an inverse-variance map when given (``weight``: an HDU name or a file, in the
  data's units^-2), else the sky RMS measured on the image (sep) plus the sources' Poisson noise;
* the noise autocorrelation when the image's noise is not white (it was resampled):
  measured on the sky and written as the ``NACF*`` header keys the subtraction reads;
* flags: NaN/inf pixels (``NAN``), pixels at or above 90% of the saturation level
  (``SATURATED``; level from the header, in the data's units), a mask's non-zero pixels
  (``mask``: HDU or file; ``mask_bits`` maps its bit values to our flags, default: any bit ->
  ``BAD``), and cosmic rays (:func:`vo.images.calibrate.flagging.detect_cosmic_rays`).

Errors (:class:`CalibratedImageError`) name the file and the key or HDU.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS
from scipy import ndimage

from vo.images import flags as pixflags
from vo.images.calibrate.flagging import detect_cosmic_rays
from vo.images.extract.background import measure_background
from vo.images.image import HDUS, Image, data_cards, read_image
from vo.images.reference.align import NOISE_LAG, write_noise_acf

#: our keyword -> header keywords tried in order (common conventions)
KEYWORDS = {"gain": ["GAIN", "EGAIN", "CCDGAIN", "ARAWGAIN"],
            "read_noise": ["RDNOISE", "READNOIS", "RON", "ENOISE"],
            "saturation": ["SATURATE", "SATURAT", "SATLEVEL", "MAXLIN"],
            "filter": ["FILTER", "FILTNAM", "FILTER1", "BAND"],
            "mjd": ["MJD-OBS", "MJD_OBS", "MJD"],
            "date": ["DATE-OBS", "DATE_OBS"],
            "exptime": ["EXPTIME", "EXPOSURE", "ITIME"]}
ELECTRON_UNITS = ("electron", "electrons", "e-", "e")
SATURATION_FRACTION = 0.9  # flag pixels at or above this fraction of the saturation level
ACF_REGION = 1024          # the noise autocorrelation is measured on at most this many pix a side
ACF_BASELINE = (6, 8)      # lags (pix) whose mean correlation is the estimator's baseline


class CalibratedImageError(ValueError):
    """A calibrated image that cannot be read; the message names the file and the key or HDU."""


def _data_hdu(hdul, path, hdu):
    if hdu is not None:
        try:
            h = hdul[hdu]
        except (KeyError, IndexError) as exc:
            raise CalibratedImageError(f"{path}: no HDU {hdu!r} "
                                       f"(HDUs: {[x.name for x in hdul]})") from exc
        if h.data is None or np.ndim(h.data) != 2:
            raise CalibratedImageError(f"{path}: HDU {hdu!r} has no 2-D image")
        return h
    for h in hdul:
        if h.is_image and h.data is not None and np.ndim(h.data) == 2:
            return h
    raise CalibratedImageError(f"{path}: no HDU with a 2-D image (HDUs: {[x.name for x in hdul]})")


def header_value(header, key: str, path, keywords: dict | None = None, required: bool = False):
    """The value of our keyword ``key`` from ``header`` through the mapping (default
    :data:`KEYWORDS`); None when absent and not ``required`` (else an error naming the keys)."""
    names = (keywords or {}).get(key, KEYWORDS.get(key, [key.upper()]))
    names = [names] if isinstance(names, str) else list(names)
    for n in names:
        if n in header and header[n] not in (None, ""):
            return header[n]
    if required:
        raise CalibratedImageError(f"{path}: no {key} keyword (tried {', '.join(names)}); map it in "
                                   f"the keywords or give the value")
    return None


def _aux(hdul, path, spec, shape, what):
    """An auxiliary 2-D array (weight or mask) from an HDU of the same file or another file."""
    if spec is None:
        return None
    if isinstance(spec, (str, os.PathLike)) and Path(spec).suffix.lower() in (".fits", ".fz", ".gz") \
            and Path(spec).exists():
        with fits.open(spec) as other:
            arr = np.asarray(_data_hdu(other, spec, None).data)
        src = str(spec)
    else:
        try:
            arr = np.asarray(hdul[spec].data)
        except (KeyError, IndexError) as exc:
            raise CalibratedImageError(f"{path}: no {what} HDU {spec!r} (HDUs: {[x.name for x in hdul]})") from exc
        src = f"{path}[{spec}]"
    if arr.shape != shape:
        raise CalibratedImageError(f"{src}: {what} shape {arr.shape} differs from the image's {shape}")
    return arr


def read_calibrated(path: str | os.PathLike, hdu=None, keywords: dict | None = None,
                    weight=None, mask=None, mask_bits: dict | None = None, gain: float | None = None,
                    saturation: float | None = None, cosmic_rays: bool = True,
                    noise_acf: bool = True) -> Image:
    """Read a calibrated FITS image (see the module doc). Returns an Image in e-.

    Parameters
    ----------
    path : the FITS file (plain, gzip or fpack compressed).
    hdu : name or index of the data HDU (default: the first 2-D image).
    keywords : our keyword -> header keyword(s) (overrides :data:`KEYWORDS` per key).
    weight, mask : HDU name/index in the same file, or a FITS file: inverse variance (data
        units^-2) and data-quality mask (0 = good).
    mask_bits : {mask bit value: our flag name} (e.g. ``{1: "BAD", 2: "SATURATED"}``); bits not
        listed become ``BAD``.
    gain : e-/data unit, overriding the header. saturation : level in data units, likewise.
    noise_acf : measure the noise autocorrelation of the sky (:func:`measure_noise_acf`) and, when
        it is not white, record it in the header (``NACF*``) for the subtraction's variances.
    """
    path = Path(path)
    if not path.exists():
        raise CalibratedImageError(f"{path}: no such file")
    try:
        hdul = fits.open(path, memmap=False)
    except OSError as exc:
        raise CalibratedImageError(f"{path}: not a readable FITS file ({exc})") from exc
    with hdul:
        if all(name in hdul for name in HDUS):
            return read_image(path)
        h = _data_hdu(hdul, path, hdu)
        header = _readable(data_cards(hdul[0].header)) if h is not hdul[0] else fits.Header()
        for card in _readable(data_cards(h.header)).cards:
            header[card.keyword] = (card.value, card.comment)
        data = np.asarray(h.data, np.float64)
        wmap = _aux(hdul, path, weight, data.shape, "weight")
        mmap = _aux(hdul, path, mask, data.shape, "mask")
    wcs = WCS(header)
    if not wcs.has_celestial:
        raise CalibratedImageError(f"{path}: no celestial WCS in the header (CTYPE1/2, CRVAL, CD or "
                                   f"CDELT): the image cannot be placed on the sky")
    if gain is None:
        unit = str(header.get("BUNIT", "")).strip().lower()
        per_amp = [header[k] for k in ("GAINA", "GAINB") if k in header]
        g = header_value(header, "gain", path, keywords, required=unit not in ELECTRON_UNITS and not per_amp)
        gain = g if g is not None else float(np.mean(per_amp)) if per_amp else 1.0  # DECam: mean of its amplifiers
    try:
        gain = float(gain)
    except (TypeError, ValueError) as exc:
        raise CalibratedImageError(f"{path}: gain {gain!r} is not a number") from exc
    if not gain > 0:
        raise CalibratedImageError(f"{path}: gain must be > 0 e-/unit, got {gain}")
    if saturation is None:
        saturation = header_value(header, "saturation", path, keywords)
    flags = np.zeros(data.shape, pixflags.DTYPE)
    finite = np.isfinite(data)
    flags[~finite] |= pixflags.NAN
    sci = np.where(finite, data * gain, 0.0).astype(np.float32)
    if saturation is not None:
        sat_e = float(saturation) * gain
        flags[finite & (sci >= SATURATION_FRACTION * sat_e)] |= pixflags.SATURATED
        header["SATURATE"] = (sat_e, "saturation level (e-)")
    if mmap is not None:
        flags |= _mask_flags(np.asarray(mmap).astype(np.int64), mask_bits, path)
    bkg = measure_background(sci, flags != 0, 64, 3)
    if wmap is not None:
        w = np.asarray(wmap, np.float64)
        var = np.where(np.isfinite(w) & (w > 0), 1 / np.where(w > 0, w, 1), np.inf) * gain ** 2
    else:
        var = bkg.rms.astype(np.float64) ** 2 + np.maximum(sci - bkg.bg, 0)
    flags[~np.isfinite(var) | ~(var > 0)] |= pixflags.BAD
    weight = np.where(flags == 0, 1 / np.where(var > 0, var, 1), 0).astype(np.float32)
    if cosmic_rays:
        crs = detect_cosmic_rays(sci - bkg.bg, weight, exclude=flags)
        flags[crs] |= pixflags.COSMIC_RAY
        weight[crs] = 0
    if noise_acf:
        resid = (sci - bkg.bg) * np.sqrt(weight)
        sources = ndimage.binary_dilation(np.abs(resid) > 3, iterations=4) | (flags != 0)
        rho = measure_noise_acf(resid, sources)
        if rho is not None:
            write_noise_acf(header, rho)
    for key, comment in (("filter", "filter"), ("exptime", "exposure time (s)"), ("mjd", "MJD of the start")):
        v = header_value(header, key, path, keywords)
        if v is not None:
            header[{"filter": "FILTER", "exptime": "EXPTIME", "mjd": "MJD-OBS"}[key]] = (v, comment)
    header["GAIN_IN"] = (gain, "e- per input data unit (applied)")
    header["GAIN"] = (1.0, "e-/unit after conversion")
    header["BUNIT"] = "electron"
    header.setdefault("EXPOSURE", path.name.split(".fits")[0])
    return Image(sci=sci, weight=weight, flags=flags, header=header)


def measure_noise_acf(resid: np.ndarray, mask: np.ndarray, lag: int = NOISE_LAG) -> np.ndarray | None:
    """Normalised noise autocorrelation ((2 lag + 1)^2, 1 at the centre) of the sky pixels of
    ``resid`` (background-subtracted, in units of its noise) where ``mask`` is False, or None
    when no lag is significant (white noise).

    Why: processed images that were resampled by their makers (SWarp, a survey's coadds; the real
    DECam stamps correlate neighbours at 0.2-0.24 with negative lobes at 2 pix) have correlated
    noise their headers do not describe; a kernel-weighted sum (a PSF fit, a convolution) then
    has more variance than its per-pixel variances say (Alard-Lupton's chi^2 1.12-1.19 on those
    stamps). The estimate: masked FFT autocorrelation over a central region of at most
    ``ACF_REGION`` pix, minus its mean at lags ``ACF_BASELINE`` (faint sources and background
    errors raise every lag a little), entries below 4 / sqrt(pairs) set to 0.
    """
    import scipy.fft as sfft

    ny, nx = resid.shape
    hy, hx = min(ny, ACF_REGION) // 2, min(nx, ACF_REGION) // 2
    sl = (slice(ny // 2 - hy, ny // 2 + hy), slice(nx // 2 - hx, nx // 2 + hx))
    m = (~mask[sl]).astype(np.float64)
    x = np.where(m > 0, resid[sl], 0.0)
    if m.sum() < 1000:
        return None
    L = ACF_BASELINE[1]
    shape = (x.shape[0] + L, x.shape[1] + L)
    fx, fm = sfft.rfft2(x, shape), sfft.rfft2(m, shape)
    num = sfft.irfft2(fx * np.conj(fx), shape)
    pairs = sfft.irfft2(fm * np.conj(fm), shape)
    idx = np.arange(-L, L + 1)
    num, pairs = num[np.ix_(idx % shape[0], idx % shape[1])], pairs[np.ix_(idx % shape[0], idx % shape[1])]
    acf = num / np.maximum(pairs, 1)
    dist = np.maximum(*np.meshgrid(np.abs(idx), np.abs(idx), indexing="ij"))
    base = acf[(dist >= ACF_BASELINE[0]) & (dist <= ACF_BASELINE[1])].mean()
    rho = (acf - base) / (acf[L, L] - base)
    rho[np.abs(rho) < 4 / np.sqrt(np.maximum(pairs, 1))] = 0.0
    rho[L, L] = 1.0
    rho = rho[L - lag:L + lag + 1, L - lag:L + lag + 1]
    return rho if np.count_nonzero(rho) > 1 else None


#: NOIRLab Community Pipeline data-quality codes (``ood`` values, not bits) -> our flags; code 7
#: (a CP difference-image detection) marks a possible transient, not a defect: left unflagged
CP_MASK_CODES = {1: pixflags.BAD, 2: pixflags.BAD, 3: pixflags.SATURATED, 4: pixflags.SATURATED,
                 5: pixflags.COSMIC_RAY, 6: pixflags.BAD, 8: pixflags.BAD}


def instcal_files(ooi: str | os.PathLike) -> tuple[Path | None, Path | None]:
    """The ``oow`` (inverse variance) and ``ood`` (data quality) files beside a CP ``ooi`` image
    (same name with ``_oow_``/``_ood_``), or None where absent."""
    ooi = Path(ooi)
    out = []
    for kind in ("oow", "ood"):
        other = ooi.with_name(ooi.name.replace("_ooi_", f"_{kind}_"))
        out.append(other if other != ooi and other.exists() else None)
    return out[0], out[1]


def read_instcal(path: str | os.PathLike, hdu=None, gain: float | None = None, **kw) -> Image:
    """A NOIRLab Community Pipeline InstCal image (DECam, Mosaic3, 90Prime): the ``ooi`` image with
    its ``oow`` inverse variance and ``ood`` data-quality codes (:data:`CP_MASK_CODES`) read from
    the files beside it, plain or compressed. Missing companions: the noise is estimated and
    nothing is masked (logged in ``INSTCAL`` of the header)."""
    oow, ood = instcal_files(path)
    image = read_calibrated(path, hdu=hdu, weight=str(oow) if oow else None, gain=gain, **kw)
    if ood is not None:
        with fits.open(ood) as hdul:
            codes = np.asarray(_data_hdu(hdul, ood, hdu).data).astype(np.int64)
        if codes.shape != image.shape:
            raise CalibratedImageError(f"{ood}: mask shape {codes.shape} differs from the image's {image.shape}")
        for code, flag in CP_MASK_CODES.items():
            image.flags[codes == code] |= flag
        image.weight[image.flags != 0] = 0
    image.header["INSTCAL"] = (f"oow {'yes' if oow else 'no'}, ood {'yes' if ood else 'no'}", "CP companions read")
    return image


def _readable(header: fits.Header) -> fits.Header:
    """``header`` without the cards astropy cannot parse (old observatory logs, e.g. ESO's
    ``ESO-LOG hh:mm:ss>`` lines), which would make every later update fail."""
    out = fits.Header()
    for card in header.cards:
        try:
            card.verify("silentfix")
            _ = card.value
        except (ValueError, fits.VerifyError):
            continue
        if card.keyword in ("", "COMMENT", "HISTORY"):
            continue
        out.append(card, end=True)
    return out


def _mask_flags(mask: np.ndarray, bits: dict | None, path) -> np.ndarray:
    """Our flags from a data-quality mask: each listed bit value -> its flag; others -> BAD."""
    out = np.zeros(mask.shape, pixflags.DTYPE)
    rest = mask.copy()
    for bit, name in (bits or {}).items():
        flag = pixflags.NAMES.get(str(name).upper())
        if flag is None:
            raise CalibratedImageError(f"{path}: mask_bits maps {bit} to unknown flag {name!r} "
                                       f"({', '.join(pixflags.NAMES)})")
        hit = (mask & int(bit)) != 0
        out[hit] |= flag
        rest &= ~int(bit)
    out[rest != 0] |= pixflags.BAD
    return out
