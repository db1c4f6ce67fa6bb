"""ZTF data-release light curves from bulk parquet files on disk: an index of the objects in
every file (KD-tree over their positions) and the exploded per-epoch rows of the objects near
a target."""

from __future__ import annotations

import re
import threading
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from scipy.spatial import cKDTree

from vo.sky import chord, unit_vectors

#: Columns of the raw table made from the bulk parquet files (IRSA names, IRSA order).
BULK_COLUMNS = ["oid", "mjd", "mag", "magerr", "catflags", "filtercode", "ra", "dec", "field",
                "ccdid", "qid", "clrcoeff", "exptime"]
#: ``filterid`` of the data-release files to IRSA's ``filtercode``.
FILTER_CODES = {1: "zg", 2: "zr", 3: "zi"}
#: Exposure time of every ZTF survey exposure (s); the parquet files do not carry it.
ZTF_EXPTIME = 30.0

_BULK_INDEX_COLUMNS = ["objectid", "objra", "objdec"]
_BULK_META_COLUMNS = ["objectid", "filterid", "fieldid", "rcid", "objra", "objdec"]
_BULK_LIST_COLUMNS = ["hmjd", "mag", "magerr", "catflags"]  # clrcoeff is optional


class ZTFError(RuntimeError):
    """A ZTF download that failed; the message names the URL or file and the problem."""


