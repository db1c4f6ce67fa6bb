"""Per-epoch quality checks of light curves (vectorised over many light curves at once).

Every check is a pure function of arrays that returns a boolean *bad* mask; :func:`check_epochs`
combines them into a *good* mask and counts, per light curve, how many epochs each check
rejected.  Light curves are contiguous segments of concatenated arrays, given by the first
index of each segment (``starts``), as in :func:`vo.lightcurves.segments.segment_snr`.
"""

from __future__ import annotations

import numpy as np

from vo.lightcurves.reduce import angular_offset_arcsec
from vo.lightcurves.segments import segment_clipped_stats, segment_sum

#: Names of the checks, in the order they are reported.
CHECKS = ("flag", "nonfinite", "offset", "offset_outlier")
#: Fewest finite offsets in a light curve for the outlier test to be made.
MIN_OFFSETS_FOR_OUTLIERS = 5


def flagged(flag) -> np.ndarray:
    """Epochs with a non-zero survey quality flag."""
    return np.asarray(flag) != 0


def nonfinite(mjd, flux, fluxerr, dsnr) -> np.ndarray:
    """Epochs with a non-finite time, flux or deviation S/N, or a non-positive flux error."""
    err = np.asarray(fluxerr, dtype=float)
    with np.errstate(invalid="ignore"):
        bad_err = ~(err > 0)
    return ~(np.isfinite(mjd) & np.isfinite(flux) & np.isfinite(dsnr)) | bad_err


def offsets(ra, dec, cat_ra, cat_dec, lc_index=None, sizes=None) -> np.ndarray:
    """Offset (arcsec) of each epoch's position from its target; NaN without a position.

    ``cat_ra``, ``cat_dec`` (deg) are scalars, or one value per light curve with
    ``lc_index`` giving each epoch's light curve, or ``sizes`` the number of epochs of each
    light curve (epochs grouped by light curve; faster).
    """
    cat_ra = np.asarray(cat_ra, dtype=float)
    cat_dec = np.asarray(cat_dec, dtype=float)
    cos_dec = np.cos(np.radians(cat_dec))
    if sizes is not None:
        cat_ra, cat_dec, cos_dec = (np.repeat(v, sizes) for v in (cat_ra, cat_dec, cos_dec))
    elif lc_index is not None:
        cat_ra, cat_dec, cos_dec = cat_ra[lc_index], cat_dec[lc_index], cos_dec[lc_index]
    return angular_offset_arcsec(ra, dec, cat_ra, cat_dec, cos_dec)


def far_from_target(offset, max_offset: float) -> np.ndarray:
    """Epochs whose position is further than ``max_offset`` arcsec from the target."""
    with np.errstate(invalid="ignore"):
        return np.asarray(offset, dtype=float) > max_offset


def offset_outliers(offset, starts, offset_sigma: float) -> np.ndarray:
    """Epochs whose offset exceeds the light curve's typical offset by ``offset_sigma`` sigma.

    The typical offset and its scatter are the sigma-clipped mean and rms of the light
    curve's offsets (arcsec); the test is one-sided (only large offsets are bad) and is
    made only in light curves with at least :data:`MIN_OFFSETS_FOR_OUTLIERS` positions.
    """
    offset = np.asarray(offset, dtype=float)
    starts = np.asarray(starts, dtype=np.int64)
    mean, rms, _ = segment_clipped_stats(offset, starts, sigma=offset_sigma, return_keep=False)
    n_finite = segment_sum(np.isfinite(offset), starts)
    limit = np.where(n_finite >= MIN_OFFSETS_FOR_OUTLIERS, mean + offset_sigma * rms, np.inf)
    with np.errstate(invalid="ignore"):
        return offset > np.repeat(np.nan_to_num(limit, nan=np.inf), np.diff(np.append(starts, offset.size)))


def check_epochs(cols: dict, starts, cat_ra, cat_dec, pars: dict) -> tuple[np.ndarray, dict, np.ndarray]:
    """Run every check on concatenated light curves.

    Parameters
    ----------
    cols : arrays per epoch: mjd, flux, fluxerr, dsnr, flag, ra, dec.
    starts : first index of each light curve.
    cat_ra, cat_dec : target position of each light curve (deg).
    pars : the ``analysis`` config section (max_offset (arcsec), offset_sigma).

    Returns
    -------
    good : boolean array, True where every check passed.
    counts : {check name: int array with the number of epochs it rejected per light curve},
        plus ``good`` (epochs kept per light curve).  An epoch may fail several checks.
    offset : position offset of each epoch from its target (arcsec).
    """
    starts = np.asarray(starts, dtype=np.int64)
    n = np.asarray(cols["mjd"]).size
    off = offsets(cols["ra"], cols["dec"], cat_ra, cat_dec, sizes=np.diff(np.append(starts, n)))
    bad = {"flag": flagged(cols["flag"]),
           "nonfinite": nonfinite(cols["mjd"], cols["flux"], cols["fluxerr"], cols["dsnr"]),
           "offset": far_from_target(off, pars["max_offset"]),
           "offset_outlier": offset_outliers(off, starts, pars["offset_sigma"])}
    good = ~(bad["flag"] | bad["nonfinite"] | bad["offset"] | bad["offset_outlier"])
    counts = {name: segment_sum(mask, starts) for name, mask in bad.items()}
    counts["good"] = segment_sum(good, starts)
    return good, counts, off
