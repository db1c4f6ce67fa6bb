"""Additive histograms of what the analysis scanned (xarray Datasets stored as netCDF).

Each analysis job counts its epochs on the axes

* ``snr``: deviation S/N of the epoch (``dsnr``),
* ``dmag``: the epoch's magnitude minus its light curve's mean magnitude (mag),
* ``offset``: distance of the epoch's position from the target (arcsec),
* ``mag``: the light curve's mean magnitude (mag),
* ``exptime``: exposure time (s),
* ``filter``: categorical,

into the arrays ``all_snr(snr, mag, exptime, filter)`` and ``good_snr(...)`` (epochs that
passed the quality checks), and likewise ``all_dmag``/``good_dmag`` and
``all_offset``/``good_offset``; ``lightcurves(mag, filter)`` counts light curves, and
``sim_injected``/``sim_recovered(sim_type, amplitude, duration)`` count simulated events, and
with the period search on, ``sources_searched(mag)`` and ``sources_periodic(period, mag)``
count the sources searched and those found periodic (by their best period, days, and
their light curves' median mean magnitude).
Values beyond the outer edges are counted in the outer bins; epochs with a non-finite
value on an axis are not counted in that array (e.g. offsets without positions).
Coordinates are bin centres; the edges are the dataset attributes ``{axis}_edges``.

Every array is a count, so the histograms of a whole survey are the sum (:func:`add`,
:func:`combine`) of those of its RA bins; the filter axes are joined (union).
This module is the ``combine`` step.
"""

from __future__ import annotations

import json
import os
from functools import reduce as _fold

import numpy as np
import xarray as xr

from vo.io.atomic import atomic_path


VALUE_AXES = ("snr", "dmag", "offset")
SOURCE_AXES = ("mag", "exptime")
EDGE_AXES = VALUE_AXES + SOURCE_AXES + ("amplitude", "duration", "period")
#: Bins of the period axis per decade (logarithmic, from min_period to max_period).
PERIOD_BINS_PER_DECADE = 5
#: Categorical axes: joined by union when histograms are added.
CATEGORICAL_AXES = ("filter", "sim_type")


def edges_from_config(hpars: dict) -> dict[str, np.ndarray]:
    """Bin edges of each numeric axis from the ``histograms`` config section."""
    edges = {}
    for axis in VALUE_AXES + SOURCE_AXES:
        e = np.asarray(hpars[f"{axis}_bins"], dtype=float)
        if e.ndim != 1 or e.size < 2 or np.any(np.diff(e) <= 0):
            raise ValueError(f"histograms.{axis}_bins must be at least two increasing edges, got {list(e)}")
        edges[axis] = e
    return edges


def bin_index(values, edges) -> np.ndarray:
    """Bin of each value (outer bins take values beyond the edges); -1 for non-finite values."""
    values = np.asarray(values, dtype=float)
    idx = np.searchsorted(edges[1:-1], values, side="right")
    idx[~np.isfinite(values)] = -1
    return idx


def _centres(edges) -> np.ndarray:
    return 0.5 * (edges[1:] + edges[:-1])


def period_edges(min_period: float, max_period: float) -> np.ndarray:
    """Logarithmic period bin edges (days), :data:`PERIOD_BINS_PER_DECADE` per decade."""
    n = max(1, int(np.ceil(PERIOD_BINS_PER_DECADE * np.log10(max_period / min_period))))
    return np.geomspace(min_period, max_period, n + 1)


