"""Preprocessing of one raw CCD section: overscan, trim, bias, flat, gain, weight and flags.

``preprocess(raw, bias, flat, pars)`` turns a :class:`RawSection` (see
``vo.images.instruments.base``) into an :class:`vo.images.image.Image` in electrons:

1. overscan: per amplifier, a sigma-clipped mean of each overscan row (``row``, optionally
   smoothed over ``overscan_smooth`` rows), a polynomial in the row number fitted to those
   (``polynomial``) or one clipped mean (``mean``); subtracted from that amplifier's rows;
2. trim to the data section, subtract the master bias (ADU), multiply by the gain (e-/ADU,
   per amplifier) and divide by the master flat (median 1);
3. variance ``(read_noise^2 + Poisson) / flat^2`` (e-^2; Poisson = the local sky level, or
   the pixel's own signal before the flat where it is > 3 sigma above the sky) and weight =
   1/variance.  The model is checked against the measured sky noise (header ``NOISEQ`` =
   measured/model variance); outside 0.5-2 (wrong gain or read noise, processed data) the
   weights come from the measured sky noise instead (``NOISEMOD = 'empirical'``, a warning);
4. flags (:mod:`vo.images.flags`): instrument bad pixels, saturation (raw ADU >= the
   amplifier's saturation level, grown along columns for bleed trails), cosmic rays, the edge
   margin, non-finite values (set to 0) and a low flat; the weight is 0 wherever a flag is set.

Cosmic rays (:func:`detect_cosmic_rays`) are found with a morphological top-hat: the image
minus its grey opening by a 3x3 cross keeps only structures narrower than 3 pixels (single
pixels, 1-2 pixel wide tracks) while a star keeps most of its light in the opening, because
all four neighbours of its brightest pixels are bright too.  A pixel is a cosmic ray when
the top-hat (less its mean on pure noise) is ``cr_nsigma`` times its noise *and* a fraction
``cr_sharpness`` of its signal above the local background (the sharpness test of van Dokkum
2001, L.A.Cosmic, with a cross opening in place of L.A.Cosmic's slower median filters; the
cross spares undersampled stars better than a 3x3 square).  Neighbours of cosmic-ray
pixels that pass the same test at ``cr_grow_nsigma`` join them (hysteresis, following
tracks), then the neighbours ``cr_grow_nsigma`` sigma above the local background (charge
spread around a hit).  A cosmic ray on a star of similar brightness is not sharp and is
missed (the price of never flagging star cores).
Everything is float32 and vectorised; the sparse steps work on the candidate pixels only.

The WCS of the raw section (its untrimmed pixel grid) is kept card for card (TAN, TPV ``PV``
or SIP terms untouched) with ``CRPIX`` (and IRAF ``LTV``) shifted by the trim offsets.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import numpy as np
from astropy.io import fits

from vo import config as vconfig
from vo.images import flags as pixflags
from vo.images.calibrate.flagging import (block_cells, block_median, detect_cosmic_rays, expand, grow_saturation,
                                          set_bit)
from vo.images.image import Image


#: WCS cards carried from the raw section header (optional alternate-WCS letter at the end)
WCS_KEY = re.compile(r"^(WCSAXES|WCSNAME|CTYPE\d|CUNIT\d|CRVAL\d|CRPIX\d|CDELT\d|CROTA\d|CD\d_\d|"
                     r"PC\d_\d|PV\d_\d+|PS\d_\d+|LONPOLE|LATPOLE|RADESYS|RADECSYS|EQUINOX|EPOCH|"
                     r"MJDREF|DATEREF|[AB]P?_ORDER|[AB]P?_\d+_\d+|[AB]_DMAX|LTV\d|LTM\d_\d|"
                     r"DATE-OBS)[A-Z]?$")
CRPIX_KEY = re.compile(r"^(CRPIX|LTV)([12])([A-Z]?)$")
#: pixels more than this many sigma above the local sky get their own Poisson variance
SOURCE_NSIGMA = 3.0
#: measured/model sky variance outside this range: weights from the measured noise instead
NOISE_RATIO = (0.5, 2.0)

log = logging.getLogger("vo.images.calibrate.preprocess")


# -- blank data ---------------------------------------------------------------------------
#: a section whose pixels are this fraction (or more) one value is blank (a dead CCD or
#: amplifier chain, a readout that wrote zeros); a few cosmic rays or hot pixels do not save it
BLANK_FRACTION = 0.99


def blank_reason(data: np.ndarray, step: int = 7, saturation: float | None = None) -> str | None:
    """Why ``data`` (a raw section or image, any shape) is blank, or None: no finite pixel, or
    :data:`BLANK_FRACTION` of the finite pixels (every ``step``-th one in each axis) equal to
    one value (said to be saturated when it reaches ``saturation``).  A blank CCD otherwise goes
    through extraction as noise peaks (an all-zero CCD gave 92 "sources") and fails later for a
    reason that hides the cause."""
    a = np.asarray(data)
    sub = a[::step, ::step] if a.ndim == 2 else a.ravel()[::step]
    finite = sub[np.isfinite(sub)] if sub.dtype.kind == "f" else sub.ravel()
    if finite.size == 0:
        return "blank: every pixel is NaN or infinite"
    value = np.median(finite)
    frac = float(np.count_nonzero(finite == value)) / finite.size
    if frac >= BLANK_FRACTION and (saturation is None or value < saturation):
        return f"blank: {frac:.1%} of the pixels are {value:g}"
    if frac >= BLANK_FRACTION:
        return f"blank: {frac:.1%} of the pixels are {value:g}, saturated (level {saturation:g})"
    return None


class BlankDataError(ValueError):
    """A CCD that holds no data (:func:`blank_reason`); the message names the file, exposure,
    CCD and cause.  The workflow flags it (skipped products) instead of failing the night."""


def check_not_blank(data: np.ndarray, where: str, saturation: float | None = None) -> None:
    """Raise :class:`BlankDataError` (``where: cause``) when ``data`` is blank."""
    why = blank_reason(data, saturation=saturation)
    if why:
        raise BlankDataError(f"{where}: {why}")


# -- geometry -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Amplifier:
    """One amplifier of a section.

    region : (y, x) slices of its data pixels in the *trimmed* grid.
    raw_region : the same pixels in the raw section array.
    overscan : (y, x) slices of its overscan in the raw section array, or None.
    gain : e-/ADU; read_noise : e-; saturation : ADU (raw level).
    """

    region: tuple[slice, slice]
    raw_region: tuple[slice, slice]
    overscan: tuple[slice, slice] | None
    gain: float
    read_noise: float
    saturation: float


def _slices(slc, shape, what: str) -> tuple[slice, slice]:
    """Concrete (start, stop, step 1) slices of a (y, x) pair for an array of ``shape``."""
    try:
        ys, xs = slc
    except (TypeError, ValueError):
        raise ValueError(f"{what}: expected a (y, x) pair of slices, got {slc!r}") from None
    out = []
    for s, n in zip((ys, xs), shape):
        start, stop, step = s.indices(n)
        if step != 1 or stop <= start:
            raise ValueError(f"{what}: slice {s} is empty or strided for an axis of {n} pixels")
        out.append(slice(start, stop))
    return tuple(out)


def _per_amp(value, i: int, n: int, name: str, where: str) -> float:
    if np.ndim(value) == 0:
        return float(value)
    value = list(value)
    if len(value) != n:
        raise ValueError(f"{where}: {name} has {len(value)} values for {n} amplifier(s)")
    return float(value[i])


def amplifiers(raw, where: str = "section") -> list[Amplifier]:
    """The amplifiers of ``raw`` (a RawSection) with their regions in the trimmed grid."""
    dy, dx = _slices(raw.datasec, raw.data.shape, f"{where}: datasec")
    overscans = list(raw.overscans or [])
    n = max(len(overscans), 1)
    if not overscans:
        overscans = [((dy, dx), None)]
    amps = []
    for i, (dreg, oreg) in enumerate(overscans):
        ry, rx = _slices(dreg, raw.data.shape, f"{where}: amplifier {i} data region")
        y0, y1 = max(ry.start, dy.start), min(ry.stop, dy.stop)
        x0, x1 = max(rx.start, dx.start), min(rx.stop, dx.stop)
        if y1 <= y0 or x1 <= x0:
            raise ValueError(f"{where}: amplifier {i} data region {dreg} lies outside datasec {raw.datasec}")
        osc = None if oreg is None else _slices(oreg, raw.data.shape, f"{where}: amplifier {i} overscan")
        amps.append(Amplifier(
            region=(slice(y0 - dy.start, y1 - dy.start), slice(x0 - dx.start, x1 - dx.start)),
            raw_region=(slice(y0, y1), slice(x0, x1)), overscan=osc,
            gain=_per_amp(raw.gain, i, n, "gain", where),
            read_noise=_per_amp(raw.read_noise, i, n, "read_noise", where),
            saturation=_per_amp(raw.saturation, i, n, "saturation", where)))
    covered = sum((ys.stop - ys.start) * (xs.stop - xs.start) for ys, xs in (a.region for a in amps))
    if covered != (dy.stop - dy.start) * (dx.stop - dx.start):
        raise ValueError(f"{where}: the amplifier data regions cover {covered} of the "
                         f"{(dy.stop - dy.start) * (dx.stop - dx.start)} pixels of datasec {raw.datasec}")
    return amps


# -- overscan -----------------------------------------------------------------------------
def _clipped_row_means(strip: np.ndarray, nsigma: float) -> np.ndarray:
    """Per-row mean of ``strip`` (rows, columns) after clipping at ``nsigma`` robust sigmas.

    A mean (not a median) so integer-valued raw data give unbiased levels; the sigma is one
    robust value for the whole strip (stable with few overscan columns).
    """
    strip = np.asarray(strip, dtype=np.float32)
    center = np.median(strip, axis=1)
    for _ in range(2):
        dev = strip - center[:, None]
        sigma = max(1.4826 * float(np.median(np.abs(dev))), 0.5)  # >= half an ADU step
        keep = np.abs(dev) <= nsigma * sigma
        n = keep.sum(axis=1)
        center = np.where(n > 0, (strip * keep).sum(axis=1) / np.maximum(n, 1), center)
    return center.astype(np.float32)


def _running_mean(values: np.ndarray, window: int) -> np.ndarray:
    """Centered running mean over ``window`` values; near the ends the window shrinks
    symmetrically, so a linear trend is kept exactly."""
    if window <= 1 or values.size < 3:
        return values
    i = np.arange(values.size)
    h = np.minimum(np.minimum(window // 2, i), values.size - 1 - i)
    c = np.concatenate([[0.0], np.cumsum(values, dtype=np.float64)])
    return ((c[i + h + 1] - c[i - h]) / (2 * h + 1)).astype(np.float32)


def overscan_levels(raw, amp: Amplifier, pars: dict, where: str = "section") -> np.ndarray | float:
    """Bias level (ADU) of each row of ``amp``'s data region (an array) or one value.

    ``pars`` has ``overscan_method`` (row, polynomial, mean), ``overscan_smooth`` (rows),
    ``overscan_order`` and ``overscan_clip`` (sigma); see the ``calibration`` config section.
    """
    if amp.overscan is None:
        return 0.0
    strip = raw.data[amp.overscan]
    method = pars["overscan_method"]
    if method == "mean":
        return float(_clipped_row_means(strip.reshape(1, -1), pars["overscan_clip"])[0])
    oy, ry = amp.overscan[0], amp.raw_region[0]
    if ry.start < oy.start or ry.stop > oy.stop:
        raise ValueError(f"{where}: overscan rows {oy.start}:{oy.stop} do not cover the data rows "
                         f"{ry.start}:{ry.stop}; use overscan_method: mean")
    rows = _clipped_row_means(strip, pars["overscan_clip"])
    if method == "row":
        rows = _running_mean(rows, int(pars["overscan_smooth"]))
    elif method == "polynomial":
        y = np.arange(rows.size, dtype=np.float64)
        rows = np.polynomial.Polynomial.fit(y, rows, int(pars["overscan_order"]))(y).astype(np.float32)
    else:
        raise ValueError(f"{where}: unknown overscan_method {method!r} (row, polynomial, mean)")
    return rows[ry.start - oy.start:ry.stop - oy.start]


def overscan_corrected(raw, pars: dict, where: str = "section") -> tuple[np.ndarray, list[Amplifier], list]:
    """The trimmed data section minus the overscan level (ADU, a new float32 array).

    Returns (array, amplifiers, per-amplifier levels).
    """
    amps = amplifiers(raw, where)
    dy, dx = _slices(raw.datasec, raw.data.shape, f"{where}: datasec")
    out = np.array(raw.data[dy, dx], dtype=np.float32)  # the one copy of the frame
    levels = []
    for amp in amps:
        level = overscan_levels(raw, amp, pars, where)
        levels.append(level)
        if np.ndim(level):
            out[amp.region] -= level[:, None]
        elif level:
            out[amp.region] -= np.float32(level)
    return out, amps, levels


def to_electrons(adu: np.ndarray, amps: list[Amplifier]) -> np.ndarray:
    """Multiply each amplifier's region by its gain, in place (ADU -> e-)."""
    for amp in amps:
        adu[amp.region] *= np.float32(amp.gain)
    return adu


