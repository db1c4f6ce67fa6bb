"""Reduce raw photometry to light curves: pure functions shared by every observatory.

An observatory's reducer maps its raw table to the *standard* raw columns

    mjd (days), mag, magerr (mag), filter (str), flag (int, 0 = good),
    ra, dec (deg), exptime (s), oid (int, the survey's object id)

and calls :func:`make_lightcurves` (one source) or :func:`make_lightcurves_many` (many),
which select, split and calibrate.

Speed: the rows of many sources (an RA bin) are handled together as numpy arrays
(:func:`make_lightcurves_many`); the light curves are *segments* of those arrays, and the
statistics of all segments are computed together (:func:`segment_clipped_stats`,
:func:`segment_snr`).  Light curves keep views of the shared numpy columns and build their
``data`` DataFrame only when it is asked for (:class:`~vo.lightcurves.datasets.Lightcurve`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from vo.lightcurves.datasets import Lightcurve

CODE_VERSION = "1"

#: AB zero point for fluxes in microJansky: m = 23.9 - 2.5 log10(f / uJy).
AB_ZP_UJY = 23.9
STANDARD_COLUMNS = ["mjd", "mag", "magerr", "filter", "flag", "ra", "dec", "exptime", "oid"]
#: Columns of a light curve's ``data``, in order.
LIGHTCURVE_COLUMNS = STANDARD_COLUMNS + ["flux", "fluxerr", "snr", "dsnr"]
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


def _sorted_within_segments(values: np.ndarray, grid: SegmentGrid) -> tuple[np.ndarray, np.ndarray]:
    """(values sorted within each segment, non-finite ones as +inf at the segment's end;
    the mask of finite values in the input order)."""
    finite = np.isfinite(values)
    keyed = values if finite.all() else np.where(finite, values, np.inf)
    return grid.sort(keyed), finite


def _quantiles_sorted(xs_pad: np.ndarray, base: np.ndarray, k: np.ndarray, qs) -> np.ndarray:
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
    xs, finite = _sorted_within_segments(values, grid)
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
        q25, med, q75 = _quantiles_sorted(xs_pad, starts[act] + lo[act], k, (0.25, 0.5, 0.75))
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
    cols = _stats_columns(stats)
    return df, {k: v[0] for k, v in cols.items()}


def _stats_columns(stats: dict) -> dict[str, list]:
    """:func:`segment_snr`'s stats as lists of python floats and ints."""
    return {k: np.asarray(v, dtype=np.int64 if k in ("n_epochs", "n_clipped") else float).tolist()
            for k, v in stats.items()}


def split_seasons(mjd, gap: float) -> np.ndarray:
    """Season index of each epoch (``mjd`` sorted): a new season starts after a gap > ``gap`` days."""
    mjd = np.asarray(mjd, dtype=float)
    if mjd.size == 0:
        return np.zeros(0, dtype=int)
    return np.concatenate([[0], np.cumsum(np.diff(mjd) > gap)]).astype(int)


def angular_offset_arcsec(ra1, dec1, ra2, dec2, cos_dec2=None):
    """Small-angle separation (arcsec) between positions given in degrees.

    ``cos_dec2`` (the cosine of ``dec2``) may be given to save computing it per element.
    """
    dra = np.asarray(ra1, dtype=float) - ra2
    if not np.abs(dra).max(initial=0.0) <= 180.0:  # (NaN included) else the wrap changes nothing
        dra -= 360.0 * np.rint(dra / 360.0)  # wrap to [-180, 180]
    if cos_dec2 is None:
        cos_dec2 = np.cos(np.radians(dec2))
    return 3600.0 * np.hypot(dra * cos_dec2, np.asarray(dec1, dtype=float) - dec2)


def _stable_order(keys: np.ndarray, n_keys: int) -> np.ndarray:
    """Indices that sort the integer ``keys`` (values in ``[0, n_keys)``) stably.

    numpy sorts 16-bit integers stably by radix sort (linear time), so small key ranges
    are cast down; larger ones use the (still stable) default.
    """
    if n_keys <= np.iinfo(np.int16).max:
        return np.argsort(keys.astype(np.int16), kind="stable")
    return np.argsort(keys, kind="stable")


