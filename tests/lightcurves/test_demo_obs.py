"""The simulated DEMO survey and the base observatory's download/reduce logic."""

from __future__ import annotations

import h5py
import numpy as np
import pandas as pd
import pytest

from vo import config as vconfig
from vo.catalog import Catalog
from vo.io import hdf5 as vh5
from vo.lightcurves.datasets import RawPhotometry
from vo.lightcurves.keys import sanitize_key
from vo.lightcurves.observatories import get_observatory
from vo.lightcurves.observatories.base import DownloadError, ParamsMismatchError
from vo.lightcurves.rawstore import RawStore
from vo.lightcurves.observatories.demo import (VirtualDemoObs, event_flux_factor, expected_snr,
                                               magnitude_error, truth_events)
from vo.lightcurves.reduce import STANDARD_COLUMNS, angular_offset_arcsec
from vo.provenance import short_hash


def make_obs(tmp_path=None, **demo) -> VirtualDemoObs:
    overrides = {"DEMO": demo}
    if tmp_path is not None:
        overrides["project"] = {"data_root": str(tmp_path)}
    return VirtualDemoObs.from_config(vconfig.load_config(overrides=overrides))


def cat_row(name="DEMO_J100.5000+20.0000", mag=17.0, ra=100.5, dec=20.0) -> dict:
    return {"name": name, "ra": ra, "dec": dec, "mag": mag}


@pytest.fixture(scope="module")
def targets() -> pd.DataFrame:
    cat = Catalog("demo").load()
    return cat.targets_in_bin(cat.ra_bins()[0]).head(8)


def target_rows(raw: pd.DataFrame, altdata: dict) -> pd.DataFrame:
    return raw.loc[raw["oid"].isin(list(altdata["oid"].values()))]


def test_determinism():
    a, alt_a = make_obs().fetch_data_from_observatory(cat_row())
    b, alt_b = make_obs().fetch_data_from_observatory(cat_row())
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    assert alt_a == alt_b
    c, _ = make_obs(seed=43).fetch_data_from_observatory(cat_row())
    d, _ = make_obs().fetch_data_from_observatory(cat_row(name="another"))
    for other in (c, d):
        assert len(other) != len(a) or not np.allclose(other["mag"], a["mag"])
    assert list(a.columns) == STANDARD_COLUMNS
    assert a["mjd"].is_monotonic_increasing and (a["exptime"] == 30.0).all()


def test_noise_model():
    assert expected_snr(20.5, 20.5) == pytest.approx(5.0)
    err = magnitude_error(np.array([12.0, 16.0, 19.0, 20.5]), 20.5, 0.01)
    assert np.all(np.diff(err) > 0)
    assert err[0] == pytest.approx(0.01, rel=0.05)  # bright: the systematic floor
    assert err[-1] == pytest.approx(np.hypot(2.5 / np.log(10) / 5, 0.01))
    assert magnitude_error(19.0, 20.5, 0.0, sky_scale=2.0) > magnitude_error(19.0, 20.5, 0.0)


def quiet_name(pars: dict, stem: str) -> str:
    """First name ``{stem}``, ``{stem}-1``, ... of a source without an intrinsic event."""
    for k in range(100):
        name = stem if k == 0 else f"{stem}-{k}"
        if not truth_events({"name": name}, pars):
            return name
    raise AssertionError(f"no non-variable source named {stem}*")


def test_scatter_matches_errors_and_truth():
    obs = make_obs(flag_fraction=0.05)
    chi2, dof = 0.0, 0
    for i, mag in enumerate([13.0, 15.5, 17.0, 18.5, 19.5, 20.0]):  # constant sources only
        raw, alt = obs.fetch_data_from_observatory(cat_row(name=quiet_name(obs.pars, f"star{i}"), mag=mag))
        assert alt["truth"]["events"] == []
        good = target_rows(raw, alt).query("flag == 0")
        for filt, part in good.groupby("filter"):
            resid = part["mag"] - part["mag"].mean()
            chi2 += float(((resid / part["magerr"]) ** 2).sum())
            dof += len(part) - 1
            true = alt["true_mag"][filt]
            mean_err = np.sqrt((part["magerr"] ** 2).sum()) / len(part)
            assert abs(part["mag"].mean() - true) < 5 * mean_err
            assert abs(true - mag) < 0.6  # colours are modest
    assert dof > 2000
    assert abs(chi2 / dof - 1) < 4 * np.sqrt(2.0 / dof)  # 4 sigma of the chi2 distribution


