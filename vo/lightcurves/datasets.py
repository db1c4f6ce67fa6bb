"""Datasets: raw photometry and light curves, with their files and in-file keys."""

from __future__ import annotations

import re

import pandas as pd


def sanitize_key(name: str) -> str:
    """HDF5-safe group key of a source name (``/`` and spaces become ``_``)."""
    key = re.sub(r"[^A-Za-z0-9_.+\-]", "_", str(name).strip())
    if not key:
        raise ValueError(f"source name {name!r} gives an empty key")
    return key


class Lightcurve:
    """Reduced photometry of one source, one filter, one season.

    ``data`` columns: mjd (days), mag, magerr (mag), flux, fluxerr (uJy), snr, dsnr,
    filter, flag, ra, dec (deg), exptime (s), oid.  ``attrs`` hold source_name, obs,
    filter, season, reduction_number, reduction_total, cat_ra, cat_dec, cat_mag,
    flux_mean, flux_rms (uJy), err_scale, mag_mean, n_epochs, mjd_start, mjd_end.
    """

    def __init__(self, data: pd.DataFrame | None = None, attrs: dict | None = None,
                 filename: str | None = None, folder: str | None = None, filekey: str | None = None):
        self._data = data
        self.attrs = dict(attrs or {})
        self.filename = filename
        self.folder = folder
        self._filekey = filekey

    @property
    def data(self) -> pd.DataFrame:
        return self._data

    @data.setter
    def data(self, value: pd.DataFrame) -> None:
        self._data = value

    @property
    def filekey(self) -> str:
        if self._filekey:
            return self._filekey
        a = self.attrs
        return (f"{sanitize_key(a['source_name'])}_reduction_"
                f"{int(a['reduction_number']):02d}_of_{int(a['reduction_total']):02d}")

    def __repr__(self) -> str:
        n = 0 if self._data is None else len(self._data)
        return f"Lightcurve({self.filekey!r}, {n} epochs)"
