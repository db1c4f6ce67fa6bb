"""Inject simulated events into copies of light curves and measure the detection efficiency.

Event models (the excess flux is a fraction of the light curve's mean flux ``F``):

* ``flare``: fast rise, exponential decay; rise time ``duration / 10``, decay time
  ``duration``; peak excess ``+amplitude * F``.
* ``dip`` (occultation): a box of full width ``duration`` with edges smoothed over
  ``duration / 20``; removes ``amplitude * F`` (``amplitude <= 1``).
* ``microlensing``: Paczynski magnification with Einstein time ``duration`` and impact
  parameter chosen so that the peak magnification is ``1 + amplitude``.

The excess is added to the measured fluxes; where the flux grows the errors grow as Poisson
noise would (``fluxerr * sqrt(F_new / F)``) and the extra noise is added to the fluxes.  The
S/N columns are recomputed exactly as the reduction computes them
(:func:`vo.lightcurves.segments.segment_snr`) and the same finder runs on the copy.  An
injection is *recovered* when the finder reports an event of the right sign that overlaps
the injection window (where the excess is at least :data:`WINDOW_FRACTION` of its peak).

Random numbers of each injection come from a key, the sha256 hash of (seed, obs, source
name, reduction number, injection number), through a counter-based generator
(:func:`uniform`, :func:`standard_normal`), so results do not depend on which other light
curves are analysed in the same call, nor on Python's hash seed.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd

from vo.lightcurves import finder as vfinder
from vo.lightcurves.segments import segment_snr

#: Event types and the sign of their excess flux (axis order of the efficiency arrays).
SIM_TYPES = ("flare", "dip", "microlensing")
SIGN = np.array([1.0, -1.0, 1.0])
#: The injection window is where the excess is at least this fraction of its peak.
WINDOW_FRACTION = 0.01
FLARE_RISE = 0.1   # rise time / decay time
DIP_EDGE = 0.05    # edge smoothing / width


def log_edges(lo: float, hi: float, n: int) -> np.ndarray:
    """``n`` logarithmic bins from ``lo`` to ``hi`` (edges, ``n + 1`` values)."""
    if not (0 < lo <= hi):
        raise ValueError(f"simulator: need 0 < min <= max, got {lo} and {hi}")
    if lo == hi:
        hi = lo * (1 + 1e-9)
    return np.geomspace(lo, hi, n + 1)


def efficiency_edges(pars: dict) -> tuple[np.ndarray, np.ndarray]:
    """Amplitude (fraction of the mean flux) and duration (days) bin edges of the efficiency."""
    return (log_edges(pars["min_amplitude"], pars["max_amplitude"], pars["n_amplitude_bins"]),
            log_edges(pars["min_duration"], pars["max_duration"], pars["n_duration_bins"]))


# -- event models ----------------------------------------------------------------------

def microlensing_u0(amplitude):
    """Impact parameter (Einstein radii) whose peak magnification is ``1 + amplitude``."""
    m = 1.0 + np.asarray(amplitude, dtype=float)
    return np.sqrt(2.0 * (m / np.sqrt(m * m - 1.0) - 1.0))


def paczynski(u):
    """Point-lens magnification at separation ``u`` (Einstein radii)."""
    u2 = np.asarray(u, dtype=float) ** 2
    return (u2 + 2.0) / np.sqrt(u2 * (u2 + 4.0))


def _shape(code: int, dt, amplitude, duration) -> np.ndarray:
    """Unsigned excess per unit amplitude of events of one type (see :func:`excess`)."""
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        if code == 0:
            return np.exp(np.where(dt < 0, dt / (FLARE_RISE * duration), -dt / duration))
        if code == 1:
            w = DIP_EDGE * duration
            box = 0.5 * (np.tanh((dt + duration / 2) / w) - np.tanh((dt - duration / 2) / w))
            box /= np.tanh(duration / (2 * w))
            return box
        u0 = microlensing_u0(amplitude)
        return (paczynski(np.hypot(u0, dt / duration)) - 1.0) / amplitude


def excess(type_code, dt, amplitude, duration) -> np.ndarray:
    """Excess flux (fraction of the mean flux, signed) of events at times ``dt`` from the peak.

    All arguments broadcast; ``type_code`` indexes :data:`SIM_TYPES`; ``dt`` and
    ``duration`` are in days.  Each model is evaluated only where it applies.
    """
    type_code, dt, amplitude, duration = np.broadcast_arrays(
        np.asarray(type_code), np.asarray(dt, dtype=float), np.asarray(amplitude, dtype=float),
        np.asarray(duration, dtype=float))
    shape = np.empty(dt.shape)
    for code in range(len(SIM_TYPES)):
        where = (type_code == code) if code < 2 else (type_code != 0) & (type_code != 1)
        if where.all():
            shape = _shape(code, dt, amplitude, duration)
        elif where.any():
            shape[where] = _shape(code, dt[where], amplitude[where], duration[where])
    return SIGN[type_code] * amplitude * shape


def window(type_code, peak_time, amplitude, duration) -> tuple[np.ndarray, np.ndarray]:
    """Start and end (MJD) of the interval where the excess is >= WINDOW_FRACTION of its peak."""
    type_code = np.asarray(type_code)
    amplitude = np.asarray(amplitude, dtype=float)
    duration = np.asarray(duration, dtype=float)
    ln = np.log(1.0 / WINDOW_FRACTION)
    flare = (FLARE_RISE * duration * ln, duration * ln)
    half_box = duration / 2 + DIP_EDGE * duration * 0.5 * np.log(2.0 / WINDOW_FRACTION)
    u_w = microlensing_u0(WINDOW_FRACTION * amplitude)
    half_lens = duration * np.sqrt(np.maximum(u_w ** 2 - microlensing_u0(amplitude) ** 2, 0.0))
    before = np.select([type_code == 0, type_code == 1], [flare[0], half_box], half_lens)
    after = np.select([type_code == 0, type_code == 1], [flare[1], half_box], half_lens)
    return peak_time - before, peak_time + after


def inject(flux, fluxerr, flux_mean, rel, noise):
    """Add an event to measured fluxes: returns the new (flux, fluxerr) in uJy.

    ``rel`` is the event's excess as a fraction of the mean flux ``flux_mean``.  Where the
    source gets brighter the error grows as Poisson noise does,
    ``fluxerr * sqrt((flux_mean + excess) / flux_mean)``, and the extra noise
    (``noise`` standard normal draws times ``sqrt(err_new**2 - err**2)``) is added to the
    flux; where it gets fainter the errors are kept.
    """
    err = fluxerr * np.sqrt(np.maximum(1.0 + rel, 1.0))
    extra = np.sqrt(np.maximum(err * err - fluxerr * fluxerr, 0.0))
    return flux + rel * flux_mean + noise * extra, err


# -- random numbers --------------------------------------------------------------------
# numpy's Generators give one stream per seed and cannot be vectorised over thousands of
# independent seeds; a counter-based hash (splitmix64's finaliser) of (key, counter) gives
# every injection its own stream, drawn for all injections in one vectorised pass.

_M1, _M2, _GOLDEN = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB), np.uint64(0x9E3779B97F4A7C15)


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: a bijective, well-mixing hash of 64-bit integers."""
    z = x.astype(np.uint64, copy=True)
    z ^= z >> np.uint64(30)
    z *= _M1
    z ^= z >> np.uint64(27)
    z *= _M2
    z ^= z >> np.uint64(31)
    return z


