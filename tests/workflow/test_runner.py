"""The pipeline in process (vo.pipeline.runner): one CCD made without Snakemake, with the same
files and hashes as the workflow, so Snakemake finds nothing left to do, and the other way round."""

from __future__ import annotations

import os

import numpy as np
import pytest
import yaml

from vo import config as vconfig
from vo.pipeline.runner import CCDProducts, Runner, run_ccd
from workflow_helpers import job_counts, smk

pytestmark = pytest.mark.slow

CONFIG = {"project": {"name": "RUNNER", "obs_names": []}, "images": {"enabled": True},
          "DemoCam": {"n_ccds": 1, "n_exposures": 2, "reference_epochs": 1, "ccd_shape": [512, 512],
                      "n_bias": 2, "n_flats": 2},
          "references": {"min_images": 1, "first": 1}, "scoring": {"algorithm": "braai_d6_m7"}}
NEW = "dc_f00_r_001"


@pytest.fixture
def setup(tmp_path, monkeypatch):
    monkeypatch.setenv("VO_DATA", str(tmp_path / "data"))
    cfgfile = tmp_path / "runner.yaml"
    cfgfile.write_text(yaml.safe_dump(CONFIG))
    return tmp_path, cfgfile, vconfig.load_config(str(cfgfile))


def test_run_ccd_makes_the_workflows_files_and_snakemake_has_nothing_left(setup):
    root, cfgfile, cfg = setup
    ccd = run_ccd(cfg, NEW, "C01", through="scoring")
    assert isinstance(ccd, CCDProducts)
    for kind in ("image", "sources", "psf", "wcs", "zp", "difference", "candidates", "cutouts",
                 "measurements", "scores"):
        assert os.path.exists(ccd.paths[kind]), kind
        assert f"{root / 'data'}" in ccd.paths[kind]
    assert ccd.wcs.ok and np.isfinite(ccd.zp.zp)
    assert ccd.difference.score.shape == ccd.image.sci.shape
    # the reference covers the image's planned footprint and references.grid_margin around it
    margin = int(np.ceil(ccd.cfg["references"]["grid_margin"] / ccd.cfg["DemoCam"]["pixel_scale"]))
    assert ccd.reference.image.sci.shape == tuple(n + 2 * margin for n in ccd.image.sci.shape)
    assert len(ccd.scores) == len(ccd.measurements) > 0
    assert ccd.parameters("subtraction")["subtraction.method"] == "zogy"
    # the same products, asked of Snakemake: nothing to do
    out = smk([ccd.paths["scores"], "-n", "--configfile", str(cfgfile)], root / "data", workdir=root)
    assert "Nothing to be done" in out.stdout + out.stderr, job_counts(out.stdout)
    # and nothing to do in process either
    again = Runner(cfg)
    again.run(again.job("scoring", exposure=NEW, ccd="C01"))
    assert again.ran == []


def test_run_ccd_after_snakemake_runs_nothing_and_reads_its_files(setup):
    root, cfgfile, cfg = setup
    runner = Runner(cfg)
    target = runner.job("measurements", exposure=NEW, ccd="C01").io[1]["measurements"]
    smk([target, "--cores", "2", "--configfile", str(cfgfile)], root / "data", workdir=root)
    runner.run(runner.job("measurements", exposure=NEW, ccd="C01"))
    assert runner.ran == []
    ccd = CCDProducts(runner.cfg, NEW, "C01", runner)
    assert len(ccd.measurements) > 0 and "scores" in ccd.paths and not os.path.exists(ccd.paths["scores"])
    with pytest.raises(FileNotFoundError, match="scores of dc_f00_r_001 C01 not made yet"):
        ccd.scores


def test_unknown_step_and_job_are_clear_errors(setup):
    _, _, cfg = setup
    with pytest.raises(KeyError, match="not a step or rule"):
        run_ccd(cfg, NEW, "C01", through="photometry")
    with pytest.raises(KeyError, match="0 subtraction jobs"):
        Runner(cfg).job("subtraction", exposure="dc_f00_r_000", ccd="C01")  # a reference epoch
