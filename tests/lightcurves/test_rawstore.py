"""Raw store and datasets: copy-on-write HDF5 groups, concurrency, kills, light-curve files."""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import matplotlib
import numpy as np
import pandas as pd
import pytest

from vo.io import hdf5 as vh5
from vo.lightcurves.datasets import (INDEX_KEY, Lightcurve, RawPhotometry, read_lightcurve_index, read_lightcurves,
                                    write_lightcurves)
from vo.lightcurves.rawstore import RawStore, StoreError, update_hdf5
from vo.provenance import short_hash
from testdata import REPO

matplotlib.use("Agg")


def raw_table(n=50, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"mjd": np.sort(rng.uniform(58000, 59000, n)), "mag": rng.normal(18, 0.1, n),
                         "magerr": np.full(n, 0.1), "filter": rng.choice(["g", "r"], n),
                         "flag": rng.integers(0, 2, n), "oid": np.full(n, 7, dtype=np.int64)})


def attrs_for(name, params=None) -> dict:
    params = params or {"seed": 1}
    return {"cat_row": {"name": name, "ra": 123.4, "dec": -5.0, "mag": np.nan}, "obs": "DEMO",
            "download_params": params, "altdata": {"note": "x"}}


def temp_files(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if ".tmp" in p.name]


def test_write_read_has_and_plain_h5py(tmp_path):
    path = tmp_path / "DEMO" / "DEMO_photometry_RA123.h5"
    store = RawStore(path)
    assert store.keys() == [] and not store.has("a")
    tables = {k: raw_table(seed=i) for i, k in enumerate(["a", "b+1", "c-2"])}
    store.write_many({k: (df, attrs_for(k)) for k, df in tables.items()})
    assert sorted(store.keys()) == sorted(tables)
    for key, df in tables.items():
        back, attrs = store.read(key)
        pd.testing.assert_frame_equal(back, df, check_dtype=False)
        assert attrs["cat_row"]["name"] == key and np.isnan(attrs["cat_row"]["mag"])
        assert attrs["download_params_hash"] == short_hash({"seed": 1})
        assert attrs["obs"] == "DEMO" and attrs["altdata"] == {"note": "x"} and attrs["downloaded_at"]
    assert store.has("a", short_hash({"seed": 1})) and not store.has("a", short_hash({"seed": 2}))
    with h5py.File(path, "r") as f:  # the file is plain HDF5
        assert f["a"].attrs["download_params_hash"] == short_hash({"seed": 1})
        np.testing.assert_array_equal(f["a/mag"][...], tables["a"]["mag"])
    assert store.index()["b+1"] == {"params_hash": short_hash({"seed": 1}), "n_rows": 50}
    assert not temp_files(path.parent)


def test_replace_keeps_others_and_file_compact(tmp_path):
    store = RawStore(tmp_path / "s.h5")
    store.write_many({f"s{i}": (raw_table(2000, i), attrs_for(f"s{i}")) for i in range(5)})
    size = store.path.stat().st_size
    for rep in range(5):
        store.write_many({"s0": (raw_table(2000, 100 + rep), attrs_for("s0", {"seed": rep}))})
    assert store.path.stat().st_size < 1.1 * size  # replaced groups leave no dead space
    back, attrs = store.read("s0")
    pd.testing.assert_frame_equal(back, raw_table(2000, 104), check_dtype=False)
    assert attrs["download_params"] == {"seed": 4}
    pd.testing.assert_frame_equal(store.read("s3")[0], raw_table(2000, 3), check_dtype=False)
    store.delete(["s1"])
    assert sorted(store.keys()) == ["s0", "s2", "s3", "s4"]


def test_failed_write_leaves_previous_file(tmp_path):
    store = RawStore(tmp_path / "s.h5")
    store.write_many({"a": (raw_table(), attrs_for("a"))})
    before = store.path.read_bytes()
    with pytest.raises(RuntimeError):
        with update_hdf5(store.path, replace=["a"]) as f:
            vh5.write_table(f, "b", raw_table())
            raise RuntimeError("boom")  # the block fails half way through an update
    assert store.path.read_bytes() == before
    assert not temp_files(tmp_path)