def uniform(keys: np.ndarray, counters: np.ndarray) -> np.ndarray:
    """Uniform numbers in (0, 1) from (key, counter) pairs (both uint64 arrays)."""
    counters = np.asarray(counters, dtype=np.uint64)
    with np.errstate(over="ignore"):
        top = int(counters.max()) if counters.size else 0
        if counters.size > 4 * top + 64:  # few distinct counters: hash each once
            inner = _mix64((np.arange(top + 1, dtype=np.uint64) + np.uint64(1)) * _GOLDEN)[counters]
        else:
            inner = _mix64((counters + np.uint64(1)) * _GOLDEN)
        z = _mix64(keys ^ inner)
    return ((z >> np.uint64(11)).astype(np.float64) + 0.5) * (1.0 / 9007199254740992.0)


def standard_normal(keys: np.ndarray, counters: np.ndarray) -> np.ndarray:
    """Standard normal numbers (Box-Muller) from (key, counter) pairs; uses counters
    ``2 * counter`` and ``2 * counter + 1`` of each key."""
    two = np.uint64(2)
    u1 = uniform(keys, counters * two)
    u2 = uniform(keys, counters * two + np.uint64(1))
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)


# -- the simulator ---------------------------------------------------------------------

class Simulator:
    """Draws, injects and recovers simulated events (the ``simulator`` config section)."""

    def __init__(self, pars: dict):
        self.pars = pars
        unknown = sorted(set(pars["event_types"]) - set(SIM_TYPES))
        if unknown:
            raise ValueError(f"simulator.event_types: unknown types {unknown}; known: {list(SIM_TYPES)}")
        self.type_codes = np.array([SIM_TYPES.index(t) for t in pars["event_types"]], dtype=np.int64)
        self.amplitude_edges, self.duration_edges = efficiency_edges(pars)

    def keys(self, obs, source_name, reduction_number, injection) -> np.ndarray:
        """64-bit random key of each injection: sha256 of (seed, obs, source name, reduction
        number, injection number), so it depends on nothing else."""
        seed = int(self.pars["seed"])
        return np.array([int.from_bytes(hashlib.sha256(f"{seed}|{o}|{s}|{r}|{j}".encode()).digest()[:8], "little")
                         for o, s, r, j in zip(obs, source_name, reduction_number, injection)],
                        dtype=np.uint64)

    def draw(self, keys: np.ndarray, mjd_start, mjd_end) -> tuple:
        """(type code, amplitude, duration (days), peak time (MJD)) of each injection.

        Amplitudes and durations are log-uniform in the configured ranges (dip amplitudes
        capped at 1); the peak time is uniform over the light curve's time span.
        """
        u = [uniform(keys, np.full(keys.size, k, dtype=np.uint64)) for k in range(4)]
        codes = self.type_codes[np.minimum((u[0] * self.type_codes.size).astype(np.int64),
                                           self.type_codes.size - 1)]
        lo = np.full(keys.size, float(self.pars["min_amplitude"]))
        hi = np.full(keys.size, float(self.pars["max_amplitude"]))
        dip = codes == 1
        lo[dip], hi[dip] = np.minimum(lo[dip], 1.0), np.minimum(hi[dip], 1.0)
        amplitude = lo * (hi / lo) ** u[1]
        dlo, dhi = float(self.pars["min_duration"]), float(self.pars["max_duration"])
        duration = dlo * (dhi / dlo) ** u[2]
        return codes, amplitude, duration, mjd_start + u[3] * (mjd_end - mjd_start)

    def run(self, cols: dict, starts, meta: dict, good, finder_options: dict,
            sigma_clip: float) -> dict:
        """Inject ``injections_per_lightcurve`` events into copies of every light curve.

        Parameters
        ----------
        cols : concatenated arrays per epoch: mjd, flux, fluxerr (uJy).
        starts : first index of each light curve.
        meta : per light curve: obs, source_name, reduction_number (lists or arrays),
            flux_mean (uJy), err_scale.
        good : epochs that passed the quality checks (the finder skips the others).
        finder_options : keyword arguments of :func:`vo.lightcurves.finder.find_events`.
        sigma_clip : sigma-clipping threshold of the S/N recomputation.

        Returns
        -------
        dict with ``injections`` (DataFrame, one row per injection: lc, injection,
        sim_type, amplitude, duration, peak_time, window_start, window_end, injected_snr,
        recovered, event (row in ``events`` or -1)), ``events`` (the finder's table of
        recovered events, indexed by lc of the original light curve), and ``counts``
        (injected and recovered arrays of shape (type, amplitude bin, duration bin)).
        """
        starts = np.asarray(starts, dtype=np.int64)
        mjd = np.asarray(cols["mjd"], dtype=float)
        n = mjd.size
        counts_lc = np.diff(np.append(starts, n))
        n_inj = int(self.pars["injections_per_lightcurve"])
        flux_mean = np.asarray(meta["flux_mean"], dtype=float)
        eligible = np.isfinite(flux_mean) & (flux_mean > 0) & (counts_lc > 0)
        lcs = np.repeat(np.flatnonzero(eligible), n_inj) if self.pars["enabled"] else np.zeros(0, int)
        injection = np.tile(np.arange(n_inj), int(eligible.sum())) if lcs.size else np.zeros(0, int)
        shape = (len(SIM_TYPES), self.amplitude_edges.size - 1, self.duration_edges.size - 1)
        if lcs.size == 0:
            return {"injections": _injection_frame(*(np.zeros(0),) * 11),
                    "events": vfinder.find_events([], [], [], [], None, **finder_options),
                    "counts": {"injected": np.zeros(shape, np.int64), "recovered": np.zeros(shape, np.int64)}}

        # epochs of every copy, in copy order
        sizes = counts_lc[lcs]
        copy_starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        copy_of = np.repeat(np.arange(lcs.size), sizes)
        src = np.arange(copy_of.size) - copy_starts[copy_of] + starts[lcs][copy_of]

        keys = self.keys([meta["obs"][i] for i in lcs], [meta["source_name"][i] for i in lcs],
                         np.asarray(meta["reduction_number"])[lcs], injection)
        code, amplitude, duration, peak_time = self.draw(keys, mjd[starts[lcs]],
                                                         mjd[starts[lcs] + sizes - 1])
        epoch = (np.arange(copy_of.size) - copy_starts[copy_of]).astype(np.uint64)
        noise = standard_normal(keys[copy_of], epoch + np.uint64(4))

        t = mjd[src]
        flux0 = np.asarray(cols["flux"], dtype=float)[src]
        err0 = np.asarray(cols["fluxerr"], dtype=float)[src]
        fmean = flux_mean[lcs][copy_of]
        rel = excess(code[copy_of], t - peak_time[copy_of], amplitude[copy_of], duration[copy_of])
        flux, err = inject(flux0, err0, fmean, rel, noise)
        _, dsnr, stats = segment_snr(flux, err, copy_starts, sigma_clip)

        good_c = np.asarray(good, dtype=bool)[src]
        ev = vfinder.find_events(t, dsnr, flux, copy_of, good_c, mag_mean=stats["mag_mean"],
                                 **finder_options)
        w0, w1 = window(code, peak_time, amplitude, duration)
        c = ev["lc"]
        match = ((ev["time_start"] <= w1[c]) & (ev["time_end"] >= w0[c])
                 & (np.sign(ev["peak_snr"]) == SIGN[code[c]]))
        cand = np.flatnonzero(match)
        cand = cand[np.lexsort((-np.abs(ev["peak_snr"][cand]), c[cand]))]
        _, first = np.unique(c[cand], return_index=True)
        best = cand[first]  # strongest matching event of each recovered copy
        event_of = np.full(lcs.size, -1, dtype=np.int64)
        event_of[c[best]] = np.arange(best.size)
        events = {k: v[best] for k, v in ev.items()}
        events["peak_index"] = src[events["peak_index"]]
        events["lc"] = lcs[events["lc"]]

        inj_snr = np.where(good_c, np.abs(rel * fmean) / (err * stats["err_scale"][copy_of]), 0.0)
        inj_snr = np.maximum.reduceat(inj_snr, copy_starts)
        recovered = event_of >= 0
        a_bin = _bin(amplitude, self.amplitude_edges)
        d_bin = _bin(duration, self.duration_edges)
        flat = np.ravel_multi_index((code, a_bin, d_bin), shape)
        size = int(np.prod(shape))
        counts = {"injected": np.bincount(flat, minlength=size).reshape(shape),
                  "recovered": np.bincount(flat, weights=recovered, minlength=size).astype(np.int64).reshape(shape)}
        injections = _injection_frame(lcs, injection, code, amplitude, duration, peak_time, w0, w1,
                                      inj_snr, recovered, event_of)
        return {"injections": injections, "events": events, "counts": counts}


