"""Reduce raw photometry to light curves: pure functions shared by every observatory.

An observatory's reducer maps its raw table to the *standard* raw columns

    mjd (days), mag, magerr (mag), filter (str), flag (int, 0 = good),
    ra, dec (deg), exptime (s), oid (int, the survey's object id)

and calls :func:`make_lightcurves`, which selects, splits and calibrates.

Speed: a source's rows are handled as numpy arrays sorted once; the light curves of a
source are *segments* of those arrays, and the statistics of all segments are computed
together (:func:`segment_clipped_stats`, :func:`segment_snr`).  Light curves keep numpy
columns and build their ``data`` DataFrame only when it is asked for (:class:`ArrayLightcurve`).
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


def _range_sum(xs: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Sum of ``xs[a[i]:b[i]]`` for ranges that follow each other (``b[i] <= a[i+1]``)."""
    out = np.zeros(a.size)
    ok = b > a
    if ok.any():
        idx = np.empty(2 * int(ok.sum()), dtype=np.int64)
        idx[0::2], idx[1::2] = a[ok], b[ok]
        out[ok] = np.add.reduceat(np.append(xs, 0.0), idx)[0::2]
    return out


def _sorted_within_segments(values: np.ndarray, starts: np.ndarray, seg: np.ndarray
                            ) -> tuple[np.ndarray, np.ndarray]:
    """(values sorted within each segment, non-finite ones as +inf at the segment's end;
    the mask of finite values in the input order).

    The segments are copied into the rows of a 2-d array padded with +inf and sorted along
    the rows (when lengths differ a lot, one array per group of segments with lengths
    within a factor two), which is exact, independent between segments, and many times faster
    than ``np.lexsort`` on (segment, value).
    """
    finite = np.isfinite(values)
    keyed = np.where(finite, values, np.inf)
    n = keyed.size
    if starts.size <= 1:
        return np.sort(keyed), finite
    sizes = np.diff(np.append(starts, n))
    if starts.size * int(sizes.max()) <= 4 * n + 4096:
        bucket = np.zeros(starts.size, dtype=np.int64)  # one grid: little padding
    else:
        bucket = np.ceil(np.log2(np.maximum(sizes, 1))).astype(np.int64)
    buckets = np.unique(bucket)
    out = np.empty(n)
    for b in buckets:
        one = buckets.size == 1
        rows = np.arange(starts.size) if one else np.flatnonzero(bucket == b)
        width = int(sizes[rows].max())
        # flat position in the grid: row * width + position within the segment
        shift = np.zeros(starts.size, dtype=np.int64)
        shift[rows] = np.arange(rows.size) * width - starts[rows]
        elems = np.arange(n) if one else np.flatnonzero((bucket == b)[seg])
        flat = elems + shift[seg[elems]]
        grid = np.full(rows.size * width, np.inf)
        grid[flat] = keyed[elems]
        grid = grid.reshape(rows.size, width)
        grid.sort(axis=1)
        out[elems] = grid.ravel()[flat]
    return out, finite


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


