"""Reduce raw photometry to light curves: pure functions shared by every observatory.

An observatory's reducer maps its raw table to the *standard* raw columns

    mjd (days), mag, magerr (mag), filter (str), flag (int, 0 = good),
    ra, dec (deg), exptime (s), oid (int, the survey's object id)

and calls :func:`make_lightcurves`, which selects, splits and calibrates.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

CODE_VERSION = "1"

#: AB zero point for fluxes in microJansky: m = 23.9 - 2.5 log10(f / uJy).
AB_ZP_UJY = 23.9
STANDARD_COLUMNS = ["mjd", "mag", "magerr", "filter", "flag", "ra", "dec", "exptime", "oid"]


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


def sigma_clipped_stats(values, sigma: float = 3.5, iters: int = 5):
    """Robust (mean, rms, mask of kept values) by iterative clipping around the median.

    The rms is estimated from the median absolute deviation (times 1.4826) at each
    iteration, so a few outliers do not inflate it.
    """
    values = np.asarray(values, dtype=float)
    keep = np.isfinite(values)
    for _ in range(iters):
        if keep.sum() < 3:
            break
        med = np.median(values[keep])
        mad = 1.4826 * np.median(np.abs(values[keep] - med))
        if mad == 0:
            break
        new = np.isfinite(values) & (np.abs(values - med) <= sigma * mad)
        if np.array_equal(new, keep):
            break
        keep = new
    if keep.sum() == 0:
        return np.nan, np.nan, keep
    kept = values[keep]
    return float(np.mean(kept)), float(np.std(kept, ddof=1)) if kept.size > 1 else np.nan, keep


def add_snr_columns(df: pd.DataFrame, sigma: float = 3.5) -> tuple[pd.DataFrame, dict]:
    """Add ``snr`` (flux / fluxerr) and ``dsnr`` (deviation S/N) columns; return the stats.

    ``dsnr = (flux - flux_mean) / (fluxerr * err_scale)`` where ``flux_mean`` is the
    sigma-clipped mean and ``err_scale >= 1`` rescales the errors so that the clipped
    deviations have unit rms (survey errors are often underestimated).
    Modifies and returns ``df``.
    """
    flux = df["flux"].to_numpy(dtype=float)
    err = df["fluxerr"].to_numpy(dtype=float)
    mean, rms, keep = sigma_clipped_stats(flux, sigma)
    with np.errstate(divide="ignore", invalid="ignore"):
        pull = (flux - mean) / err
    scale = 1.0
    if keep.sum() > 3:
        _, pull_rms, _ = sigma_clipped_stats(pull[keep], sigma)
        if np.isfinite(pull_rms):
            scale = max(1.0, pull_rms)
    with np.errstate(divide="ignore", invalid="ignore"):
        df["snr"] = flux / err
        df["dsnr"] = pull / scale
    stats = {"flux_mean": mean, "flux_rms": rms, "err_scale": float(scale),
             "mag_mean": float(flux_to_mag(mean)) if np.isfinite(mean) else np.nan,
             "n_epochs": int(len(df)), "n_clipped": int((~keep).sum())}
    return df, stats


def split_seasons(mjd, gap: float) -> np.ndarray:
    """Season index of each epoch (``mjd`` sorted): a new season starts after a gap > ``gap`` days."""
    mjd = np.asarray(mjd, dtype=float)
    if mjd.size == 0:
        return np.zeros(0, dtype=int)
    return np.concatenate([[0], np.cumsum(np.diff(mjd) > gap)]).astype(int)


def angular_offset_arcsec(ra1, dec1, ra2, dec2):
    """Small-angle separation (arcsec) between positions given in degrees."""
    dra = (np.asarray(ra1) - ra2 + 180.0) % 360.0 - 180.0
    ddec = np.asarray(dec1) - dec2
    return 3600.0 * np.hypot(dra * np.cos(np.radians(dec2)), ddec)


def select_target_rows(df: pd.DataFrame, cat_row: dict, radius: float,
                       mag_range: float | None, drop_flagged: bool) -> pd.DataFrame:
    """Rows of ``df`` (standard columns) that belong to the target.

    Drops NaN magnitudes, flagged rows (if ``drop_flagged``), rows further than ``radius``
    arcsec from the target, and survey objects (``oid``) whose median magnitude differs
    from the catalog magnitude by more than ``mag_range``.
    """
    good = np.isfinite(df["mag"].to_numpy(dtype=float)) & np.isfinite(df["mjd"].to_numpy(dtype=float))
    if drop_flagged:
        good &= df["flag"].to_numpy() == 0
    if np.isfinite(cat_row.get("ra", np.nan)) and "ra" in df:
        off = angular_offset_arcsec(df["ra"].to_numpy(float), df["dec"].to_numpy(float),
                                    float(cat_row["ra"]), float(cat_row["dec"]))
        good &= ~(off > radius)  # NaN positions are kept (no position to test)
    df = df.loc[good]
    cat_mag = cat_row.get("mag", np.nan)
    if mag_range is not None and cat_mag is not None and np.isfinite(cat_mag) and len(df):
        med = df.groupby("oid")["mag"].transform("median").to_numpy(float)
        df = df.loc[np.abs(med - cat_mag) <= mag_range]
    return df


def make_lightcurves(std: pd.DataFrame, cat_row: dict, pars: dict, obs: str) -> list:
    """Split standard raw photometry into light curves (one per season and filter).

    Parameters
    ----------
    std : raw photometry with :data:`STANDARD_COLUMNS`.
    cat_row : the target's catalog row (name, ra, dec, mag, ...).
    pars : the observatory's ``reducer`` parameters (gap, radius, mag_range, drop_flagged,
        sigma_clip, min_epochs).
    obs : observatory name.

    Returns
    -------
    list of :class:`vo.lightcurves.datasets.Lightcurve`, numbered in the order made.
    """
    from vo.lightcurves.datasets import Lightcurve

    missing = [c for c in STANDARD_COLUMNS if c not in std.columns]
    if missing:
        raise KeyError(f"raw photometry of {cat_row.get('name')!r} lacks columns {missing}")
    df = select_target_rows(std, cat_row, pars["radius"], pars["mag_range"], pars["drop_flagged"])
    df = df.sort_values("mjd", kind="stable").reset_index(drop=True)
    seasons = split_seasons(df["mjd"].to_numpy(float), pars["gap"])
    pieces = []
    for season in np.unique(seasons):
        in_season = df.loc[seasons == season]
        for filt, part in in_season.groupby("filter", sort=True):
            if len(part) >= pars["min_epochs"]:
                pieces.append((int(season), str(filt), part))
    lcs = []
    for number, (season, filt, part) in enumerate(pieces, start=1):
        data = part[STANDARD_COLUMNS].reset_index(drop=True).copy()
        data["flux"], data["fluxerr"] = mag_to_flux(data["mag"], data["magerr"])
        data, stats = add_snr_columns(data, pars["sigma_clip"])
        attrs = {"source_name": str(cat_row["name"]), "obs": obs, "filter": filt, "season": season,
                 "reduction_number": number, "reduction_total": len(pieces),
                 "cat_ra": float(cat_row.get("ra", np.nan)), "cat_dec": float(cat_row.get("dec", np.nan)),
                 "cat_mag": float(cat_row.get("mag", np.nan)),
                 "mjd_start": float(data["mjd"].min()), "mjd_end": float(data["mjd"].max()), **stats}
        lcs.append(Lightcurve(data=data, attrs=attrs))
    return lcs