def saturation_mask(raw, amps: list[Amplifier]) -> np.ndarray:
    """Raw ADU >= the amplifier's saturation level, over the trimmed grid (bool)."""
    dy, dx = _slices(raw.datasec, raw.data.shape, "datasec")
    mask = np.zeros((dy.stop - dy.start, dx.stop - dx.start), dtype=bool)
    for amp in amps:
        np.greater_equal(raw.data[amp.raw_region], amp.saturation, out=mask[amp.region])
    return mask


# -- header -------------------------------------------------------------------------------
def trimmed_wcs_cards(header: fits.Header, y0: int, x0: int) -> list[tuple[str, object, str]]:
    """WCS cards of ``header`` for a grid whose pixel (0, 0) was raw pixel (y0, x0):
    CRPIX (and IRAF LTV) shifted, every other card (CD, PV, SIP, ...) unchanged."""
    out = []
    for card in header.cards:
        key = card.keyword
        if not WCS_KEY.match(key):
            continue
        value = card.value
        m = CRPIX_KEY.match(key)
        if m:
            value = float(value) - (x0 if m.group(2) == "1" else y0)
        out.append((key, value, card.comment))
    return out


def _describe(raw, meta: dict, filename) -> str:
    """'file: exposure E ccd C', for messages."""
    exposure = meta.get("exposure") or raw.header.get("EXPOSURE", "?")
    fname = filename or getattr(raw, "path", None) or raw.header.get("FILENAME", "?")
    return f"{fname}: exposure {exposure} ccd {raw.ccd}"


