"""Datasets: raw photometry and light curves, with their files and in-file keys.

Both keep a ``filename`` and ``folder`` (the HDF5 file, see :meth:`get_fullname`) and a
``filekey`` (the group inside it), and lazy-load their ``data`` from disk.  Every write
goes through :func:`vo.lightcurves.rawstore.update_hdf5` (lock + copy-on-write), so a
crash never corrupts a file.
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from vo.io import hdf5 as vh5
from vo.lightcurves.keys import key_property, sanitize_key


def _blank(cls):
    """An instance made without ``__init__`` (fast). A class that :mod:`vo.db` has mapped onto
    a table needs its ORM instance state, which the class's manager creates (looked up by
    name: science modules do not import the database)."""
    manager = cls.__dict__.get("_sa_class_manager")
    return manager.new_instance() if manager is not None else cls.__new__(cls)


class _FileDataset:
    """Shared file bookkeeping: ``filename``, ``folder``, ``filekey`` and lazy ``data``.

    :mod:`vo.db` maps these classes onto its tables (a row read from the database *is* a
    dataset), and the ORM makes such rows without ``__init__``: hence the class-level defaults
    and the lazily created ``attrs``.
    """

    _data = None
    _filekey = None
    filename = None
    folder = None

    def __init__(self, data: pd.DataFrame | None = None, attrs: dict | None = None,
                 filename: str | None = None, folder: str | None = None, filekey: str | None = None):
        self._data = data
        self.attrs = dict(attrs or {})
        if filename is not None and folder is None and os.path.dirname(str(filename)):
            folder, filename = os.path.split(str(filename))
        self.filename = None if filename is None else str(filename)
        self.folder = None if folder is None else str(folder)
        self._filekey = filekey

    @property
    def attrs(self) -> dict:
        """Metadata (catalog row, identifiers, statistics); read from the file with the data."""
        a = self.__dict__.get("_attrs")
        if a is None:
            a = self.__dict__["_attrs"] = {}
        return a

    @attrs.setter
    def attrs(self, value: dict) -> None:
        self.__dict__["_attrs"] = value

    def get_fullname(self) -> Path:
        """Full path of the file holding the data."""
        if self.filename is None:
            raise ValueError(f"{self!r} has no filename")
        return Path(self.folder or ".") / self.filename

    def _set_path(self, path: str | os.PathLike | None) -> Path:
        if path is not None:
            self.folder, self.filename = os.path.split(os.path.abspath(path))
        return self.get_fullname()

    @property
    def data(self) -> pd.DataFrame:
        """The table, read from the file on first use."""
        if self._data is None and self.filename is not None:
            self.load()
        return self._data

    @data.setter
    def data(self, value: pd.DataFrame) -> None:
        self._data = value

    def load(self):
        """Read ``data`` and ``attrs`` from group ``filekey`` of the file; returns self.

        Without a key (``RawPhotometry(filename=...)`` of a file someone handed over) the
        file's only dataset is read; a file with several names them in the error.
        """
        path = self.get_fullname()
        try:
            with h5py.File(path, "r") as f:
                key = self._key_in(f, path)
                if key not in f:
                    raise KeyError(f"{path}: no group {key!r}")
                self._data, attrs = vh5.read_table(f[key])
        except OSError as exc:
            raise OSError(f"{path}: cannot read {self._filekey or 'its dataset'!r}: {exc}") from exc
        self.attrs.update(attrs)
        return self

    def _key_in(self, f: h5py.File, path) -> str:
        try:
            return self.filekey
        except ValueError:
            keys = [k for k in f.keys() if k != INDEX_KEY]
            if len(keys) != 1:
                raise ValueError(f"{path}: give filekey, the file holds {len(keys)} datasets "
                                 f"({', '.join(map(repr, keys[:5]))}{' ...' if len(keys) > 5 else ''})") from None
            self._filekey = keys[0]
            return self._filekey

    def __repr__(self) -> str:
        n = "?" if self._data is None else len(self._data)
        return f"{type(self).__name__}({self.filekey!r}, {n} rows)"


class RawPhotometry(_FileDataset):
    """Unprocessed photometry of one source from one observatory (a group of a raw store).

    ``attrs`` hold ``cat_row`` (the source's catalog row), ``obs``, ``download_params``,
    ``download_params_hash``, ``downloaded_at`` and ``altdata``.  ``filekey`` defaults to
    the sanitised source name.
    """

    @key_property
    def filekey(self) -> str:
        if self._filekey:
            return self._filekey
        name = self.attrs.get("cat_row", {}).get("name")
        if name is None:
            raise ValueError("RawPhotometry without filekey needs attrs['cat_row']['name']")
        return sanitize_key(name)

    @classmethod
    def for_source(cls, cfg: dict, obs: str, cat_row: dict, data: pd.DataFrame | None = None,
                   attrs: dict | None = None) -> "RawPhotometry":
        """A dataset placed in the shared raw store of ``obs`` for the source's RA bin."""
        from vo.catalog import ra_bin_of
        from vo.paths import Paths

        path = Paths(cfg).raw_photometry(obs, int(ra_bin_of(cat_row["ra"])))
        attrs = {"cat_row": dict(cat_row), "obs": obs.upper(), **(attrs or {})}
        return cls(data=data, attrs=attrs, filename=path.name, folder=str(path.parent))

    def save(self, path: str | os.PathLike | None = None) -> Path:
        """Write (or replace) this source in its raw store (see :class:`RawStore`)."""
        from vo.lightcurves.rawstore import RawStore

        if self._data is None and self.filename is not None:
            self.load()                          # a row from the database: its data from its file
        if self._data is None:
            raise ValueError(f"{self!r}: nothing to save (data is None)")
        path = self._set_path(path)
        RawStore(path).write_many({self.filekey: (self._data, self.attrs)})
        return path

    def delete_data_from_disk(self) -> None:
        """Remove this source from its raw store (copy-on-write; the other sources stay)."""
        from vo.lightcurves.rawstore import RawStore

        path = self.get_fullname()
        if path.exists():
            RawStore(path).delete([self.filekey])

    def plot(self, ax=None):
        """Magnitude (mag) against MJD (days), one colour per filter; returns the axes.

        Takes the survey's own column names: ``filter`` or IRSA's ``filtercode`` (ZTF).
        """
        import matplotlib.pyplot as plt

        ax = ax if ax is not None else plt.figure().add_subplot()
        df = self.data
        band = next((c for c in ("filter", "filtercode", "band", "passband") if c in df), None)
        if band is None or "mjd" not in df or "mag" not in df:
            raise KeyError(f"{self!r}: plot needs mjd, mag and a filter column (filter or filtercode); "
                           f"the data have {list(df.columns)[:12]}")
        for filt, part in df.groupby(band, sort=True):
            ax.errorbar(part["mjd"], part["mag"], part.get("magerr"), fmt=".", label=str(filt))
        ax.invert_yaxis()
        ax.set_xlabel("MJD (days)")
        ax.set_ylabel("magnitude")
        ax.set_title(self.filekey)
        ax.legend()
        return ax


class Lightcurve(_FileDataset):
    """Reduced photometry of one source, one filter, one season.

    ``data`` columns: mjd (days), mag, magerr (mag), flux, fluxerr (uJy), snr, dsnr,
    filter, flag, ra, dec (deg), exptime (s), oid.  ``attrs`` hold source_name, obs,
    filter, season, reduction_number, reduction_total, cat_ra, cat_dec, cat_mag,
    flux_mean, flux_rms (uJy), err_scale, mag_mean, n_epochs, mjd_start, mjd_end.
    In a file, the compound dataset ``filekey`` holds ``data`` and its ``meta`` attribute ``attrs``.

    Instead of a DataFrame, the data may be given as numpy ``columns`` ({name: 1-d array}),
    optionally with ``span=(start, stop)``: the rows ``start:stop`` of those arrays, so that
    the light curves of a reduction share one set of concatenated arrays (a *block*).
    Building a DataFrame costs far more than reducing a light curve, and the analysis
    needs only the arrays (:meth:`column_arrays`, :meth:`block`), so ``data`` builds it
    on first access; from then on the DataFrame is the only copy (changes made to it are
    never missed) and the light curve no longer belongs to a block.
    """

    _columns = None
    _span = None

    def __init__(self, data: pd.DataFrame | None = None, attrs: dict | None = None,
                 filename: str | None = None, folder: str | None = None, filekey: str | None = None,
                 columns: dict | None = None, span: tuple[int, int] | None = None):
        super().__init__(data=data, attrs=attrs, filename=filename, folder=folder, filekey=filekey)
        if columns is not None and data is not None:
            raise ValueError("Lightcurve: give data or columns, not both")
        self._columns = columns
        self._span = span

    @classmethod
    def in_block(cls, attrs: dict, columns: dict, span: tuple[int, int]) -> "Lightcurve":
        """``Lightcurve(attrs=attrs, columns=columns, span=span)`` without a file, made
        faster (a reduction makes thousands); ``attrs`` is kept, not copied."""
        lc = _blank(cls)
        lc.attrs, lc._columns, lc._span = attrs, columns, span
        return lc

    @key_property
    def filekey(self) -> str:
        if self._filekey:
            return self._filekey
        a = self.attrs
        return (f"{sanitize_key(a['source_name'])}_reduction_"
                f"{int(a['reduction_number']):02d}_of_{int(a['reduction_total']):02d}")

    @property
    def data(self) -> pd.DataFrame:
        """The table: built from the numpy columns, or read from the file, on first use."""
        if self._data is None and self._columns is not None:
            cols = self._own_columns()
            self._data = pd.DataFrame(cols, columns=list(cols))
            self._columns = self._span = None
        return _FileDataset.data.fget(self)

    @data.setter
    def data(self, value: pd.DataFrame) -> None:
        self._data, self._columns, self._span = value, None, None

    def load(self):
        """Read ``data`` and ``attrs`` from group ``filekey`` of the file; returns self."""
        super().load()
        self._columns = self._span = None
        return self

    def _own_columns(self) -> dict:
        if self._span is None:
            return self._columns
        a, b = self._span
        return {c: v[a:b] for c, v in self._columns.items()}

    def block(self) -> tuple[dict, int, int] | None:
        """``(columns, start, stop)`` when the data are rows of shared arrays, else None."""
        if self._columns is None or self._span is None:
            return None
        return self._columns, self._span[0], self._span[1]

    def column_arrays(self, names) -> dict[str, np.ndarray]:
        """The data columns ``names`` as numpy arrays, without building a DataFrame when
        there is none yet.  Raises KeyError naming the light curve and the missing columns,
        ValueError when there are no data."""
        if self._columns is not None:
            have = self._columns
        elif self.data is not None:
            have = self._data
        else:
            raise ValueError(f"light curve {self.filekey} has no data loaded")
        missing = [c for c in names if c not in have]
        if missing:
            raise KeyError(f"light curve {self.filekey} lacks data columns {missing}")
        if self._columns is None:
            return {c: have[c].to_numpy() for c in names}
        if self._span is None:
            return {c: have[c] for c in names}
        a, b = self._span
        return {c: have[c][a:b] for c in names}

    def __len__(self) -> int:
        if self._columns is not None:
            if self._span is not None:
                return self._span[1] - self._span[0]
            return len(next(iter(self._columns.values()), ()))
        return 0 if self._data is None else len(self._data)

    def __repr__(self) -> str:
        return f"Lightcurve({self.filekey!r}, {len(self)} epochs)"

    def _table(self):
        """What to write: the numpy columns (no DataFrame built) or the DataFrame."""
        return self._own_columns() if self._columns is not None else self._data

    def save(self, path: str | os.PathLike | None = None) -> Path:
        """Write (or replace) this light curve in its file (lock + copy-on-write); the file's
        index (:data:`INDEX_KEY`) is rewritten, so readers of the index see it."""
        from vo.lightcurves.rawstore import update_hdf5

        if self._table() is None and self.filename is not None and path is None:
            self.load()                          # a row from the database: its data from its file
        table = self._table()
        if table is None:
            raise ValueError(f"{self!r}: nothing to save (data is None)")
        if path is None and self.filename is None:
            raise ValueError(f"{self!r} has no file yet: give save() a path (light curves reduced by a "
                             "project's observatory know their file)")
        path = self._set_path(path)
        with update_hdf5(path, replace=[self.filekey, INDEX_KEY]) as f:
            vh5.write_tables(f, {self.filekey: (table, self.attrs)}, layout="records", index_attrs=INDEX_ATTRS)
            _rewrite_index(f)
        return path

    def delete_data_from_disk(self) -> None:
        """Remove this light curve from its file (copy-on-write; the index is rewritten)."""
        from vo.lightcurves.rawstore import update_hdf5

        path = self.get_fullname()
        if path.exists():
            with update_hdf5(path, replace=[self.filekey, INDEX_KEY]) as f:
                _rewrite_index(f)

    def plot(self, ax=None):
        """Flux (uJy) with errors against MJD (days); returns the axes."""
        import matplotlib.pyplot as plt

        ax = ax if ax is not None else plt.figure().add_subplot()
        df = self.data
        ax.errorbar(df["mjd"], df["flux"], df["fluxerr"], fmt=".", label=str(self.attrs.get("filter", "")))
        mean = self.attrs.get("flux_mean")
        if mean is not None and np.isfinite(mean):
            ax.axhline(mean, color="grey", lw=1, ls="--")
        ax.set_xlabel("MJD (days)")
        ax.set_ylabel("flux (uJy)")
        ax.set_title(self.filekey)
        return ax


#: Light-curve attributes also stored as plain HDF5 attributes (all are in ``meta``).
INDEX_ATTRS = ("source_name", "filter", "reduction_number")
#: Name of a reduced file's index: one row per light curve (its key, identifiers and
#: statistics), so that a reader of those (database ingest) reads one table, not an attribute
#: per light curve.  ``#`` is never in a light curve's key (:func:`vo.lightcurves.keys.sanitize_key`).
INDEX_KEY = "#index"
#: Columns of the index: strings; integers (-1: missing); floats (NaN: missing).
INDEX_STR = ("filekey", "source_name", "obs", "filter")
INDEX_INT = ("season", "reduction_number", "reduction_total", "n_epochs")
INDEX_FLOAT = ("flux_mean", "flux_rms", "mag_mean", "mjd_start", "mjd_end", "cat_ra", "cat_dec", "cat_mag")


def _rewrite_index(f: h5py.File) -> None:
    """The index table and ``n_lightcurves`` of an open reduced file, from its light curves."""
    keys = [k for k in f.keys() if k != INDEX_KEY]
    lcs = [Lightcurve(attrs=attrs, filekey=key) for key, attrs in vh5.read_metas(f, keys).items()]
    vh5.write_table(f, INDEX_KEY, lightcurve_index(lcs), layout="records")
    vh5.write_attrs(f, {"n_lightcurves": len(keys)})


def _int_or_missing(value) -> int:
    return -1 if value is None else int(value)


def _float_or_nan(value) -> float:
    return np.nan if value is None else float(value)


def lightcurve_index(lcs: list[Lightcurve]) -> dict[str, np.ndarray]:
    """The index table of ``lcs`` (see :data:`INDEX_KEY`): ``{column: array}``; a missing
    attribute is ``""``, -1 or NaN.  ValueError names a light curve with a value of the
    wrong kind."""
    attrs = [lc.attrs for lc in lcs]
    out = {"filekey": np.array([lc.filekey for lc in lcs], dtype=object)}
    out.update({k: np.array([str(a.get(k, "")) for a in attrs], dtype=object) for k in INDEX_STR[1:]})
    for kind, convert, dtype in ((INDEX_INT, _int_or_missing, np.int64), (INDEX_FLOAT, _float_or_nan, float)):
        for k in kind:
            try:
                out[k] = np.array([convert(a.get(k)) for a in attrs], dtype=dtype)
            except (TypeError, ValueError):
                bad = next(i for i, a in enumerate(attrs) if not _converts(convert, a.get(k)))
                raise ValueError(f"light curve {lcs[bad].filekey!r}: {k} = {attrs[bad].get(k)!r} is not "
                                 f"{'an integer' if dtype is np.int64 else 'a number'}") from None
    return out


def _converts(convert, value) -> bool:
    try:
        convert(value)
        return True
    except (TypeError, ValueError):
        return False


def read_lightcurve_index(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The index of a reduced file (:data:`INDEX_KEY`), read in one pass; files written
    without one get it built from every light curve's attributes (slower)."""
    try:
        with h5py.File(path, "r") as f:
            if INDEX_KEY in f:
                return vh5.read_columns(f[INDEX_KEY], with_attrs=False)[0]
    except (OSError, ValueError, KeyError) as exc:
        raise OSError(f"{path}: cannot read the light-curve index: {exc}") from exc
    return lightcurve_index(read_lightcurves(path, load_data=False))


def write_lightcurves(path: str | os.PathLike, lcs: list[Lightcurve], attrs: dict | None = None) -> None:
    """Write all light curves of one RA bin to ``path`` in one atomic write (the file is replaced).

    Each light curve is one compound dataset named by :attr:`Lightcurve.filekey` (the
    records layout of :mod:`vo.io.hdf5`: ``f[key]["flux"]`` reads its flux); its ``attrs``
    are the JSON attribute ``meta``, and :data:`INDEX_ATTRS` are plain attributes too.
    The table :data:`INDEX_KEY` indexes them (:func:`lightcurve_index`).
    ``attrs`` (step, provenance hash, parameters, ...) become the file's root attributes,
    plus ``n_lightcurves``.  Each light curve's ``filename``/``folder`` is set to ``path``.
    """
    from vo.lightcurves.rawstore import update_hdf5

    keys = [lc.filekey for lc in lcs]
    if len(set(keys)) < len(keys):
        dup = next(k for i, k in enumerate(keys) if k in keys[:i])
        raise ValueError(f"{path}: two light curves with key {dup!r}")
    block = _shared_block(keys, lcs)
    index = lightcurve_index(lcs)
    with update_hdf5(path, fresh=True) as f:
        if block is not None:
            vh5.write_block(f, block, index_attrs=INDEX_ATTRS)
        else:
            items = {k: (lc._table() if lc._columns is not None else lc.data, lc.attrs) for k, lc in zip(keys, lcs)}
            vh5.write_tables(f, items, layout="records", index_attrs=INDEX_ATTRS)
        vh5.write_table(f, INDEX_KEY, index, layout="records")
        vh5.write_attrs(f, {**(attrs or {}), "n_lightcurves": len(keys)})
    folder, filename = os.path.split(os.path.abspath(path))
    for lc in lcs:
        lc.folder, lc.filename = folder, filename


def _shared_block(keys: list[str], lcs: list[Lightcurve]) -> vh5.TableBlock | None:
    """The light curves as one :class:`~vo.io.hdf5.TableBlock` when they are rows of one
    shared set of arrays (as a reduction makes them), else None."""
    blocks = [lc.block() for lc in lcs]
    if not blocks or blocks[0] is None or any(b is None or b[0] is not blocks[0][0] for b in blocks):
        return None
    bounds = np.array([b[1:] for b in blocks], dtype=np.int64)
    first, stop = int(bounds[:, 0].min()), int(bounds[:, 1].max())
    columns = {c: v[first:stop] for c, v in blocks[0][0].items()}
    return vh5.TableBlock(keys, columns, bounds - first, [lc.attrs for lc in lcs])


def read_lightcurves(path: str | os.PathLike, load_data: bool = True) -> list[Lightcurve]:
    """Every light curve in ``path``, in the file's key order, read in one pass.

    With ``load_data`` the light curves share one set of concatenated column arrays (a
    block, as a reduction makes them); without, only their attributes are read and
    ``data`` is read from the file on first use.  Files of the older layout (a group per
    light curve, a dataset per column) are read too.
    """
    folder, filename = os.path.split(os.path.abspath(path))
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise OSError(f"{path}: cannot read light curves: {exc}") from exc
    with f:
        try:
            keys = [k for k in f.keys() if k != INDEX_KEY]
            if not load_data:
                return [Lightcurve(attrs=attrs, filename=filename, folder=folder, filekey=key)
                        for key, attrs in vh5.read_metas(f, keys).items()]
            block = vh5.read_block(f, keys)
            if block is None:  # light curves with different columns
                return [Lightcurve(columns=cols, attrs=attrs, filename=filename, folder=folder, filekey=key)
                        for key, (cols, attrs) in vh5.read_tables(f, keys).items()]
        except (ValueError, KeyError, OSError) as exc:  # any corruption: name the file and key
            raise OSError(f"{path}: cannot read light curves: {exc}") from exc
    out = []
    for key, (a, b), attrs in zip(block.keys, block.bounds.tolist(), block.attrs):
        lc = Lightcurve.in_block(attrs, block.columns, (a, b))
        lc.filename, lc.folder, lc._filekey = filename, folder, key
        out.append(lc)
    return out
