"""Tables in HDF5 files, read back with plain h5py (no PyTables, no pickles).

Two layouts; the readers (:func:`read_columns`, :func:`read_table`, :func:`read_tables`,
:func:`read_block`, :func:`read_attrs`) recognise either, so files of earlier runs stay
readable.

``layout="columns"`` (the default of :func:`write_table`)
    A *group* ``name`` with one 1-d dataset per column, a ``columns`` attribute (JSON list)
    keeping their order, an ``nrows`` attribute, and the metadata as one group attribute
    each (dicts, lists and None as ``"json:"`` + JSON text).  Strings are fixed-width UTF-8
    bytes (files of earlier versions hold variable-length UTF-8 strings; both are read).
    Plain h5py: ``f["name/mag"][...]``; ``f["name/filter"].asstr()[...]``.

``layout="records"`` (many small tables, e.g. the light curves of a reduced file)
    One compound *dataset* ``name``: one field per column, numbers in their own dtype,
    booleans as h5py's enum, strings as fixed-width UTF-8 bytes (``S`` sized to the
    longest value written in the same call, NUL-padded; decoded to ``str`` on reading).
    Attributes: ``columns`` (JSON list of the column names, in order), ``meta`` (JSON
    object holding *all* the metadata; NaN written as ``NaN`` as Python's json does), and
    a copy of a few scalar metadata (``index_attrs`` of :func:`write_tables`) as plain
    attributes that tools can search by.  Plain h5py + numpy::

        with h5py.File(path) as f:
            flux = f[key]["flux"]                 # one column (numpy array)
            table = f[key][...]                   # structured array of every column
            meta = json.loads(f[key].attrs["meta"])

    One HDF5 object per table instead of one per column (plus about 20 attributes) makes
    writing and reading many small tables an order of magnitude faster.

The reading and writing go through h5py's low-level API with the HDF5 type of each dataset
as the memory type (so HDF5 converts nothing) and the numpy dtype of each HDF5 type worked
out once per call: h5py's high-level objects cost 50-150 us per dataset or attribute, far
more than the data of a light curve.
"""

from __future__ import annotations

import json
from typing import Any, Mapping, NamedTuple

import h5py
import numpy as np
import pandas as pd
from h5py import h5d, h5o, h5p, h5s, h5t

from vo.io.encoding import numpy_or_str_to_json
from vo.io.hdf5_attrs import read_attrs, read_meta, read_str_attr, set_attr, write_attrs  # noqa: F401 (read_attrs, write_attrs: API)

LAYOUTS = ("columns", "records")


def _creation_lists():
    """Link and dataset creation property lists as h5py's defaults (UTF-8 names, no times)."""
    lcpl = h5p.create(h5p.LINK_CREATE)
    lcpl.set_char_encoding(h5t.CSET_UTF8)
    dcpl = h5p.create(h5p.DATASET_CREATE)
    dcpl.set_obj_track_times(False)
    return lcpl, dcpl


_LCPL, _DCPL = _creation_lists()


# -- columns ------------------------------------------------------------------------------
def _is_string_column(values: np.ndarray, dtype) -> bool:
    return (values.dtype == object or values.dtype.kind == "U"
            or (dtype is not None and not isinstance(dtype, np.dtype)
                and pd.api.types.is_string_dtype(dtype)))


def encode_strings(values) -> np.ndarray:
    """Fixed-width UTF-8 bytes (``S`` as wide as the longest value, at least 1) of a column
    of strings; None and NaN become ``b""``.  Each distinct value is encoded once."""
    codes, uniques = pd.factorize(np.asarray(values, dtype=object), use_na_sentinel=True)
    encoded = [str(u).encode("utf-8") for u in uniques] + [b""]  # code -1 (missing) -> b""
    width = max(1, max(map(len, encoded)))
    return np.array(encoded, dtype=f"S{width}")[codes]


def decode_strings(values: np.ndarray) -> np.ndarray:
    """Object array of ``str`` from fixed-width UTF-8 bytes (each distinct value decoded once)."""
    values = np.asarray(values)
    if values.size == 0:
        return np.empty(values.shape, dtype=object)
    uniques, inverse = np.unique(values, return_inverse=True)
    decoded = np.array([u.decode("utf-8") for u in uniques.tolist()] + [""], dtype=object)[:-1]
    return decoded[inverse.reshape(values.shape)]


