"""The plan of a run (vo.pipeline.plan): built once, kept in a file keyed by what it depends on."""

from __future__ import annotations

import json

import pytest

from vo import config as vconfig
from vo.pipeline import plan as vplan

CONFIG = {"project": {"name": "PLAN", "ra_bins": [261, 355]}, "images": {"enabled": True},
          "DemoCam": {"n_ccds": 2, "n_exposures": 3, "reference_epochs": 1}, "references": {"min_images": 1, "first": 1}}


@pytest.fixture
def cfg(tmp_path, monkeypatch):
    monkeypatch.setenv("VO_DATA", str(tmp_path / "data"))
    monkeypatch.setattr(vplan, "_MEMORY", {})
    return vconfig.load_config(None, CONFIG)


def _files(cfg) -> list:
    folder = vconfig.data_root(cfg) / "PLAN" / ".plans"
    return sorted(folder.glob("plan_*.json")) if folder.exists() else []


def test_the_plan_is_built_once_then_read_from_its_file(cfg, monkeypatch):
    plan = vplan.get_plan(cfg)
    assert plan.ra_bins == [261, 355] and plan.ccds == ["C01", "C02"]
    assert plan.exposures == ["dc_f00_r_000", "dc_f00_r_001", "dc_f00_r_002"]
    assert plan.reference_images("dc_f00_r_001", "C01") == [("dc_f00_r_000", "C01")]
    assert plan.new_exposures() == {"dc_f00_r_001": ("p00", "r"), "dc_f00_r_002": ("p00", "r")}
    assert set(plan.filters.values()) == {"r"} and plan.bias and plan.flats["r"]
    (path,) = _files(cfg)
    monkeypatch.setattr(vplan, "_MEMORY", {})
    monkeypatch.setattr(vplan, "build_plan", lambda cfg: pytest.fail("the plan was built again"))
    assert vplan.get_plan(cfg) == plan  # read from the file


def test_another_config_gets_another_plan(cfg):
    first = vplan.get_plan(cfg)
    other = vconfig.load_config(None, {**CONFIG, "DemoCam": {**CONFIG["DemoCam"], "n_exposures": 4}})
    second = vplan.get_plan(other)
    assert len(second.exposures) == 4 and len(first.exposures) == 3
    assert len(_files(cfg)) == 2


def test_a_damaged_plan_file_is_built_again(cfg, caplog):
    plan = vplan.get_plan(cfg)
    (path,) = _files(cfg)
    path.write_text("{not json")
    vplan._MEMORY.clear()
    assert vplan.get_plan(cfg) == plan
    assert "unreadable plan" in caplog.text
    assert json.loads(path.read_text())["exposures"] == plan.exposures


def test_the_key_follows_the_raw_folder_of_a_real_camera(cfg):
    decam = vconfig.load_config(None, {**CONFIG, "images": {"enabled": True, "instrument": "DECam"}})
    raw = vconfig.data_root(decam) / "DECAM" / "raw"
    raw.mkdir(parents=True)
    empty = vplan.plan_key(decam)
    (raw / "c4d_night1_ooi.fits.fz").write_bytes(b"x" * 10)
    one = vplan.plan_key(decam)
    (raw / "c4d_night1_ooi.fits.fz").write_bytes(b"x" * 20)
    assert len({empty, one, vplan.plan_key(decam)}) == 3
    assert vplan.plan_key(cfg) == vplan.plan_key(cfg)  # DemoCam: from the config alone


def test_a_data_root_where_the_plan_cannot_be_kept_still_plans(cfg, caplog):
    blocked = vconfig.data_root(cfg) / "PLAN" / ".plans"
    blocked.parent.mkdir(parents=True)
    blocked.write_text("a file where the plans folder should be")
    assert vplan.get_plan(cfg).exposures == ["dc_f00_r_000", "dc_f00_r_001", "dc_f00_r_002"]
    assert "cannot keep the plan" in caplog.text