def _group_medians(values: np.ndarray, codes: np.ndarray, n_groups: int) -> np.ndarray:
    """Median of the finite ``values`` of each group (``codes`` in ``[0, n_groups)``), per element.

    Groups without finite values give NaN.  Medians interpolate linearly, as numpy's.
    """
    order = _stable_order(codes, n_groups)
    counts = np.bincount(codes, minlength=n_groups)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    xs, finite = _sorted_within_segments(values[order], SegmentGrid(starts, codes.size))
    nfin = segment_sum(finite, starts)
    med = _quantiles_sorted(np.append(xs, np.inf), starts, nfin, (0.5,))[0]
    med[nfin == 0] = np.nan
    return med[codes]


def _argsort_within_segments(values: np.ndarray, starts: np.ndarray, seg: np.ndarray) -> np.ndarray:
    """Indices that sort ``values`` (finite) within each contiguous segment, stably (equal
    values keep their order), segments kept in place: per segment what
    ``np.argsort(kind="stable")`` gives; identity where a segment is already sorted."""
    n = values.size
    if n < 2:
        return np.arange(n)
    up = (values[1:] >= values[:-1]) | (seg[1:] != seg[:-1])
    if up.all():
        return np.arange(n)
    sizes = np.diff(np.append(starts, n))
    width = int(sizes.max())
    if starts.size * width > 4 * n + 4096:  # very unequal segments: sort by (segment, value)
        return np.lexsort((values, seg))
    # rows of a +inf-padded grid sorted along the rows (padding sorts last); the fast
    # (unstable) sort gives the stable order unless a segment has equal values
    flat = np.arange(n) + np.repeat(np.arange(starts.size) * width - starts, sizes)
    grid = np.full(starts.size * width, np.inf)
    grid[flat] = values
    grid = grid.reshape(starts.size, width)
    first = np.repeat(starts, sizes)
    order = np.argsort(grid, axis=1).ravel()[flat] + first  # a row's values come first
    ranked = values[order]
    if np.any((ranked[1:] == ranked[:-1]) & (seg[1:] == seg[:-1])):
        order = np.argsort(grid, axis=1, kind="stable").ravel()[flat] + first
    return order


def _float_or_nan(value) -> float:
    return np.nan if value is None else float(value)


def _catalog_arrays(cat_rows) -> dict[str, np.ndarray]:
    """ra, dec (deg), mag of each catalog row as float arrays (missing or None -> NaN)."""
    return {k: np.array([_float_or_nan(r.get(k)) for r in cat_rows], dtype=float)
            for k in ("ra", "dec", "mag")}


def target_mask(cols: dict, src: np.ndarray, cat: dict, radius: float, mag_range: float | None,
                drop_flagged: bool) -> np.ndarray:
    """Boolean mask of the rows (standard columns as arrays) that belong to their targets.

    Row ``i`` belongs to source ``src[i]`` (non-decreasing), whose catalog ra, dec (deg) and mag are
    ``cat["ra"][src[i]]`` etc.  Drops NaN magnitudes and times, flagged rows (if
    ``drop_flagged``), rows further than ``radius`` arcsec from the target (rows without a
    position, and targets without one, are kept), and survey objects (``oid``) whose median
    magnitude differs from the catalog magnitude by more than ``mag_range`` (mag; ``None``
    disables; targets without a magnitude are kept).
    """
    good = np.isfinite(cols["mag"]) & np.isfinite(cols["mjd"])
    if drop_flagged:
        good &= cols["flag"] == 0
    cat_ra, cat_dec, cat_mag = cat["ra"], cat["dec"], cat["mag"]
    sizes = np.bincount(src, minlength=cat_ra.size)  # rows are grouped by source
    if np.isfinite(cat_ra).any():
        cos_dec = np.cos(np.radians(cat_dec))
        off = angular_offset_arcsec(cols["ra"], cols["dec"], np.repeat(cat_ra, sizes),
                                    np.repeat(cat_dec, sizes), np.repeat(cos_dec, sizes))
        with np.errstate(invalid="ignore"):
            good &= ~(off > radius)  # NaN positions are kept (no position to test)
    if mag_range is not None:
        sel = np.flatnonzero(good & np.isfinite(cat_mag)[src])
        if sel.size:
            oid_code, oids = pd.factorize(cols["oid"][sel], use_na_sentinel=False)
            group, uniq = pd.factorize(src[sel].astype(np.int64) * max(len(oids), 1) + oid_code)
            med = _group_medians(cols["mag"][sel], group, len(uniq))
            good[sel] = np.abs(med - cat_mag[src[sel]]) <= mag_range
    return good


