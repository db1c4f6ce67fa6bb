"""The analysis step: quality checks, event finder, injections and histograms of light curves.

:func:`analyse_lightcurves` analyses the light curves of one RA bin (any list) at once: their
epochs are concatenated and every stage runs vectorised over all of them.  Its result is
written by :func:`write_analysis` to one HDF5 file with the tables

* ``/summary``: one row per light curve (identifiers, epoch counts per quality check,
  statistics, numbers of detections and injections);
* ``/detections``: real and simulated events (``simulated``, ``sim_type``, ``sim_params``);
* ``/injections``: every simulated injection and whether it was recovered;
* ``/efficiency``: additive counts of injected and recovered events per event type,
  amplitude bin and duration bin, with the efficiency and its binomial error;
* ``/periods``: one row per source, its Lomb-Scargle and box-least-squares periods with
  false-alarm probabilities (:mod:`vo.lightcurves.periodicity`; empty when
  ``analysis.periodicity.enabled`` is false); the summary repeats each source's ``period``,
  ``period_fap`` and ``is_periodic`` on its light curves;

while the histograms (:mod:`vo.lightcurves.histograms`) go to a sibling netCDF file
written by the caller with :func:`vo.lightcurves.histograms.write_netcdf`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import h5py
import numpy as np
import pandas as pd
import xarray as xr

from vo.io.atomic import atomic_path
from vo.io.hdf5 import read_attrs, read_table, write_attrs, write_table
from vo.lightcurves import finder as vfinder
from vo.lightcurves import histograms as vhist
from vo.lightcurves import periodicity as vperiod
from vo.lightcurves import quality as vquality
from vo.lightcurves import simulator as vsim
from vo.lightcurves.reduce import lightcurve_columns
from vo.lightcurves.segments import flux_to_mag
from vo.steps import STEPS


#: Data columns the analysis needs in every light curve.
REQUIRED_COLUMNS = ("mjd", "mag", "flux", "fluxerr", "dsnr", "flag", "ra", "dec", "exptime")
#: Light-curve identifiers repeated in the summary and detection tables.
ID_COLUMNS = ("source_name", "obs", "filekey", "filter", "season", "reduction_number",
              "reduction_total", "cat_ra", "cat_dec", "cat_mag")
EVENT_COLUMNS = ("time_start", "time_peak", "time_end", "peak_snr", "peak_flux", "peak_mag", "dmag",
                 "n_epochs", "n_above")
DETECTION_COLUMNS = ID_COLUMNS + EVENT_COLUMNS + ("simulated", "sim_type", "sim_params")
TABLES = ("summary", "detections", "injections", "efficiency", "periods")


@dataclass
class AnalysisResult:
    """Results of analysing a set of light curves.

    summary : one row per light curve.
    detections : real and simulated events (:data:`DETECTION_COLUMNS`).
    injections : one row per simulated injection (identifiers, sim_type, amplitude
        (fraction of the mean flux), duration (days), peak_time, window_start, window_end
        (MJD), injected_snr, recovered).
    efficiency : additive counts per (sim_type, amplitude bin, duration bin):
        n_injected, n_recovered, efficiency, efficiency_error.
    periods : one row per source (:data:`vo.lightcurves.periodicity.COLUMNS`).
    histograms : the histogram Dataset (``None`` when read back without its netCDF file).
    """

    summary: pd.DataFrame
    detections: pd.DataFrame
    injections: pd.DataFrame
    efficiency: pd.DataFrame
    periods: pd.DataFrame
    histograms: xr.Dataset | None = None


@dataclass
class Batch:
    """Light curves concatenated: per-epoch arrays ``cols``, segment ``starts``, per-LC ``meta``."""

    cols: dict
    starts: np.ndarray
    meta: dict

    @property
    def n_epochs(self) -> np.ndarray:
        return np.diff(np.append(self.starts, self.cols["mjd"].size))

    def per_epoch(self, values) -> np.ndarray:
        """Repeat a per-light-curve array over each light curve's epochs."""
        return np.repeat(np.asarray(values), self.n_epochs)


def _values(attrs: list, key: str, default, required: bool = False) -> list:
    """``attrs[i][key]`` of every light curve (``default`` where missing or None)."""
    if required:
        return [a[key] for a in attrs]
    return [default if (v := a.get(key)) is None else v for a in attrs]


