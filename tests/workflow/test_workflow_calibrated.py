"""The workflow on real calibrated images of any camera (issue 12): the Legacy Surveys' testcase6,
two DECam CCDs (S4 in 2015-2018, S9 in December 2018) over one brick in g, r and z, read as
NOIRLab Community Pipeline InstCal cutouts with their Gaia DR2 chunks as the offline catalog.

The config names no camera and no CCD: references are the images before 2018-12-01, and each
new image is paired with the same-filter references that overlap it on the sky (S9 with S4).
The cutouts are 100x100 pix with one saturated Gaia star each, too sparse for a PSF or a zero
point: every pair goes through every step to the alerts and is flagged with the reason, never a
crash or a silent skip."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from testdata import DATA
from vo.pipeline.skipped import skipped_reason
from workflow_helpers import REPO, job_counts, smk, smk_env

TC6 = DATA / "legacypipe_cp" / "testcase6"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("tc6")
    cfgfile = root / "tc6.yaml"
    cfgfile.write_text(yaml.safe_dump({
        "project": {"name": "TC6", "obs_names": []},
        "images": {"enabled": True, "instrument": "calibrated"},
        "calibrated": {"files": [str(TC6 / "images" / "**" / "*_ooi_*.fits.gz")]},
        "catalog_excerpts": {"catalog": "gaia_dr2", "files": [str(TC6 / "gaia" / "chunk-*.fits.gz")]},
        "references": {"select": "before", "before": "2018-12-01", "min_images": 1},
        "scoring": {"algorithm": "braai_d6_m7"}}))
    dry = smk(["-n", "--configfile", str(cfgfile)], root, workdir=root)
    smk(["--cores", "2", "--configfile", str(cfgfile)], root, workdir=root)
    return root, cfgfile, dry.stdout + dry.stderr


def test_dry_run_shows_the_plan(run):
    _, _, dry = run
    counts = job_counts(dry)
    assert counts["preprocess"] == 6 and counts["references"] == counts["subtraction"] == counts["alerts"] == 3
    assert "master_bias" not in counts and "master_flat" not in counts  # calibrated already
    # each references job reads the S4 image of its new S9 image's filter
    lines, jobs = dry.splitlines(), []
    for i, line in enumerate(lines):
        if line.strip() == "rule references:":  # the job's indented attribute lines follow
            block = []
            for nxt in lines[i + 1:]:
                if not nxt.startswith((" ", "\t")) or nxt.strip().startswith("rule "):
                    break
                block.append(nxt)
            jobs.append("\n".join(block))
    assert len(jobs) == 3
    for block in jobs:
        new = block.split("wildcards: ")[1].split("exposure=")[1].split(",")[0]
        filt = new.split("_ooi_")[1][0]
        assert new.endswith(".S9") and f"_ooi_{filt}_ls9.S4/1.image.fits" in block, block


def test_every_pair_reaches_the_alerts_or_says_why(run):
    root, cfgfile, _ = run
    from vo import config as vconfig
    from vo.pipeline import image_io

    cfg = vconfig.workflow_config(cfgfile, {"project": {"data_root": str(root)}})
    news = image_io.new_exposures(cfg)
    assert len(news) == 3
    for exposure in news:
        for rule, kind in (("references", "image"), ("subtraction", "difference"), ("detection", "candidates"),
                           ("association", "receipt")):
            path = image_io.rule_io(rule, cfg, exposure, "1")[1][kind]
            why = skipped_reason(path)
            assert why is not None and "no input with a good WCS, zero point and PSF" in why, (rule, why)
            assert "no calibration star" in why and "stands in" in why  # the reference image's own reasons
        alerts = image_io.rule_io("alerts", cfg, exposure)[1]["alerts"]
        from vo.images.alerts import read_alerts
        assert read_alerts(alerts) == []


def test_vo_status_lists_the_references(run):
    root, cfgfile, _ = run
    out = subprocess.run([sys.executable, "-m", "vo.cli", "status", "--configfile", str(cfgfile), "--references",
                          "--json"], capture_output=True, text=True, env=smk_env(root), cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = json.loads(out.stdout.split("\nreferences:")[0])
    current = {r["step"]: r for r in rows if r["current"]}
    assert current["references"]["flagged"] == 9 and current["alerts"]["done"] == 6
    plan = out.stdout.split("\nreferences:")[1]
    assert "select before" in plan
    for line in plan.strip().splitlines()[1:]:
        new, refs = line.split(" <- ")
        assert new.strip().split()[0].endswith(".S9") and refs.split()[0].endswith(".S4")