# -- bulk data-release files -------------------------------------------------------------
class BulkIndex:
    """Cone search over ZTF data-release light-curve parquet files in a folder.

    Each file's ``objectid/objra/objdec`` columns are read once and indexed with a
    k-d tree on unit vectors (cached for the life of the object, thread-safe); the list
    columns of the matched objects are then read row group by row group.

    Parameters
    ----------
    bulk_dir : folder searched recursively for ``*.parquet``.
    data_release : e.g. ``ztf_dr5``: keep only files named ``*_dr5.parquet``; None keeps all.
    """

    def __init__(self, bulk_dir, data_release: str | None = None):
        if not bulk_dir:
            raise ZTFError("ZTF.mode is bulk but ZTF.bulk_dir is not set")
        self.bulk_dir = Path(bulk_dir).expanduser()
        if not self.bulk_dir.is_dir():
            raise ZTFError(f"ZTF.bulk_dir {self.bulk_dir} is not a folder")
        files = sorted(self.bulk_dir.rglob("*.parquet"))
        if data_release:
            match = re.search(r"dr(\d+)", str(data_release), re.IGNORECASE)
            if not match:
                raise ZTFError(f"ZTF.data_release {data_release!r} names no release (expected e.g. ztf_dr5)")
            tag = f"_dr{int(match.group(1))}.parquet"
            files = [f for f in files if f.name.endswith(tag)]
        if not files:
            raise ZTFError(f"ZTF.bulk_dir {self.bulk_dir} holds no parquet files"
                           + (f" of data release {data_release}" if data_release else ""))
        self.files = files
        self._index: dict[Path, tuple] = {}
        self._lock = threading.Lock()

    def _file_index(self, path: Path) -> tuple:
        """(tree, cap center, cap chord, row-group offsets) of one file, built once."""
        with self._lock:
            if path not in self._index:
                self._index[path] = self._build_index(path)
            return self._index[path]

    @staticmethod
    def _build_index(path: Path) -> tuple:
        try:
            pf = pq.ParquetFile(path)
        except (OSError, pa.ArrowException) as exc:
            raise ZTFError(f"ZTF bulk file {path}: not a readable parquet file ({exc})") from None
        names = pf.schema_arrow.names
        missing = [c for c in _BULK_META_COLUMNS + _BULK_LIST_COLUMNS if c not in names]
        if missing:
            raise ZTFError(f"ZTF bulk file {path}: lacks columns {missing}")
        coords = pf.read(columns=_BULK_INDEX_COLUMNS)
        xyz = unit_vectors(coords["objra"].to_numpy(), coords["objdec"].to_numpy())
        if len(xyz):
            center = xyz.mean(axis=0)
            center /= np.linalg.norm(center)
            cap = float(np.max(np.linalg.norm(xyz - center, axis=1)))
        else:
            center, cap = np.array([0.0, 0.0, 1.0]), -np.inf
        offsets = np.cumsum([0] + [pf.metadata.row_group(i).num_rows for i in range(pf.num_row_groups)])
        return cKDTree(xyz), center, cap, offsets

    def query(self, ra: float, dec: float, radius_arcsec: float) -> tuple[pd.DataFrame, dict]:
        """Epochs (IRSA-like columns :data:`BULK_COLUMNS`) of every object within the cone."""
        target = unit_vectors(ra, dec)
        r = chord(radius_arcsec)
        parts, used = [], []
        for path in self.files:
            tree, center, cap, offsets = self._file_index(path)
            if np.linalg.norm(target - center) > cap + r:
                continue
            rows = np.sort(np.asarray(tree.query_ball_point(target, r), dtype=np.int64))
            if rows.size:
                parts.append(_read_objects(path, rows, offsets))
                used.append(str(path.relative_to(self.bulk_dir)))
        table = pd.concat(parts, ignore_index=True) if parts else _empty_bulk_table()
        table = table.sort_values(["oid", "mjd"], kind="stable").reset_index(drop=True)
        meta = {"mode": "bulk", "bulk_dir": str(self.bulk_dir), "files": used,
                "n_files_searched": len(self.files), "radius_arcsec": float(radius_arcsec),
                "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "nrows": int(len(table))}
        return table, meta


def _read_objects(path: Path, rows: np.ndarray, offsets: np.ndarray) -> pd.DataFrame:
    """Rows (file-global indices, sorted) of a bulk file, exploded to one row per epoch."""
    pf = pq.ParquetFile(path)
    names = pf.schema_arrow.names
    columns = _BULK_META_COLUMNS + _BULK_LIST_COLUMNS + (["clrcoeff"] if "clrcoeff" in names else [])
    group = np.searchsorted(offsets, rows, side="right") - 1
    tables = [pf.read_row_group(int(g), columns=columns).take(pa.array(rows[group == g] - offsets[g]))
              for g in np.unique(group)]
    return explode_objects(pa.concat_tables(tables), path)


def explode_objects(table: pa.Table, path) -> pd.DataFrame:
    """One row per epoch from data-release objects (one row per object, list columns).

    ``mjd`` is the file's ``hmjd``: a *heliocentric* MJD stored as float32, so it is good to
    about 2**-8 d (6 min) near MJD 59000, comparable to the heliocentric correction itself
    (at most 8.3 min); we use it as the epoch without converting it to a geocentric MJD.
    ``ra``/``dec`` are the object's mean position (the files keep no per-epoch position).
    ``ccdid``/``qid`` come from ``rcid = 4 (ccdid - 1) + qid - 1``; ``exptime`` is 30 s.
    """
    lengths = pc.list_value_length(table["hmjd"]).to_numpy(zero_copy_only=False)
    for col in _BULK_LIST_COLUMNS[1:] + (["clrcoeff"] if "clrcoeff" in table.column_names else []):
        other = pc.list_value_length(table[col]).to_numpy(zero_copy_only=False)
        bad = np.flatnonzero(other != lengths)
        if bad.size:
            oid = table["objectid"][int(bad[0])].as_py()
            raise ZTFError(f"ZTF bulk file {path}: object {oid} has {other[bad[0]]} {col} "
                           f"values but {lengths[bad[0]]} hmjd values")
    parent = np.repeat(np.arange(table.num_rows), lengths)

    def flat(col, dtype):
        return pc.list_flatten(table[col]).to_numpy(zero_copy_only=False).astype(dtype)

    def scalar(col, dtype):
        return table[col].to_numpy().astype(dtype)[parent]

    filterid = scalar("filterid", np.int64)
    codes = np.array([FILTER_CODES.get(int(f), f"z{int(f)}") for f in np.unique(filterid)], dtype=object)
    rcid = scalar("rcid", np.int64)
    out = pd.DataFrame({
        "oid": scalar("objectid", np.int64),
        "mjd": flat("hmjd", np.float64),
        "mag": flat("mag", np.float64),
        "magerr": flat("magerr", np.float64),
        "catflags": flat("catflags", np.int64),
        "filtercode": codes[np.searchsorted(np.unique(filterid), filterid)],
        "ra": scalar("objra", np.float64),
        "dec": scalar("objdec", np.float64),
        "field": scalar("fieldid", np.int64),
        "ccdid": rcid // 4 + 1,
        "qid": rcid % 4 + 1,
        "clrcoeff": flat("clrcoeff", np.float64) if "clrcoeff" in table.column_names
        else np.full(parent.size, np.nan),
        "exptime": np.full(parent.size, ZTF_EXPTIME),
    })
    return out[BULK_COLUMNS]


def _empty_bulk_table() -> pd.DataFrame:
    dtypes = {"oid": np.int64, "catflags": np.int64, "filtercode": object, "field": np.int64,
              "ccdid": np.int64, "qid": np.int64}
    return pd.DataFrame({c: np.array([], dtype=dtypes.get(c, np.float64)) for c in BULK_COLUMNS})