def _decode_objects(values: np.ndarray) -> np.ndarray:
    """Object array of ``str`` from one of ``bytes`` (each distinct value decoded once)."""
    codes, uniques = pd.factorize(values.ravel(), use_na_sentinel=True)
    decoded = [u.decode("utf-8") if isinstance(u, bytes) else str(u) for u in uniques] + [""]
    return np.array(decoded, dtype=object)[codes].reshape(values.shape)


def _table_items(df) -> tuple[list[tuple[str, np.ndarray, bool]], int]:
    """``([(column, values, is_string)], nrows)`` of a DataFrame or mapping of 1-d arrays."""
    if isinstance(df, pd.DataFrame):
        items = [(str(c), df[c].to_numpy(), df[c].dtype) for c in df.columns]
        nrows = len(df)
    else:
        items = [(str(c), np.asarray(v), None) for c, v in df.items()]
        nrows = len(items[0][1]) if items else 0
    return [(c, v, _is_string_column(v, dt)) for c, v, dt in items], nrows


def _check_lengths(where: str, items, nrows: int) -> None:
    for col, values, _ in items:
        if len(values) != nrows:
            raise ValueError(f"table {where}: column {col!r} has {len(values)} rows, not {nrows}")


def _plain(dtype: np.dtype) -> bool:
    """Whether data of this dtype can be read with the file's type as memory type: fixed-size
    numbers and bytes only (no variable-length strings, references or opaque data)."""
    if dtype.names:
        return all(_plain(dtype.fields[n][0]) for n in dtype.names)
    return dtype.subdtype is None and dtype.kind in "biufcS" and not dtype.hasobject


class _TypeCache(dict):
    """numpy dtype of each HDF5 type (by its encoded description): translating a compound
    type costs ~160 us, reading the data of a light curve ~20 us."""

    def dtype_of(self, tid) -> tuple[bytes, np.dtype]:
        key = tid.encode()
        dtype = self.get(key)
        if dtype is None:
            dtype = self[key] = tid.dtype
        return key, dtype


def _read_dataset(dsid, cache: _TypeCache | None = None) -> np.ndarray:
    """All of a dataset: fixed-size data read with no conversion, strings decoded to str."""
    tid = dsid.get_type()
    _, dtype = (cache if cache is not None else _TypeCache()).dtype_of(tid)
    string = h5py.check_string_dtype(dtype)
    if dsid.shape is not None and string is not None and string.length is None:
        out = np.zeros(dsid.shape, dtype=dtype)  # variable-length strings (older files)
        if out.size:
            dsid.read(h5s.ALL, h5s.ALL, out, mtype=h5t.py_create(dtype))
        return _decode_objects(out)
    if dsid.shape is None or not _plain(dtype):  # empty dataspace, references, ...
        return h5py.Dataset(dsid)[()]
    out = np.empty(dsid.shape, dtype=dtype)
    if out.size:
        dsid.read(h5s.ALL, h5s.ALL, out, mtype=tid)
    return decode_strings(out) if dtype.kind == "S" else out


def _write_column(gid, name: str, values: np.ndarray, compression) -> None:
    if values.dtype == bool or compression is not None or values.dtype.kind not in "iufcS":
        h5py.Group(gid).create_dataset(name, data=values, compression=compression)
        return
    values = np.ascontiguousarray(values)
    tid = h5t.py_create(values.dtype)
    dsid = h5d.create(gid, name.encode(), tid, h5s.create_simple(values.shape), dcpl=_DCPL, lcpl=_LCPL)
    if values.size:
        dsid.write(h5s.ALL, h5s.ALL, values, mtype=tid)


def _write_columns_group(parent: h5py.Group, name: str, df, attrs: dict | None, compression) -> h5py.Group:
    if name in parent:
        del parent[name]
    grp = parent.create_group(name)
    items, nrows = _table_items(df)
    _check_lengths(grp.name, items, nrows)
    for col, values, is_str in items:
        _write_column(grp.id, col, encode_strings(values) if is_str else values, compression)
    grp.attrs["columns"] = json.dumps([c for c, _, _ in items])
    grp.attrs["nrows"] = nrows
    write_attrs(grp, attrs or {})
    return grp


def _read_columns_group(grp: h5py.Group, cache: _TypeCache | None = None,
                        with_attrs: bool = True) -> tuple[dict, dict]:
    if with_attrs:
        attrs = read_attrs(grp)
        columns = attrs.pop("columns", None)
        attrs.pop("nrows", None)
    else:
        attrs = {}
        columns = read_str_attr(grp.id, b"columns") if "columns" in grp.attrs else None
    columns = json.loads(columns) if columns is not None else list(grp.keys())
    cache = cache if cache is not None else _TypeCache()
    gid = grp.id
    data = {}
    for col in columns:
        try:
            dsid = h5d.open(gid, col.encode())
        except KeyError:
            raise KeyError(f"{grp.name}: column {col!r} is listed but missing") from None
        data[col] = _read_dataset(dsid, cache)
    return data, attrs


