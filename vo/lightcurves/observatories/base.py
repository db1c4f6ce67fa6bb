"""Base class of the observatories: the survey-independent download and reduce logic."""

from __future__ import annotations

import logging
import warnings
from collections import deque
from collections.abc import Mapping, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from vo import config as vconfig
from vo.io import hdf5 as vh5
from vo.lightcurves import reduce as vreduce
from vo.lightcurves.datasets import RawPhotometry
from vo.lightcurves.keys import sanitize_key, unsanitize_key
from vo.lightcurves.rawstore import RawStore, StoreError, utc_now
from vo.lightcurves.sources import Source
from vo.provenance import short_hash

log = logging.getLogger("vo.observatories")


class DownloadError(RuntimeError):
    """Some sources failed to download; ``manifest`` holds what happened to each source."""

    def __init__(self, message: str, manifest: dict):
        super().__init__(message)
        self.manifest = manifest


class ParamsMismatchError(StoreError):
    """A raw-store entry was downloaded with other download parameters than the run's."""


#: Sources and datasets an observatory keeps after a catalog download (the latest).
KEEP_LATEST = 100


class Pars(MutableMapping):
    """An observatory's config section with attribute access, as virtualobserver's ``pars``.

    ``obs.pars.reducer = {"gap": 60}`` updates the reducer section (keys not given keep their
    values); ``obs.pars.num_threads_download`` reads and writes the download section's key;
    indexing gives the plain values. The section stays the config's own dict, so a change
    reaches the provenance hashes of the run.
    """

    def __init__(self, data: dict):
        object.__setattr__(self, "_d", data)

    def __getitem__(self, key):
        return self._d[key]

    def __setitem__(self, key, value):
        self._d[key] = value

    def __delitem__(self, key):
        del self._d[key]

    def __iter__(self):
        return iter(self._d)

    def __len__(self) -> int:
        return len(self._d)

    def __getattr__(self, name):
        d = self._d
        if name in d:
            return Pars(d[name]) if isinstance(d[name], dict) else d[name]
        if isinstance(d.get("download"), dict) and name in d["download"]:
            return d["download"][name]
        raise AttributeError(f"observatory parameters have no {name!r} (keys: {', '.join(d)})")

    def __setattr__(self, name, value):
        d = self._d
        if isinstance(d.get(name), dict) and isinstance(value, Mapping):
            d[name].update(value)
        elif name not in d and isinstance(d.get("download"), dict) and name in d["download"]:
            d["download"][name] = value
        else:
            d[name] = value

    def __repr__(self) -> str:
        return f"Pars({self._d!r})"


