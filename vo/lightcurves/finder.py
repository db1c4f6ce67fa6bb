"""Event finder: runs of epochs that deviate from a light curve's mean flux.

An epoch whose deviation S/N (``dsnr``) reaches ``snr_threshold`` in absolute value starts
an event; the event extends over the neighbouring (good) epochs of the same light curve
while the deviation keeps the same sign and stays at or above ``snr_sideband``.  Brightening
(positive) and dimming (negative) events are found the same way on ``+dsnr`` and ``-dsnr``.
An event needs ``min_epochs_event`` epochs at or above the threshold.

Everything is vectorised over all epochs of many light curves at once: light curves are
contiguous segments of the concatenated arrays, labelled by ``lc`` (segment index).
"""

from __future__ import annotations

import numpy as np

from vo.lightcurves.segments import flux_to_mag

#: Columns of the event table returned by :func:`find_events`.
EVENT_COLUMNS = ("lc", "time_start", "time_peak", "time_end", "peak_snr", "peak_flux", "peak_mag",
                 "dmag", "n_epochs", "n_above", "peak_index")


def _runs(y: np.ndarray, seg: np.ndarray, threshold: float, sideband: float):
    """Runs of consecutive ``y >= sideband`` within a segment that reach ``threshold``.

    Returns (first index, last index, peak index, number of values >= threshold) per run.
    """
    side = y >= sideband
    idx = np.flatnonzero(side)
    if idx.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty, empty
    # a run breaks where the index jumps or the segment changes
    new = np.ones(idx.size, dtype=bool)
    new[1:] = (np.diff(idx) != 1) | (seg[idx[1:]] != seg[idx[:-1]])
    first_pos = np.flatnonzero(new)
    run = np.cumsum(new) - 1
    yv = y[idx]
    n_above = np.bincount(run, weights=yv >= threshold, minlength=first_pos.size).astype(np.int64)
    peak_val = np.maximum.reduceat(yv, first_pos)
    at_peak = np.flatnonzero(yv == peak_val[run])
    _, first_peak = np.unique(run[at_peak], return_index=True)  # earliest epoch at the peak
    last_pos = np.append(first_pos[1:], idx.size) - 1
    return idx[first_pos], idx[last_pos], idx[at_peak[first_peak]], n_above


def find_events(mjd, dsnr, flux, lc, good=None, *, snr_threshold: float = 5.0,
                snr_sideband: float = 2.5, min_epochs_event: int = 1,
                detect_positive: bool = True, detect_negative: bool = True,
                mag_mean=None) -> dict[str, np.ndarray]:
    """Find brightening and dimming events in concatenated light curves.

    Parameters
    ----------
    mjd : epoch times (MJD), sorted within each light curve.
    dsnr : deviation S/N of each epoch.
    flux : flux of each epoch (uJy).
    lc : light-curve (segment) index of each epoch, non-decreasing.
    good : epochs to use (quality passed); the others are skipped, so an event may
        extend across a bad epoch.  ``None`` uses every epoch with a finite ``dsnr``.
    snr_threshold, snr_sideband : |dsnr| that starts an event and that extends it
        (the sideband is capped at the threshold).
    min_epochs_event : epochs at or above the threshold an event needs (at least 1).
    detect_positive, detect_negative : look for brightening / dimming events.
    mag_mean : mean magnitude of each light curve (indexed by ``lc``) for ``dmag``;
        ``None`` gives NaN.

    Returns
    -------
    dict of arrays, one entry per event, sorted by light curve then start time:
    lc, time_start, time_peak, time_end (MJD), peak_snr (signed dsnr at the peak),
    peak_flux (uJy), peak_mag (mag, NaN for a non-positive flux), dmag (peak_mag minus the
    mean magnitude: negative for brightening), n_epochs (epochs in the event), n_above
    (epochs at or above the threshold), peak_index (index of the peak epoch in the inputs).
    """
    dsnr = np.asarray(dsnr, dtype=float)
    use = np.isfinite(dsnr) if good is None else (np.asarray(good, dtype=bool) & np.isfinite(dsnr))
    keep = np.flatnonzero(use)
    x = dsnr[keep]
    seg = np.asarray(lc)[keep]
    sideband = min(snr_sideband, snr_threshold)
    parts = []
    for sign, wanted in ((1.0, detect_positive), (-1.0, detect_negative)):
        if not wanted:
            continue
        first, last, peak, n_above = _runs(sign * x, seg, snr_threshold, sideband)
        ok = n_above >= max(1, int(min_epochs_event))
        parts.append((keep[first[ok]], keep[last[ok]], keep[peak[ok]], n_above[ok], last[ok] - first[ok] + 1))
    if parts:
        first, last, peak, n_above, n_ep = (np.concatenate(p) for p in zip(*parts))
    else:
        first = last = peak = n_above = n_ep = np.zeros(0, dtype=np.int64)
    order = np.lexsort((first, np.asarray(lc)[first]))
    first, last, peak, n_above, n_ep = first[order], last[order], peak[order], n_above[order], n_ep[order]
    mjd = np.asarray(mjd, dtype=float)
    flux = np.asarray(flux, dtype=float)
    lc_of = np.asarray(lc)[peak].astype(np.int64)
    peak_mag = flux_to_mag(flux[peak])
    mean_mag = np.full(peak.size, np.nan) if mag_mean is None else np.asarray(mag_mean, float)[lc_of]
    return {"lc": lc_of, "time_start": mjd[first], "time_peak": mjd[peak], "time_end": mjd[last],
            "peak_snr": dsnr[peak], "peak_flux": flux[peak], "peak_mag": peak_mag,
            "dmag": peak_mag - mean_mag, "n_epochs": n_ep.astype(np.int64),
            "n_above": n_above.astype(np.int64), "peak_index": peak.astype(np.int64)}


def finder_options(pars: dict) -> dict:
    """Keyword arguments of :func:`find_events` from the ``analysis`` config section."""
    return {k: pars[k] for k in ("snr_threshold", "snr_sideband", "min_epochs_event",
                                 "detect_positive", "detect_negative")}