def _standard_arrays(std, where: str) -> dict[str, np.ndarray]:
    """The standard columns of a DataFrame or mapping as arrays (numeric ones float)."""
    have = std.columns if isinstance(std, pd.DataFrame) else std.keys()
    missing = [c for c in STANDARD_COLUMNS if c not in have]
    if missing:
        raise KeyError(f"raw photometry of {where} lacks columns {missing}")
    cols = {}
    for c in STANDARD_COLUMNS:
        v = std[c]
        cols[c] = v.to_numpy() if isinstance(v, pd.Series) else np.asarray(v)
    for c in ("mjd", "mag", "magerr", "ra", "dec", "exptime"):
        cols[c] = cols[c].astype(float, copy=False)
    n = {c: len(v) for c, v in cols.items()}
    if len(set(n.values())) > 1:
        raise ValueError(f"raw photometry of {where}: columns of different lengths {n}")
    return cols


def concat_sources(tables) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Concatenate the standard columns of several sources' raw tables (DataFrames or
    mappings of arrays): ``(columns, starts)``, ``starts`` being each source's first row."""
    parts = [_standard_arrays(t, f"source {i}") for i, t in enumerate(tables)]
    sizes = np.array([p["mjd"].size for p in parts], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    cols = {c: (np.concatenate([p[c] for p in parts]) if parts else np.zeros(0))
            for c in STANDARD_COLUMNS}
    return cols, starts


def _piece_order(block: np.ndarray, fcode: np.ndarray, n_filters: int) -> np.ndarray:
    """Stable order of rows by (block, filter code), ``block`` being non-decreasing.

    Sorted in runs of blocks whose keys fit 16 bits, so that every sort is a radix sort.
    """
    per = max(1, np.iinfo(np.int16).max // n_filters)  # blocks per run
    if block.size == 0 or block[-1] < per:
        return _stable_order(block * n_filters + fcode, per * n_filters)
    cuts = np.searchsorted(block, np.arange(per, block[-1] + 1, per))
    bounds = np.concatenate([[0], cuts, [block.size]])
    parts = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        if b > a:
            key = (block[a:b] - block[a]) * n_filters + fcode[a:b]
            parts.append(a + _stable_order(key, per * n_filters))
    return np.concatenate(parts)


def make_lightcurves_many(std, starts, cat_rows, pars: dict, obs: str) -> list[Lightcurve]:
    """Split the standard raw photometry of many sources into light curves, all at once.

    Gives exactly the light curves that :func:`make_lightcurves` gives source by source (in
    source order): every step works on the rows of all sources together, and the result of
    each light curve depends only on its own rows.  The light curves share one set of
    concatenated column arrays (see :meth:`Lightcurve.block`), which the analysis uses
    without copying.

    Parameters
    ----------
    std : raw photometry with :data:`STANDARD_COLUMNS` (DataFrame or mapping of arrays), the
        rows of all sources concatenated, source after source (see :func:`concat_sources`).
    starts : first row of each source (non-decreasing; one value per catalog row).
    cat_rows : the targets' catalog rows (name, ra, dec (deg), mag, ...), in source order.
    pars : the observatory's ``reducer`` parameters (gap (days), radius (arcsec),
        mag_range (mag), drop_flagged, sigma_clip, min_epochs).
    obs : observatory name.

    Returns
    -------
    list of :class:`~vo.lightcurves.datasets.Lightcurve`: each source's light curves, one
    per season and filter, numbered season by season with filters in sorted order; each
    ``data`` has :data:`LIGHTCURVE_COLUMNS`.
    """
    cat_rows = list(cat_rows)
    where = repr(cat_rows[0].get("name")) if len(cat_rows) == 1 else f"{len(cat_rows)} sources"
    cols = _standard_arrays(std, where)
    n = cols["mjd"].size
    starts = np.asarray(starts, dtype=np.int64).reshape(-1)
    if starts.size != len(cat_rows) or (starts.size and (starts[0] != 0 or starts[-1] > n
                                                         or np.any(np.diff(starts) < 0))):
        raise ValueError(f"make_lightcurves_many: starts must be {len(cat_rows)} non-decreasing "
                         f"row numbers from 0 to at most {n}, got {starts[:10].tolist()}...")
    if n == 0 or not cat_rows:
        return []
    src = segment_ids(starts, n)
    cat = _catalog_arrays(cat_rows)
    rows = np.flatnonzero(target_mask(cols, src, cat, pars["radius"], pars["mag_range"],
                                      pars["drop_flagged"]))
    if rows.size == 0:
        return []
    # sources of the selected rows, as segments, put in time order within each source
    rsrc = src[rows]
    new_src = np.ones(rows.size, dtype=bool)
    new_src[1:] = rsrc[1:] != rsrc[:-1]
    sstarts = np.flatnonzero(new_src)
    rows = rows[_argsort_within_segments(cols["mjd"][rows], sstarts, np.cumsum(new_src) - 1)]
    mjd = cols["mjd"][rows]
    # seasons: a new block at each source and after each gap > gap days
    new_block = new_src.copy()
    new_block[1:] |= np.diff(mjd) > pars["gap"]
    block = np.cumsum(new_block) - 1
    season = block - np.repeat(block[sstarts], np.diff(np.append(sstarts, rows.size)))
    # filters (sorted names, so the order within a block is the sorted filter order)
    fcode, filters = pd.factorize(cols["filter"][rows], sort=True)
    if fcode.size and fcode.min() < 0:
        bad = sorted({str(cat_rows[i].get("name")) for i in src[rows[fcode < 0]].tolist()})
        raise ValueError(f"raw photometry of {', '.join(bad[:10])} has rows without a filter")
    filters = np.asarray(filters, dtype=object).astype(str)
    order = _piece_order(block, fcode, filters.size)  # block, then filter; time order kept
    rows, block, season, fcode = rows[order], block[order], season[order], fcode[order]
    piece = block * filters.size + fcode
    pstarts = np.flatnonzero(np.diff(piece, prepend=-1))
    counts = np.diff(np.append(pstarts, piece.size))
    enough = counts >= pars["min_epochs"]
    if not enough.any():
        return []
    if not enough.all():
        rows = rows[np.repeat(enough, counts)]
        pstarts, counts = pstarts[enough], counts[enough]
    lc_season, lc_filter = season[pstarts], filters[fcode[pstarts]]
    starts_lc = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    lc_src = src[rows[starts_lc]]
    # numbering within each source
    total = np.bincount(lc_src, minlength=len(cat_rows))
    lc_first = np.concatenate([[0], np.cumsum(total)[:-1]])
    number = np.arange(lc_src.size) - lc_first[lc_src] + 1

    data = {c: cols[c][rows] for c in STANDARD_COLUMNS}
    data["flux"], data["fluxerr"] = mag_to_flux(data["mag"], data["magerr"])
    data["snr"], data["dsnr"], stats = segment_snr(data["flux"], data["fluxerr"], starts_lc,
                                                   pars["sigma_clip"])
    ends = starts_lc + counts
    names = [str(r["name"]) for r in cat_rows]
    per_lc = {"source_name": [names[i] for i in lc_src.tolist()], "obs": [obs] * lc_src.size,
              "filter": lc_filter.tolist(), "season": lc_season.tolist(), "reduction_number": number.tolist(),
              "reduction_total": total[lc_src].tolist(), "cat_ra": cat["ra"][lc_src].tolist(),
              "cat_dec": cat["dec"][lc_src].tolist(), "cat_mag": cat["mag"][lc_src].tolist(),
              "mjd_start": data["mjd"][starts_lc].tolist(), "mjd_end": data["mjd"][ends - 1].tolist()}
    per_lc.update(_stats_columns(stats))
    keys = list(per_lc)
    spans = zip(starts_lc.tolist(), ends.tolist())
    return [Lightcurve.in_block(dict(zip(keys, values)), data, span)
            for values, span in zip(zip(*per_lc.values()), spans)]


def make_lightcurves(std: pd.DataFrame, cat_row: dict, pars: dict, obs: str) -> list[Lightcurve]:
    """Split one source's standard raw photometry into light curves (one per season and
    filter); :func:`make_lightcurves_many` for one source (see there)."""
    return make_lightcurves_many(std, [0], [cat_row], pars, obs)


def lightcurve_columns(lc: Lightcurve, names) -> dict[str, np.ndarray]:
    """The data columns ``names`` of a light curve as numpy arrays; see
    :meth:`vo.lightcurves.datasets.Lightcurve.column_arrays`."""
    return lc.column_arrays(names)