def _bin(values, edges) -> np.ndarray:
    """Bin index of each value; values on or beyond the outer edges go to the outer bins."""
    return np.clip(np.searchsorted(edges, values, side="right") - 1, 0, edges.size - 2)


def _injection_frame(lc, injection, code, amplitude, duration, peak_time, w0, w1, snr, recovered,
                     event) -> pd.DataFrame:
    code = np.asarray(code, dtype=np.int64)
    return pd.DataFrame({
        "lc": np.asarray(lc, dtype=np.int64), "injection": np.asarray(injection, dtype=np.int64),
        "sim_type": np.array(SIM_TYPES, dtype=object)[code], "amplitude": np.asarray(amplitude, float),
        "duration": np.asarray(duration, float), "peak_time": np.asarray(peak_time, float),
        "window_start": np.asarray(w0, float), "window_end": np.asarray(w1, float),
        "injected_snr": np.asarray(snr, float), "recovered": np.asarray(recovered, bool),
        "event": np.asarray(event, dtype=np.int64)})


def sim_params_json(row) -> str:
    """The injected parameters of one injection (a row of the injections table) as JSON."""
    return json.dumps({"sim_type": row["sim_type"], "injection": int(row["injection"]),
                       "amplitude": float(row["amplitude"]), "duration": float(row["duration"]),
                       "peak_time": float(row["peak_time"]), "window_start": float(row["window_start"]),
                       "window_end": float(row["window_end"]),
                       "injected_snr": float(row["injected_snr"])}, sort_keys=True)


