"""``vo status`` on a real small run: products per step and hash from the files and the database."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from astropy.io import fits

from vo import config as vconfig
from vo.pipeline import status as vstatus
from vo.db.engine import get_engine
from vo.paths import Paths
from workflow_helpers import REPO, smk

pytestmark = pytest.mark.slow


def load_cfg(root: Path, cfgfile: Path, **overrides) -> dict:
    cfg = vconfig.deep_merge(yaml.safe_load(cfgfile.read_text()), overrides)
    return vconfig.complete(vconfig.deep_merge(cfg, {"project": {"data_root": str(root)}}))


def by_step(rows):
    return {(r.step, r.hash): r for r in rows}


def sqlite_engine(root: Path):
    return get_engine(f"sqlite:///{root / 'vo.sqlite'}")


def copy_run(small_run, tmp_path) -> tuple[Path, Path]:
    root, cfgfile = small_run
    shutil.copytree(root, tmp_path / "run")
    return tmp_path / "run", tmp_path / "run" / cfgfile.name


def test_finished_run_has_every_product_and_its_database_rows(small_run):
    root, cfgfile = small_run
    cfg = load_cfg(root, cfgfile)
    P = Paths(cfg)
    eng = sqlite_engine(root)
    rows = vstatus.status(cfg, eng)
    eng.dispose()
    current = [r for r in rows if r.current]
    steps = {r.step for r in current}
    assert {"targets", "download", "reduce", "analysis", "combine", "ingest", "calibration", "preprocessing",
            "extraction", "astrometry", "zero_point", "ingest_images"} <= steps, steps
    for r in current:
        assert r.expected > 0 and r.counts["done"] == r.expected, (r.step, r.counts, r.problems)
        assert r.files_on_disk == r.expected, (r.step, r.files_on_disk, r.expected)
        assert r.hash == P.step_hash(r.step, r.obs or None)
    s = by_step(rows)
    pre = s[("preprocessing", P.step_hash("preprocessing", "DEMOCAM"))]
    assert pre.expected == 2 and pre.db_rows["images"] == [2, 0]  # two exposures of one CCD
    ext = s[("extraction", P.step_hash("extraction", "DEMOCAM"))]
    assert ext.expected == 6 and ext.db_rows["source_lists"][0] == 2  # sources, PSF, background each
    red = s[("reduce", P.step_hash("reduce", "DEMO"))]
    with sqlite_engine(root).connect() as conn:
        n_lcs = conn.exec_driver_sql("select count(*) from lightcurves").scalar()
    assert red.db_rows["lightcurves"] == [n_lcs, 0] and n_lcs > 0
    assert not [r for r in rows if not r.current], "one config, no other hashes"


def test_jobs_match_the_workflow_logs(small_run):
    """The status's job list is the Snakefile's: each job's log exists, and every rule log on disk
    (the raw data's simulation, the run config and the benchmark table aside) belongs to one of its jobs."""
    root, cfgfile = small_run
    cfg = load_cfg(root, cfgfile)
    P = Paths(cfg)
    logs = set()
    for job in vstatus.jobs(cfg, P):
        step = vstatus._step_of(P, job.outputs[0])
        obs = vstatus._scope(step, job, cfg)
        logs.add(vstatus.job_log(P, job, P.step_suffix(step, obs or None)))
    assert all(p.exists() for p in logs), sorted(p for p in logs if not p.exists())[:5]
    on_disk = {p for p in (P.project_dir / "logs").rglob("*.log")
               if p.parent.name not in ("simulate_exposure", "simulate_calibration", "run_config", "benchmark_table")}
    assert on_disk == logs


def test_cli_json(small_run):
    root, cfgfile = small_run
    env = dict(os.environ, VO_DATA=str(root))
    env.pop("VO_DB_URL", None)
    out = subprocess.run([sys.executable, "-m", "vo.cli", "status", "--configfile", str(cfgfile), "--json"],
                         capture_output=True, text=True, env=env, cwd=REPO)
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    zp = next(r for r in rows if r["step"] == "zero_point")
    assert zp["current"] and zp["expected"] == zp["done"] == 2 and zp["db_rows"]["zero_points"] == [2, 0]
    text = subprocess.run([sys.executable, "-m", "vo.cli", "status", "--configfile", str(cfgfile)],
                          capture_output=True, text=True, env=env, cwd=REPO, check=True).stdout
    assert "zero_point" in text and "zero_points 2" in text


def test_flagged_failed_missing_and_earlier_hashes(small_run, tmp_path):
    root, cfgfile = copy_run(small_run, tmp_path)
    cfg = load_cfg(root, cfgfile)
    P = Paths(cfg)
    exposures = sorted(p.name for p in P.step_dir("preprocessing", "DEMOCAM").iterdir())
    # flagged: a failed astrometric solution (as astrometry writes one) and a skipped product
    wcs = P.product("wcs", "DEMOCAM", exposure=exposures[0], ccd="C01")
    fits.setval(wcs, "ASTR_OK", value=False)
    fits.setval(wcs, "ASTR_MSG", value="too few matches")
    from vo.pipeline.skipped import write_skipped
    receipt = P.product("ingest_images", "DEMOCAM", exposure=exposures[1], ccd="C01")
    write_skipped(receipt, "no good input")
    # failed: extraction of a corrupted image, run by Snakemake
    image = P.product("image", "DEMOCAM", exposure=exposures[1], ccd="C01")
    image.write_bytes(b"not a FITS file")
    sources = P.product("sources", "DEMOCAM", exposure=exposures[1], ccd="C01")
    for kind in ("sources", "psf", "background"):
        P.product(kind, "DEMOCAM", exposure=exposures[1], ccd="C01").unlink()
    run = smk([str(sources), "--cores", "1", "--configfile", str(cfgfile)], root, check=False)
    assert run.returncode != 0
    # missing: a deleted light-curve product whose job had succeeded
    ingest = next(P.step_dir("ingest", "DEMO").glob("*_ingest.json"))
    ingest.unlink()

    rows = by_step(vstatus.status(cfg))
    ast = rows[("astrometry", P.step_hash("astrometry", "DEMOCAM"))]
    assert ast.counts == {"done": 1, "flagged": 1, "failed": 0, "missing": 0}
    assert ast.problems == [("flagged", str(wcs), "astrometry failed: too few matches")]
    pre = rows[("preprocessing", P.step_hash("preprocessing", "DEMOCAM"))]
    assert pre.counts["flagged"] == 1 and pre.problems[0][:2] == ("flagged", str(image))
    assert pre.problems[0][2].startswith("unreadable: OSError")
    ing = rows[("ingest_images", P.step_hash("ingest_images", "DEMOCAM"))]
    assert ing.counts["flagged"] == 1 and ing.problems[0][2] == "skipped: no good input"
    ext = rows[("extraction", P.step_hash("extraction", "DEMOCAM"))]
    assert ext.counts == {"done": 3, "flagged": 0, "failed": 3, "missing": 0}, ext.problems
    assert all(state == "failed" and str(image) in why for state, _, why in ext.problems), ext.problems
    lc = rows[("ingest", P.step_hash("ingest", "DEMO"))]
    assert lc.counts["missing"] == 1 and lc.counts["failed"] == 0
    env = dict(os.environ, VO_DATA=str(root))
    cli = subprocess.run([sys.executable, "-m", "vo.cli", "status", "--configfile", str(cfgfile)],
                         capture_output=True, text=True, env=env, cwd=REPO)
    assert cli.returncode == 1 and "failed: " + str(sources) in cli.stdout, cli.stdout

    # a changed extraction parameter: new hashes from extraction on, the old ones listed as earlier
    changed = load_cfg(root, cfgfile, extraction={"minarea": 6})
    Pc = Paths(changed)
    eng = sqlite_engine(root)
    rows = vstatus.status(changed, eng)
    eng.dispose()
    new = by_step(rows)
    for step in ("extraction", "astrometry", "zero_point", "ingest_images"):
        r = new[(step, Pc.step_hash(step, "DEMOCAM"))]
        assert r.current and r.counts["missing"] == r.expected > 0 and r.files_on_disk == 0
        old = new[(step, P.step_hash(step, "DEMOCAM"))]
        assert not old.current and old.files_on_disk > 0
    assert new[("extraction", P.step_hash("extraction", "DEMOCAM"))].db_rows["source_lists"][0] == 2
    assert new[("preprocessing", P.step_hash("preprocessing", "DEMOCAM"))].current


def test_database_rows_on_both_backends(small_run, db_url):
    """Rows per provenance read from SQLite or PostgreSQL, filled by ``vo populate`` from the
    run's files, equal those the workflow's ingest rules wrote."""
    from vo.ingest import populate as ingest

    root, cfgfile = small_run
    cfg = load_cfg(root, cfgfile, database={"url": db_url})
    ingest.populate(cfg)
    eng = get_engine(db_url)
    rebuilt = vstatus.database_rows(eng)
    eng.dispose()
    eng = sqlite_engine(root)
    original = vstatus.database_rows(eng)
    eng.dispose()
    P = Paths(cfg)
    for step, obs, table in (("reduce", "DEMO", "lightcurves"), ("analysis", "DEMO", "detections"),
                             ("preprocessing", "DEMOCAM", "images"), ("zero_point", "DEMOCAM", "zero_points")):
        key = (step, obs, P.step_hash(step, obs))
        assert rebuilt[key][table] == original[key][table] and original[key][table][0] > 0, (key, table)
