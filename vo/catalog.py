"""Target catalogs: read FITS, CSV or parquet, map columns, propagate proper motions.

A :class:`Catalog` turns a catalog file into a table of *standard* columns

    name (str), ra, dec (deg, at ``obs_epoch``), mag, magerr (mag), filter (str),
    pmra (mas/yr, includes cos(dec)), pmdec (mas/yr), parallax (mas),
    epoch (Julian year of the catalog positions), ra_cat, dec_cat (deg, at ``epoch``)

Built-in catalogs (names in any case): ``demo`` (shipped in ``catalogs/demo.csv``, made by
:func:`make_demo_catalog`) and ``WD`` (Gentile Fusillo et al. 2021, Gaia EDR3 white
dwarfs, downloaded once into ``{data_root}/catalogs/``; only targets with a white-dwarf
probability ``Pwd >= catalog.min_probability`` (0.75) are kept, the cut the catalog's
authors recommend for a high-confidence sample).

This is the module of the ``targets`` step: targets are split by integer RA degree and
written one HDF5 file per bin (:func:`write_targets`).
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from vo.config import REPO_ROOT, ConfigError
from vo.io import hdf5 as vh5
from vo.io.atomic import atomic_path


CATALOG_DIR = REPO_ROOT / "catalogs"
STANDARD_COLUMNS = ["name", "ra", "dec", "mag", "magerr", "filter", "pmra", "pmdec", "parallax", "epoch"]
REQUIRED_COLUMNS = ("name", "ra", "dec")
WD_URL = ("https://warwick.ac.uk/fac/sci/physics/research/astro/research/catalogues/"
          "gaiaedr3_wd_main.fits.gz")

#: Built-in catalogs: file, download address and the mapping standard -> catalog column.
#: A ``filter`` entry that is not a column of the file is used as the filter name.
BUILTINS = {
    "demo": {"filename": "demo.csv", "url": None,
             "columns": {"name": "name", "ra": "ra", "dec": "dec", "mag": "phot_g_mean_mag",
                         "magerr": "phot_g_mean_mag_error", "filter": "G", "pmra": "pmra",
                         "pmdec": "pmdec", "parallax": "parallax", "epoch": "ref_epoch"}},
    "WD": {"filename": "gaiaedr3_wd_main.fits.gz", "url": WD_URL,
           "columns": {"name": "WDJ_name", "ra": "ra", "dec": "dec", "mag": "phot_g_mean_mag",
                       "magerr": None, "filter": "G", "pmra": "pmra", "pmdec": "pmdec",
                       "parallax": "parallax", "epoch": None, "probability": "Pwd"}},
}


def builtin_name(default: str | None) -> str | None:
    """The built-in catalog called ``default`` in any case (``"wd"`` -> ``"WD"``); None stays None."""
    if default is None:
        return None
    found = {k.lower(): k for k in BUILTINS}.get(str(default).strip().lower())
    if found is None:
        raise ConfigError(f"catalog.default: unknown built-in catalog {default!r}; "
                          f"choose one of {', '.join(BUILTINS)} (any case) or null")
    return found

MAS_PER_RAD = 180.0 / np.pi * 3600e3


class CatalogDownloadError(RuntimeError):
    """A catalog file is missing and could not be downloaded."""


# -- reading files -------------------------------------------------------------------------
def _file_kind(path: Path) -> str:
    name = path.name.lower()
    for ext, kind in ((".fits.gz", "fits"), (".fits", "fits"), (".fit", "fits"), (".fit.gz", "fits"),
                      (".fz", "fits"), (".csv.gz", "csv"), (".csv", "csv"), (".parquet", "parquet"),
                      (".pq", "parquet")):
        if name.endswith(ext):
            return kind
    raise ConfigError(f"{path}: unknown catalog format (use .fits[.gz], .csv[.gz] or .parquet)")


def _column_names(path: Path, kind: str) -> list[str]:
    if kind == "csv":
        return list(pd.read_csv(path, nrows=0).columns)
    if kind == "parquet":
        import pyarrow.parquet as pq
        return list(pq.read_schema(path).names)
    from astropy.io import fits
    with fits.open(path) as hdul:
        return list(_table_hdu(hdul, path).columns.names)


def _table_hdu(hdul, path: Path):
    for hdu in hdul:
        if getattr(hdu, "columns", None) is not None:
            return hdu
    raise ConfigError(f"{path}: FITS file has no table extension")


def _read_columns(path: Path, kind: str, columns: list[str]) -> pd.DataFrame:
    """Only the needed ``columns`` of the file (big catalogs have dozens more)."""
    if kind == "csv":
        return pd.read_csv(path, usecols=columns)
    if kind == "parquet":
        return pd.read_parquet(path, columns=columns)
    from astropy.io import fits
    out = {}
    with fits.open(path) as hdul:
        data = _table_hdu(hdul, path).data
        for col in columns:
            values = np.asarray(data[col])
            if values.dtype.kind in "SU":
                values = np.char.strip(values.astype(str)).astype(object)
            else:
                values = values.astype(values.dtype.newbyteorder("="))
            out[col] = values
    return pd.DataFrame(out)


def _read_columns_cached(path: Path, kind: str, columns: list[str], cache_dir: Path) -> pd.DataFrame:
    """:func:`_read_columns`, with FITS columns cached as parquet in ``cache_dir``.

    A gzipped FITS catalog of 10^6 rows takes tens of seconds to decompress, and the
    Snakefile loads the catalog at every parse (every cluster job); the parquet cache,
    keyed on the file's path, size, mtime and the columns, takes well under a second.
    """
    if kind != "fits":
        return _read_columns(path, kind, columns)
    from vo.provenance import short_hash

    st = path.stat()
    key = short_hash({"file": str(path.resolve()), "size": st.st_size, "mtime": st.st_mtime_ns,
                      "columns": columns})
    cache = cache_dir / f".{path.name}.{key}.parquet"
    if cache.exists():
        try:
            return pd.read_parquet(cache)
        except (OSError, ValueError):
            pass  # unreadable cache: read the FITS file again
    df = _read_columns(path, kind, columns)
    try:
        with atomic_path(cache) as tmp:
            df.to_parquet(tmp)
    except OSError:
        pass  # a read-only cache folder only costs speed
    return df


def resolve_columns(available: list[str], mapping: dict, path) -> tuple[dict, dict]:
    """Match standard columns to the file's columns (case-insensitively).

    Returns ``(found, constants)``: ``found`` maps standard name -> file column, and
    ``constants`` holds a ``filter`` name given in place of a column.  An explicitly
    mapped column that is missing, or a missing ``name``/``ra``/``dec``, raises
    :class:`ConfigError` naming the file and the column.
    """
    lower = {c.lower(): c for c in available}
    found, constants = {}, {}
    for std in STANDARD_COLUMNS + ["probability"]:
        wanted = mapping.get(std)
        if wanted is not None and wanted.lower() in lower:
            found[std] = lower[wanted.lower()]
        elif wanted is not None and std == "filter":
            constants["filter"] = wanted
        elif wanted is not None:
            raise ConfigError(f"{path}: catalog has no column {wanted!r} (mapped to {std!r}); "
                              f"columns are {', '.join(available)}")
        elif std in lower:
            found[std] = lower[std]
        elif std in REQUIRED_COLUMNS:
            raise ConfigError(f"{path}: catalog has no {std!r} column; map it with catalog.columns.{std} "
                              f"(columns are {', '.join(available)})")
    return found, constants


# -- proper motion -------------------------------------------------------------------------
def propagate_positions(ra, dec, pmra, pmdec, epoch, obs_epoch: float):
    """Positions (deg) moved from ``epoch`` to ``obs_epoch`` (Julian years) with proper motion.

    Straight-line space motion with zero radial velocity, as
    ``SkyCoord.apply_space_motion`` does; written out in numpy so that 10^6 rows take
    milliseconds and rows with NaN proper motion keep their catalog position.

    Parameters
    ----------
    ra, dec : deg.  pmra : mas/yr, includes cos(dec).  pmdec : mas/yr.
    epoch : Julian year of the input positions (scalar or per row).
    """
    ra, dec = np.asarray(ra, float), np.asarray(dec, float)
    ra_r, dec_r = np.radians(ra), np.radians(dec)
    dt = obs_epoch - np.asarray(epoch, float)
    mu_a = np.nan_to_num(np.asarray(pmra, float)) / MAS_PER_RAD * dt
    mu_d = np.nan_to_num(np.asarray(pmdec, float)) / MAS_PER_RAD * dt
    cos_a, sin_a, cos_d, sin_d = np.cos(ra_r), np.sin(ra_r), np.cos(dec_r), np.sin(dec_r)
    # p + mu_a * east + mu_d * north: p the unit vector, east/north the tangent-plane unit vectors
    x = cos_d * cos_a - mu_a * sin_a - mu_d * sin_d * cos_a
    y = cos_d * sin_a + mu_a * cos_a - mu_d * sin_d * sin_a
    z = sin_d + mu_d * cos_d
    moving = (mu_a != 0) | (mu_d != 0)  # still rows keep their exact position
    new_ra = np.where(moving, np.degrees(np.arctan2(y, x)) % 360.0, ra)
    new_dec = np.where(moving, np.degrees(np.arctan2(z, np.hypot(x, y))), dec)
    return new_ra, new_dec


# -- the demo catalog ----------------------------------------------------------------------
def make_demo_catalog(n: int = 300, seed: int = 20210901, n_fields: int = 12) -> pd.DataFrame:
    """A Gaia-like catalog of nearby white dwarfs in ``n_fields`` fields, deterministic in ``seed``.

    Each field lies inside one integer RA degree (so every field is one RA bin); fields
    spread in RA and declination.  Columns: source_id, name (``DEMO_J{ra}{dec}``), ra,
    dec (deg, epoch 2016.0), ref_epoch, phot_g_mean_mag and its error (mag), parallax and
    its error (mas), pmra, pmdec and their errors (mas/yr).
    """
    rng = np.random.default_rng(seed)
    step = 360 // n_fields
    field_ra = (np.arange(n_fields) * step + rng.integers(0, step, n_fields)) % 360
    field_dec = rng.uniform(-30.0, 70.0, n_fields)
    field = rng.integers(0, n_fields, n)
    ra = field_ra[field] + rng.uniform(0.05, 0.95, n)  # stays inside the integer degree
    dec = np.clip(field_dec[field] + rng.uniform(-1.5, 1.5, n), -89.0, 89.0)
    g = 12.0 + 8.0 * rng.power(2.5, n)  # G = 12-20, mostly faint
    g_err = 0.0008 + 0.004 * 10 ** (0.4 * (g - 20.0))
    abs_g = rng.normal(12.0, 0.8, n)  # white-dwarf absolute magnitudes
    parallax = np.clip(1000.0 / 10 ** ((g - abs_g + 5.0) / 5.0), 1.0, None)  # mas
    parallax_err = 0.02 + 0.5 * 10 ** (0.4 * (g - 20.0))
    v_tan = rng.gamma(4.0, 10.0, n)  # tangential velocity (km/s)
    theta = rng.uniform(0, 2 * np.pi, n)
    pm = v_tan * parallax / 4.74047  # mas/yr
    order = np.lexsort((dec, ra))
    source_id = (np.floor(ra * 1e6).astype(np.int64) * 1000 + np.arange(n))[order]
    df = pd.DataFrame({
        "source_id": source_id,
        "ra": ra[order].round(7), "dec": dec[order].round(7), "ref_epoch": 2016.0,
        "phot_g_mean_mag": g[order].round(4), "phot_g_mean_mag_error": g_err[order].round(5),
        "parallax": parallax[order].round(4), "parallax_error": parallax_err[order].round(4),
        "pmra": (pm * np.sin(theta))[order].round(3), "pmdec": (pm * np.cos(theta))[order].round(3),
        "pmra_error": (parallax_err * 1.2)[order].round(4),
        "pmdec_error": (parallax_err * 1.1)[order].round(4),
    })
    df.insert(1, "name", [f"DEMO_J{r:08.4f}{d:+08.4f}" for r, d in zip(df["ra"], df["dec"])])
    return df


def write_demo_catalog(path: str | os.PathLike = CATALOG_DIR / "demo.csv", **kwargs) -> Path:
    """Write :func:`make_demo_catalog` to ``path`` (CSV, atomically)."""
    with atomic_path(path) as tmp:
        make_demo_catalog(**kwargs).to_csv(tmp, index=False)
    return Path(path)


# -- download --------------------------------------------------------------------------------
def download_file(url: str, path: str | os.PathLike, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``path`` atomically; a failure names the URL and where to put the file."""
    import requests

    path = Path(path)
    try:
        with requests.get(url, stream=True, timeout=timeout) as resp:
            resp.raise_for_status()
            with atomic_path(path) as tmp, open(tmp, "wb") as f:
                for chunk in resp.iter_content(chunk_size=1 << 20):
                    f.write(chunk)
    except (requests.RequestException, OSError) as exc:
        raise CatalogDownloadError(
            f"could not download the catalog from {url} ({exc}); download it by hand and put it "
            f"at {path}") from exc
    return path


