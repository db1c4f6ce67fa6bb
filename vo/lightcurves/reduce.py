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

import warnings

import numpy as np
import pandas as pd

from vo.lightcurves.datasets import Lightcurve
from vo.lightcurves.segments import (SegmentGrid, mag_to_flux, quantiles_sorted, segment_ids, segment_snr,
                                    segment_sum, sorted_within_segments, stats_columns)

STANDARD_COLUMNS = ["mjd", "mag", "magerr", "filter", "flag", "ra", "dec", "exptime", "oid"]
#: Columns of a light curve's ``data``, in order.
LIGHTCURVE_COLUMNS = STANDARD_COLUMNS + ["flux", "fluxerr", "snr", "dsnr"]


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
    xs, finite = sorted_within_segments(values[order], SegmentGrid(starts, codes.size))
    nfin = segment_sum(finite, starts)
    med = quantiles_sorted(np.append(xs, np.inf), starts, nfin, (0.5,))[0]
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
                drop_flagged: bool, cat_rows=None) -> np.ndarray:
    """Boolean mask of the rows (standard columns as arrays) that belong to their targets.

    Row ``i`` belongs to source ``src[i]`` (non-decreasing), whose catalog ra, dec (deg) and mag are
    ``cat["ra"][src[i]]`` etc.  Drops NaN magnitudes and times, flagged rows (if
    ``drop_flagged``), rows further than ``radius`` arcsec from the target (rows without a
    position, and targets without one, are kept), and survey objects (``oid``) whose median
    magnitude differs from the catalog magnitude by more than ``mag_range`` (mag; ``None``
    disables; targets without a magnitude are kept); a target that loses every epoch to this
    check is warned about (by the ``name`` of its row in ``cat_rows`` when given).
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
            keep = np.abs(med - cat_mag[src[sel]]) <= mag_range
            _warn_lost_to_mag_range(src[sel], keep, med, cat_mag, cat_rows, mag_range)
            good[sel] = keep
    return good


def _warn_lost_to_mag_range(src, keep, med, cat_mag, cat_rows, mag_range: float) -> None:
    """Warn about targets whose every epoch the magnitude-range check dropped (a catalog
    magnitude in another band or simply wrong gives no light curve at all, which must not
    pass silently)."""
    had = np.bincount(src, minlength=cat_mag.size) > 0
    kept = np.bincount(src, weights=keep, minlength=cat_mag.size) > 0
    lost = np.flatnonzero(had & ~kept)
    if lost.size == 0:
        return
    i = lost[0]
    name = cat_rows[i].get("name") if cat_rows is not None else f"source {i}"
    warnings.warn(f"{lost.size} target(s) lost every epoch to the magnitude-range check (the survey's median "
                  f"magnitude is more than reducer.mag_range = {mag_range:g} mag from the catalog's), e.g. "
                  f"{name!r}: catalog {cat_mag[i]:.2f}, survey median {float(np.median(med[src == i])):.2f} mag; "
                  "widen mag_range or set it to null if the catalog magnitude is in another band", stacklevel=4)


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
                                      pars["drop_flagged"], cat_rows))
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
    per_lc.update(stats_columns(stats))
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