def _meta(lcs: list) -> dict:
    """Per-light-curve identifiers and statistics from the attributes (KeyError naming a
    light curve that lacks a required one)."""
    attrs = [lc.attrs for lc in lcs]
    for key in ("source_name", "filter", "reduction_number"):
        lacking = [i for i, a in enumerate(attrs) if key not in a]
        if lacking:
            i = lacking[0]
            raise KeyError(f"light curve {i} of {len(lcs)} lacks the attribute {key!r} "
                           f"(it has {sorted(attrs[i])})")
    meta = {"source_name": [str(v) for v in _values(attrs, "source_name", None, True)],
            "obs": [str(v) for v in _values(attrs, "obs", "")],
            "filekey": [lc.filekey for lc in lcs],
            "filter": [str(v) for v in _values(attrs, "filter", None, True)],
            "season": _ints(_values(attrs, "season", -1)),
            "reduction_number": _ints(_values(attrs, "reduction_number", None, True)),
            "reduction_total": _ints(_values(attrs, "reduction_total", -1))}
    for key in ("cat_ra", "cat_dec", "cat_mag", "mjd_start", "mjd_end", "flux_mean", "flux_rms",
                "err_scale", "mag_mean"):
        meta[key] = np.array([float(v) for v in _values(attrs, key, np.nan)], dtype=float)
    return meta


def _ints(values: list) -> np.ndarray:
    return np.array([int(v) for v in values], dtype=np.int64)


def _shared_block(lcs: list) -> tuple[dict, np.ndarray, int, int] | None:
    """``(columns, starts, first, stop)`` when the light curves are consecutive rows
    ``first:stop`` of one shared set of arrays (as :func:`make_lightcurves_many` makes them,
    in its order), ``starts`` relative to ``first``; else None."""
    blocks = [lc.block() for lc in lcs]
    if not blocks or blocks[0] is None:
        return None
    columns = blocks[0][0]
    if any(b is None or b[0] is not columns for b in blocks):
        return None
    spans = np.array([b[1:] for b in blocks], dtype=np.int64)
    if np.any(spans[1:, 0] != spans[:-1, 1]) or any(c not in columns for c in REQUIRED_COLUMNS):
        return None
    first = int(spans[0, 0])
    return columns, spans[:, 0] - first, first, int(spans[-1, 1])


def concat_lightcurves(lcs: list) -> Batch:
    """Concatenate the data columns of ``lcs`` and collect their attributes.

    Light curves that are consecutive rows of shared arrays (a reduction's output) are not
    copied: the columns are views of those arrays.
    """
    shared = _shared_block(lcs)
    if shared is not None:
        columns, starts, first, stop = shared
        cols = {c: columns[c][first:stop] for c in REQUIRED_COLUMNS}
    else:
        per_lc = [lightcurve_columns(lc, REQUIRED_COLUMNS) for lc in lcs]
        sizes = np.array([len(c["mjd"]) for c in per_lc], dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64) if lcs else np.zeros(0, np.int64)
        cols = {}
        for c in REQUIRED_COLUMNS:
            parts = [p[c] for p in per_lc]
            cols[c] = np.concatenate(parts) if parts else np.zeros(0)
    for c in REQUIRED_COLUMNS:
        if c != "flag":
            cols[c] = cols[c].astype(float, copy=False)
    meta = _meta(lcs)
    no_mag = ~np.isfinite(meta["mag_mean"])
    meta["mag_mean"][no_mag] = flux_to_mag(meta["flux_mean"][no_mag])
    meta["err_scale"][~np.isfinite(meta["err_scale"])] = 1.0
    return Batch(cols, starts, meta)


def _segment_reduce(ufunc, values, starts, n, empty):
    """``ufunc.reduceat`` per segment that also handles empty segments (value ``empty``)."""
    out = np.full(starts.size, empty, dtype=float)
    sizes = np.diff(np.append(starts, n))
    nonempty = np.flatnonzero(sizes > 0)
    if nonempty.size:
        out[nonempty] = ufunc.reduceat(values, starts[nonempty])
    return out


def _lc_frame(meta: dict, rows: np.ndarray) -> dict:
    return {k: np.asarray(meta[k], dtype=object if isinstance(meta[k], list) else None)[rows]
            for k in ID_COLUMNS}


def _detections(batch: Batch, events: dict, simulated: bool, sim_rows: pd.DataFrame | None) -> pd.DataFrame:
    table = _lc_frame(batch.meta, events["lc"])
    table.update({k: events[k] for k in EVENT_COLUMNS})
    n = events["lc"].size
    table["simulated"] = np.full(n, simulated)
    if sim_rows is None:
        table["sim_type"] = np.full(n, "", dtype=object)
        table["sim_params"] = np.full(n, "", dtype=object)
    else:
        table["sim_type"] = sim_rows["sim_type"].to_numpy(dtype=object)
        table["sim_params"] = np.array(vsim.sim_params_json_many(sim_rows), dtype=object)
    return pd.DataFrame(table, columns=list(DETECTION_COLUMNS))


