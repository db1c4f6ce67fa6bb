"""DEMO: a simulated survey, so that the whole pipeline runs offline with a known truth.

Each target is observed in several filters over ``n_seasons`` observing seasons separated
by ``season_gap`` days.  Within a season the cadence is irregular: nights are lost to
weather (single nights and multi-night spells) and each filter gets a Poisson number of
epochs at random clear nights.  Magnitude errors follow a sky-dominated CCD noise model
(S/N = 5 at ``limiting_mag`` under nominal sky, the sky varying from epoch to epoch) with
a ``sys_error`` floor; measured magnitudes scatter with exactly those errors.  A fraction
of epochs is flagged (bit flags, noisier), a fraction of those are wild outliers, and some
targets have a neighbour a few arcsec away whose rows the reducer's radius cut must drop.

A ``variable_fraction`` of the sources has one intrinsic event, with the shapes of the
injection simulator (:func:`vo.lightcurves.simulator.excess`): a *flare* (fast rise,
exponential decay with decay time ``duration``; stronger in bluer filters, see
:data:`FLARE_COLOUR`) or an achromatic *dip* (eclipse/occultation-like box of full width
``duration``).  Amplitude and duration are log-uniform in ``event_amplitude`` and
``event_duration``; the peak falls uniformly inside a random observing season.  The event
multiplies the true flux before the noise is drawn, so the errors follow the noise model
(points in a dip are noisier and may drop below detection).

A ``periodic_fraction`` of the sources (drawn from their own random stream, so independently
of the events and without changing any other source's data) varies periodically: a sinusoid
(``sine``) or a box-shaped eclipse lasting 4-12% of the period (``eclipse``), achromatic,
with period and amplitude log-uniform in ``period_range`` and ``periodic_amplitude``
(:func:`truth_periodic`; the truth for the periodicity search of the analysis).

The data of a source depend only on the DEMO parameters and the source's name and
catalog row (the random generator is seeded from ``seed`` and the name), and ``altdata``
carries the truth: true magnitude and object id per filter, the neighbours, the seasons,
``truth.events`` (also available without simulating photometry: :func:`truth_events`) and
``truth.periodic`` (:func:`truth_periodic`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from vo.lightcurves import simulator as vsim
from vo.lightcurves.observatories.base import VirtualObservatory
from vo.lightcurves.reduce import STANDARD_COLUMNS
from vo.provenance import short_hash

#: Typical white-dwarf colours: filter magnitude minus Gaia G (mag).
COLOURS = {"u": 0.45, "g": 0.05, "r": 0.15, "i": 0.30, "z": 0.45, "y": 0.55}
#: Noise model: source counts at the limiting magnitude and nominal sky counts in the
#: aperture, so that S/N = N / sqrt(N + SKY) = 5 at the limit (sky-dominated: SKY = 4 N).
N_LIM, SKY = 125.0, 500.0
#: Epochs with an expected S/N below this are not detected (not reported).
MIN_SNR = 3.0
#: Probability that a target has a neighbour, and the neighbour's separation range (arcsec).
NEIGHBOUR_PROB, NEIGHBOUR_SEP = 0.3, (4.0, 10.0)
#: Fraction of nights lost to weather (besides multi-night spells).
BAD_NIGHT_FRACTION = 0.2
FLAG_BITS = np.array([1, 2, 4, 8, 16, 32768])
ARCSEC = 1.0 / 3600.0
#: Intrinsic events: the flux change in a filter is the amplitude (defined in g) times
#: this factor (a hot flare on a cooler star has more contrast in blue; unknown filters: 1).
FLARE_COLOUR = {"u": 2.0, "g": 1.0, "r": 0.55, "i": 0.35, "z": 0.25, "y": 0.2}
#: Flux floor (fraction of the quiescent flux) of a total eclipse, so magnitudes stay finite.
MIN_FLUX_FACTOR = 1e-6


def source_rng(seed: int, name: str, stream: str | None = None) -> np.random.Generator:
    """Random generator fixed by (seed, source name[, stream]), independent of Python's hash().

    A named ``stream`` gives an independent generator for one part of the simulation (e.g.
    ``"events"``), so that part can be drawn without drawing the others.
    """
    key = {"seed": int(seed), "name": str(name)}
    if stream is not None:
        key["stream"] = str(stream)
    return np.random.default_rng(int(short_hash(key), 16))


def object_id(seed: int, name: str, filt: str, neighbour: int = 0) -> int:
    """Deterministic survey object id of a (source, filter[, neighbour])."""
    return int(short_hash({"seed": int(seed), "name": str(name), "filter": filt, "n": neighbour}), 16) % 10**12


def expected_snr(mag, limiting_mag: float, sky_scale=1.0):
    """S/N of a point source of magnitude ``mag`` (sky-dominated CCD noise model).

    ``sky_scale`` multiplies the sky counts (1 = nominal, giving S/N = 5 at ``limiting_mag``).
    """
    counts = N_LIM * 10.0 ** (-0.4 * (np.asarray(mag, float) - limiting_mag))
    return counts / np.sqrt(counts + SKY * np.asarray(sky_scale, float))


def magnitude_error(mag, limiting_mag: float, sys_error: float, sky_scale=1.0):
    """Magnitude error (mag): photometric noise of :func:`expected_snr` plus ``sys_error`` in quadrature."""
    phot = 2.5 / np.log(10.0) / expected_snr(mag, limiting_mag, sky_scale)
    return np.hypot(phot, sys_error)


def _log_uniform(rng: np.random.Generator, bounds, key: str) -> float:
    """One log-uniform draw in ``bounds`` = [min, max] (the ``DEMO.{key}`` parameter)."""
    lo, hi = (float(b) for b in bounds)
    if not 0 < lo <= hi:
        raise ValueError(f"DEMO.{key}: need [min, max] with 0 < min <= max, got {list(bounds)}")
    return min(max(float(np.exp(rng.uniform(np.log(lo), np.log(hi)))), lo), hi)


def truth_events(cat_row: dict, pars: dict) -> list[dict]:
    """The intrinsic events of one DEMO source (the truth), without simulating photometry.

    Drawn from the source's own ``"events"`` random stream, so the result equals
    ``altdata["truth"]["events"]`` of :meth:`VirtualDemoObs.fetch_data_from_observatory`.
    Every source draws an event; only a ``variable_fraction`` of them keeps it (so raising
    the fraction adds variable sources without changing the others' events).

    Parameters
    ----------
    cat_row : the target's catalog row (needs ``name``).
    pars : the ``DEMO`` config section.

    Returns
    -------
    list of dicts (empty for a non-variable source), each with type (flare or dip), sign
    (+1 brightening, -1 dimming), t_start, t_peak, t_end (MJD; the event's excess is at
    least :data:`vo.lightcurves.simulator.WINDOW_FRACTION` of its peak inside
    [t_start, t_end]), season (index), duration (days: flare decay time, dip full width),
    amplitude (fractional flux change at the peak in g, positive) and amplitude_by_filter
    (filter -> fractional flux change at the peak, positive).
    """
    types = list(pars["event_types"])
    unknown = [t for t in types if t not in ("flare", "dip")]
    if not types or unknown:
        raise ValueError(f"DEMO.event_types: need a non-empty list of flare and dip, got {types}")
    rng = source_rng(int(pars["seed"]), str(cat_row["name"]), stream="events")
    variable = rng.random() < float(pars["variable_fraction"])
    kind = types[int(rng.integers(len(types)))]
    amplitude = _log_uniform(rng, pars["event_amplitude"], "event_amplitude")
    duration = _log_uniform(rng, pars["event_duration"], "event_duration")
    season = int(rng.integers(int(pars["n_seasons"])))
    t_peak = (float(pars["start_mjd"]) + season * (pars["season_length"] + pars["season_gap"])
              + rng.uniform(0.0, float(pars["season_length"])))
    if not variable:
        return []
    if kind == "dip":
        amplitude = min(amplitude, 1.0)
        by_filter = {f: amplitude for f in pars["filters"]}
    else:
        by_filter = {f: amplitude * FLARE_COLOUR.get(f, 1.0) for f in pars["filters"]}
    code = vsim.SIM_TYPES.index(kind)
    t_start, t_end = vsim.window(code, t_peak, amplitude, duration)
    return [{"type": kind, "sign": int(vsim.SIGN[code]), "t_start": float(t_start),
             "t_peak": float(t_peak), "t_end": float(t_end), "season": season,
             "duration": duration, "amplitude": amplitude, "amplitude_by_filter": by_filter}]


def event_flux_factor(events: list[dict], mjd, filters) -> np.ndarray:
    """True flux of a source at epochs (``mjd`` in MJD, ``filters``) over its quiescent flux.

    ``events`` as returned by :func:`truth_events`; 1 without events, never below
    :data:`MIN_FLUX_FACTOR`.
    """
    mjd = np.asarray(mjd, dtype=float)
    filt = pd.Series(np.asarray(filters, dtype=object))
    factor = np.ones(mjd.size)
    for ev in events:
        amp = filt.map(ev["amplitude_by_filter"]).fillna(ev["amplitude"]).to_numpy(float)
        code = vsim.SIM_TYPES.index(ev["type"])
        factor += vsim.excess(code, mjd - ev["t_peak"], amp, ev["duration"])
    return np.maximum(factor, MIN_FLUX_FACTOR)


#: Eclipse width of the periodic ``eclipse`` sources, as a fraction of the period.
ECLIPSE_DUTY = (0.04, 0.12)


def truth_periodic(cat_row: dict, pars: dict) -> dict | None:
    """The periodic variation of one DEMO source (the truth), or None for a non-periodic one.

    Drawn from the source's own ``"periodic"`` random stream (every source draws, a
    ``periodic_fraction`` keeps it). Returns type (sine or eclipse), period (days), amplitude
    (fractional flux: sine semi-amplitude or eclipse depth), t0 (MJD of phase 0: the sine's
    upward zero crossing, the eclipse's centre) and duty (eclipse width / period; 0 for sine).
    """
    types = list(pars["periodic_types"])
    rng = source_rng(int(pars["seed"]), str(cat_row["name"]), stream="periodic")
    periodic = rng.random() < float(pars["periodic_fraction"])
    kind = types[int(rng.integers(len(types)))]
    period = _log_uniform(rng, pars["period_range"], "period_range")
    amplitude = _log_uniform(rng, pars["periodic_amplitude"], "periodic_amplitude")
    t0 = float(pars["start_mjd"]) + rng.uniform(0.0, period)
    duty = rng.uniform(*ECLIPSE_DUTY)
    if not periodic:
        return None
    if kind == "eclipse":
        return {"type": kind, "period": period, "amplitude": min(amplitude, 0.9), "t0": t0, "duty": duty}
    return {"type": kind, "period": period, "amplitude": amplitude, "t0": t0, "duty": 0.0}


def periodic_flux_factor(truth: dict | None, mjd) -> np.ndarray:
    """True flux over the mean (sine) or out-of-eclipse (eclipse) flux at epochs ``mjd`` (MJD)."""
    mjd = np.asarray(mjd, dtype=float)
    if not truth:
        return np.ones(mjd.size)
    phase = np.mod((mjd - truth["t0"]) / truth["period"], 1.0)
    if truth["type"] == "sine":
        return 1.0 + truth["amplitude"] * np.sin(2 * np.pi * phase)
    half = truth["duty"] / 2
    return np.where((phase < half) | (phase > 1 - half), 1.0 - truth["amplitude"], 1.0)


def observing_epochs(rng: np.random.Generator, pars: dict) -> pd.DataFrame:
    """Epochs of the survey for one target: columns mjd (days), filter, season, sky_scale."""
    n_nights = max(1, int(np.ceil(pars["season_length"])))
    parts = []
    for season in range(int(pars["n_seasons"])):
        start = pars["start_mjd"] + season * (pars["season_length"] + pars["season_gap"])
        clear = rng.random(n_nights) >= BAD_NIGHT_FRACTION
        for _ in range(rng.poisson(n_nights / 40.0)):  # multi-night bad-weather spells
            first = rng.integers(0, n_nights)
            clear[first:first + rng.geometric(0.3)] = False
        nights = np.flatnonzero(clear)
        if nights.size == 0:
            nights = np.arange(n_nights)
        sky = rng.lognormal(0.0, 0.35, n_nights)  # sky/seeing of each night
        for filt in pars["filters"]:
            n = max(1, rng.poisson(pars["epochs_per_season"]))
            night = np.sort(rng.choice(nights, n, replace=n > nights.size))
            parts.append(pd.DataFrame({
                "mjd": start + night + rng.uniform(0.15, 0.45, n),  # during the night (UTC)
                "filter": filt, "season": season,
                "sky_scale": sky[night] * rng.lognormal(0.0, 0.1, n)}))
    return pd.concat(parts, ignore_index=True)


def simulate_object(rng, epochs: pd.DataFrame, true_mag: dict, oid: dict, ra: float, dec: float,
                    pars: dict, flags: bool = True, dmag=None) -> pd.DataFrame:
    """Measurements of one object at ``epochs`` (standard raw columns).

    ``true_mag`` and ``oid`` map filter -> value; ``ra``/``dec`` (deg) is the true
    position; ``dmag`` (mag, one per epoch, optional) is added to the true magnitude
    (intrinsic variability) before the errors and the noise are computed.  Epochs below
    :data:`MIN_SNR` are dropped.  With ``flags``, a ``flag_fraction`` of epochs carries a
    bad-quality bit flag and doubled noise, and an ``outlier_fraction`` of the flagged
    epochs is off by 0.5-3 mag.
    """
    filt = epochs["filter"].to_numpy(dtype=object)
    mag_true = epochs["filter"].map(true_mag).to_numpy(dtype=float)
    if dmag is not None:
        mag_true = mag_true + np.asarray(dmag, dtype=float)
    sky = epochs["sky_scale"].to_numpy(float)
    keep = expected_snr(mag_true, pars["limiting_mag"], sky) >= MIN_SNR
    n = len(epochs)
    magerr = magnitude_error(mag_true, pars["limiting_mag"], pars["sys_error"], sky)
    noise = rng.standard_normal(n)
    flag = np.zeros(n, dtype=np.int64)
    if flags:
        flagged = rng.random(n) < pars["flag_fraction"]
        flag[flagged] = rng.choice(FLAG_BITS, int(flagged.sum()))
        noise[flagged] *= 2.0
        outlier = flagged & (rng.random(n) < pars["outlier_fraction"])
        noise[outlier] = 0.0
        mag_true = mag_true + outlier * rng.choice([-1.0, 1.0], n) * rng.uniform(0.5, 3.0, n)
    scatter = pars["position_scatter"] * ARCSEC
    df = pd.DataFrame({
        "mjd": epochs["mjd"].to_numpy(float),
        "mag": mag_true + noise * magerr,
        "magerr": magerr,
        "filter": filt,
        "flag": flag,
        "ra": (ra + rng.normal(0.0, scatter, n) / np.cos(np.radians(dec))) % 360.0,
        "dec": dec + rng.normal(0.0, scatter, n),
        "exptime": float(pars["exptime"]),
        "oid": epochs["filter"].map(oid).to_numpy(dtype=np.int64),
    })
    return df.loc[keep]


class VirtualDemoObs(VirtualObservatory):
    """The simulated DEMO survey; parameters are the ``DEMO`` config section."""

    name = "DEMO"
    #: Version of the simulation itself (bump it when the simulated data change): a new
    #: version re-"downloads" every stored DEMO source, as new survey data would.
    SIMULATION_VERSION = "3"  # 3: periodic sources

    def download_params(self) -> dict:
        return {**super().download_params(), "simulation_version": self.SIMULATION_VERSION}

    def fetch_data_from_observatory(self, cat_row: dict) -> tuple[pd.DataFrame, dict]:
        """Simulated raw photometry of one target: (table of standard columns, altdata with the truth).

        ``cat_row`` needs name, ra, dec (deg) and mag (mag; NaN uses 18).  The truth in
        ``altdata``: true_mag and oid (per filter), neighbours, seasons ([first, last] MJD
        of each season's epochs) and ``truth["events"]`` (:func:`truth_events`; the neighbours
        never vary).
        """
        p = self.pars
        name, seed = str(cat_row["name"]), int(p["seed"])
        rng = source_rng(seed, name)
        ra, dec = float(cat_row["ra"]), float(cat_row["dec"])
        mag = cat_row.get("mag", np.nan)
        mag = 18.0 if mag is None or not np.isfinite(mag) else float(mag)
        filters = list(p["filters"])
        true_mag = {f: mag + COLOURS.get(f, 0.0) + rng.normal(0.0, 0.03) for f in filters}
        oid = {f: object_id(seed, name, f) for f in filters}
        epochs = observing_epochs(rng, p)
        events = truth_events(cat_row, p)
        periodic = truth_periodic(cat_row, p)
        dmag = None
        if events or periodic:
            factor = event_flux_factor(events, epochs["mjd"], epochs["filter"])
            factor *= periodic_flux_factor(periodic, epochs["mjd"])
            dmag = -2.5 * np.log10(np.maximum(factor, MIN_FLUX_FACTOR))
        parts = [simulate_object(rng, epochs, true_mag, oid, ra, dec, p, dmag=dmag)]
        neighbours = []
        if rng.random() < NEIGHBOUR_PROB:
            sep, pa = rng.uniform(*NEIGHBOUR_SEP), rng.uniform(0.0, 2 * np.pi)
            n_ra = ra + sep * ARCSEC * np.sin(pa) / np.cos(np.radians(dec))
            n_dec = dec + sep * ARCSEC * np.cos(pa)
            n_mag = {f: m + rng.uniform(-0.5, 1.0) for f, m in true_mag.items()}
            n_oid = {f: object_id(seed, name, f, neighbour=1) for f in filters}
            parts.append(simulate_object(rng, epochs, n_mag, n_oid, n_ra, n_dec, p, flags=False))
            neighbours.append({"sep_arcsec": sep, "pa_deg": float(np.degrees(pa)), "ra": n_ra,
                               "dec": n_dec, "true_mag": n_mag, "oid": n_oid})
        raw = pd.concat(parts, ignore_index=True).sort_values("mjd", kind="stable").reset_index(drop=True)
        seasons = epochs.groupby("season")["mjd"].agg(["min", "max"])
        altdata = {"simulated": True, "seed": seed, "true_mag": true_mag, "oid": oid,
                   "neighbours": neighbours, "n_epochs": int(len(epochs)),
                   "seasons": seasons.to_numpy().tolist(), "truth": {"events": events, "periodic": periodic}}
        return raw, altdata

    def to_standard(self, raw: pd.DataFrame) -> pd.DataFrame:
        """DEMO raw tables already have the standard columns; returns them (a copy)."""
        missing = [c for c in STANDARD_COLUMNS if c not in raw.columns]
        if missing:
            raise KeyError(f"DEMO raw photometry lacks columns {missing}")
        return raw[STANDARD_COLUMNS].copy()