def test_flag_and_outlier_fractions():
    obs = make_obs(flag_fraction=0.2, outlier_fraction=0.5, variable_fraction=0.5)
    flagged = total = outliers = 0
    n_variable = 0
    for i in range(6):
        raw, alt = obs.fetch_data_from_observatory(cat_row(name=f"f{i}", mag=16.0))
        own = target_rows(raw, alt)
        events = alt["truth"]["events"]
        n_variable += bool(events)
        true = own["filter"].map(alt["true_mag"]).to_numpy() - 2.5 * np.log10(
            event_flux_factor(events, own["mjd"], own["filter"]))  # true magnitude at each epoch
        dev = np.abs(own["mag"].to_numpy() - true)
        bad = own["flag"].to_numpy() != 0
        flagged += int(bad.sum())
        total += len(own)
        outliers += int((dev[bad] > 0.45).sum())
        assert np.all(dev[~bad] < 6 * own["magerr"].to_numpy()[~bad])  # no outliers among good points
    assert 0 < n_variable < 6  # constant and variable sources both checked
    frac = flagged / total
    assert abs(frac - 0.2) < 4 * np.sqrt(0.2 * 0.8 / total)
    assert abs(outliers / flagged - 0.5) < 4 * np.sqrt(0.25 / flagged)


@pytest.mark.parametrize("demo, n_lcs", [({}, 9), ({"n_seasons": 2, "filters": ["g", "r"]}, 4),
                                         ({"n_seasons": 4, "filters": ["r"]}, 4)])
def test_seasons_give_one_lightcurve_per_season_and_filter(targets, demo, n_lcs):
    obs = make_obs(**demo)
    for row in targets.head(4).to_dict("records"):
        raw, alt = obs.fetch_data_from_observatory(row)
        lcs = obs.reduce(raw, cat_row=row)
        assert len(lcs) == n_lcs, row["name"]
        seasons = sorted({(lc.attrs["season"], lc.attrs["filter"]) for lc in lcs})
        assert len(seasons) == n_lcs
        for lc in lcs:
            assert abs(lc.attrs["mag_mean"] - alt["true_mag"][lc.attrs["filter"]]) < 0.05


def test_neighbours_are_outside_the_radius_and_cut():
    obs = make_obs()
    for i in range(40):
        row = cat_row(name=f"crowded{i}")
        raw, alt = obs.fetch_data_from_observatory(row)
        if alt["neighbours"]:
            break
    else:
        pytest.fail("no neighbour among 40 sources")
    n_oids = set(alt["neighbours"][0]["oid"].values())
    theirs = raw.loc[raw["oid"].isin(n_oids)]
    assert len(theirs) > 50
    off = angular_offset_arcsec(theirs["ra"], theirs["dec"], row["ra"], row["dec"])
    assert off.min() > 3.0
    lcs = obs.reduce(raw, cat_row=row)
    assert not any(set(lc.data["oid"]) & n_oids for lc in lcs)
    wide = make_obs(reducer={"radius": 30.0, "mag_range": None})
    assert any(set(lc.data["oid"]) & n_oids for lc in wide.reduce(raw, cat_row=row))


def test_download_all_sources_store_skip_and_redownload(tmp_path, targets):
    obs = make_obs(tmp_path, download={"batch_size": 3})
    store = tmp_path / "DEMO" / "DEMO_photometry_RA028.h5"
    manifest = obs.download_all_sources(targets, store)
    names = list(targets["name"])
    assert [s["status"] for s in manifest["sources"]] == ["downloaded"] * len(names)
    assert manifest["download_params_hash"] == short_hash(manifest["download_params"])
    assert "reducer" not in manifest["download_params"] and manifest["download_params"]["exptime"] == 30.0
    with h5py.File(store, "r") as f:
        assert sorted(f) == sorted(sanitize_key(n) for n in names)
        grp = f[sanitize_key(names[0])]
        attrs = vh5.read_attrs(grp)
        assert attrs["cat_row"]["name"] == names[0] and attrs["obs"] == "DEMO"
        assert attrs["download_params_hash"] == manifest["download_params_hash"]
        assert attrs["altdata"]["simulated"] and "downloaded_at" in attrs
        assert grp["mag"].shape[0] == manifest["sources"][0]["n_rows"] > 100
    again = obs.download_all_sources(targets, store)
    assert {s["status"] for s in again["sources"]} == {"skipped"}
    assert [s["n_rows"] for s in again["sources"]] == [s["n_rows"] for s in manifest["sources"]]
    # a non-critical parameter does not trigger a download; a critical one does
    same = make_obs(tmp_path, download={"batch_size": 1, "num_threads_download": 2})
    assert {s["status"] for s in same.download_all_sources(targets, store)["sources"]} == {"skipped"}
    longer = make_obs(tmp_path, exptime=60.0)
    redone = longer.download_all_sources(targets, store)
    assert {s["status"] for s in redone["sources"]} == {"downloaded"}
    with h5py.File(store, "r") as f:
        raw, attrs = vh5.read_table(f[sanitize_key(names[1])])
    assert (raw["exptime"] == 60.0).all() and attrs["download_params"]["exptime"] == 60.0
    forced = longer.download_all_sources(targets.head(2), store, redownload=True)
    assert {s["status"] for s in forced["sources"]} == {"downloaded"}