class Analysis:
    """The analysis of one RA bin's light curves, as the analysis step runs it.

    Subclass it to change or extend the analysis, and name the subclass in
    ``analysis.class_path`` (virtualobserver's ``analysis_module`` and ``analysis_class``);
    ``self.custom`` holds ``analysis.custom`` (the subclass's own parameters), ``self.pars``
    the ``analysis`` section. :meth:`run` must return an :class:`AnalysisResult`.
    """

    def __init__(self, cfg: dict, obs: str):
        self.cfg, self.obs = cfg, obs
        self.pars = cfg["analysis"]
        self.custom = dict(self.pars.get("custom") or {})

    def run(self, lcs: list) -> AnalysisResult:
        """Quality checks, events, injections, periods and histograms (:func:`analyse_lightcurves`)."""
        return analyse_lightcurves(lcs, self.cfg, self.obs)


def analysis_for(cfg: dict, obs: str) -> Analysis:
    """The configured analysis (``analysis.class_path``, else :class:`Analysis`) for ``obs``."""
    from vo.config import load_class

    path = cfg["analysis"].get("class_path")
    cls = load_class(path, Analysis, "analysis.class_path") if path else Analysis
    return cls(cfg, obs)


def analyse_lightcurves(lcs: list, cfg: dict, obs: str) -> AnalysisResult:
    """Analyse light curves: quality checks, events, injections, histograms.

    Parameters
    ----------
    lcs : :class:`vo.lightcurves.datasets.Lightcurve` list (data with the columns of
        :data:`REQUIRED_COLUMNS`; attrs source_name, filter, reduction_number, flux_mean,
        mag_mean, err_scale, cat_ra, cat_dec, ...).
    cfg : the full merged config (sections ``analysis``, ``simulator``, ``histograms`` and
        ``{obs}.reducer.sigma_clip``).
    obs : observatory name.

    Returns
    -------
    AnalysisResult
    """
    if obs not in cfg:
        raise KeyError(f"config has no section for observatory {obs!r}")
    pars = cfg["analysis"]
    sigma_clip = cfg[obs]["reducer"]["sigma_clip"]
    batch = concat_lightcurves(lcs)
    cols, starts, meta = batch.cols, batch.starts, batch.meta
    n = cols["mjd"].size
    lc_of = batch.per_epoch(np.arange(len(lcs)))

    good, qcounts, offset = vquality.check_epochs(cols, starts, meta["cat_ra"], meta["cat_dec"], pars)

    options = vfinder.finder_options(pars)
    events = vfinder.find_events(cols["mjd"], cols["dsnr"], cols["flux"], lc_of, good,
                                 mag_mean=meta["mag_mean"], **options)
    sim = vsim.Simulator(cfg["simulator"])
    result = sim.run(cols, starts, meta, good, options, sigma_clip)
    inj = result["injections"]
    sim_rows = inj[inj["event"] >= 0].sort_values("event")  # row k: the injection of event k
    detections = pd.concat([_detections(batch, events, False, None),
                            _detections(batch, result["events"], True, sim_rows)], ignore_index=True)
    injections = pd.concat([pd.DataFrame(_lc_frame(meta, inj["lc"].to_numpy())),
                            inj.drop(columns=["lc", "event"])], axis=1)
    counts = vsim.efficiency_counts(result["counts"], sim.amplitude_edges, sim.duration_edges)
    efficiency = vsim.efficiency_table(counts)

    # summary
    pull = cols["dsnr"] * meta["err_scale"][lc_of]
    g_dsnr = np.where(good, cols["dsnr"], np.nan)
    chi2 = np.bincount(lc_of, weights=np.where(good, pull * pull, 0.0), minlength=len(lcs))
    summary = pd.DataFrame(_lc_frame(meta, np.arange(len(lcs))))
    summary["n_epochs"] = batch.n_epochs
    summary["n_good"] = qcounts["good"]
    for check in vquality.CHECKS:
        summary[f"n_{check}"] = qcounts[check]
    for key in ("mjd_start", "mjd_end", "flux_mean", "flux_rms", "err_scale", "mag_mean"):
        summary[key] = meta[key]
    with np.errstate(divide="ignore", invalid="ignore"):
        summary["chi2_dof"] = np.where(qcounts["good"] > 1, chi2 / (qcounts["good"] - 1), np.nan)
    summary["max_dsnr"] = _segment_reduce(np.fmax, np.where(good, cols["dsnr"], -np.inf), starts, n, np.nan)
    summary["min_dsnr"] = _segment_reduce(np.fmin, np.where(good, cols["dsnr"], np.inf), starts, n, np.nan)
    summary.loc[qcounts["good"] == 0, ["max_dsnr", "min_dsnr"]] = np.nan
    summary["max_abs_dsnr"] = _segment_reduce(np.fmax, np.abs(g_dsnr), starts, n, np.nan)
    summary["n_detections"] = np.bincount(events["lc"], minlength=len(lcs))
    summary["n_injected"] = np.bincount(inj["lc"].to_numpy(dtype=np.int64), minlength=len(lcs))
    summary["n_recovered"] = np.bincount(inj["lc"].to_numpy(dtype=np.int64),
                                         weights=inj["recovered"].to_numpy(), minlength=len(lcs)).astype(np.int64)

    pp = {**vperiod.DEFAULTS, **pars.get("periodicity", {})}
    periods = _periods(batch, good, lc_of, pp)
    by_source = periods.set_index("source_name")
    names = summary["source_name"]
    summary["period"] = names.map(by_source["period"]).to_numpy(float)
    fap = np.where(by_source["period_method"] == "bls", by_source["bls_fap"], by_source["ls_fap"])
    summary["period_fap"] = names.map(pd.Series(fap, index=by_source.index)).to_numpy(float)
    summary["is_periodic"] = names.isin(by_source.index[by_source["is_periodic"].astype(bool)]).to_numpy()

    per_source = None
    if pp["enabled"]:  # every bin of a run then has the period arrays, so the bins add up
        mags = summary.groupby("source_name", sort=False)["mag_mean"].median()
        per_source = {"mag": periods["source_name"].map(mags).to_numpy(float),
                      "period": periods["period"].to_numpy(float), "periodic": periods["is_periodic"].to_numpy(bool),
                      "period_edges": vhist.period_edges(float(pp["min_period"]), float(pp["max_period"]))}
    histograms = vhist.make_histograms(
        {"snr": cols["dsnr"], "dmag": cols["mag"] - meta["mag_mean"][lc_of], "offset": offset}, good,
        lc_of, meta["mag_mean"], meta["filter"], cols["exptime"], vhist.edges_from_config(cfg["histograms"]),
        efficiency={"injected": result["counts"]["injected"], "recovered": result["counts"]["recovered"],
                    "sim_types": vsim.SIM_TYPES, "amplitude_edges": sim.amplitude_edges,
                    "duration_edges": sim.duration_edges}, periods=per_source)
    return AnalysisResult(summary, detections, injections, efficiency, periods, histograms)


