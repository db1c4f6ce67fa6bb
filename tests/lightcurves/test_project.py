"""Project: virtualobserver-style constructor arguments over the config file."""

import pytest
import yaml

from vo import config as vconfig
from vo.project import Project


def test_constructor_kwargs_override_file(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text(yaml.safe_dump({"project": {"obs_names": ["DEMO"]},
                                 "DEMO": {"reducer": {"gap": 10.0, "radius": 2.0}},
                                 "analysis": {"snr_threshold": 4.0}}))
    proj = Project(name="default_test", obs_names=["demo", "ztf"], cfg_file=str(f),
                   catalog_kwargs={"default": "demo", "max_targets": 5},
                   analysis_kwargs={"snr_threshold": 6.0},
                   obs_kwargs={"reducer": {"radius": 3.0, "gap": 40.0}},
                   ZTF={"timeout": 5.0, "reducer": {"gap": 60.0}}, data_root=str(tmp_path))
    c = proj.cfg
    assert c["project"]["name"] == "default_test"
    assert c["project"]["obs_names"] == ["DEMO", "ZTF"]
    assert c["analysis"]["snr_threshold"] == 6.0
    assert c["DEMO"]["reducer"] == {**c["DEMO"]["reducer"], "gap": 40.0, "radius": 3.0}
    assert c["ZTF"]["reducer"]["gap"] == 60.0 and c["ZTF"]["reducer"]["radius"] == 3.0
    assert c["ZTF"]["timeout"] == 5.0
    assert proj.paths.project_dir == tmp_path.resolve() / "DEFAULT_TEST"


def test_cfg_key_and_missing_file(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text(yaml.safe_dump({"project_a": {"analysis": {"snr_threshold": 8.0}}}))
    assert Project(name="a", cfg_file=str(f), cfg_key="project_a").cfg["analysis"]["snr_threshold"] == 8.0
    with pytest.raises(vconfig.ConfigError, match="not found"):
        Project(name="a", cfg_file=str(tmp_path / "missing.yaml"))


def test_bad_kwargs_are_clear_errors():
    with pytest.raises(TypeError, match="HST"):
        Project(name="x", HST={"a": 1})
    with pytest.raises(vconfig.ConfigError, match="analysis.snr_thresh"):
        Project(name="x", analysis_kwargs={"snr_thresh": 3})


def test_pars_attribute_access_validates():
    proj = Project(name="x", cfg_file=None)
    proj.pars.vc = False
    assert proj.cfg["project"]["version_control"] is False
    proj.pars.DEMO.reducer.gap = 60.0
    assert proj.cfg["DEMO"]["reducer"]["gap"] == 60.0
    with pytest.raises(vconfig.ConfigError, match="DEMO.reducer.gap"):
        proj.pars.DEMO.reducer.gap = "sixty"
    assert proj.cfg["DEMO"]["reducer"]["gap"] == 60.0
    with pytest.raises(AttributeError, match="nosuch"):
        proj.pars.nosuch


def test_observatories_by_name_and_index(tmp_path):
    proj = Project(name="x", obs_names=["DEMO"], cfg_file=None, data_root=str(tmp_path))
    assert proj.observatories[0] is proj.observatories["demo"]
    assert proj.observatories["DEMO"].name == "DEMO"


def test_write_config_and_provenances(tmp_path):
    proj = Project(name="x", cfg_file=None, data_root=str(tmp_path))
    path = proj.write_config()
    assert path.parent == tmp_path.resolve() / "X" and path.name.startswith("00_config_")
    again = yaml.safe_load(path.read_text())
    assert vconfig.complete(again)["analysis"] == proj.cfg["analysis"]
    assert "reduce.DEMO" in proj.provenances()