def test_threads_give_the_same_data(tmp_path, targets):
    serial = make_obs(tmp_path / "a").download_all_sources(targets, tmp_path / "a.h5")
    threaded = make_obs(tmp_path / "b", download={"num_threads_download": 3, "batch_size": 2}) \
        .download_all_sources(targets, tmp_path / "b.h5")
    assert [s["n_rows"] for s in serial["sources"]] == [s["n_rows"] for s in threaded["sources"]]
    with h5py.File(tmp_path / "a.h5") as fa, h5py.File(tmp_path / "b.h5") as fb:
        for key in fa:
            np.testing.assert_array_equal(fa[key]["mag"][...], fb[key]["mag"][...])


class FailingObs(VirtualDemoObs):
    fail = ()

    def fetch_data_from_observatory(self, cat_row):
        if cat_row["name"] in self.fail:
            raise ConnectionError(f"server said no to {cat_row['name']}")
        return super().fetch_data_from_observatory(cat_row)


def test_failing_source_stores_the_others_and_raises(tmp_path, targets):
    obs = FailingObs(make_obs().pars)
    bad = targets["name"].iloc[2]
    obs.fail = (bad,)
    store = tmp_path / "s.h5"
    with pytest.raises(RuntimeError) as err:
        obs.download_all_sources(targets, store)
    assert bad in str(err.value) and "server said no" in str(err.value)
    manifest = err.value.manifest
    assert isinstance(err.value, DownloadError)
    assert [s["status"] for s in manifest["sources"]].count("failed") == 1
    with h5py.File(store) as f:
        assert sorted(f) == sorted(sanitize_key(n) for n in targets["name"] if n != bad)
    obs.fail = ()
    retry = obs.download_all_sources(targets, store)  # only the failed one is fetched again
    statuses = {s["name"]: s["status"] for s in retry["sources"]}
    assert statuses[bad] == "downloaded" and list(statuses.values()).count("skipped") == len(targets) - 1


class KilledObs(VirtualDemoObs):
    kill_at = None

    def fetch_data_from_observatory(self, cat_row):
        if cat_row["name"] == self.kill_at:
            raise KeyboardInterrupt("killed")  # not an Exception: stops the download like a kill
        return super().fetch_data_from_observatory(cat_row)


def test_interrupted_download_keeps_flushed_batches(tmp_path, targets):
    obs = KilledObs(make_obs(download={"batch_size": 2}).pars)
    obs.kill_at = targets["name"].iloc[5]
    store = tmp_path / "s.h5"
    with pytest.raises(KeyboardInterrupt):
        obs.download_all_sources(targets, store)
    with h5py.File(store) as f:  # batches [0, 1] and [2, 3] were flushed; [4, 5] was lost
        assert sorted(f) == sorted(sanitize_key(n) for n in targets["name"].iloc[:4])


def test_reduce_raw_photometry_and_store(tmp_path, targets):
    obs = get_observatory("DEMO", vconfig.load_config(overrides={"project": {"data_root": str(tmp_path)}}))
    store = tmp_path / "s.h5"
    obs.download_all_sources(targets.head(3), store)
    sources = obs.populate_sources(store)
    assert len(sources) == 3 and all(isinstance(s, RawPhotometry) for s in sources)
    first = next(s for s in sources if s.filekey == sanitize_key(targets["name"].iloc[0]))
    lcs = obs.reduce(first, to="lcs")  # cat_row from the stored attributes
    assert len(lcs) == 9 and lcs[0].attrs["source_name"] == targets["name"].iloc[0]
    # a bare DataFrame: the target is placed on its own data (no catalog magnitude)
    bare = obs.reduce(first.data)
    assert [len(lc) for lc in bare] == [len(lc) for lc in lcs]
    assert bare[0].attrs["source_name"].startswith("DEMO_") and np.isnan(bare[0].attrs["cat_mag"])
    with pytest.raises(ValueError, match="give cat_row"):
        obs.reduce(first.data.assign(mag=np.nan))
    with pytest.raises(ValueError, match="only 'lcs'"):
        obs.reduce(first, to="images")
    with pytest.warns(UserWarning, match="1 targets have no raw photometry"):
        all_lcs = obs.reduce_store(store, targets.head(4))
    assert len(all_lcs) == 27
    assert {lc.attrs["source_name"] for lc in all_lcs} == set(targets["name"].iloc[:3])
    assert len({lc.filekey for lc in all_lcs}) == 27