def test_corrupt_group_and_file_errors_name_file_and_key(tmp_path):
    store = RawStore(tmp_path / "s.h5")
    store.write_many({"good": (raw_table(), attrs_for("good")), "bad": (raw_table(), attrs_for("bad"))})
    with h5py.File(store.path, "a") as f:
        del f["bad/mag"]  # the group lists a column that is gone
    with pytest.raises(StoreError) as err:
        store.read("bad")
    assert str(store.path) in str(err.value) and "'bad'" in str(err.value)
    assert len(store.read("good")[0]) == 50
    with pytest.raises(KeyError, match="nope"):
        store.read("nope")
    junk = RawStore(tmp_path / "junk.h5")
    junk.path.write_bytes(b"not an hdf5 file at all" * 100)
    with pytest.raises(StoreError, match="junk.h5"):
        junk.keys()


def _add_sources(path, worker):
    store = RawStore(path)
    for i in range(10):
        key = f"w{worker}_s{i}"
        store.write_many({key: (raw_table(30, worker * 100 + i), attrs_for(key))})


def test_concurrent_writers_lose_nothing(tmp_path):
    path = tmp_path / "DEMO_photometry_RA001.h5"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_add_sources, args=(path, w)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    store = RawStore(path)
    assert sorted(store.keys()) == sorted(f"w{w}_s{i}" for w in range(4) for i in range(10))
    pd.testing.assert_frame_equal(store.read("w3_s9")[0], raw_table(30, 309), check_dtype=False)
    assert not temp_files(tmp_path)


CHILD = textwrap.dedent("""
    import sys
    import numpy as np, pandas as pd
    from vo.lightcurves.rawstore import RawStore
    store = RawStore(sys.argv[1])
    run = sys.argv[2]
    rng = np.random.default_rng(int(run))
    for batch in range(10_000):
        keys = [f"r{run}_b{batch}_{j}" for j in range(3)]
        items = {k: (pd.DataFrame({"mjd": rng.uniform(0, 1, 300), "mag": rng.normal(18, 1, 300)}),
                     {"cat_row": {"name": k}, "download_params": {"run": run}}) for k in keys}
        store.write_many(items)
        print(" ".join(keys), flush=True)
""")


def test_kill_at_random_moments_loses_nothing_returned(tmp_path):
    path = tmp_path / "DEMO_photometry_RA200.h5"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    rnd = random.Random(7)
    confirmed = set()
    for run in range(6):
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(path), str(run)],
                                 stdout=subprocess.PIPE, text=True, env=env)
        first = child.stdout.readline()  # the child is writing now
        assert first, "child wrote nothing"
        time.sleep(rnd.uniform(0.0, 0.4))
        child.send_signal(signal.SIGKILL)
        out, _ = child.communicate()
        assert child.returncode == -signal.SIGKILL
        complete_lines = [first] + out.split("\n")[:-1]  # a line cut by the kill is not confirmed
        for line in complete_lines:
            confirmed.update(line.split())
        store = RawStore(path)
        keys = set(store.keys())  # always opens
        assert confirmed <= keys, f"run {run}: lost {sorted(confirmed - keys)[:5]}"
        for key in keys:
            assert len(store.read(key)[0]) == 300
    # the next writer cleans up temp files of killed writers
    store.write_many({"last": (raw_table(), attrs_for("last"))})
    assert not temp_files(tmp_path)


# -- datasets ------------------------------------------------------------------------------
def make_lc(name="DEMO_J1", number=1, total=2, n=20, **more) -> Lightcurve:
    rng = np.random.default_rng(number)
    data = pd.DataFrame({"mjd": np.arange(n, dtype=float), "flux": rng.normal(100, 5, n),
                         "fluxerr": np.full(n, 5.0), "filter": "g"})
    return Lightcurve(data=data, attrs={"source_name": name, "obs": "DEMO", "filter": "g",
                                        "reduction_number": number, "reduction_total": total,
                                        "flux_mean": 100.0, **more})