def image_header(raw, meta: dict, amps: list[Amplifier], levels: list, bias_level: float,
                 y0: int, x0: int) -> fits.Header:
    """Header of the preprocessed image: exposure keys, units and the trimmed-grid WCS."""
    h = fits.Header()
    rh = raw.header
    def value(key, name):
        return rh.get(key) if meta.get(name) is None else meta[name]

    for key, name in (("INSTRUME", "instrument"), ("EXPOSURE", "exposure"), ("FILTER", "filter")):
        if value(key, name) is not None:
            h[key] = str(value(key, name))
    h["CCD"] = (str(raw.ccd), "section (CCD) name")
    for key, name in (("MJD-OBS", "mjd"), ("EXPTIME", "exptime"), ("AIRMASS", "airmass")):
        if value(key, name) is not None and np.isfinite(float(value(key, name))):
            h[key] = float(value(key, name))
    sat = min((a.saturation - float(np.mean(lv)) - bias_level) * a.gain for a, lv in zip(amps, levels))
    h["SATURATE"] = (round(sat, 3), "[e-] saturation level (lowest amplifier)")
    h["RDNOISE"] = (max(a.read_noise for a in amps), "[e-] read noise (highest amplifier)")
    h["GAIN"] = (1.0, "[e-/unit] image is in electrons")
    h["BUNIT"] = ("electron", "science pixels in e-")
    h["TRIMY0"] = (y0, "raw row of this image's row 0")
    h["TRIMX0"] = (x0, "raw column of this image's column 0")
    for key, value, comment in trimmed_wcs_cards(rh, y0, x0):
        h[key] = (value, comment)
    return h