def test_hostile_source_names_keep_their_own_data(tmp_path, targets):
    """Source keys are one to one and reversible: ``a/b`` and ``a_b`` (and ``a b``, ``a~b``,
    non-ASCII, dots) each get their own group with their own star's photometry."""
    from vo.lightcurves.keys import unsanitize_key

    hostile = ["a/b", "a_b", "a b", "a~b", "a~2Fb", "Ωmega cen", "..", "../etc", "x.y+z-1"]
    keys = [sanitize_key(n) for n in hostile]
    assert len(set(keys)) == len(hostile)
    assert [unsanitize_key(k) for k in keys] == hostile
    assert all("/" not in k and k not in (".", "..") for k in keys)
    t = pd.concat([targets] * 2, ignore_index=True).head(len(hostile)).copy()
    t["name"] = hostile
    t["ra"] = t["ra"].to_numpy() + 0.01 * np.arange(len(t))  # distinct stars
    store = tmp_path / "hostile.h5"
    obs = make_obs()
    manifest = obs.download_all_sources(t, store)
    assert [s["status"] for s in manifest["sources"]] == ["downloaded"] * len(hostile)
    with h5py.File(store) as f:
        assert sorted(f) == sorted(keys)
        for name, ra in zip(t["name"], t["ra"]):
            _, attrs = vh5.read_table(f[sanitize_key(name)])
            assert attrs["cat_row"]["name"] == name and attrs["cat_row"]["ra"] == pytest.approx(ra)


def test_shared_raw_store_never_mixes_download_parameters(tmp_path, targets):
    """Two projects share one raw store with different download parameters (the DEMO seed):
    reducing never reads the other project's entries silently; the download re-downloads them
    or, with on_params_change: fail, stops naming both parameter sets."""
    store = tmp_path / "shared.h5"
    first, second = make_obs(tmp_path, seed=1), make_obs(tmp_path, seed=2)
    few = targets.head(3)
    first.download_all_sources(few, store)
    assert len(first.reduce_store(store, few)) == 27
    with pytest.raises(ParamsMismatchError, match=r"3 source\(s\) .* other download parameters.*'seed': 1.*'seed': 2"):
        second.reduce_store(store, few)
    strict = make_obs(tmp_path, seed=2, download={"on_params_change": "fail"})
    with pytest.raises(ParamsMismatchError, match="on_params_change: redownload"):
        strict.download_all_sources(few, store)
    assert RawStore(store).attrs(sanitize_key(few["name"].iloc[0]))["download_params"]["seed"] == 1  # untouched
    manifest = second.download_all_sources(few, store)                    # the default: download again
    assert [e["status"] for e in manifest["sources"]] == ["downloaded"] * 3
    lcs = second.reduce_store(store, few)
    assert len(lcs) == 27
    with pytest.raises(ParamsMismatchError):
        first.reduce_store(store, few)


def test_pars_attribute_access_as_virtualobserver():
    """``obs.pars.reducer = {...}`` updates (other keys stay); download keys read and write at
    the top; the section stays the config's own dict (its provenance follows)."""
    cfg = vconfig.load_config()
    obs = get_observatory("DEMO", cfg)
    obs.pars.reducer = {"gap": 60.0}
    assert cfg["DEMO"]["reducer"]["gap"] == 60.0 and cfg["DEMO"]["reducer"]["radius"] == 3.0
    obs.pars.num_threads_download = 3
    assert obs.pars.num_threads_download == 3 and cfg["DEMO"]["download"]["num_threads_download"] == 3
    assert obs.pars.reducer.radius == 3.0 and dict(obs.pars)["seed"] == cfg["DEMO"]["seed"]
    with pytest.raises(AttributeError, match="no 'nosuch'"):
        obs.pars.nosuch