# -- the catalog -------------------------------------------------------------------------------
class Catalog:
    """A target catalog with standard columns (see the module docstring).

    Parameters
    ----------
    default : built-in catalog (``"demo"``, ``"WD"``) or None (then ``filename`` is required).
    filename : catalog file (FITS, CSV, parquet); relative names are looked up in the
        working directory, ``catalogs/`` of the repository, then ``{data_root}/catalogs``.
    columns : standard name -> catalog column name (None entries use the built-in's or the
        standard name itself, matched case-insensitively).
    catalog_epoch : Julian year of the positions when there is no epoch column.
    obs_epoch : Julian year to which positions are propagated (None keeps them).
    mag_limit : keep targets with mag <= this (mag).  max_targets : keep the first N.
    url : where to download the file from when it is missing.
    data_root : data root (downloaded catalogs go to ``{data_root}/catalogs``).
    """

    def __init__(self, default: str | None = "demo", filename: str | None = None,
                 columns: dict | None = None, catalog_epoch: float = 2016.0,
                 obs_epoch: float | None = 2020.0, mag_limit: float | None = None,
                 max_targets: int | None = None, url: str | None = None, data_root=None,
                 min_probability: float | None = 0.75):
        default = builtin_name(default)
        if default is None and filename is None:
            raise ConfigError("catalog: give catalog.default or catalog.filename")
        builtin = BUILTINS.get(default, {}) if filename is None else {}
        self.default = default
        self.filename = filename or builtin.get("filename")
        self.url = url or builtin.get("url")
        self.columns = {**builtin.get("columns", {}),
                        **{k: v for k, v in (columns or {}).items() if v is not None}}
        self.catalog_epoch = float(catalog_epoch)
        self.obs_epoch = obs_epoch
        self.mag_limit = mag_limit
        self.max_targets = max_targets
        self.min_probability = min_probability
        self.data_root = Path(data_root) if data_root is not None else None
        self.data: pd.DataFrame | None = None

    @classmethod
    def from_config(cls, cfg: dict) -> "Catalog":
        """The catalog of the full merged config ``cfg`` (its ``catalog`` section)."""
        from vo.config import data_root
        return cls(**cfg["catalog"], data_root=data_root(cfg))

    # -- files -----------------------------------------------------------------------------
    def _download_dir(self) -> Path:
        if self.data_root is None:
            from vo.config import data_root, defaults
            return data_root(defaults()) / "catalogs"
        return self.data_root / "catalogs"

    def get_fullname(self) -> Path:
        """Path of the catalog file (the download location when it is not found anywhere)."""
        path = Path(self.filename).expanduser()
        if path.is_absolute():
            return path
        for candidate in (Path.cwd() / path, CATALOG_DIR / path, self._download_dir() / path):
            if candidate.exists():
                return candidate
        return self._download_dir() / path

    def _ensure_file(self) -> Path:
        path = self.get_fullname()
        if path.exists():
            return path
        if not self.url:
            raise ConfigError(f"catalog file {self.filename!r} not found (looked in {Path.cwd()}, "
                              f"{CATALOG_DIR} and {self._download_dir()})")
        return download_file(self.url, path)

    # -- loading ---------------------------------------------------------------------------
    def load(self) -> "Catalog":
        """Read the file into :attr:`data` (standard columns, propagated positions); returns self."""
        path = self._ensure_file()
        kind = _file_kind(path)
        try:
            found, constants = resolve_columns(_column_names(path, kind), self.columns, path)
            raw = _read_columns_cached(path, kind, list(dict.fromkeys(found.values())),
                                       self._download_dir())
        except (OSError, ValueError, KeyError) as exc:
            if isinstance(exc, ConfigError):
                raise
            raise ConfigError(f"{path}: cannot read catalog: {exc}") from exc
        self.data = self._standardise(raw, found, constants, path)
        return self

    def _standardise(self, raw: pd.DataFrame, found: dict, constants: dict, path) -> pd.DataFrame:
        n = len(raw)
        df = pd.DataFrame(index=pd.RangeIndex(n))
        df["name"] = raw[found["name"]].astype(str).str.strip().to_numpy(dtype=object)
        for col in ("ra", "dec", "mag", "magerr", "pmra", "pmdec", "parallax", "epoch"):
            df[col] = (pd.to_numeric(raw[found[col]], errors="coerce").to_numpy(float)
                       if col in found else np.full(n, np.nan))
        df["epoch"] = df["epoch"].fillna(self.catalog_epoch)
        filt = raw[found["filter"]].astype(str).to_numpy(dtype=object) if "filter" in found else \
            np.full(n, constants.get("filter", ""), dtype=object)
        df["filter"] = filt
        bad = ~(np.isfinite(df["ra"]) & np.isfinite(df["dec"]))
        if bad.any():
            raise ConfigError(f"{path}: {int(bad.sum())} rows have no valid ra/dec "
                              f"(first: {df['name'][bad].iloc[0]!r})")
        for col, lo, hi in (("ra", 0.0, 360.0), ("dec", -90.0, 90.0)):
            out = ~df[col].between(lo, hi)
            if out.any():
                i = int(np.flatnonzero(out.to_numpy())[0])
                raise ConfigError(f"{path}: {int(out.sum())} rows have {col} outside [{lo:g}, {hi:g}] deg "
                                  f"(first: row {i + 1}, {df['name'].iloc[i]!r}, {col} = {float(df[col].iloc[i])!r})")
        dup = df["name"].duplicated()
        if dup.any():
            raise ConfigError(f"{path}: duplicate source names, e.g. {df['name'][dup].iloc[0]!r}; "
                              "map catalog.columns.name to a unique column")
        if self.min_probability is not None and "probability" in found:
            prob = pd.to_numeric(raw[found["probability"]], errors="coerce").to_numpy(float)
            df = df.loc[prob >= float(self.min_probability)]  # NaN: no probability, dropped
        if self.mag_limit is not None:
            df = df.loc[df["mag"].to_numpy() <= self.mag_limit]
        if self.max_targets is not None:
            df = df.iloc[: int(self.max_targets)]
        df = df.reset_index(drop=True)
        df["ra_cat"], df["dec_cat"] = df["ra"].to_numpy(), df["dec"].to_numpy()
        if self.obs_epoch is not None:
            df["ra"], df["dec"] = propagate_positions(df["ra_cat"], df["dec_cat"], df["pmra"],
                                                      df["pmdec"], df["epoch"], float(self.obs_epoch))
        return df[STANDARD_COLUMNS + ["ra_cat", "dec_cat"]]

    def _require(self) -> pd.DataFrame:
        if self.data is None:
            self.load()
        return self.data

    def __len__(self) -> int:
        return len(self._require())

    def ra_bins(self) -> list[int]:
        """Sorted integer RA bins (deg) that hold targets."""
        return sorted(int(b) for b in np.unique(ra_bin_of(self._require()["ra"])))

    def targets_in_bin(self, ra_bin: int) -> pd.DataFrame:
        """Targets whose RA falls in integer degree ``ra_bin``."""
        df = self._require()
        return df.loc[ra_bin_of(df["ra"]) == int(ra_bin)].reset_index(drop=True)

    def get_row(self, i: int) -> dict:
        """Row ``i`` as a dict of plain Python values."""
        return row_dict(self._require().iloc[int(i)])