# -- the step -----------------------------------------------------------------------------
def preprocess(raw, bias: np.ndarray | None, flat: np.ndarray | None, pars: dict,
               overscan: dict | None = None, meta: dict | None = None,
               filename: str | None = None) -> Image:
    """Preprocess one raw CCD section into an :class:`Image` (electrons, weight, flags).

    Parameters
    ----------
    raw : RawSection (data in ADU incl. overscan, header, ccd, datasec, overscans, gain
        (e-/ADU), read_noise (e-), saturation (raw ADU), bad_pixel_mask).
    bias : master bias (ADU, trimmed grid) or None.
    flat : master flat (median 1, trimmed grid) or None; ignored if ``pars["flat"]`` is false.
    pars : the ``preprocessing`` config section.
    overscan : the ``calibration`` config section (overscan settings, shared with the
        calibration frames); None uses the schema defaults.
    meta : exposure keys (instrument, exposure, filter, mjd, exptime, airmass) from
        ``Instrument.read_exposure_header``; missing ones come from the raw header.
    filename : raw file name, for error messages.

    Raises
    ------
    BlankDataError
        naming the file, exposure, ccd and cause, for blank data (all NaN, one value, saturated).
    ValueError
        for calibration frames whose shape differs from the trimmed section.
    """
    meta = meta or {}
    overscan = overscan or vconfig.defaults()["calibration"]
    where = _describe(raw, meta, filename)
    dy, dx = _slices(raw.datasec, raw.data.shape, f"{where}: datasec")
    shape = (dy.stop - dy.start, dx.stop - dx.start)
    sci, amps, levels = overscan_corrected(raw, overscan, where)
    check_not_blank(raw.data[dy, dx], where, min(a.saturation for a in amps))
    bias_level = 0.0
    if bias is not None:
        _check_shape(bias, shape, "master bias", where)
        sci -= bias
        bias_level = float(np.nanmedian(bias[::8, ::8]))
    flg = np.zeros(shape, dtype=pixflags.DTYPE)
    n_bad = _flag_nonfinite(sci, flg)
    sat = saturation_mask(raw, amps)
    if int(np.count_nonzero(sat)) >= sci.size - n_bad:  # saturated everywhere, not one value
        raise BlankDataError(f"{where}: all finite data pixels are saturated (raw ADU >= saturation)")
    to_electrons(sci, amps)
    weight = poisson_variance(sci, max(a.read_noise for a in amps))  # variance until inverted
    for amp in amps:
        weight[amp.region] += np.float32(amp.read_noise ** 2)
    use_flat = flat is not None and pars["flat"]
    if use_flat:
        _check_shape(flat, shape, "master flat", where)
        sci /= flat
        np.divide(np.square(flat, dtype=np.float32), weight, out=weight)
        _flag_nonfinite(sci, flg)
    else:
        np.divide(np.float32(1), weight, out=weight)
    q, sky, var = noise_check(sci, weight)
    if not NOISE_RATIO[0] < q < NOISE_RATIO[1]:
        log.warning("%s: measured / model sky variance = %.2f: wrong read noise or gain, or "
                    "processed data; weights from the measured sky noise", where, q)
        weight = empirical_weight(sci, sky, var)
    if raw.bad_pixel_mask is not None:
        _check_shape(raw.bad_pixel_mask, shape, "bad pixel mask", where)
        set_bit(flg, pixflags.BAD, raw.bad_pixel_mask)
    if sat.any():
        set_bit(flg, pixflags.SATURATED, grow_saturation(sat, int(pars["bleed_grow"]),
                                                      int(pars["saturation_grow"])))
    if use_flat:
        set_bit(flg, pixflags.LOW_FLAT, flat < np.float32(pars["low_flat"]))
    m = int(pars["edge_margin"])
    if m > 0:
        for edge in (np.s_[:m, :], np.s_[-m:, :], np.s_[:, :m], np.s_[:, -m:]):
            flg[edge] |= pixflags.EDGE
    if pars["cosmic_rays"]:
        cr = detect_cosmic_rays(sci, weight, exclude=flg, nsigma=pars["cr_nsigma"],
                                sharpness=pars["cr_sharpness"], grow_nsigma=pars["cr_grow_nsigma"],
                                background=sky)
        set_bit(flg, pixflags.COSMIC_RAY, cr)
    np.copyto(weight, 0, where=flg != 0)
    header = image_header(raw, meta, amps, levels, bias_level, dy.start, dx.start)
    header["NOISEQ"] = (round(q, 4), "measured/model sky variance")
    header["NOISEMOD"] = ("model" if NOISE_RATIO[0] < q < NOISE_RATIO[1] else "empirical",
                          "weights: noise model or measured sky noise")
    return Image(sci=sci, weight=weight, flags=flg, header=header)