_JSON_FLOAT_KEYS = ("amplitude", "duration", "injected_snr", "peak_time", "window_end", "window_start")


def _json_floats(values) -> list[str]:
    """JSON texts of floats, as ``json.dumps`` writes them (repr; NaN, Infinity, -Infinity)."""
    values = np.asarray(values, dtype=float)
    if np.isfinite(values).all():
        return [repr(v) for v in values.tolist()]
    return [json.dumps(v) for v in values.tolist()]


def sim_params_json_many(table: pd.DataFrame) -> list[str]:
    """:func:`sim_params_json` of every row of an injections table (the same strings), without
    a dict and a ``json.dumps`` call per row."""
    if len(table) == 0:
        return []
    f = {k: _json_floats(table[k].to_numpy()) for k in _JSON_FLOAT_KEYS}
    types = {t: json.dumps(str(t)) for t in pd.unique(table["sim_type"])}
    sim_type = [types[t] for t in table["sim_type"].tolist()]
    injection = table["injection"].to_numpy().astype(np.int64).tolist()
    return [f'{{"amplitude": {a}, "duration": {d}, "injected_snr": {s}, "injection": {j}, '
            f'"peak_time": {p}, "sim_type": {t}, "window_end": {we}, "window_start": {ws}}}'
            for a, d, s, j, p, t, we, ws in zip(f["amplitude"], f["duration"], f["injected_snr"], injection,
                                                f["peak_time"], sim_type, f["window_end"], f["window_start"])]


