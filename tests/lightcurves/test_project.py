"""Project: virtualobserver-style constructor arguments over the config file."""

import numpy as np
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


EXTENSION = '''
import numpy as np
from vo.lightcurves.analysis import Analysis
from vo.lightcurves.observatories.demo import VirtualDemoObs


class NewAnalysis(Analysis):
    """Adds a column to the summary (virtualobserver's README example, made real)."""

    def run(self, lcs):
        result = super().run(lcs)
        result.summary["new_analysis_key"] = self.custom.get("new_analysis_key", "default")
        result.summary["n_over_threshold"] = (result.summary["max_dsnr"] > self.custom["threshold"]).astype(int)
        return result


class BrighterDemo(VirtualDemoObs):
    """A custom observatory: every epoch 0.5 mag brighter than the simulation's."""

    def fetch_data_from_observatory(self, cat_row):
        raw, alt = super().fetch_data_from_observatory(cat_row)
        raw["mag"] = raw["mag"] - 0.5
        return raw, alt


class NotAnAnalysis:
    pass
'''


def test_custom_analysis_and_observatory_classes_from_the_config(tmp_path, monkeypatch):
    """``Project(analysis_module=..., analysis_class=...)`` and ``DEMO.class_path`` load the
    user's classes (from a file, or a module on the path); the analysis rule body runs them,
    and the class path enters the provenance."""
    from vo.lightcurves.analysis import read_analysis
    from vo.pipeline import lightcurves as wf

    (tmp_path / "extensions").mkdir()
    (tmp_path / "extensions" / "my_analysis.py").write_text(EXTENSION)
    monkeypatch.syspath_prepend(str(tmp_path))
    plain = Project(name="ext", cfg_file=None, data_root=str(tmp_path), catalog_kwargs={"max_targets": 12})
    proj = Project(name="ext", cfg_file=None, data_root=str(tmp_path), catalog_kwargs={"max_targets": 12},
                   analysis_kwargs={"new_analysis_key": "new_analysis_value", "threshold": 6.0},
                   analysis_module="extensions.my_analysis", analysis_class="NewAnalysis",
                   DEMO={"class_path": str(tmp_path / "extensions" / "my_analysis.py") + ":BrighterDemo"})
    cfg = proj.cfg
    assert cfg["analysis"]["class_path"] == "extensions.my_analysis.NewAnalysis"
    assert cfg["analysis"]["custom"] == {"new_analysis_key": "new_analysis_value", "threshold": 6.0}
    assert type(proj.observatories["DEMO"]).__name__ == "BrighterDemo"
    assert proj.provenances()["analysis.DEMO"]["hash"] != plain.provenances()["analysis.DEMO"]["hash"]
    assert proj.provenances()["download.DEMO"]["hash"] != plain.provenances()["download.DEMO"]["hash"]

    bins = proj.catalog.ra_bins()[:1]
    _, out = wf.rule_io("targets", cfg, ra_bins=bins)
    wf.run_targets(cfg, out)
    for step in ("download", "reduce", "analysis"):
        ins, outs = wf.rule_io(step, cfg, "DEMO", bins[0])
        getattr(wf, f"run_{step}")(cfg, "DEMO", bins[0], ins, outs)
    summary = read_analysis(outs["analysis"]).summary
    assert (summary["new_analysis_key"] == "new_analysis_value").all()
    assert list(summary["n_over_threshold"]) == [int(v > 6.0) for v in summary["max_dsnr"]]
    # the custom observatory made the stored data: 0.5 mag brighter than the built-in simulation
    first = proj.observatories["DEMO"].populate_sources(proj.paths.raw_photometry("DEMO", bins[0]))[0].load()
    builtin, _ = plain.observatories["DEMO"].fetch_data_from_observatory(first.attrs["cat_row"])
    np.testing.assert_allclose(first.data["mag"], builtin["mag"] - 0.5)

    # a file path works too, and a class of the wrong kind is named
    p2 = Project(name="ext", cfg_file=None, analysis_module=str(tmp_path / "extensions" / "my_analysis.py"),
                 analysis_class="NewAnalysis", analysis_kwargs={"threshold": 1.0})
    assert p2.cfg["analysis"]["class_path"].endswith("my_analysis.py:NewAnalysis")
    from vo.lightcurves.analysis import analysis_for
    assert type(analysis_for(p2.cfg, "DEMO")).__name__ == "NewAnalysis"
    bad = Project(name="ext", cfg_file=None, analysis_module="extensions.my_analysis", analysis_class="NotAnAnalysis")
    with pytest.raises(vconfig.ConfigError, match="analysis.class_path.*not a subclass of vo.lightcurves.analysis.Analysis"):
        analysis_for(bad.cfg, "DEMO")
    missing = Project(name="ext", cfg_file=None, analysis_module="extensions.nope", analysis_class="X")
    with pytest.raises(vconfig.ConfigError, match="cannot import 'extensions.nope'"):
        analysis_for(missing.cfg, "DEMO")
    with pytest.raises(TypeError, match="together"):
        Project(name="ext", cfg_file=None, analysis_class="NewAnalysis")