def test_write_and_read_lightcurves(tmp_path):
    path = tmp_path / "DEMO_photometry_RA123_reduced.h5"
    lcs = [make_lc("DEMO_J1", 1, 2), make_lc("DEMO_J1", 2, 2), make_lc("DEMO J/2", 1, 1)]
    write_lightcurves(path, lcs, {"step": "reduce", "provenance_hash": "abc", "parameters": {"gap": 40}})
    keys = ["DEMO_J1_reduction_01_of_02", "DEMO_J1_reduction_02_of_02", "DEMO~20J~2F2_reduction_01_of_01"]
    with h5py.File(path, "r") as f:
        assert sorted(f) == [INDEX_KEY] + keys
        assert vh5.read_attrs(f)["parameters"] == {"gap": 40} and f.attrs["n_lightcurves"] == 3
        assert f["DEMO_J1_reduction_02_of_02"].attrs["reduction_number"] == 2
    # the index: one row per light curve, missing attributes as -1 / NaN
    index = read_lightcurve_index(path)
    assert index["filekey"].tolist() == [lc.filekey for lc in lcs] and sorted(index["filekey"]) == keys
    assert index["source_name"].tolist() == ["DEMO_J1", "DEMO_J1", "DEMO J/2"]
    assert index["reduction_number"].tolist() == [1, 2, 1] and index["reduction_total"].tolist() == [2, 2, 1]
    assert index["flux_mean"].tolist() == [100.0] * 3 and np.isnan(index["mag_mean"]).all()
    assert index["season"].tolist() == [-1] * 3 and index["obs"].tolist() == ["DEMO"] * 3
    with h5py.File(path, "a") as f:  # a file without an index (written before there was one)
        del f[INDEX_KEY]
    rebuilt = read_lightcurve_index(path)
    order = np.argsort(rebuilt["filekey"])
    for c, v in index.items():
        np.testing.assert_array_equal(rebuilt[c][order], v[np.argsort(index["filekey"])], err_msg=c)
    with pytest.raises(ValueError, match="DEMO_J1_reduction_01_of_02.*season = 'spring' is not an integer"):
        write_lightcurves(path, [make_lc("DEMO_J1", 1, 2, season="spring")])
    back = {lc.filekey: lc for lc in read_lightcurves(path)}
    for lc in lcs:
        other = back[lc.filekey]
        pd.testing.assert_frame_equal(other.data, lc.data, check_dtype=False)
        assert other.attrs == lc.attrs
        assert other.get_fullname() == path and lc.get_fullname() == path
    # writing again replaces the whole file
    write_lightcurves(path, lcs[:1], {"step": "reduce"})
    assert [lc.filekey for lc in read_lightcurves(path)] == [lcs[0].filekey]
    write_lightcurves(path, [], {"step": "reduce"})  # a bin without light curves
    assert read_lightcurves(path) == [] and h5py.File(path).attrs["n_lightcurves"] == 0
    assert {c: v.size for c, v in read_lightcurve_index(path).items()} == {c: 0 for c in index}
    with pytest.raises(ValueError, match="two light curves"):
        write_lightcurves(path, [lcs[0], lcs[0]])
    junk = tmp_path / "junk_reduced.h5"
    junk.write_bytes(b"junk" * 100)
    with pytest.raises(OSError, match="junk_reduced.h5"):
        read_lightcurves(junk)


def test_lightcurve_save_load_lazy_and_plot(tmp_path):
    path = tmp_path / "lc.h5"
    a, b = make_lc(number=1), make_lc(number=2)
    a.save(path)
    b.save(path)
    a.data = a.data.assign(flux=1.0)
    a.save()  # replaces its own group, keeps b
    lazy = Lightcurve(filename="lc.h5", folder=str(tmp_path), filekey=b.filekey)
    pd.testing.assert_frame_equal(lazy.data, b.data, check_dtype=False)  # lazy load
    assert lazy.attrs["reduction_number"] == 2
    assert (Lightcurve(filename=str(path), filekey=a.filekey).data["flux"] == 1.0).all()
    ax = lazy.plot()
    assert len(ax.lines) + len(ax.collections) > 0 and ax.get_ylabel() == "flux (uJy)"
    with pytest.raises(KeyError, match="nope"):
        Lightcurve(filename=str(path), filekey="nope").load()