def efficiency_counts(counts: dict, amplitude_edges, duration_edges) -> pd.DataFrame:
    """Long table of the additive counts: one row per (sim_type, amplitude bin, duration bin)."""
    injected = np.asarray(counts["injected"], dtype=np.int64)
    recovered = np.asarray(counts["recovered"], dtype=np.int64)
    t, a, d = np.meshgrid(np.arange(injected.shape[0]), np.arange(injected.shape[1]),
                          np.arange(injected.shape[2]), indexing="ij")
    t, a, d = t.ravel(), a.ravel(), d.ravel()
    return pd.DataFrame({"sim_type": np.array(SIM_TYPES, dtype=object)[t],
                         "amplitude_lo": amplitude_edges[a], "amplitude_hi": amplitude_edges[a + 1],
                         "duration_lo": duration_edges[d], "duration_hi": duration_edges[d + 1],
                         "n_injected": injected.ravel(), "n_recovered": recovered.ravel()})


def efficiency_table(counts: pd.DataFrame) -> pd.DataFrame:
    """Add ``efficiency = n_recovered / n_injected`` and its binomial error to a counts table.

    The error is ``sqrt(eff * (1 - eff) / n_injected)``; both are NaN where nothing was
    injected.
    """
    out = counts.copy()
    n = out["n_injected"].to_numpy(dtype=float)
    k = out["n_recovered"].to_numpy(dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        eff = np.where(n > 0, k / n, np.nan)
        out["efficiency"] = eff
        out["efficiency_error"] = np.sqrt(eff * (1.0 - eff) / n)
    return out
