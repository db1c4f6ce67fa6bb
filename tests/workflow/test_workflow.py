"""The Snakemake workflow end to end on the demo survey (a few RA bins, offline, SQLite)."""

import json
import os
import re
import sqlite3
import subprocess
import sys

import h5py
import pytest
import xarray as xr
import yaml

from workflow_helpers import REPO, job_counts, smk

from vo.lightcurves.datasets import INDEX_KEY

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    cfgfile = root / "test.yaml"
    cfgfile.write_text(yaml.safe_dump({
        "project": {"name": "WFTEST"},
        "images": {"enabled": False},
        "catalog": {"max_targets": 40},
        "DEMO": {"n_seasons": 2, "epochs_per_season": 40},
    }))
    first = smk(["--cores", "2", "--configfile", str(cfgfile)], root)
    return root, cfgfile, first


def test_demo_run_products(run):
    root, cfgfile, _ = run
    proj = root / "WFTEST"
    prov = yaml.safe_load((proj / "provenance.yaml").read_text())
    assert {"targets", "download.DEMO", "reduce.DEMO", "analysis.DEMO"} <= set(prov["steps"])
    assert list(proj.glob("00_config_*.yaml"))
    reduced = sorted(proj.glob(f"reduce-{prov['steps']['reduce.DEMO']['hash']}/*_reduced.h5"))
    assert reduced
    with h5py.File(reduced[0]) as f:
        keys = [k for k in f if k != INDEX_KEY]
        assert keys and all(re.search(r"_reduction_\d\d_of_\d\d$", k) for k in keys)
        assert sorted(k.decode() for k in f[INDEX_KEY]["filekey"]) == sorted(keys)
        assert f.attrs["provenance_hash"] == prov["steps"]["reduce.DEMO"]["hash"]
    a_dir = proj / f"analysis-{prov['steps']['analysis.DEMO']['hash']}"
    n_real = n_sim = 0
    for a in a_dir.glob("*_analysis.h5"):
        with h5py.File(a) as f:
            sim = f["detections/simulated"][...]
            n_sim += int(sim.sum())
            n_real += int((~sim.astype(bool)).sum())
    assert n_sim > 0, "the simulator injected events that the finder recovered"
    comb = xr.open_dataset(next(proj.glob("combine-*/DEMO_histograms.nc")))
    assert float(comb[list(comb.data_vars)[0]].sum()) > 0
    con = sqlite3.connect(root / "vo.sqlite")
    n = {t: con.execute(f"select count(*) from {t}").fetchone()[0]
         for t in ("provenances", "sources", "raw_photometry", "lightcurves", "detections")}
    assert all(v > 0 for v in n.values()), n
    receipts = [json.loads(p.read_text()) for p in proj.glob("ingest-*/*_ingest.json")]
    assert receipts


def test_second_run_has_nothing_to_do(run):
    root, cfgfile, _ = run
    out = smk(["-n", "--configfile", str(cfgfile)], root)
    assert "Nothing to be done" in out.stdout + out.stderr


def test_changing_an_analysis_parameter_reruns_only_analysis_and_after(run):
    root, cfgfile, _ = run
    old = sorted(p.name for p in (root / "WFTEST").glob("analysis-*"))
    changed = root / "changed.yaml"
    changed.write_text(yaml.safe_dump({"analysis": {"snr_threshold": 6.0}}))
    out = smk(["-n", "--configfile", str(cfgfile), str(changed)], root)
    counts = job_counts(out.stdout + out.stderr)
    assert counts, out.stdout
    assert set(counts) <= {"all", "analysis", "combine", "plots", "ingest", "run_config", "benchmark_table"}, counts
    assert "analysis" in counts and "reduce" not in counts and "download" not in counts
    smk(["--cores", "2", "--configfile", str(cfgfile), str(changed)], root)
    new = sorted(p.name for p in (root / "WFTEST").glob("analysis-*"))
    assert set(old) < set(new), "old results stay in their old folder; new ones in a new folder"