def test_raw_photometry_save_load_and_for_source(tmp_path, monkeypatch):
    from vo import config as vconfig

    monkeypatch.delenv("VO_DATA", raising=False)
    cfg = vconfig.load_config(overrides={"project": {"data_root": str(tmp_path)}})
    raw = RawPhotometry.for_source(cfg, "demo", {"name": "DEMO J123.4+5", "ra": 123.4, "dec": 5.0},
                                   data=raw_table(), attrs={"download_params": {"seed": 1}})
    assert raw.filekey == "DEMO~20J123.4+5"  # the space escaped (one to one)
    path = raw.save()
    assert path == tmp_path / "DEMO" / "DEMO_photometry_RA123.h5"
    again = RawPhotometry(filename=raw.filename, folder=raw.folder, filekey=raw.filekey)
    pd.testing.assert_frame_equal(again.data, raw_table(), check_dtype=False)
    assert again.attrs["download_params_hash"] == short_hash({"seed": 1})
    ax = again.plot()
    assert ax.yaxis_inverted()


def test_a_handed_over_file_loads_without_a_key_and_deletes_one_source(tmp_path):
    """virtualobserver's ``RawPhotometry(filename=...)`` of a file with one source reads it;
    ``delete_data_from_disk`` removes exactly its own source."""
    one = tmp_path / "my_raw_data.h5"
    RawStore(one).write_many({"J1": (raw_table(), attrs_for("J1"))})
    data = RawPhotometry(filename=str(one))
    data.load()
    assert data.filekey == "J1" and data.attrs["cat_row"]["name"] == "J1"
    pd.testing.assert_frame_equal(data.data, raw_table(), check_dtype=False)
    two = tmp_path / "two.h5"
    RawStore(two).write_many({k: (raw_table(seed=i), attrs_for(k)) for i, k in enumerate(["J1", "J2"])})
    with pytest.raises(ValueError, match=r"two.h5: give filekey, the file holds 2 datasets \('J1', 'J2'\)"):
        RawPhotometry(filename=str(two)).load()
    RawPhotometry(filename=str(two), filekey="J1").delete_data_from_disk()
    assert RawStore(two).keys() == ["J2"]
    pd.testing.assert_frame_equal(RawStore(two).read("J2")[0], raw_table(seed=1), check_dtype=False)
    assert not temp_files(tmp_path)


def test_lightcurve_save_and_delete_keep_the_index_true(tmp_path):
    path = tmp_path / "DEMO_photometry_RA123_reduced.h5"
    lcs = [make_lc("DEMO_J1", 1, 2), make_lc("DEMO_J1", 2, 2)]
    write_lightcurves(path, lcs, {"step": "reduce"})
    extra = make_lc("DEMO_J9", 1, 1, season=4)
    extra.save(path)
    index = read_lightcurve_index(path)
    assert sorted(index["filekey"]) == sorted([lc.filekey for lc in lcs] + [extra.filekey])
    assert dict(zip(index["filekey"], index["season"]))[extra.filekey] == 4
    assert h5py.File(path).attrs["n_lightcurves"] == 3 and h5py.File(path).attrs["step"] == "reduce"
    lcs[0].delete_data_from_disk()
    assert sorted(read_lightcurve_index(path)["filekey"]) == sorted([lcs[1].filekey, extra.filekey])
    assert sorted(lc.filekey for lc in read_lightcurves(path)) == sorted([lcs[1].filekey, extra.filekey])
    with pytest.raises(ValueError, match="give save\\(\\) a path"):
        make_lc("DEMO_J5").save()
