"""Planning at scale: the DAG of a DECam night (one job per exposure or per CCD) and of a catalog
over every RA bin, and a real run with one job per exposure (images.jobs: exposure)."""

import sys

import pytest
import yaml
from astropy.io import fits

from vo import config as vconfig
from vo.pipeline import status as vstatus
from vo.paths import Paths
from workflow_helpers import REPO, job_counts, smk

sys.path.insert(0, str(REPO / "benchmarks"))
import planning  # noqa: E402  (the benchmark's input generators)

pytestmark = pytest.mark.slow
PER_CCD_CHAIN = ("preprocess", "extract", "astrometry", "zero_point", "ingest_images")


def dry_run(root, cfg: dict) -> dict:
    cfgfile = root / "plan.yaml"
    cfgfile.write_text(yaml.safe_dump(cfg))
    out = smk(["-n", "--configfile", str(cfgfile)], root)
    return job_counts(out.stdout + out.stderr)


@pytest.mark.parametrize("jobs", ["exposure", "ccd"])
def test_decam_night_from_the_raw_folder(tmp_path, jobs):
    """Exposures, biases and flats found by their raw headers; 62 CCDs; jobs per exposure or CCD."""
    cfg = planning.write_decam_night(tmp_path, n_exposures=3, n_bias=2, n_flats=2, jobs=jobs)
    counts = dry_run(tmp_path, cfg)
    per_step = 3 if jobs == "exposure" else 3 * 62
    assert {r: counts[r] for r in PER_CCD_CHAIN} == dict.fromkeys(PER_CCD_CHAIN, per_step), counts
    assert counts["master_bias"] == 62 and counts["master_flat"] == 3 * 62  # filters g, r, i of the 3 exposures
    assert counts["benchmark_table"] == 1 and not {"simulate_exposure", "subtraction"} & set(counts)


def test_catalog_over_every_ra_bin_and_two_observatories(tmp_path):
    cfg = planning.write_catalog(tmp_path, n_targets=20_000)
    counts = dry_run(tmp_path, cfg)
    for rule in ("download", "reduce", "analysis", "ingest"):
        assert counts[rule] == 2 * 360, (rule, counts)
    assert counts["targets"] == 1 and counts["combine"] == counts["plots"] == 2


def test_exposure_jobs_make_every_product(tmp_path):
    """images.jobs: exposure on DemoCam (2 CCDs, 3 exposures, the third subtracted): one job and
    one log per exposure and per-CCD step, every product the per-CCD workflow makes, and the
    provenance hashes of the per-CCD workflow (the setting is not critical)."""
    cfgfile = tmp_path / "exp.yaml"
    raw = {"project": {"name": "EXPJOBS", "obs_names": []}, "images": {"enabled": True, "jobs": "exposure"},
           "resources": {"threads": 2},
           "DemoCam": {"n_ccds": 2, "n_exposures": 3, "reference_epochs": 2, "ccd_shape": [512, 512],
                       "n_bias": 3, "n_flats": 3}, "references": {"first": 2}}
    cfgfile.write_text(yaml.safe_dump(raw))
    counts = job_counts(smk(["-n", "--configfile", str(cfgfile)], tmp_path).stdout)
    assert {r: counts[r] for r in PER_CCD_CHAIN} == dict.fromkeys(PER_CCD_CHAIN, 3), counts
    assert counts["subtraction"] == counts["scoring"] == counts["association"] == 1
    smk(["--cores", "2", "--configfile", str(cfgfile)], tmp_path)
    again = smk(["-n", "--configfile", str(cfgfile)], tmp_path)
    assert "Nothing to be done" in again.stdout + again.stderr

    cfg = vconfig.complete(vconfig.deep_merge(raw, {"project": {"data_root": str(tmp_path)}}))
    P = Paths(cfg)
    rows = [r for r in vstatus.status(cfg) if r.current]
    assert {r.step for r in rows} >= {"preprocessing", "zero_point", "subtraction", "scoring", "alerts"}
    for r in rows:
        assert r.expected > 0 and r.counts["done"] == r.expected, (r.step, r.counts, r.problems)
    ccd_mode = Paths(vconfig.deep_merge(cfg, {"images": {"jobs": "ccd"}}))
    assert all(P.step_hash(s, "DEMOCAM") == ccd_mode.step_hash(s, "DEMOCAM") for s in ("extraction", "scoring"))
    for exposure in ("dc_f00_r_000", "dc_f00_r_001", "dc_f00_r_002"):
        for ccd in ("C01", "C02"):
            assert fits.getheader(P.product("zp", "DEMOCAM", exposure=exposure, ccd=ccd))["ZP_OK"]
    logs = sorted(p.name for p in (P.project_dir / "logs" / "extract").iterdir())
    assert logs == [f"dc_f00_r_00{i}{P.step_suffix('extraction', 'DEMOCAM')}.log" for i in range(3)]
    assert "2 CCDs done" in (P.project_dir / "logs" / "extract" / logs[0]).read_text()
    for job in vstatus.jobs(cfg, P):  # status finds each job's log under its exposure-job name
        step = vstatus._step_of(P, job.outputs[0])
        assert vstatus.job_log(P, job, P.step_suffix(step, "DEMOCAM")).exists(), job