# -- records ------------------------------------------------------------------------------
def _signature(items) -> tuple:
    return tuple((c, "S" if is_str else v.dtype.str) for c, v, is_str in items)


class TableBlock(NamedTuple):
    """Tables with the same columns in one set of arrays: table ``keys[i]`` is rows
    ``bounds[i, 0]:bounds[i, 1]`` of ``columns``; ``attrs[i]`` is its metadata."""
    keys: list[str]
    columns: dict[str, np.ndarray]
    bounds: np.ndarray
    attrs: list[dict]


def _bounds(sizes) -> np.ndarray:
    ends = np.cumsum(np.asarray(sizes, dtype=np.int64))
    return np.stack([ends - sizes, ends], axis=1) if len(ends) else np.zeros((0, 2), np.int64)


def _block_records(block: TableBlock, where: str) -> np.ndarray:
    """The block's columns as one structured array (string columns UTF-8 encoded, one width)."""
    n = len(next(iter(block.columns.values()), ()))
    fields = {}
    for col, values in block.columns.items():
        values = np.asarray(values)
        if len(values) != n:
            raise ValueError(f"tables {where}: column {col!r} has {len(values)} rows, not {n}")
        fields[str(col)] = encode_strings(values) if _is_string_column(values, None) else values
    bounds = np.asarray(block.bounds, dtype=np.int64).reshape(-1, 2)
    if len(bounds) != len(block.keys) or len(block.attrs) != len(block.keys):
        raise ValueError(f"tables {where}: {len(block.keys)} keys, {len(bounds)} bounds, "
                         f"{len(block.attrs)} attrs")
    if bounds.size and (bounds.min() < 0 or bounds.max() > n or np.any(bounds[:, 1] < bounds[:, 0])):
        raise ValueError(f"tables {where}: row bounds outside 0..{n}")
    out = np.empty(n, dtype=[(c, v.dtype) for c, v in fields.items()])
    for col, values in fields.items():
        out[col] = values
    return out


def _write_record_datasets(gid, names: list[str], attrs: list[dict], records: np.ndarray,
                           bounds: np.ndarray, index_attrs, compression) -> None:
    tid = h5t.py_create(records.dtype)
    columns = json.dumps(list(records.dtype.names))
    for name, (a, b), meta in zip(names, bounds.tolist(), attrs):
        rows = records[a:b]
        if compression is not None:
            dsid = h5py.Group(gid).create_dataset(name, data=rows, compression=compression).id
        else:
            dsid = h5d.create(gid, name.encode(), tid, h5s.create_simple(rows.shape), dcpl=_DCPL,
                              lcpl=_LCPL)
            if rows.size:
                dsid.write(h5s.ALL, h5s.ALL, rows, mtype=tid)
        meta = meta or {}
        set_attr(dsid, "columns", columns)
        set_attr(dsid, "meta", json.dumps(meta, default=numpy_or_str_to_json))
        for key in index_attrs:
            value = meta.get(key)
            if isinstance(value, np.generic):
                value = value.item()
            if isinstance(value, (str, bool, int, float)):
                set_attr(dsid, key, value)


def _drop_existing(parent: h5py.Group, names) -> None:
    if len(parent):
        for name in names:
            if name in parent:
                del parent[name]


def write_block(parent: h5py.Group, block: TableBlock, index_attrs: tuple[str, ...] = (),
                compression: str | None = None) -> None:
    """Write the tables of ``block`` under ``parent`` in the records layout (replacing any
    present), from one structured array: the fastest way to write many small tables that
    share their columns (e.g. the light curves of a reduction).  ``index_attrs``: metadata
    keys whose str or number values are also written as plain attributes."""
    records = _block_records(block, f"{parent.file.filename}:{parent.name}")
    _drop_existing(parent, block.keys)
    _write_record_datasets(parent.id, list(block.keys), list(block.attrs), records,
                           np.asarray(block.bounds, dtype=np.int64).reshape(-1, 2), index_attrs, compression)