def poisson_variance(sci: np.ndarray, read_noise: float) -> np.ndarray:
    """Poisson variance (e-^2) of an image in detected electrons (before the flat).

    Pixels within ``SOURCE_NSIGMA`` sigma of the local sky (:func:`block_median`) get the
    sky level, brighter pixels their own signal: a variance from each pixel's own value would
    be correlated with its noise (weights biased high for low pixels) where the sky is faint.
    """
    sky = np.maximum(block_median(sci), 0)
    threshold = expand(sky + SOURCE_NSIGMA * np.sqrt(sky + read_noise ** 2), sci.shape)
    var = expand(sky.astype(np.float32), sci.shape)
    np.copyto(var, sci, where=sci > threshold)
    return var


def noise_check(sci: np.ndarray, weight: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Compare the noise model with the data: (q, sky, variance) where q is the median over
    :data:`~vo.images.calibrate.flagging.BLOCK`-pixel cells of (robust sky variance of the pixels) x (model weight), ~1 when
    the model holds, and sky, variance the cells' median and robust variance (e-^2)."""
    cells = block_cells(sci)
    sky = np.median(cells, axis=-1)
    var = (1.4826 * np.median(np.abs(cells - sky[..., None]), axis=-1)) ** 2
    w = np.mean(block_cells(weight), axis=-1)
    return float(np.median(var * w)), sky, var


def empirical_weight(sci: np.ndarray, sky: np.ndarray, var: np.ndarray) -> np.ndarray:
    """Inverse variance from the measured sky variance of each cell plus the Poisson term of
    the signal above the sky (for data the noise model does not describe, e.g. processed,
    sky-subtracted images)."""
    sky_full = expand(sky.astype(np.float32), sci.shape)
    total = np.subtract(sci, sky_full, out=sky_full)
    total[total < SOURCE_NSIGMA * np.sqrt(expand(var, sci.shape))] = 0
    total += expand(np.maximum(var, 1e-12).astype(np.float32), sci.shape)
    return np.divide(np.float32(1), total, out=total)


def _flag_nonfinite(sci: np.ndarray, flg: np.ndarray) -> int:
    """Flag non-finite pixels NAN and set them to 0 (in place); returns their number."""
    bad = ~np.isfinite(sci)
    n = int(np.count_nonzero(bad))
    if n:
        set_bit(flg, pixflags.NAN, bad)
        np.copyto(sci, 0, where=bad)
    return n


def _check_shape(arr: np.ndarray, shape: tuple, what: str, where: str) -> None:
    if arr.shape != shape:
        raise ValueError(f"{where}: {what} shape {arr.shape} differs from the trimmed section {shape}")
