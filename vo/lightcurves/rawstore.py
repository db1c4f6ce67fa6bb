"""The shared raw-photometry store: one HDF5 file per observatory and integer RA degree.

``{data_root}/{OBS}/{OBS}_photometry_RA{ra:03d}.h5`` (see :meth:`vo.paths.Paths.raw_photometry`)
holds one group per source (key = :func:`vo.lightcurves.keys.sanitize_key` of its
name): the raw table (:func:`vo.io.hdf5.write_table`, columns layout: a dataset per
column, so ``f["{key}/mag"]`` reads the magnitudes) with the group attributes
``cat_row``, ``download_params``, ``download_params_hash``, ``obs``, ``downloaded_at`` and
``altdata``.

Several projects (processes) add sources to the same store.  Every change goes through
:func:`update_hdf5`: an exclusive lock, a new file made from the old one plus the changes,
fsync, and an atomic rename over the original (copy-on-write).  A crash or kill at any
moment therefore leaves the previous complete file, and concurrent writers lose nothing.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import shutil
from pathlib import Path
from typing import Iterator

import h5py
import pandas as pd
from filelock import FileLock

from vo.io import hdf5 as vh5
from vo.io.atomic import atomic_path
from vo.provenance import short_hash

#: Seconds a writer waits for the lock of a store before giving up.
LOCK_TIMEOUT = 600.0


class StoreError(OSError):
    """A store file or group that cannot be read; the message names the file and the key."""


def lock_for(path: str | os.PathLike, timeout: float = LOCK_TIMEOUT) -> FileLock:
    """The exclusive lock of an HDF5 file (``path + ".lock"``), released if the holder dies."""
    return FileLock(str(path) + ".lock", timeout=timeout)


def _remove_orphans(path: Path) -> None:
    """Delete temporary files of ``path`` left by killed writers (call with the lock held)."""
    for tmp in path.parent.glob(f".{path.stem}.*.tmp{path.suffix}"):
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def update_hdf5(path: str | os.PathLike, replace: tuple[str, ...] | list[str] = (),
                fresh: bool = False) -> Iterator[h5py.File]:
    """Open a copy-on-write version of the HDF5 file ``path`` for changes.

    Under the file's exclusive lock, yields a new file in the same folder that holds every
    group and root attribute of the current file except the groups in ``replace`` (or
    nothing, with ``fresh=True``).  When the block ends without error the new file is
    flushed, fsync'ed and renamed over ``path``; on error (or a kill) ``path`` is untouched.

    Adding groups copies the file's bytes (fast); replacing groups rebuilds the file group
    by group (H5Ocopy) instead, because HDF5 never reclaims the space of deleted groups.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    replace = set(replace)
    with lock_for(path):
        _remove_orphans(path)
        with atomic_path(path) as tmp:
            with _start_copy(path, tmp, replace, fresh) as new:
                yield new
                new.flush()


def _start_copy(path: Path, tmp: Path, replace: set, fresh: bool) -> h5py.File:
    """``tmp`` opened for writing, holding ``path`` less the groups in ``replace``."""
    if fresh or not path.exists():
        return h5py.File(tmp, "w")
    try:
        old = h5py.File(path, "r")
    except OSError as exc:
        raise StoreError(f"{path}: cannot read the existing file to update it: {exc}") from exc
    with old:
        if replace & set(old):
            new = h5py.File(tmp, "w")
            try:
                for key in old:
                    if key not in replace:
                        old.copy(old[key], new, name=key)
                for key, value in old.attrs.items():
                    new.attrs[key] = value
            except BaseException:
                new.close()
                raise
            return new
    shutil.copyfile(path, tmp)
    return h5py.File(tmp, "a")


def read_file_attrs(path: str | os.PathLike) -> dict:
    """Root attributes of an HDF5 file."""
    try:
        with h5py.File(path, "r") as f:
            return vh5.read_attrs(f)
    except OSError as exc:
        raise StoreError(f"{path}: cannot read file attributes: {exc}") from exc


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