def segment_clipped_stats(values, starts, sigma: float = 3.5, iters: int = 5):
    """Robust mean, rms and kept-mask of every segment, by iterative sigma clipping.

    Each segment is clipped around its median at ``sigma`` times a robust width, the
    interquartile range / 1.349 of the values kept so far (a Gaussian's sigma), for at
    most ``iters`` iterations or until nothing changes; segments with fewer than three
    values are not clipped.  The mean and rms (``ddof=1``) of the kept values are
    returned.  All segments are processed together: each value is sorted once within its
    segment and, because clipping around the median always keeps an interval of the
    sorted values, every iteration is a few vectorised operations.  The IQR replaces the
    median absolute deviation because it is read directly off the sorted values; both are
    robust to a few outliers.  A segment's results depend only on its own values.

    Parameters
    ----------
    values : 1-d array (any unit); non-finite values are never kept.
    starts : first index of each segment (sorted, the first one 0).
    sigma : clipping threshold in robust sigmas.
    iters : most clipping iterations.

    Returns
    -------
    mean, rms : arrays with one value per segment (NaN where nothing is kept; rms NaN
        with fewer than two kept values).
    keep : boolean array like ``values``.
    """
    values = np.asarray(values, dtype=float)
    starts = np.asarray(starts, dtype=np.int64)
    n, nseg = values.size, starts.size
    if n == 0:
        return np.full(nseg, np.nan), np.full(nseg, np.nan), np.zeros(0, dtype=bool)
    seg = segment_ids(starts, n)
    xs, finite = _sorted_within_segments(values, starts, seg)
    xs_pad = np.append(xs, np.inf)
    lo = np.zeros(nseg, dtype=np.int64)   # kept values: xs[starts + lo : starts + hi]
    hi = segment_sum(finite, starts)
    lower = np.full(nseg, -np.inf)
    upper = np.full(nseg, np.inf)
    active = np.ones(nseg, dtype=bool)
    for _ in range(iters):
        k = hi - lo
        active &= k >= 3
        if not active.any():
            break
        q25, med, q75 = _quantiles_sorted(xs_pad, starts + lo, k, (0.25, 0.5, 0.75))
        width = (q75 - q25) * IQR_TO_SIGMA
        active &= width > 0
        lower = np.where(active, med - sigma * width, lower)
        upper = np.where(active, med + sigma * width, upper)
        new_lo = segment_sum(xs < lower[seg], starts)
        new_hi = segment_sum(xs <= upper[seg], starts)
        active &= (new_lo != lo) | (new_hi != hi)
        lo, hi = new_lo, new_hi
        if not active.any():
            break
    keep = finite & (values >= lower[seg]) & (values <= upper[seg])
    count = hi - lo
    a, b = starts + lo, starts + hi
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = _range_sum(xs, a, b) / count
        dev = xs - mean[seg]
        rms = np.sqrt(_range_sum(dev * dev, a, b) / (count - 1))
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
    seg = segment_ids(starts, flux.size)
    mean, rms, keep = segment_clipped_stats(flux, starts, sigma)
    with np.errstate(divide="ignore", invalid="ignore"):
        pull = (flux - mean[seg]) / err
        snr = flux / err
    _, pull_rms, _ = segment_clipped_stats(np.where(keep, pull, np.nan), starts, sigma)
    n_keep = segment_sum(keep, starts)
    scale = np.where((n_keep > 3) & np.isfinite(pull_rms), np.maximum(1.0, pull_rms), 1.0)
    dsnr = pull / scale[seg]
    n_epochs = np.diff(np.append(starts, flux.size))
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
    return df, _stats_rows(stats)[0]


def _stats_rows(stats: dict) -> list[dict]:
    """Per-segment stats dicts (python floats and ints) of :func:`segment_snr`'s stats."""
    cols = {k: np.asarray(v, dtype=np.int64 if k in ("n_epochs", "n_clipped") else float).tolist()
            for k, v in stats.items()}
    return [dict(zip(cols, values)) for values in zip(*cols.values())]


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
    dra -= 360.0 * np.rint(dra / 360.0)  # wrap to [-180, 180]
    if cos_dec2 is None:
        cos_dec2 = np.cos(np.radians(dec2))
    return 3600.0 * np.hypot(dra * cos_dec2, np.asarray(dec1, dtype=float) - dec2)