def test_rule_script_runs_standalone(run, tmp_path):
    root, cfgfile, _ = run
    env = dict(os.environ, VO_DATA=str(root))
    help_out = subprocess.run([sys.executable, str(REPO / "scripts" / "reduce.py"), "--help"],
                              capture_output=True, text=True, env=env, check=True).stdout
    assert "--ra-bin" in help_out and "--obs" in help_out
    manifest = next((root / "WFTEST").glob("download-*/DEMO_RA*_manifest.json"))
    ra_bin = int(re.search(r"RA(\d{3})", manifest.name).group(1))
    reduced = next((root / "WFTEST").glob(f"reduce-*/DEMO_photometry_RA{ra_bin:03d}_reduced.h5"))
    before = {}
    with h5py.File(reduced) as f:
        before = {k: f[k]["flux"][...] for k in f if k != INDEX_KEY}
    reduced.unlink()
    subprocess.run([sys.executable, str(REPO / "scripts" / "reduce.py"), "--configfile", str(cfgfile),
                    "--obs", "DEMO", "--ra-bin", str(ra_bin)], env=env, check=True, capture_output=True)
    with h5py.File(reduced) as f:
        assert set(f) == set(before) | {INDEX_KEY}
        for k in before:
            assert (f[k]["flux"][...] == before[k]).all()


def test_report_has_detection_plots_and_efficiency_table(run, tmp_path):
    root, cfgfile, _ = run
    report = tmp_path / "report.html"
    smk(["--configfile", str(cfgfile), "--report", str(report)], root)
    text = report.read_text(errors="replace")
    assert "DEMO_detections.png" in text
    assert "DEMO_detections_efficiency.html" in text


def test_combined_histograms_equal_one_run_over_all_bins(run):
    """Additivity: the combine rule's sum over RA bins equals analysing every bin at once."""
    import numpy as np

    from vo import config as vconfig
    from vo.lightcurves.analysis import analyse_lightcurves
    from vo.lightcurves.datasets import read_lightcurves
    from vo.lightcurves.histograms import read_netcdf
    from vo.paths import Paths

    root, cfgfile, _ = run
    cfg = vconfig.deep_merge(vconfig.load_config(), yaml.safe_load(cfgfile.read_text()))
    P = Paths(vconfig.deep_merge(cfg, {"project": {"data_root": str(root)}}))
    lcs = []
    for f in sorted(P.step_dir("reduce", "DEMO").glob("*_reduced.h5")):
        lcs += read_lightcurves(f)
    whole = analyse_lightcurves(lcs, cfg, "DEMO").histograms
    combined = read_netcdf(P.product("combine", "DEMO"))
    assert set(whole.data_vars) == set(combined.data_vars)
    for name in whole.data_vars:
        a, b = whole[name], combined[name].reindex_like(whole[name])
        np.testing.assert_array_equal(a.values, b.values, err_msg=name)
    assert float(whole["all_snr"].sum()) > float(whole["good_snr"].sum()) > 0


def test_vo_populate_rebuilds_the_database(run, tmp_path):
    root, cfgfile, _ = run
    db = root / "vo.sqlite"
    tables = ("provenances", "sources", "raw_photometry", "lightcurves", "detections")

    def counts(path):
        con = sqlite3.connect(path)
        try:
            return {t: con.execute(f"select count(*) from {t}").fetchone()[0] for t in tables}
        finally:
            con.close()

    before = counts(db)
    rebuilt = tmp_path / "rebuilt.sqlite"
    env = dict(os.environ, VO_DATA=str(root), VO_DB_URL=f"sqlite:///{rebuilt}")
    subprocess.run([sys.executable, "-m", "vo.cli", "populate", "--configfile", str(cfgfile)],
                   env=env, check=True, capture_output=True, cwd=REPO)
    after = counts(rebuilt)
    assert after["sources"] == before["sources"] and after["lightcurves"] >= before["lightcurves"] > 0
    assert after["detections"] >= before["detections"] > 0