def ra_bin_of(ra) -> np.ndarray:
    """Integer RA bin (deg) of each RA: ``floor(ra) % 360``."""
    return np.floor(np.asarray(ra, float)).astype(int) % 360


def row_dict(row: pd.Series) -> dict:
    """A table row as a dict of plain Python values (JSON-friendly)."""
    return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in row.items()}


def split_by_ra_bin(df: pd.DataFrame) -> dict[int, pd.DataFrame]:
    """Targets grouped by integer RA bin: {ra_bin: DataFrame} (row order kept)."""
    bins = ra_bin_of(df["ra"])
    return {int(b): part.reset_index(drop=True) for b, part in df.groupby(bins, sort=True)}


def write_targets(path: str | os.PathLike, df: pd.DataFrame, attrs: dict | None = None) -> None:
    """Write one RA bin's targets (table ``targets``, file attributes ``attrs``) atomically."""
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            vh5.write_table(f, "targets", df)
            vh5.write_attrs(f, attrs or {})


def read_targets(path: str | os.PathLike) -> tuple[pd.DataFrame, dict]:
    """(targets DataFrame, file attributes) of a file written by :func:`write_targets`."""
    try:
        with h5py.File(path, "r") as f:
            df, _ = vh5.read_table(f["targets"])
            return df, vh5.read_attrs(f)
    except (OSError, KeyError) as exc:
        raise OSError(f"{path}: cannot read targets: {exc}") from exc