class RawStore:
    """The raw photometry of one observatory and RA bin, one group per source.

    Parameters
    ----------
    path : the store's HDF5 file (from :meth:`vo.paths.Paths.raw_photometry`).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RawStore({str(self.path)!r})"

    @contextlib.contextmanager
    def _open(self) -> Iterator[h5py.File | None]:
        """The file opened for reading (None if there is no file yet)."""
        if not self.path.exists():
            yield None
            return
        try:
            f = h5py.File(self.path, "r")
        except OSError as exc:
            raise StoreError(f"{self.path}: cannot open raw store: {exc}") from exc
        with f:
            yield f

    def keys(self) -> list[str]:
        """Source keys in the store."""
        with self._open() as f:
            return [] if f is None else list(f.keys())

    def __contains__(self, key: str) -> bool:
        return self.has(key)

    def __len__(self) -> int:
        return len(self.keys())

    def _read_group(self, f: h5py.File, key: str) -> tuple[pd.DataFrame, dict]:
        if key not in f:
            raise KeyError(f"{self.path}: no source {key!r} in the raw store")
        try:
            return vh5.read_table(f[key])
        except Exception as exc:  # any corruption: name the file and the key
            raise StoreError(f"{self.path}: cannot read source {key!r}: {exc}") from exc

    def read(self, key: str) -> tuple[pd.DataFrame, dict]:
        """(raw table, attributes) of source ``key``."""
        with self._open() as f:
            if f is None:
                raise KeyError(f"{self.path}: raw store does not exist (looking for {key!r})")
            return self._read_group(f, key)

    def read_many(self, keys) -> Iterator[tuple[str, pd.DataFrame | None, dict | None]]:
        """Yield ``(key, table, attrs)`` for each key, opening the file once; missing keys
        give ``(key, None, None)``."""
        with self._open() as f:
            for key in keys:
                if f is None or key not in f:
                    yield key, None, None
                else:
                    yield (key, *self._read_group(f, key))

    def index(self) -> dict[str, dict]:
        """``{key: {"params_hash", "n_rows"}}`` for every source, from the attributes only."""
        out = {}
        with self._open() as f:
            if f is None:
                return out
            for key, grp in f.items():
                h = grp.attrs.get("download_params_hash")
                out[key] = {"params_hash": h.decode() if isinstance(h, bytes) else h,
                            "n_rows": int(grp.attrs.get("nrows", 0))}
        return out

    def attrs(self, key: str) -> dict:
        """Attributes of source ``key`` without reading its table."""
        with self._open() as f:
            if f is None or key not in f:
                raise KeyError(f"{self.path}: no source {key!r} in the raw store")
            attrs = vh5.read_attrs(f[key])
        attrs.pop("columns", None)
        return attrs

    def has(self, key: str, params_hash: str | None = None) -> bool:
        """Whether source ``key`` is stored (with download parameters hashing to ``params_hash``)."""
        entry = self.index().get(key)
        return entry is not None and (params_hash is None or entry["params_hash"] == params_hash)

    def write_many(self, items: dict[str, tuple[pd.DataFrame, dict]]) -> None:
        """Add or replace sources: ``{key: (table, attrs)}`` in one copy-on-write update.

        ``attrs`` should hold cat_row, download_params, obs and altdata;
        ``download_params_hash`` and ``downloaded_at`` are filled in when absent.
        """
        prepared = {}
        for key, (df, attrs) in items.items():
            attrs = dict(attrs or {})
            attrs.setdefault("download_params", {})
            attrs.setdefault("download_params_hash", short_hash(attrs["download_params"]))
            attrs.setdefault("downloaded_at", utc_now())
            for name in ("cat_row", "altdata"):
                attrs.setdefault(name, {})
            attrs.setdefault("obs", "")
            prepared[key] = (df, attrs)
        if prepared:
            write_groups(self.path, prepared)

    def delete(self, keys) -> None:
        """Remove sources (copy-on-write like :meth:`write_many`)."""
        with update_hdf5(self.path, replace=list(keys)):
            pass


def write_groups(path: str | os.PathLike, items: dict[str, tuple[pd.DataFrame, dict]],
                 file_attrs: dict | None = None, fresh: bool = False, layout: str = "columns",
                 index_attrs: tuple[str, ...] = ()) -> None:
    """Write tables (keys of ``path``) through :func:`update_hdf5` (one atomic update).

    ``fresh=True`` replaces the whole file; otherwise keys not in ``items`` are kept.
    ``layout`` and ``index_attrs``: see :func:`vo.io.hdf5.write_tables` (the raw store
    keeps the columns layout: a group per source, a dataset per column).
    """
    with update_hdf5(path, replace=list(items), fresh=fresh) as f:
        vh5.write_tables(f, items, layout=layout, index_attrs=index_attrs)
        if file_attrs:
            vh5.write_attrs(f, file_attrs)