def group_medians(values, groups) -> np.ndarray:
    """Median of ``values`` (finite ones) within each group, returned per element."""
    values = np.asarray(values, dtype=float)
    groups = np.asarray(groups)
    if groups.size == 0 or groups.min() == groups.max():  # one group (the usual case)
        finite = values[np.isfinite(values)]
        return np.full(values.size, np.median(finite) if finite.size else np.nan)
    inverse, _ = pd.factorize(groups)
    counts = np.bincount(inverse)
    order = np.argsort(inverse, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    xs, _ = _sorted_within_segments(values[order], starts, inverse[order])
    nfin = np.bincount(inverse, weights=np.isfinite(values), minlength=counts.size).astype(np.int64)
    med = _quantiles_sorted(np.append(xs, np.inf), starts, nfin, (0.5,))[0]
    med[nfin == 0] = np.nan
    return med[inverse]


def time_order(mjd) -> np.ndarray:
    """Indices that sort ``mjd``, stable for equal times (identity when already sorted)."""
    mjd = np.asarray(mjd, dtype=float)
    if mjd.size < 2 or np.all(mjd[1:] >= mjd[:-1]):
        return np.arange(mjd.size)
    order = np.argsort(mjd)  # fast; redone stably only if equal times make the order ambiguous
    if np.any(np.diff(mjd[order]) == 0):
        order = np.argsort(mjd, kind="stable")
    return order


def _column(df: pd.DataFrame, name: str, dtype=float) -> np.ndarray:
    return df[name].to_numpy(dtype=dtype)


def target_mask(cols: dict, cat_row: dict, radius: float, mag_range: float | None,
                drop_flagged: bool) -> np.ndarray:
    """Boolean mask of the rows (standard columns as arrays) that belong to the target.

    Drops NaN magnitudes and times, flagged rows (if ``drop_flagged``), rows further than
    ``radius`` arcsec from the target (rows without a position are kept), and survey
    objects (``oid``) whose median magnitude differs from the catalog magnitude by more
    than ``mag_range`` (mag; ``None`` disables).
    """
    good = np.isfinite(cols["mag"]) & np.isfinite(cols["mjd"])
    if drop_flagged:
        good &= cols["flag"] == 0
    cat_ra = cat_row.get("ra", np.nan)
    if cat_ra is not None and np.isfinite(cat_ra):
        off = angular_offset_arcsec(cols["ra"], cols["dec"], float(cat_ra), float(cat_row["dec"]))
        good &= ~(off > radius)  # NaN positions are kept (no position to test)
    cat_mag = cat_row.get("mag", np.nan)
    if mag_range is not None and cat_mag is not None and np.isfinite(cat_mag) and good.any():
        med = np.full(good.size, np.nan)
        med[good] = group_medians(cols["mag"][good], cols["oid"][good])
        good &= np.abs(med - cat_mag) <= mag_range
    return good


def select_target_rows(df: pd.DataFrame, cat_row: dict, radius: float,
                       mag_range: float | None, drop_flagged: bool) -> pd.DataFrame:
    """Rows of ``df`` (standard columns) that belong to the target; see :func:`target_mask`."""
    cols = {c: _column(df, c) for c in ("mjd", "mag", "ra", "dec")}
    cols["flag"] = df["flag"].to_numpy()
    cols["oid"] = df["oid"].to_numpy()
    return df.loc[target_mask(cols, cat_row, radius, mag_range, drop_flagged)]


class ArrayLightcurve(Lightcurve):
    """A :class:`~vo.lightcurves.datasets.Lightcurve` whose ``data`` DataFrame is built from
    numpy columns on first access.

    Building a DataFrame costs far more than the reduction of a light curve, and the
    analysis only needs the arrays (:func:`lightcurve_columns`); once ``data`` is accessed
    (or set) the DataFrame is the only copy, so changes made to it are never missed.
    """

    def __init__(self, columns: dict, attrs: dict):
        super().__init__(data=None, attrs=attrs)
        self._columns = columns

    @property
    def data(self) -> pd.DataFrame:
        if self._data is None and self._columns is not None:
            self._data = pd.DataFrame(self._columns, columns=LIGHTCURVE_COLUMNS)
            self._columns = None
        return self._data

    @data.setter
    def data(self, value: pd.DataFrame) -> None:
        self._data, self._columns = value, None

    def __len__(self) -> int:
        if self._columns is not None:
            return len(self._columns["mjd"])
        return 0 if self._data is None else len(self._data)

    def __repr__(self) -> str:
        return f"Lightcurve({self.filekey!r}, {len(self)} epochs)"


def lightcurve_columns(lc: Lightcurve, names) -> dict[str, np.ndarray]:
    """The data columns ``names`` of a light curve as numpy arrays (without building its
    DataFrame when it has none yet).  Raises KeyError naming the light curve and the
    missing columns."""
    cols = getattr(lc, "_columns", None)
    if cols is None:
        if lc.data is None:
            raise ValueError(f"light curve {lc.filekey} has no data loaded")
        cols = lc.data
        have = set(cols.columns)
    else:
        have = cols.keys()
    missing = [c for c in names if c not in have]
    if missing:
        raise KeyError(f"light curve {lc.filekey} lacks data columns {missing}")
    if isinstance(cols, dict):
        return {c: cols[c] for c in names}
    return {c: cols[c].to_numpy() for c in names}


def make_lightcurves(std: pd.DataFrame, cat_row: dict, pars: dict, obs: str) -> list:
    """Split standard raw photometry into light curves (one per season and filter).

    Light curves are numbered season by season, filters in sorted order within a season.

    Parameters
    ----------
    std : raw photometry with :data:`STANDARD_COLUMNS`.
    cat_row : the target's catalog row (name, ra, dec (deg), mag, ...).
    pars : the observatory's ``reducer`` parameters (gap (days), radius (arcsec),
        mag_range (mag), drop_flagged, sigma_clip, min_epochs).
    obs : observatory name.

    Returns
    -------
    list of :class:`ArrayLightcurve` (a :class:`vo.lightcurves.datasets.Lightcurve`),
    numbered in the order made; each ``data`` has :data:`LIGHTCURVE_COLUMNS`.
    """
    missing = [c for c in STANDARD_COLUMNS if c not in std.columns]
    if missing:
        raise KeyError(f"raw photometry of {cat_row.get('name')!r} lacks columns {missing}")
    cols = {c: std[c].to_numpy() for c in STANDARD_COLUMNS}
    for c in ("mjd", "mag", "magerr", "ra", "dec", "exptime"):
        cols[c] = cols[c].astype(float, copy=False)
    rows = np.flatnonzero(target_mask(cols, cat_row, pars["radius"], pars["mag_range"],
                                      pars["drop_flagged"]))
    if rows.size == 0:
        return []
    rows = rows[time_order(cols["mjd"][rows])]
    season = split_seasons(cols["mjd"][rows], pars["gap"])
    fcode, filters = pd.factorize(cols["filter"][rows], sort=True)  # hashing, no string sort
    filters = np.asarray(filters, dtype=object).astype(str)
    piece = season * filters.size + fcode
    if piece.max() < np.iinfo(np.int16).max:
        piece = piece.astype(np.int16)  # a stable sort of 16-bit integers is a radix sort
    order = np.argsort(piece, kind="stable")  # season, then filter; time order kept inside
    piece = piece[order].astype(np.int64)
    rows = rows[order]
    starts = np.flatnonzero(np.diff(piece, prepend=-1))
    keys = piece[starts]
    counts = np.diff(np.append(starts, piece.size))
    enough = counts >= pars["min_epochs"]
    if not enough.any():
        return []
    if not enough.all():
        sel = np.repeat(enough, counts)
        rows, keys, counts = rows[sel], keys[enough], counts[enough]
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])

    data = {c: cols[c][rows] for c in STANDARD_COLUMNS}
    data["flux"], data["fluxerr"] = mag_to_flux(data["mag"], data["magerr"])
    data["snr"], data["dsnr"], stats = segment_snr(data["flux"], data["fluxerr"], starts,
                                                   pars["sigma_clip"])
    mjd = data["mjd"]
    ends = starts + counts
    name = str(cat_row["name"])
    target = {"cat_ra": float(_nan_if_none(cat_row.get("ra"))),
              "cat_dec": float(_nan_if_none(cat_row.get("dec"))),
              "cat_mag": float(_nan_if_none(cat_row.get("mag")))}
    filter_of = filters[keys % filters.size].tolist()
    season_of = (keys // filters.size).tolist()
    first, last = mjd[starts].tolist(), mjd[ends - 1].tolist()
    lcs = []
    for i, row_stats in enumerate(_stats_rows(stats)):
        a, b = starts[i], ends[i]
        attrs = {"source_name": name, "obs": obs, "filter": filter_of[i], "season": season_of[i],
                 "reduction_number": i + 1, "reduction_total": int(keys.size), **target,
                 "mjd_start": first[i], "mjd_end": last[i], **row_stats}
        lcs.append(ArrayLightcurve({c: v[a:b] for c, v in data.items()}, attrs))
    return lcs


def _nan_if_none(value):
    return np.nan if value is None else value