def _periods(batch: Batch, good: np.ndarray, lc_of: np.ndarray, p: dict) -> pd.DataFrame:
    """The periodicity table of the batch's sources (empty when ``p["enabled"]`` is false)."""
    if not p["enabled"]:
        return pd.DataFrame({c: [] for c in vperiod.COLUMNS})
    meta, cols = batch.meta, batch.cols
    return vperiod.find_periods(np.asarray(meta["source_name"], object)[lc_of], np.asarray(meta["obs"], object)[lc_of],
                                cols["mjd"], cols["flux"], cols["fluxerr"], meta["flux_mean"][lc_of],
                                np.asarray(meta["filter"], object)[lc_of], good, p)


def write_analysis(path: str | os.PathLike, result: AnalysisResult, attrs: dict | None = None) -> None:
    """Write the tables of ``result`` to one HDF5 file atomically (``/summary``, ``/detections``,
    ``/injections``, ``/efficiency``); ``attrs`` (e.g. provenance) go to the file's root."""
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            write_attrs(f, {"code_version": STEPS["analysis"].code_version, **(attrs or {})})
            for name in TABLES:
                write_table(f, name, getattr(result, name))


def read_analysis(path: str | os.PathLike, histograms_path: str | os.PathLike | None = None
                  ) -> AnalysisResult:
    """Read a file written by :func:`write_analysis` (and its histograms, if a path is given).

    The root attributes are returned in ``result.summary.attrs``.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"analysis file {path} not found")
    tables = {}
    with h5py.File(path, "r") as f:
        missing = [t for t in TABLES if t not in f]
        if missing:
            raise KeyError(f"analysis file {path} lacks the tables {missing}")
        for name in TABLES:
            tables[name], _ = read_table(f[name])
        root = read_attrs(f)
    tables["summary"].attrs.update(root)
    det = tables["detections"]
    det["simulated"] = det["simulated"].astype(bool)
    hist = vhist.read_netcdf(histograms_path) if histograms_path is not None else None
    tables["periods"]["is_periodic"] = tables["periods"]["is_periodic"].astype(bool)
    return AnalysisResult(tables["summary"], det, tables["injections"], tables["efficiency"], tables["periods"], hist)
