"""Flux and AB magnitude conversions, and statistics over segments: contiguous runs of rows, one per light curve, computed for all of
them at once with numpy (sums, sigma-clipped means and scatter, S/N), without a Python loop per
light curve."""

from __future__ import annotations

import numpy as np
import pandas as pd

#: AB zero point for fluxes in microJansky: m = 23.9 - 2.5 log10(f / uJy).
AB_ZP_UJY = 23.9
#: Interquartile range of the unit normal distribution (turns an IQR into a sigma).
IQR_TO_SIGMA = 1.0 / 1.3489795003921634



def mag_to_flux(mag, magerr, zp: float = AB_ZP_UJY):
    """Magnitudes to flux and flux error (microJansky for the default AB zero point)."""
    mag = np.asarray(mag, dtype=float)
    flux = 10.0 ** (-0.4 * (mag - zp))
    fluxerr = flux * np.asarray(magerr, dtype=float) * (0.4 * np.log(10.0))
    return flux, fluxerr


def flux_to_mag(flux, zp: float = AB_ZP_UJY):
    """Flux (microJansky) to AB magnitude; non-positive fluxes give NaN."""
    flux = np.asarray(flux, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(flux > 0, zp - 2.5 * np.log10(flux), np.nan)


# -- segments: contiguous runs of rows, one per light curve ----------------------------

def segment_ids(starts, n: int) -> np.ndarray:
    """Segment index of each of ``n`` rows, given the (sorted) first row of each segment."""
    starts = np.asarray(starts, dtype=np.int64)
    return np.repeat(np.arange(starts.size), np.diff(np.append(starts, n)))


def segment_sum(values, starts) -> np.ndarray:
    """Sum of ``values`` over each contiguous segment (0 for empty segments).

    ``np.add.reduceat`` is several times faster than ``np.bincount`` with weights, and each
    segment's sum depends only on its own values.  Booleans are counted (int64).
    """
    values = np.asarray(values)
    starts = np.asarray(starts, dtype=np.int64)
    if values.dtype == bool:
        values = values.view(np.int8)
        dtype = np.int64
    else:
        dtype = None
    sizes = np.diff(np.append(starts, values.size))
    if sizes.size and sizes.min() > 0:
        return np.add.reduceat(values, starts, dtype=dtype)
    out = np.zeros(starts.size, dtype=np.int64 if dtype else np.result_type(values, np.float64))
    full = sizes > 0
    if full.any():
        out[full] = np.add.reduceat(values, starts[full], dtype=dtype)
    return out


def _range_sum(xs_pad: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Sum of ``xs_pad[a[i]:b[i]]`` for ranges that follow each other (``b[i] <= a[i+1]``);
    ``xs_pad`` has one more value (any) after the last ``b``."""
    out = np.zeros(a.size)
    ok = b > a
    if ok.any():
        idx = np.empty(2 * int(ok.sum()), dtype=np.int64)
        idx[0::2], idx[1::2] = a[ok], b[ok]
        out[ok] = np.add.reduceat(xs_pad, idx)[0::2]
    return out


class SegmentGrid:
    """Positions of the values of contiguous segments in the rows of +inf-padded 2-d arrays.

    Sorting the rows of such an array (:meth:`sort`) sorts every segment at once; this is
    exact, independent between segments, and many times faster than ``np.lexsort`` on
    (segment, value).  When segment lengths differ a lot, segments with lengths within a
    factor two share one array, to limit the padding.  Build it once for segments that are
    sorted several times (:func:`segment_snr`).

    Parameters
    ----------
    starts : first index of each segment (sorted, the first one 0).
    n : number of values.
    """

    def __init__(self, starts, n: int):
        self.starts = np.asarray(starts, dtype=np.int64)
        self.n = int(n)
        self.sizes = np.diff(np.append(self.starts, self.n))
        nseg = self.starts.size
        self.parts = []  # (elements or None for all, flat grid positions, rows, width)
        if nseg <= 1 or self.n == 0:
            return
        width = int(self.sizes.max())
        if nseg * width <= 4 * self.n + 4096:  # one grid: little padding
            flat = np.arange(self.n) + np.repeat(np.arange(nseg) * width - self.starts, self.sizes)
            self.parts.append((None, flat, nseg, width))
            return
        bucket = np.ceil(np.log2(np.maximum(self.sizes, 1))).astype(np.int64)
        seg = segment_ids(self.starts, self.n)
        for b in np.unique(bucket):
            rows = np.flatnonzero(bucket == b)
            w = int(self.sizes[rows].max())
            shift = np.zeros(nseg, dtype=np.int64)
            shift[rows] = np.arange(rows.size) * w - self.starts[rows]
            elems = np.flatnonzero((bucket == b)[seg])
            self.parts.append((elems, elems + shift[seg[elems]], rows.size, w))

    def per_value(self, per_segment) -> np.ndarray:
        """Repeat a per-segment array over each segment's values."""
        return np.repeat(per_segment, self.sizes)

    def sort(self, keyed: np.ndarray) -> np.ndarray:
        """``keyed`` (no NaN) sorted within each segment."""
        if not self.parts:
            return np.sort(keyed)
        out = keyed.copy() if self.parts[0][0] is not None else None
        for elems, flat, rows, width in self.parts:
            grid = np.full(rows * width, np.inf)
            grid[flat] = keyed if elems is None else keyed[elems]
            grid = grid.reshape(rows, width)
            grid.sort(axis=1)
            if elems is None:
                return grid.ravel()[flat]
            out[elems] = grid.ravel()[flat]
        return out


def sorted_within_segments(values: np.ndarray, grid: SegmentGrid) -> tuple[np.ndarray, np.ndarray]:
    """(values sorted within each segment, non-finite ones as +inf at the segment's end;
    the mask of finite values in the input order)."""
    finite = np.isfinite(values)
    keyed = values if finite.all() else np.where(finite, values, np.inf)
    return grid.sort(keyed), finite


def quantiles_sorted(xs_pad: np.ndarray, base: np.ndarray, k: np.ndarray, qs) -> np.ndarray:
    """Quantiles ``qs`` (linear interpolation, as numpy's default) of ``xs[base : base+k]``
    for every segment at once; ``xs_pad`` is ``xs`` with one +inf appended (segments
    with ``k == 0`` give garbage that callers ignore)."""
    pos = (k - 1) * np.asarray(qs, dtype=float)[:, None]
    i0 = np.floor(pos).astype(np.int64)
    frac = pos - i0
    i1 = np.minimum(i0 + 1, np.maximum(k - 1, 0))
    a = xs_pad[base + i0]
    b = xs_pad[base + i1]
    with np.errstate(invalid="ignore"):  # inf - inf where a segment has too few values
        return a + frac * (b - a)


def _count_below(xs_pad: np.ndarray, base: np.ndarray, size: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Number of values below ``target`` in each sorted range ``xs_pad[base : base + size]``.

    A binary search of all ranges at once (``np.searchsorted`` searches one sorted array):
    about log2(size) steps of a few operations on arrays with one value per range.
    """
    lo = np.zeros(base.size, dtype=np.int64)
    hi = np.asarray(size, dtype=np.int64).copy()
    for _ in range(int(hi.max(initial=0)).bit_length() + 1):
        open_ = lo < hi
        if not open_.any():
            break
        mid = (lo + hi) >> 1
        right = xs_pad[base + mid] < target
        lo = np.where(open_ & right, mid + 1, lo)
        hi = np.where(open_ & ~right, mid, hi)
    return lo


def segment_clipped_stats(values, starts, sigma: float = 3.5, iters: int = 5,
                          grid: SegmentGrid | None = None, return_keep: bool = True):
    """Robust mean, rms and kept-mask of every segment, by iterative sigma clipping.

    Each segment is clipped around its median at ``sigma`` times a robust width, the
    interquartile range / 1.349 of the values kept so far (a Gaussian's sigma), for at
    most ``iters`` iterations or until nothing changes; segments with fewer than three
    values are not clipped.  The mean and rms (``ddof=1``) of the kept values are
    returned.  All segments are processed together: each value is sorted once within its
    segment and, because clipping around the median always keeps an interval of the
    sorted values, every iteration is a binary search of the new interval in the segments
    still changing.  The IQR replaces the median absolute deviation because it is read
    directly off the sorted values; both are robust to a few outliers.  A segment's
    results depend only on its own values.

    Parameters
    ----------
    values : 1-d array (any unit); non-finite values are never kept.
    starts : first index of each segment (sorted, the first one 0).
    sigma : clipping threshold in robust sigmas.
    iters : most clipping iterations.
    grid : the :class:`SegmentGrid` of ``starts`` (made when not given).
    return_keep : compute ``keep`` (else it is None).

    Returns
    -------
    mean, rms : arrays with one value per segment (NaN where nothing is kept; rms NaN
        with fewer than two kept values).
    keep : boolean array like ``values`` (None unless ``return_keep``).
    """
    values = np.asarray(values, dtype=float)
    starts = np.asarray(starts, dtype=np.int64)
    n, nseg = values.size, starts.size
    if n == 0:
        return np.full(nseg, np.nan), np.full(nseg, np.nan), np.zeros(0, dtype=bool)
    grid = grid if grid is not None else SegmentGrid(starts, n)
    xs, finite = sorted_within_segments(values, grid)
    xs_pad = np.append(xs, np.inf)
    n_finite = grid.sizes if finite.all() else segment_sum(finite, starts)
    lo = np.zeros(nseg, dtype=np.int64)   # kept values: xs[starts + lo : starts + hi]
    hi = n_finite.copy()
    lower = np.full(nseg, -np.inf)
    upper = np.full(nseg, np.inf)
    act = np.arange(nseg)  # segments still changing
    for _ in range(iters):
        k = hi[act] - lo[act]
        act, k = act[k >= 3], k[k >= 3]
        if act.size == 0:
            break
        q25, med, q75 = quantiles_sorted(xs_pad, starts[act] + lo[act], k, (0.25, 0.5, 0.75))
        width = (q75 - q25) * IQR_TO_SIGMA
        ok = width > 0
        act, med, width = act[ok], med[ok], width[ok]
        if act.size == 0:
            break
        lower[act] = med - sigma * width
        upper[act] = med + sigma * width
        # values < lower, and values <= upper (< the next float up), in the finite part
        base = np.tile(starts[act], 2)
        both = _count_below(xs_pad, base, np.tile(n_finite[act], 2),
                            np.concatenate([lower[act], np.nextafter(upper[act], np.inf)]))
        new_lo, new_hi = both[:act.size], both[act.size:]
        changed = (new_lo != lo[act]) | (new_hi != hi[act])
        lo[act], hi[act] = new_lo, new_hi
        act = act[changed]
    keep = None
    if return_keep:
        keep = finite & (values >= grid.per_value(lower)) & (values <= grid.per_value(upper))
    count = hi - lo
    a, b = starts + lo, starts + hi
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = _range_sum(xs_pad, a, b) / count
        dev = np.empty(n + 1)  # squared deviations, padded for _range_sum
        np.subtract(xs, grid.per_value(mean), out=dev[:n])
        dev[n] = 0.0
        np.multiply(dev, dev, out=dev)
        rms = np.sqrt(_range_sum(dev, a, b) / (count - 1))
    mean[count == 0] = np.nan
    rms[count < 2] = np.nan
    return mean, rms, keep


def sigma_clipped_stats(values, sigma: float = 3.5, iters: int = 5):
    """Robust (mean, rms, mask of kept values) of one array; see :func:`segment_clipped_stats`."""
    mean, rms, keep = segment_clipped_stats(values, [0], sigma, iters)
    return float(mean[0]), float(rms[0]), keep


def segment_snr(flux, fluxerr, starts, sigma: float = 3.5):
    """S/N columns and statistics of every segment (light curve) of concatenated fluxes.

    ``snr = flux / fluxerr``; ``dsnr = (flux - flux_mean) / (fluxerr * err_scale)`` where
    ``flux_mean`` is the segment's sigma-clipped mean and ``err_scale >= 1`` rescales the
    errors so that the clipped deviations have unit rms (survey errors are often
    underestimated).

    Parameters
    ----------
    flux, fluxerr : 1-d arrays (uJy).
    starts : first index of each segment.
    sigma : sigma-clipping threshold.

    Returns
    -------
    snr, dsnr : arrays like ``flux``.
    stats : dict of per-segment arrays: flux_mean, flux_rms (uJy), err_scale, mag_mean,
        n_epochs, n_clipped.
    """
    flux = np.asarray(flux, dtype=float)
    err = np.asarray(fluxerr, dtype=float)
    starts = np.asarray(starts, dtype=np.int64)
    grid = SegmentGrid(starts, flux.size)
    mean, rms, keep = segment_clipped_stats(flux, starts, sigma, grid=grid)
    with np.errstate(divide="ignore", invalid="ignore"):
        pull = (flux - grid.per_value(mean)) / err
        snr = flux / err
    _, pull_rms, _ = segment_clipped_stats(np.where(keep, pull, np.nan), starts, sigma, grid=grid,
                                           return_keep=False)
    n_keep = segment_sum(keep, starts)
    scale = np.where((n_keep > 3) & np.isfinite(pull_rms), np.maximum(1.0, pull_rms), 1.0)
    dsnr = pull / grid.per_value(scale)
    n_epochs = grid.sizes
    stats = {"flux_mean": mean, "flux_rms": rms, "err_scale": scale, "mag_mean": flux_to_mag(mean),
             "n_epochs": n_epochs, "n_clipped": n_epochs - n_keep.astype(np.int64)}
    return snr, dsnr, stats


def add_snr_columns(df: pd.DataFrame, sigma: float = 3.5) -> tuple[pd.DataFrame, dict]:
    """Add ``snr`` (flux / fluxerr) and ``dsnr`` (deviation S/N) columns; return the stats.

    One light curve's version of :func:`segment_snr`.  Modifies and returns ``df``; the
    stats dict holds flux_mean, flux_rms (uJy), err_scale, mag_mean, n_epochs, n_clipped.
    """
    snr, dsnr, stats = segment_snr(df["flux"].to_numpy(dtype=float),
                                   df["fluxerr"].to_numpy(dtype=float), [0], sigma)
    df["snr"] = snr
    df["dsnr"] = dsnr
    cols = stats_columns(stats)
    return df, {k: v[0] for k, v in cols.items()}


def stats_columns(stats: dict) -> dict[str, list]:
    """:func:`segment_snr`'s stats as lists of python floats and ints."""
    return {k: np.asarray(v, dtype=np.int64 if k in ("n_epochs", "n_clipped") else float).tolist()
            for k, v in stats.items()}
