"""DEMO: a simulated survey, so that the whole pipeline runs offline with a known truth.

Each target is observed in several filters over ``n_seasons`` observing seasons separated
by ``season_gap`` days.  Within a season the cadence is irregular: nights are lost to
weather (single nights and multi-night spells) and each filter gets a Poisson number of
epochs at random clear nights.  Magnitude errors follow a sky-dominated CCD noise model
(S/N = 5 at ``limiting_mag`` under nominal sky, the sky varying from epoch to epoch) with
a ``sys_error`` floor; measured magnitudes scatter with exactly those errors.  A fraction
of epochs is flagged (bit flags, noisier), a fraction of those are wild outliers, and some
targets have a neighbour a few arcsec away whose rows the reducer's radius cut must drop.

The data of a source depend only on the DEMO parameters and the source's name and
catalog row (the random generator is seeded from ``seed`` and the name), and ``altdata``
carries the truth: true magnitude and object id per filter, the neighbours, the seasons.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

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


def source_rng(seed: int, name: str) -> np.random.Generator:
    """Random generator fixed by (seed, source name), independent of Python's hash()."""
    return np.random.default_rng(int(short_hash({"seed": int(seed), "name": str(name)}), 16))


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
                    pars: dict, flags: bool = True) -> pd.DataFrame:
    """Measurements of one object at ``epochs`` (standard raw columns).

    ``true_mag`` and ``oid`` map filter -> value; ``ra``/``dec`` (deg) is the true
    position.  Epochs below :data:`MIN_SNR` are dropped.  With ``flags``, a
    ``flag_fraction`` of epochs carries a bad-quality bit flag and doubled noise, and an
    ``outlier_fraction`` of the flagged epochs is off by 0.5-3 mag.
    """
    filt = epochs["filter"].to_numpy(dtype=object)
    mag_true = np.array([true_mag[f] for f in filt], dtype=float)
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
        "oid": np.array([oid[f] for f in filt], dtype=np.int64),
    })
    return df.loc[keep]


class VirtualDemoObs(VirtualObservatory):
    """The simulated DEMO survey; parameters are the ``DEMO`` config section."""

    name = "DEMO"

    def fetch_data_from_observatory(self, cat_row: dict) -> tuple[pd.DataFrame, dict]:
        """Simulated raw photometry of one target: (table of standard columns, altdata with the truth).

        ``cat_row`` needs name, ra, dec (deg) and mag (mag; NaN uses 18).
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
        parts = [simulate_object(rng, epochs, true_mag, oid, ra, dec, p)]
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
                   "seasons": seasons.to_numpy().tolist()}
        return raw, altdata

    def to_standard(self, raw: pd.DataFrame) -> pd.DataFrame:
        """DEMO raw tables already have the standard columns; returns them (a copy)."""
        missing = [c for c in STANDARD_COLUMNS if c not in raw.columns]
        if missing:
            raise KeyError(f"DEMO raw photometry lacks columns {missing}")
        return raw[STANDARD_COLUMNS].copy()