class VirtualObservatory:
    """A survey: fetch raw photometry per target, store it, reduce it to light curves.

    Subclasses implement :meth:`fetch_data_from_observatory` and :meth:`to_standard`.

    Parameters
    ----------
    pars : the observatory's config section (``cfg[name]``) with ``reducer`` and
        ``download`` sub-sections; None: the defaults updated by ``kwargs``.
    data_root : root of the data folder (raw stores live in ``{data_root}/{name}/``).
    **kwargs : virtualobserver's constructor: parameters of the section, e.g.
        ``VirtualZTF(name="ZTF", credentials={...}, reducer={"gap": 60})`` (validated).
    """

    name = "BASE"

    def __init__(self, pars: dict | None = None, data_root=None, **kwargs):
        given = kwargs.pop("name", self.name)
        if str(given).upper() != self.name:
            raise ValueError(f"{type(self).__name__}: name {given!r} is not {self.name!r}")
        self.cfg = None
        if pars is None:
            self.cfg = vconfig.load_config(overrides={self.name: kwargs} if kwargs else None)
            pars = self.cfg[self.name]
            data_root = data_root if data_root is not None else vconfig.data_root(self.cfg)
        elif kwargs:
            raise TypeError(f"{type(self).__name__}: give pars or keyword parameters, not both")
        self.pars = pars if isinstance(pars, Pars) else Pars(pars)
        self.data_root = data_root
        #: The latest :data:`KEEP_LATEST` sources and raw datasets of a catalog download
        #: (``download_all_sources(start, end)``), as virtualobserver kept them.
        self.sources: deque = deque(maxlen=KEEP_LATEST)
        self.datasets: deque = deque(maxlen=KEEP_LATEST)

    @classmethod
    def from_config(cls, cfg: dict):
        obs = cls(cfg[cls.name], vconfig.data_root(cfg))
        obs.cfg = cfg
        return obs

    # -- download --------------------------------------------------------------------
    def download_params(self) -> dict:
        """Parameters that determine the raw data of a source (a change triggers a re-download).

        The observatory section's critical parameters (as the schema declares them) outside
        ``reducer`` and ``download``; an observatory unknown to the schema uses all of them.
        """
        try:
            critical = {p.key.split(".", 1)[1] for p in vconfig.section_parameters(self.name) if p.critical}
        except vconfig.ConfigError:
            critical = None
        return {k: v for k, v in self.pars.items()
                if k not in ("reducer", "download") and (critical is None or k in critical)}

    def download_params_hash(self) -> str:
        return short_hash(self.download_params())

    def fetch_data_from_observatory(self, cat_row: dict) -> tuple[pd.DataFrame, dict]:
        """Raw photometry table and metadata (``altdata``) of one target."""
        raise NotImplementedError

    def prefetch(self, cat_rows: list[dict]) -> None:
        """Called with each batch of targets before their :meth:`fetch_data_from_observatory`
        calls: an observatory that reads many targets at once more cheaply (a HATS catalog)
        reads them here and serves the calls from memory. Default: nothing."""

    def _download_pars(self) -> dict:
        return {"batch_size": 100, "num_threads_download": 0, "redownload": False,
                "on_params_change": "redownload", **self.pars.get("download", {})}

    def _fetch(self, cat_row: dict):
        """(raw, altdata, None) or (None, None, error text) for one target."""
        try:
            raw, altdata = self.fetch_data_from_observatory(cat_row)
            return raw, altdata, None
        except Exception as exc:  # one failing source must not stop the others
            log.warning("%s: fetching %s failed: %s", self.name, cat_row.get("name"), exc)
            return None, None, f"{type(exc).__name__}: {exc}"

    def download_all_sources(self, targets=0, store_path=None, redownload: bool = False, save: bool = True):
        """Fetch every target's raw photometry into the raw store at ``store_path``.

        virtualobserver's form ``download_all_sources(start, end, save=True)`` (integers) takes
        the rows ``start:end`` of the project's catalog, stores each RA bin's sources in the
        bin's shared raw store (``save=False``: fetches without storing, for debugging) and
        returns the list of the bins' manifests; :attr:`sources` and :attr:`datasets` then hold
        the latest sources and their raw photometry.

        Targets already stored with the same download parameters are skipped (unless
        ``redownload`` or ``download.redownload``).  Fetched sources are written every
        ``download.batch_size`` sources (copy-on-write), so a kill loses at most one batch.
        A failing source is recorded and the others continue; after the last write a
        :class:`DownloadError` (a RuntimeError) lists the failed sources.

        Returns
        -------
        manifest : dict with obs, store, download_params, download_params_hash and
            sources (a list of {name, key, n_rows, status, error}, status being
            downloaded, skipped or failed).
        """
        if targets is None or isinstance(targets, (int, np.integer)):
            return self._download_catalog_rows(int(targets or 0), store_path, redownload, save)
        dpars = self._download_pars()
        redownload = redownload or bool(dpars["redownload"])
        params = self.download_params()
        phash = short_hash(params)
        store = RawStore(store_path)
        stored = {} if redownload else store.index()
        entries, todo, changed = [], [], []
        for cat_row in targets.to_dict("records"):  # one row per source: a download each
            key = sanitize_key(cat_row["name"])
            entry = {"name": str(cat_row["name"]), "key": key, "n_rows": 0, "status": "", "error": None}
            entries.append(entry)
            have = stored.get(key)
            if have is not None and have["params_hash"] == phash:
                entry.update(status="skipped", n_rows=have["n_rows"])
            else:
                if have is not None:
                    changed.append(entry)
                todo.append((entry, cat_row))
        if changed and dpars["on_params_change"] == "fail":
            raise ParamsMismatchError(self._mismatch_message(store, changed[0]["key"], len(changed), params,
                                                             "set download.on_params_change: redownload to "
                                                             "replace them"))
        batch_size = max(1, int(dpars["batch_size"]))
        threads = int(dpars["num_threads_download"])
        pool = ThreadPoolExecutor(threads) if threads > 1 else None
        try:
            for start in range(0, len(todo), batch_size):
                batch = todo[start:start + batch_size]
                rows = [cat_row for _, cat_row in batch]
                self.prefetch(rows)
                results = list(pool.map(self._fetch, rows)) if pool else [self._fetch(r) for r in rows]
                items = {}
                for (entry, cat_row), (raw, altdata, error) in zip(batch, results):
                    if error is not None:
                        entry.update(status="failed", error=error)
                        continue
                    items[entry["key"]] = (raw, {"cat_row": cat_row, "download_params": params,
                                                 "download_params_hash": phash, "obs": self.name,
                                                 "downloaded_at": utc_now(), "altdata": altdata or {}})
                    entry.update(status="downloaded", n_rows=int(len(raw)))
                store.write_many(items)
        finally:
            if pool is not None:
                pool.shutdown()
        manifest = {"obs": self.name, "store": str(Path(store_path)), "download_params": params,
                    "download_params_hash": phash, "sources": entries}
        failed = [e for e in entries if e["status"] == "failed"]
        if failed:
            lines = "; ".join(f"{e['name']} ({e['error']})" for e in failed[:20])
            more = f" and {len(failed) - 20} more" if len(failed) > 20 else ""
            raise DownloadError(f"{self.name}: {len(failed)} of {len(entries)} sources failed to "
                                f"download into {store_path}: {lines}{more}", manifest)
        return manifest

    def _download_catalog_rows(self, start: int, end: int | None, redownload: bool, save: bool) -> list[dict]:
        """``download_all_sources(start, end, save)``: catalog rows ``start:end``, bin by bin."""
        from vo.catalog import Catalog, ra_bin_of, row_dict
        from vo.paths import Paths

        if self.cfg is None:
            raise ValueError(f"{self.name}: download_all_sources(start, end) needs the project's catalog: use an "
                             "observatory of a Project (proj.observatories) or made with keyword parameters")
        rows = Catalog.from_config(self.cfg).load().data.iloc[start:end]
        project = self.cfg["project"]["name"].upper()
        manifests = []
        for ra_bin, part in rows.groupby(ra_bin_of(rows["ra"]), sort=True):
            part = part.reset_index(drop=True)
            store = Paths(self.cfg).raw_photometry(self.name, int(ra_bin))
            if save:
                manifests.append(self.download_all_sources(part, store, redownload))
            for cat_row in (row_dict(r) for _, r in part.iterrows()):
                self.sources.append(Source.from_cat_row(cat_row, project))
                if save:
                    data = RawPhotometry(filename=store.name, folder=str(store.parent),
                                         filekey=sanitize_key(cat_row["name"]))
                else:
                    raw, altdata, error = self._fetch(cat_row)
                    data = RawPhotometry(data=raw, attrs={"cat_row": cat_row, "obs": self.name, "altdata": altdata,
                                                          "error": error})
                self.datasets.append(data)
        return manifests

    def _mismatch_message(self, store: RawStore, key: str, n: int, params: dict, advice: str) -> str:
        stored = store.attrs(key).get("download_params")
        return (f"{self.name}: {n} source(s) in the raw store {store.path} were downloaded with other "
                f"download parameters, e.g. {unsanitize_key(key)!r}: stored with {stored}, this run uses "
                f"{params}; {advice}")

    def populate_sources(self, store_path) -> list[RawPhotometry]:
        """A lazy :class:`RawPhotometry` (attributes read, data not) for every source in a store."""
        store = RawStore(store_path)
        path = Path(store_path)
        return [RawPhotometry(attrs=store.attrs(key), filename=path.name, folder=str(path.parent), filekey=key)
                for key in store.keys()]

    # -- reduce ----------------------------------------------------------------------
    def to_standard(self, raw: pd.DataFrame) -> pd.DataFrame:
        """Map the survey's raw table to :data:`vo.lightcurves.reduce.STANDARD_COLUMNS`.

        Must map rows one to one, in order (each output row from its own input row):
        :meth:`reduce_store` applies it once to the concatenated tables of many sources.
        """
        raise NotImplementedError

    def reduce_source(self, raw: pd.DataFrame, cat_row: dict) -> list:
        """Light curves (one per season and filter) of one target's raw photometry."""
        return vreduce.make_lightcurves(self.to_standard(raw), cat_row, self.pars["reducer"], self.name)

    def reduce(self, raw, to: str = "lcs", cat_row: dict | None = None) -> list:
        """Reduce a :class:`RawPhotometry` (its ``cat_row`` attribute is used unless given)
        or a raw DataFrame to light curves (``to="lcs"``).

        Without a catalog row (a DataFrame, or raw data read from a file) the target is the
        survey object with the most epochs, at its median position and without a catalog
        magnitude (:meth:`row_from_data`): its neighbours in the cone are left out.  An
        observatory of a project places the light curves in the project's reduced file of the
        target's RA bin (under the reduce step's provenance hash), so ``lc.save()`` needs no path.
        """
        if to != "lcs":
            raise ValueError(f"reduce: unknown product {to!r}; only 'lcs' (light curves) exists")
        source_id = None
        if isinstance(raw, RawPhotometry):
            data = raw.data                      # a row from the database reads its file here
            cat_row = cat_row if cat_row is not None else raw.attrs.get("cat_row")
            source_id = getattr(raw, "source_id", None)
            raw = data
        if cat_row is None:
            cat_row = self.row_from_data(raw)
        lcs = self.reduce_source(raw, cat_row)
        if self.cfg is not None:                 # a project's light curves: lc.save() needs no path
            from vo.catalog import ra_bin_of
            from vo.paths import Paths

            path = Paths(self.cfg).product("reduce", self.name, int(ra_bin_of(cat_row["ra"])))
            for lc in lcs:
                lc.folder, lc.filename = str(path.parent), path.name
        if source_id is not None:                # light curves of a database source belong to it
            for lc in lcs:
                lc.source_id = source_id
        return lcs

    def row_from_data(self, raw: pd.DataFrame, name: str | None = None) -> dict:
        """A catalog row for raw data that came without one: the survey object (``oid``) with
        the most good epochs, its median ra/dec (deg), no magnitude; ``name`` defaults to
        ``{obs}_{oid}``."""
        std = self.to_standard(raw)
        ok = np.isfinite(std["mag"].to_numpy(float)) & np.isfinite(std["ra"].to_numpy(float))
        if not ok.any():
            raise ValueError(f"reduce: the {self.name} raw data have no epoch with a magnitude and a position "
                             "to place the target (give cat_row)")
        oids, counts = np.unique(std["oid"].to_numpy()[ok], return_counts=True)
        oid = oids[int(np.argmax(counts))]
        mine = ok & (std["oid"].to_numpy() == oid)
        return {"name": name or f"{self.name}_{oid}", "ra": float(np.median(std["ra"].to_numpy(float)[mine])),
                "dec": float(np.median(std["dec"].to_numpy(float)[mine])), "mag": None}

    def reduce_many(self, raws: list[dict], cat_rows: list[dict]) -> list:
        """Light curves of many targets: the same as :meth:`reduce_source` target by target.

        ``raws`` are the raw tables as column mappings ({name: array}, as
        :func:`vo.io.hdf5.read_columns` gives) or DataFrames.  When all have the same columns
        they are concatenated and mapped by :meth:`to_standard` once, and all targets are
        reduced in one :func:`vo.lightcurves.reduce.make_lightcurves_many` call.
        """
        if not raws:
            return []
        sizes = [len(next(iter(r.values()), ())) if isinstance(r, dict) else len(r) for r in raws]
        names = {tuple(r.columns if isinstance(r, pd.DataFrame) else r.keys()) for r in raws}
        std = None
        if len(names) == 1:
            (cols,) = names
            table = pd.DataFrame({c: np.concatenate([np.asarray(r[c]) for r in raws]) for c in cols},
                                 columns=list(cols))
            std = self.to_standard(table)
            if len(std) != len(table):
                std = None  # not a row-by-row mapping: standardise source by source
        if std is not None:
            starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        else:
            frames = [r if isinstance(r, pd.DataFrame) else pd.DataFrame(r, columns=list(r)) for r in raws]
            std, starts = vreduce.concat_sources([self.to_standard(f) for f in frames])
        return vreduce.make_lightcurves_many(std, starts, cat_rows, self.pars["reducer"], self.name)

    def reduce_store(self, store_path, targets: pd.DataFrame) -> list:
        """Light curves of every target found in the raw store (file opened once), reduced
        together (:meth:`reduce_many`), in the targets' order.

        The targets' rows (positions at the observation epoch) are the ``cat_row`` of the
        reduction; a target missing from the store is skipped with a warning.
        """
        by_key = {sanitize_key(r["name"]): r for r in targets.to_dict("records")}
        raws, rows, missing, other = [], [], [], []
        phash = self.download_params_hash()
        for key, raw, stored_hash in read_raw_columns(store_path, list(by_key)):
            if raw is None:
                missing.append(by_key[key]["name"])
            elif stored_hash != phash:
                other.append(key)
            else:
                raws.append(raw)
                rows.append(by_key[key])
        if other:  # a raw store shared by projects must never serve one another's data silently
            raise ParamsMismatchError(self._mismatch_message(
                RawStore(store_path), other[0], len(other), self.download_params(), "run the download step "
                "again (it re-downloads them) or use the parameters they were downloaded with"))
        if missing:
            warnings.warn(f"{store_path}: {len(missing)} targets have no raw photometry "
                          f"(skipped): {', '.join(map(str, missing[:10]))}"
                          f"{' ...' if len(missing) > 10 else ''}", stacklevel=2)
        return self.reduce_many(raws, rows)


def read_raw_columns(store_path, keys):
    """Yield ``(key, {column: array}, download_params_hash)`` of each source of a raw store,
    opening the file once and building no DataFrame; a missing store or key gives
    ``(key, None, None)``.  Raises :class:`~vo.lightcurves.rawstore.StoreError` naming the file
    and key of a bad group."""
    path = Path(store_path)
    if not path.exists():
        for key in keys:
            yield key, None, None
        return
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise StoreError(f"{path}: cannot open raw store: {exc}") from exc
    with f:
        for key in keys:
            if key not in f:
                yield key, None, None
                continue
            try:
                grp = f[key]
                cols, _ = vh5.read_columns(grp, with_attrs=False)
                h = grp.attrs.get("download_params_hash")
            except Exception as exc:  # any corruption: name the file and the key
                raise StoreError(f"{path}: cannot read source {key!r}: {exc}") from exc
            yield key, cols, (h.decode() if isinstance(h, bytes) else h)