def make_histograms(values: dict, good, lc_index, lc_mag, lc_filters, exptime, edges: dict,
                    efficiency: dict | None = None, periods: dict | None = None) -> xr.Dataset:
    """Histograms of the concatenated epochs of many light curves.

    Parameters
    ----------
    values : per-epoch arrays ``snr`` (deviation S/N), ``dmag`` (mag), ``offset`` (arcsec).
    good : per-epoch boolean mask of epochs that passed the quality checks.
    lc_index : per-epoch index of the epoch's light curve.
    lc_mag, lc_filters : mean magnitude (mag) and filter name of each light curve.
    exptime : per-epoch exposure time (s).
    edges : from :func:`edges_from_config`.
    efficiency : ``{"injected", "recovered", "sim_types", "amplitude_edges",
        "duration_edges"}``: count arrays of shape (sim_type, amplitude, duration).
    periods : ``{"mag", "period", "periodic", "period_edges"}``: per searched source its
        magnitude (mag), best period (days) and whether it is periodic; the period edges.
    """
    lc_filters = np.asarray(lc_filters).astype(str)
    names, fcode = np.unique(lc_filters, return_inverse=True)
    n_mag, n_exp, n_filt = edges["mag"].size - 1, edges["exptime"].size - 1, names.size
    n_base = n_mag * n_exp * n_filt
    # light-curve part of the flat index (mag, filter), then the epoch's exposure time
    lc_mag_bin = bin_index(lc_mag, edges["mag"])
    lc_base = np.where(lc_mag_bin >= 0, lc_mag_bin * (n_exp * n_filt) + fcode.ravel(), -n_base - 1)
    exp_bin = bin_index(exptime, edges["exptime"])
    base = np.asarray(lc_base)[np.asarray(lc_index, dtype=np.int64)] + np.where(exp_bin >= 0, exp_bin * n_filt, -n_base - 1)
    base_ok = base >= 0
    good = np.asarray(good, dtype=bool)
    coords = {axis: _centres(edges[axis]) for axis in VALUE_AXES + SOURCE_AXES}
    coords["filter"] = names.astype(object)
    data = {}
    for axis in VALUE_AXES:
        n_v = edges[axis].size - 1
        v = bin_index(values[axis], edges[axis])
        ok = base_ok & (v >= 0)
        flat = (v * n_base + base)[ok]
        shape = (n_v, n_mag, n_exp, n_filt)
        dims = (axis, "mag", "exptime", "filter")
        data[f"all_{axis}"] = (dims, np.bincount(flat, minlength=n_v * n_base).reshape(shape))
        data[f"good_{axis}"] = (dims, np.bincount(flat[good[ok]], minlength=n_v * n_base).reshape(shape))
    lc_ok = lc_mag_bin >= 0
    lc_flat = lc_mag_bin[lc_ok] * n_filt + fcode.ravel()[lc_ok]
    data["lightcurves"] = (("mag", "filter"),
                           np.bincount(lc_flat, minlength=n_mag * n_filt).reshape(n_mag, n_filt))
    attrs = {f"{axis}_edges": edges[axis] for axis in VALUE_AXES + SOURCE_AXES}
    if efficiency is not None:
        dims = ("sim_type", "amplitude", "duration")
        data["sim_injected"] = (dims, np.asarray(efficiency["injected"], dtype=np.int64))
        data["sim_recovered"] = (dims, np.asarray(efficiency["recovered"], dtype=np.int64))
        coords["sim_type"] = np.asarray(efficiency["sim_types"], dtype=object)
        for axis in ("amplitude", "duration"):
            e = np.asarray(efficiency[f"{axis}_edges"], dtype=float)
            coords[axis] = np.sqrt(e[1:] * e[:-1])
            attrs[f"{axis}_edges"] = e
    if periods is not None:
        pe = np.asarray(periods["period_edges"], dtype=float)
        n_p = pe.size - 1
        m_bin = bin_index(periods["mag"], edges["mag"])
        p_bin = bin_index(periods["period"], pe)
        data["sources_searched"] = (("mag",), np.bincount(m_bin[m_bin >= 0], minlength=n_mag))
        ok = (m_bin >= 0) & (p_bin >= 0) & np.asarray(periods["periodic"], bool)
        data["sources_periodic"] = (("period", "mag"), np.bincount(p_bin[ok] * n_mag + m_bin[ok],
                                                                   minlength=n_p * n_mag).reshape(n_p, n_mag))
        coords["period"] = np.sqrt(pe[1:] * pe[:-1])
        attrs["period_edges"] = pe
    for name, (dims, arr) in data.items():
        data[name] = (dims, arr.astype(np.int64, copy=False))
    return xr.Dataset(data, coords=coords, attrs=attrs)


