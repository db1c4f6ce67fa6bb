"""Columnar tables in HDF5 groups, read back with plain h5py.

A table is a group with one dataset per column (strings as UTF-8 variable-length) and a
``columns`` attribute that keeps their order; scalar metadata goes into group attributes
(dicts and lists as JSON strings).  This keeps files readable by any HDF5 tool and avoids
PyTables.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

import h5py
import numpy as np
import pandas as pd

STR = h5py.string_dtype("utf-8")


def _attr_value(value: Any):
    if isinstance(value, (dict, list, tuple)) or value is None:
        return "json:" + json.dumps(value, default=_json_default)
    if isinstance(value, (np.generic,)):
        return value.item()
    return value


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)


def _from_attr(value: Any):
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, str) and value.startswith("json:"):
        return json.loads(value[5:])
    if isinstance(value, np.generic):
        return value.item()
    return value


def write_attrs(obj: h5py.HLObject, attrs: dict) -> None:
    for key, value in (attrs or {}).items():
        obj.attrs[key] = _attr_value(value)


def read_attrs(obj: h5py.HLObject) -> dict:
    return {k: _from_attr(v) for k, v in obj.attrs.items()}


def _is_string_column(values: np.ndarray, dtype) -> bool:
    return (values.dtype == object or values.dtype.kind == "U"
            or (not isinstance(dtype, np.dtype) and pd.api.types.is_string_dtype(dtype)))


def write_table(parent: h5py.Group, name: str, df: pd.DataFrame | Mapping[str, np.ndarray],
                attrs: dict | None = None, compression: str | None = None) -> h5py.Group:
    """Write a table as group ``name`` under ``parent`` (replacing it if present).

    ``df`` is a DataFrame or a mapping of column name to 1-d array (all of one length),
    which saves building a DataFrame; both give the same file.
    """
    if name in parent:
        del parent[name]
    grp = parent.create_group(name)
    if isinstance(df, pd.DataFrame):
        items = [(col, df[col].to_numpy(), df[col].dtype) for col in df.columns]
        nrows = len(df)
    else:
        items = [(col, np.asarray(v), None) for col, v in df.items()]
        nrows = len(items[0][1]) if items else 0
    for col, values, dtype in items:
        if len(values) != nrows:
            raise ValueError(f"table {grp.name}: column {col!r} has {len(values)} rows, not {nrows}")
        if _is_string_column(values, dtype):
            data = np.array(["" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v)
                             for v in values], dtype=object)
            grp.create_dataset(str(col), data=data, dtype=STR)
        elif values.dtype == bool:
            grp.create_dataset(str(col), data=values.astype(bool))
        else:
            grp.create_dataset(str(col), data=values, compression=compression)
    grp.attrs["columns"] = json.dumps([str(c) for c, _, _ in items])
    grp.attrs["nrows"] = nrows
    write_attrs(grp, attrs or {})
    return grp


def read_columns(grp: h5py.Group) -> tuple[dict[str, np.ndarray], dict]:
    """Read a group written by :func:`write_table` as ({column: array}, attributes), in the
    stored column order and without building a DataFrame (strings as object arrays)."""
    attrs = read_attrs(grp)
    columns = json.loads(attrs.pop("columns")) if "columns" in attrs else list(grp.keys())
    attrs.pop("nrows", None)
    data = {}
    for col in columns:
        ds = grp[col]
        if h5py.check_string_dtype(ds.dtype) is not None:
            data[col] = ds.asstr()[...].astype(object)
        else:
            data[col] = ds[...]
    return data, attrs


def read_table(grp: h5py.Group) -> tuple[pd.DataFrame, dict]:
    """Read a group written by :func:`write_table`: (DataFrame, attributes)."""
    data, attrs = read_columns(grp)
    return pd.DataFrame(data, columns=list(data)), attrs
