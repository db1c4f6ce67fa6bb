"""HDF5 table layouts (vo.io.hdf5): records and columns, plain-h5py readability, the bulk
readers, and files of the older layout (a group per table, a dataset per column, variable-
length strings) that earlier runs left on disk."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pandas as pd
import pytest

from vo.io import hdf5 as vh5
from vo.lightcurves.datasets import INDEX_KEY, Lightcurve, read_lightcurves, write_lightcurves
from vo.lightcurves.keys import sanitize_key
from vo.lightcurves.observatories.base import read_raw_columns
from vo.lightcurves.rawstore import RawStore
from vo.provenance import short_hash

LC_COLUMNS = ["mjd", "mag", "magerr", "filter", "flag", "ra", "dec", "exptime", "oid", "flux",
              "fluxerr", "snr", "dsnr"]


def lc_columns(rng, n: int, filt: str) -> dict:
    flux = rng.normal(1000.0, 20.0, n)
    return {"mjd": np.sort(rng.uniform(58000, 58200, n)), "mag": rng.normal(16.2, 0.02, n),
            "magerr": np.full(n, 0.02), "filter": np.array([filt] * n, dtype=object),
            "flag": rng.integers(0, 2, n), "ra": np.full(n, 123.5), "dec": np.full(n, -5.0),
            "exptime": np.full(n, 30.0), "oid": rng.integers(0, 2**40, n), "flux": flux,
            "fluxerr": np.full(n, 20.0), "snr": flux / 20.0, "dsnr": rng.normal(0, 1, n)}


def lc_attrs(name: str, k: int, total: int, filt: str) -> dict:
    return {"source_name": name, "obs": "DEMO", "filter": filt, "season": k - 1,
            "reduction_number": k, "reduction_total": total, "cat_ra": 123.5, "cat_dec": -5.0,
            "cat_mag": float("nan"), "flux_mean": 1000.0 + k, "flux_rms": 20.0, "err_scale": 1.1,
            "mag_mean": 16.2, "n_epochs": 7, "mjd_start": 58000.0, "mjd_end": 58200.0, "n_clipped": 0}


def make_lcs(seed: int = 0) -> list[Lightcurve]:
    rng = np.random.default_rng(seed)
    lcs = []
    for name, filters in (("DEMO J1", "gri"), ("DEMO/é2", "gr")):  # a non-ASCII name
        for k, filt in enumerate(filters, 1):
            n = int(rng.integers(0, 30)) if k > 1 else 0  # an empty light curve too
            lcs.append(Lightcurve(columns=lc_columns(rng, n, filt), attrs=lc_attrs(name, k, len(filters), filt)))
    return lcs


def write_old_layout_group(parent: h5py.Group, name: str, columns: dict, attrs: dict) -> None:
    """A table as the earlier code wrote it: one dataset per column, strings as variable-length
    UTF-8, ``columns`` and ``nrows`` attributes, dicts/lists/None as ``"json:"`` strings."""
    grp = parent.create_group(name)
    for col, values in columns.items():
        if values.dtype == object:
            grp.create_dataset(col, data=[str(v) for v in values], dtype=h5py.string_dtype("utf-8"))
        else:
            grp.create_dataset(col, data=values)
    grp.attrs["columns"] = json.dumps(list(columns))
    grp.attrs["nrows"] = len(next(iter(columns.values())))
    for key, value in attrs.items():
        grp.attrs[key] = "json:" + json.dumps(value) if isinstance(value, (dict, list)) or value is None else value


def assert_columns_equal(got: dict, want: dict) -> None:
    assert list(got) == list(want)
    for col in want:
        np.testing.assert_array_equal(got[col], want[col], err_msg=col)
        if np.asarray(want[col]).dtype == object:
            assert got[col].dtype == object and all(isinstance(v, str) for v in got[col])


def test_reduced_file_is_read_with_plain_h5py(tmp_path):
    lcs = make_lcs()
    path = tmp_path / "DEMO_photometry_RA123_reduced.h5"
    write_lightcurves(path, lcs, {"step": "reduce", "parameters": {"gap": 40}})
    with h5py.File(path, "r") as f:  # h5py + numpy + json only
        assert sorted(f) == sorted([INDEX_KEY] + [lc.filekey for lc in lcs])
        assert f.attrs["n_lightcurves"] == len(lcs)
        index = f[INDEX_KEY][...]  # the index: one record per light curve
        assert [v.decode() for v in index["filekey"]] == [lc.filekey for lc in lcs]
        assert index["reduction_number"].tolist() == [lc.attrs["reduction_number"] for lc in lcs]
        for lc in lcs:
            ds = f[lc.filekey]
            np.testing.assert_array_equal(ds["flux"], lc.column_arrays(["flux"])["flux"])
            table = ds[...]
            assert list(table.dtype.names) == LC_COLUMNS == json.loads(ds.attrs["columns"])
            assert table.dtype["flux"] == np.float64 and table.dtype["oid"] == np.int64
            assert [v.decode() for v in table["filter"]] == list(lc.column_arrays(["filter"])["filter"])
            meta = json.loads(ds.attrs["meta"])
            assert meta.keys() == lc.attrs.keys() and np.isnan(meta.pop("cat_mag"))
            assert all(meta[k] == v for k, v in lc.attrs.items() if k != "cat_mag")
            assert ds.attrs["reduction_number"] == lc.attrs["reduction_number"]
    back = {lc.filekey: lc for lc in read_lightcurves(path)}
    for lc in lcs:
        other = back[lc.filekey]
        pd.testing.assert_frame_equal(other.data, lc.data, check_dtype=False)
        assert other.attrs.keys() == lc.attrs.keys() and other.attrs["source_name"] == lc.attrs["source_name"]


def test_bulk_readers_equal_per_table_reader(tmp_path):
    rng = np.random.default_rng(3)
    path = tmp_path / "t.h5"
    with h5py.File(path, "w") as f:
        # records tables of two dtypes (string widths differ), a columns group, an old-layout group
        vh5.write_tables(f, {"a": (lc_columns(rng, 5, "g"), {"x": 1}), "b": (lc_columns(rng, 0, "r"), {"x": 2})})
        vh5.write_table(f, "c", lc_columns(rng, 4, "long"), {"x": [3]}, layout="records", index_attrs=("x",))
        vh5.write_table(f, "d", pd.DataFrame(lc_columns(rng, 6, "i")), {"x": None})
        write_old_layout_group(f, "e", lc_columns(rng, 3, "z"), {"x": {"old": True}})
    with h5py.File(path, "r") as f:
        one_by_one = {k: vh5.read_columns(f[k]) for k in f}
        bulk = vh5.read_tables(f)
        block = vh5.read_block(f)
        metas = vh5.read_metas(f)
        assert isinstance(f["c"], h5py.Dataset) and isinstance(f["d"], h5py.Group)
        assert "x" not in f["c"].attrs  # a list is not copied to a plain attribute
    assert list(bulk) == sorted(one_by_one) == block.keys
    assert {k: a for k, (_, a) in one_by_one.items()} == metas == {"a": {"x": 1}, "b": {"x": 2},
                                                                   "c": {"x": [3]}, "d": {"x": None},
                                                                   "e": {"x": {"old": True}}}
    for k, (cols, attrs) in one_by_one.items():
        assert_columns_equal(bulk[k][0], cols)
        assert bulk[k][1] == attrs
        a, b = block.bounds[block.keys.index(k)]
        assert_columns_equal({c: v[a:b] for c, v in block.columns.items()}, cols)
    assert [b - a for a, b in block.bounds] == [5, 0, 4, 6, 3]
    # a block of one type is read in one pass and equals the per-table reads
    with h5py.File(path, "r") as f:
        same = vh5.read_block(f, ["a", "b"])
        assert f["a"].dtype == f["b"].dtype and same.bounds.tolist() == [[0, 5], [5, 5]]
    assert_columns_equal(same.columns, one_by_one["a"][0])


def test_read_block_of_tables_with_other_columns_is_none(tmp_path):
    path = tmp_path / "t.h5"
    with h5py.File(path, "w") as f:
        vh5.write_tables(f, {"a": ({"x": np.arange(3.0)}, {}), "b": ({"y": np.arange(2)}, {})})
    with h5py.File(path, "r") as f:
        assert vh5.read_block(f) is None
        tables = vh5.read_tables(f)
    np.testing.assert_array_equal(tables["a"][0]["x"], [0.0, 1.0, 2.0])
    np.testing.assert_array_equal(tables["b"][0]["y"], [0, 1])


def test_records_round_trip_types(tmp_path):
    cols = {"t": np.arange(4.0), "s": np.array(["é", None, "long text", np.nan], dtype=object),
            "ok": np.array([True, False, True, True]), "n": np.arange(4, dtype=np.int32),
            "u": np.array(["a", "b", "c", "d"])}
    with h5py.File(tmp_path / "r.h5", "w") as f:
        vh5.write_table(f, "t", cols, {"nan": float("nan"), "np": np.int64(3), "d": {"a": [1, 2]}},
                        layout="records")
        with pytest.raises(ValueError, match="'n' has 3 rows"):
            vh5.write_table(f, "bad", {"t": np.arange(4.0), "n": np.arange(3)}, layout="records")
        with pytest.raises(ValueError, match="layout"):
            vh5.write_tables(f, {"x": (cols, {})}, layout="rows")
    with h5py.File(tmp_path / "r.h5", "r") as f:
        assert f["t"].dtype["ok"] == bool and f["t"].dtype["s"] == np.dtype("S9")
        back, attrs = vh5.read_columns(f["t"])
        df, _ = vh5.read_table(f["t"])
        assert "bad" not in f
    assert list(back["s"]) == ["é", "", "long text", ""]
    assert back["ok"].dtype == bool and back["n"].dtype == np.int32
    np.testing.assert_array_equal(back["u"], cols["u"])
    assert np.isnan(attrs.pop("nan")) and attrs == {"np": 3, "d": {"a": [1, 2]}}
    assert list(df.columns) == list(cols) and len(df) == 4


def test_old_layout_raw_store_is_still_read(tmp_path):
    """A raw store written by the earlier code reads as before, next to sources added now."""
    rng = np.random.default_rng(5)
    path = tmp_path / "DEMO" / "DEMO_photometry_RA123.h5"
    path.parent.mkdir()
    old = {}
    with h5py.File(path, "w") as f:
        for name in ("old one", "old/two"):
            n = 40
            cols = {"mjd": rng.uniform(58000, 59000, n), "mag": rng.normal(17, 0.1, n),
                    "magerr": np.full(n, 0.05), "filter": rng.choice(np.array(["g", "r"], dtype=object), n),
                    "flag": np.zeros(n, dtype=np.int64), "oid": rng.integers(0, 10**9, n)}
            params = {"seed": 1}
            attrs = {"cat_row": {"name": name, "ra": 123.4, "dec": 5.0, "mag": 17.0}, "obs": "DEMO",
                     "download_params": params, "download_params_hash": short_hash(params),
                     "downloaded_at": "2024-01-01T00:00:00+00:00", "altdata": {}}
            write_old_layout_group(f, sanitize_key(name), cols, attrs)
            old[sanitize_key(name)] = (cols, attrs)
    store = RawStore(path)
    new_df = pd.DataFrame({"mjd": [58000.5], "mag": [18.0], "magerr": [0.1], "filter": ["i"],
                           "flag": [0], "oid": [7]})
    store.write_many({"new": (new_df, {"cat_row": {"name": "new"}, "obs": "DEMO"})})
    assert sorted(store.keys()) == sorted([*old, "new"])
    for key, (cols, attrs) in old.items():
        df, got = store.read(key)
        pd.testing.assert_frame_equal(df, pd.DataFrame(cols), check_dtype=False)
        assert {k: got[k] for k in attrs} == attrs
        assert store.index()[key] == {"params_hash": short_hash({"seed": 1}), "n_rows": 40}
    read = {k: (cols, h) for k, cols, h in read_raw_columns(path, [*old, "new", "missing"])}
    raw = {k: cols for k, (cols, _) in read.items()}
    assert raw["missing"] is None and list(raw["new"]["filter"]) == ["i"]
    assert read["new"][1] == short_hash({}) and all(read[k][1] == short_hash({"seed": 1}) for k in old)
    for key, (cols, _) in old.items():
        assert_columns_equal(raw[key], cols)
    many = {k: df for k, df, _ in store.read_many([*old, "new"])}
    pd.testing.assert_frame_equal(many["new"], new_df, check_dtype=False)
    with h5py.File(path, "r") as f:  # new sources keep the per-column layout of the store
        np.testing.assert_array_equal(f["new/mag"][...], [18.0])
        assert list(f["new/filter"].asstr()[...]) == ["i"]


def test_old_layout_reduced_file_is_still_read(tmp_path):
    lcs = make_lcs(seed=2)
    path = tmp_path / "old_reduced.h5"
    with h5py.File(path, "w") as f:
        for lc in lcs:
            write_old_layout_group(f, lc.filekey, lc.column_arrays(LC_COLUMNS), lc.attrs)
        f.attrs["n_lightcurves"] = len(lcs)
    back = {lc.filekey: lc for lc in read_lightcurves(path)}
    lazy = {lc.filekey: lc for lc in read_lightcurves(path, load_data=False)}
    for lc in lcs:
        pd.testing.assert_frame_equal(back[lc.filekey].data, lc.data, check_dtype=False)
        pd.testing.assert_frame_equal(lazy[lc.filekey].data, lc.data, check_dtype=False)
        assert np.isnan(back[lc.filekey].attrs["cat_mag"]) and lazy[lc.filekey].attrs["filter"] == lc.attrs["filter"]


def test_metadata_only_reading_is_lazy(tmp_path):
    lcs = make_lcs(seed=4)
    path = tmp_path / "DEMO_photometry_RA123_reduced.h5"
    write_lightcurves(path, lcs, {"step": "reduce"})
    lazy = read_lightcurves(path, load_data=False)
    assert [lc.filekey for lc in lazy] == [lc.filekey for lc in read_lightcurves(path)]
    assert all(lc._data is None and lc._columns is None for lc in lazy)  # nothing read yet
    by_key = {lc.filekey: lc for lc in lcs}
    for lc in lazy:
        assert lc.attrs["flux_mean"] == by_key[lc.filekey].attrs["flux_mean"]
        pd.testing.assert_frame_equal(lc.data, by_key[lc.filekey].data, check_dtype=False)


def test_corrupt_records_name_file_and_key(tmp_path):
    path = tmp_path / "DEMO_photometry_RA001_reduced.h5"
    write_lightcurves(path, make_lcs(), {"step": "reduce"})
    key = sorted(h5py.File(path, "r"))[1]
    with h5py.File(path, "a") as f:
        f[key].attrs["meta"] = "{not json"
    with pytest.raises(OSError) as err:
        read_lightcurves(path)
    assert str(path) in str(err.value) and repr(key) in str(err.value)