def _check_compatible(a: xr.Dataset, b: xr.Dataset) -> None:
    for axis in EDGE_AXES:
        key = f"{axis}_edges"
        if (key in a.attrs) != (key in b.attrs) or (
                key in a.attrs and not np.array_equal(np.asarray(a.attrs[key]), np.asarray(b.attrs[key]))):
            raise ValueError(f"histograms differ in their {axis} bins ({key}): "
                             f"{a.attrs.get(key)!r} vs {b.attrs.get(key)!r}; they cannot be added")
    if set(a.data_vars) != set(b.data_vars):
        raise ValueError(f"histograms hold different arrays: {sorted(a.data_vars)} vs {sorted(b.data_vars)}")


def add(a: xr.Dataset, b: xr.Dataset) -> xr.Dataset:
    """Sum of two histogram datasets with the same bins; categorical axes are joined (union).

    The attributes of ``a`` are kept.
    """
    _check_compatible(a, b)
    a2, b2 = xr.align(a, b, join="outer", fill_value=0)
    out = xr.Dataset({name: a2[name] + b2[name] for name in a2.data_vars}, attrs=dict(a.attrs))
    return out


def _encode_attr(value):
    """netCDF attributes hold numbers, strings and arrays: other values become JSON strings."""
    if value is None or isinstance(value, (bool, np.bool_, dict)) or (
            isinstance(value, (list, tuple)) and not all(isinstance(v, (int, float)) for v in value)):
        return "json:" + json.dumps(value, default=str)
    return value


def _decode_attr(value):
    if isinstance(value, str) and value.startswith("json:"):
        return json.loads(value[5:])
    return value


def write_netcdf(ds: xr.Dataset, path: str | os.PathLike) -> None:
    """Write ``ds`` to a netCDF4 file atomically (a temporary name, then a rename).

    Attributes that netCDF cannot hold (dicts, booleans, None, mixed lists) are stored as
    ``"json:..."`` strings and decoded by :func:`read_netcdf`.
    """
    out = ds.copy()
    out.attrs = {k: _encode_attr(v) for k, v in ds.attrs.items()}
    with atomic_path(path) as tmp:
        out.to_netcdf(tmp, engine="netcdf4", mode="w")


def read_netcdf(path: str | os.PathLike) -> xr.Dataset:
    """Read a histogram file fully into memory (the file is closed afterwards)."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"histogram file {path} not found")
    try:
        with xr.open_dataset(path, engine="netcdf4") as ds:
            ds = ds.load()
    except OSError as exc:
        raise OSError(f"histogram file {path} cannot be read as netCDF: {exc}") from exc
    ds.attrs = {k: _decode_attr(v) for k, v in ds.attrs.items()}
    return ds


def combine(paths) -> xr.Dataset:
    """Sum of the histograms in ``paths`` (netCDF files written by :func:`write_netcdf`)."""
    paths = list(paths)
    if not paths:
        raise ValueError("combine: no histogram files given")
    datasets = []
    for p in paths:
        ds = read_netcdf(p)
        if datasets:
            try:
                _check_compatible(datasets[0], ds)
            except ValueError as exc:
                raise ValueError(f"{p}: {exc} (first file: {paths[0]})") from exc
        datasets.append(ds)
    return _fold(add, datasets)


def efficiency_table(ds: xr.Dataset):
    """Efficiency table (DataFrame) of the simulated-event counts of a histogram dataset:
    one row per (sim_type, amplitude bin, duration bin) with n_injected, n_recovered,
    efficiency and its binomial error (the ``{obs}_efficiency.csv`` of the combine step)."""
    from vo.lightcurves import simulator as vsim

    if "sim_injected" not in ds:
        raise KeyError("histograms hold no simulated-event counts (sim_injected)")
    order = ("sim_type", "amplitude", "duration")
    counts = {"injected": ds["sim_injected"].transpose(*order).values,
              "recovered": ds["sim_recovered"].transpose(*order).values}
    table = vsim.efficiency_counts(counts, np.asarray(ds.attrs["amplitude_edges"]),
                                   np.asarray(ds.attrs["duration_edges"]))
    table["sim_type"] = np.asarray(ds["sim_type"].values, dtype=object).repeat(
        counts["injected"].shape[1] * counts["injected"].shape[2])
    return vsim.efficiency_table(table)