def write_tables(parent: h5py.Group, items: Mapping[str, tuple[Any, dict | None]],
                 layout: str = "records", index_attrs: tuple[str, ...] = (),
                 compression: str | None = None) -> None:
    """Write many tables under ``parent``: ``{name: (table, attrs)}`` (replacing any present).

    ``table`` is a DataFrame or a mapping of column name to 1-d array.  With the records
    layout (see the module docstring) tables with the same columns and dtypes are written
    together (:func:`write_block`: string columns share one width) and the metadata keys
    ``index_attrs`` that hold a str or number are copied to plain attributes too.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown HDF5 table layout {layout!r} (one of {LAYOUTS})")
    if layout == "columns":
        for name, (df, attrs) in items.items():
            _write_columns_group(parent, name, df, attrs, compression)
        return
    groups: dict[tuple, list] = {}
    for name, (df, attrs) in items.items():
        table_items, nrows = _table_items(df)
        _check_lengths(f"{parent.name.rstrip('/')}/{name}", table_items, nrows)
        groups.setdefault(_signature(table_items), []).append((name, table_items, nrows, attrs))
    for group in groups.values():
        columns = {}
        for j, (col, _, _) in enumerate(group[0][1]):
            parts = [items[j][1] for _, items, _, _ in group]
            columns[col] = parts[0] if len(parts) == 1 else np.concatenate(parts)
        block = TableBlock([g[0] for g in group], columns, _bounds([g[2] for g in group]),
                           [g[3] for g in group])
        write_block(parent, block, index_attrs, compression)


def write_table(parent: h5py.Group, name: str, df: pd.DataFrame | Mapping[str, np.ndarray],
                attrs: dict | None = None, compression: str | None = None,
                layout: str = "columns", index_attrs: tuple[str, ...] = ()) -> h5py.HLObject:
    """Write a table as ``name`` under ``parent`` (replacing it if present); returns the
    group (columns layout) or dataset (records layout), see the module docstring.

    ``df`` is a DataFrame or a mapping of column name to 1-d array (all of one length),
    which saves building a DataFrame; both give the same file.
    """
    if layout == "columns":
        return _write_columns_group(parent, name, df, attrs, compression)
    write_tables(parent, {name: (df, attrs)}, layout, index_attrs, compression)
    return parent[name]


def _read_records(dsid, cache: _TypeCache | None = None) -> tuple[dict, dict]:
    rows = _read_dataset_raw(dsid, cache)
    return _split_fields(rows), read_meta(dsid)


def _read_dataset_raw(dsid, cache: _TypeCache | None = None) -> np.ndarray:
    """A compound dataset as a structured array (strings still bytes)."""
    tid = dsid.get_type()
    _, dtype = (cache if cache is not None else _TypeCache()).dtype_of(tid)
    if not dtype.names:
        raise ValueError("not a records-layout table (no compound dtype)")
    if dsid.shape is None or not _plain(dtype):
        return h5py.Dataset(dsid)[()]
    out = np.empty(dsid.shape, dtype=dtype)
    if out.size:
        dsid.read(h5s.ALL, h5s.ALL, out, mtype=tid)
    return out


def _split_fields(rows: np.ndarray) -> dict[str, np.ndarray]:
    """Contiguous column arrays of a structured array (bytes fields decoded to str)."""
    out = {}
    for name in rows.dtype.names:
        values = rows[name]
        out[name] = decode_strings(values) if values.dtype.kind == "S" else np.ascontiguousarray(values)
    return out


def read_columns(obj: h5py.HLObject, with_attrs: bool = True) -> tuple[dict[str, np.ndarray], dict]:
    """Read a table written by :func:`write_table` (either layout) as ({column: array},
    attributes), in the stored column order and without building a DataFrame (strings as
    object arrays of str).  ``with_attrs=False`` skips the metadata (returns ``{}``)."""
    if isinstance(obj, h5py.Dataset):
        if not with_attrs:
            return _split_fields(_read_dataset_raw(obj.id)), {}
        return _read_records(obj.id)
    return _read_columns_group(obj, with_attrs=with_attrs)


def read_table(obj: h5py.HLObject) -> tuple[pd.DataFrame, dict]:
    """Read a table written by :func:`write_table` (either layout): (DataFrame, attributes)."""
    data, attrs = read_columns(obj)
    return pd.DataFrame(data, columns=list(data)), attrs


# -- many tables at once ------------------------------------------------------------------
def _open_all(parent: h5py.Group, keys) -> list:
    gid = parent.id
    out = []
    for key in keys:
        try:
            out.append(h5o.open(gid, key.encode()))
        except KeyError:
            raise KeyError(f"{parent.file.filename}: no table {key!r} in {parent.name}") from None
    return out


def read_block(parent: h5py.Group, keys: list[str] | None = None) -> TableBlock | None:
    """The tables ``keys`` (default: all) under ``parent`` read in one pass into one set of
    concatenated column arrays, or None when they do not all have the same columns.

    Records-layout datasets of one HDF5 type are read straight into one structured array;
    other tables (columns layout, other types) are read one by one and concatenated.
    """
    keys = list(parent.keys()) if keys is None else list(keys)
    objs = _open_all(parent, keys)
    cache = _TypeCache()
    type_keys, metas = [], []
    for key, oid in zip(keys, objs):
        if isinstance(oid, h5d.DatasetID):
            type_keys.append(cache.dtype_of(oid.get_type())[0])
            metas.append(_wrap(key, read_meta, oid))
        else:
            type_keys.append(None)
            metas.append(None)
    if objs and type_keys[0] is not None and all(t == type_keys[0] for t in type_keys):
        dtype = cache[type_keys[0]]
        if dtype.names and _plain(dtype) and all(len(o.shape or ()) == 1 for o in objs):
            return _read_same_type(keys, objs, dtype, metas)
    tables = []
    for key, oid, meta in zip(keys, objs, metas):
        if meta is None:
            tables.append(_wrap(key, _read_columns_group, h5py.Group(oid), cache))
        else:
            tables.append((_wrap(key, lambda o: _split_fields(_read_dataset_raw(o, cache)), oid), meta))
    return _concat_tables(keys, tables)


def _read_same_type(keys: list[str], objs: list, dtype: np.dtype, metas: list[dict]) -> TableBlock:
    """Datasets of one compound type read straight into one structured array."""
    sizes = np.array([o.shape[0] for o in objs], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    rows = np.empty(int(starts[-1]), dtype=dtype)
    tid = objs[0].get_type()
    k = 0
    try:
        for k, oid in enumerate(objs):
            if sizes[k]:
                oid.read(h5s.ALL, h5s.ALL, rows[starts[k]:starts[k + 1]], mtype=tid)
    except Exception as exc:  # any corruption: name the key (callers add the file)
        raise ValueError(f"table {keys[k]!r}: {exc}") from exc
    return TableBlock(keys, _split_fields(rows), np.stack([starts[:-1], starts[1:]], axis=1), metas)


def _concat_tables(keys: list[str], tables: list[tuple[dict, dict]]) -> TableBlock | None:
    names = [list(cols) for cols, _ in tables]
    if any(n != names[0] for n in names):
        return None
    sizes = np.array([len(next(iter(c.values()), ())) for c, _ in tables], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    columns = {c: np.concatenate([cols[c] for cols, _ in tables]) for c in (names[0] if names else [])}
    return TableBlock(keys, columns, np.stack([starts[:-1], starts[1:]], axis=1),
                      [attrs for _, attrs in tables])


def _wrap(key: str, fn, *args, **kwargs):
    """``fn(*args)``, an error naming the table ``key``."""
    try:
        return fn(*args, **kwargs)
    except Exception as exc:  # any corruption: name the key (callers add the file)
        raise ValueError(f"table {key!r}: {exc}") from exc


def read_tables(parent: h5py.Group, keys: list[str] | None = None) -> dict[str, tuple[dict, dict]]:
    """``{key: ({column: array}, attributes)}`` of the tables ``keys`` (default: all) under
    ``parent``, read in one pass (see :func:`read_block`); the same as calling
    :func:`read_columns` on each, but several times faster on many small tables."""
    keys = list(parent.keys()) if keys is None else list(keys)
    block = read_block(parent, keys)
    if block is None:
        return {key: _wrap(key, read_columns, parent[key]) for key in keys}
    return {key: ({c: v[a:b] for c, v in block.columns.items()}, attrs)
            for key, (a, b), attrs in zip(block.keys, block.bounds.tolist(), block.attrs)}


def read_metas(parent: h5py.Group, keys: list[str] | None = None) -> dict[str, dict]:
    """``{key: metadata}`` of the tables under ``parent`` without reading their data (records
    layout: the ``meta`` attribute; columns layout: the group attributes less columns, nrows)."""
    keys = list(parent.keys()) if keys is None else list(keys)
    out = {}
    for key, oid in zip(keys, _open_all(parent, keys)):
        if isinstance(oid, h5d.DatasetID):
            out[key] = _wrap(key, read_meta, oid)
        else:
            attrs = read_attrs(h5py.Group(oid))
            attrs.pop("columns", None)
            attrs.pop("nrows", None)
            out[key] = attrs
    return out
