"""Config: schema defaults, merging, validation errors that name the key and the file."""

import re
import subprocess
import sys

import pytest
import yaml

from vo import config as vconfig


def test_every_parameter_has_type_default_doc_and_critical_flag():
    schema = vconfig.load_schema()
    params = list(vconfig.iter_parameters(schema))
    assert len(params) > 50
    for p in params:
        assert p.type is not None, p.key
        assert p.doc, p.key
    # the raw schema states `critical` and `default` explicitly for every leaf
    def leaves(node, path=""):
        for k, sub in node.get("properties", {}).items():
            if sub.get("type") == "object" and "properties" in sub:
                yield from leaves(sub, f"{path}{k}.")
            else:
                yield f"{path}{k}", sub
    for key, sub in leaves(schema):
        assert "critical" in sub, key
        assert "default" in sub, key


def test_defaults_validate_and_default_config_loads():
    cfg = vconfig.load_config()
    assert cfg["project"]["name"] == "DEMO"
    assert cfg["DEMO"]["reducer"]["gap"] == 40.0
    vconfig.validate(vconfig.defaults())


def test_unknown_key_names_key_and_file(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text(yaml.safe_dump({"analysis": {"snr_treshold": 4}}))
    with pytest.raises(vconfig.ConfigError) as exc:
        vconfig.load_config(f)
    msg = str(exc.value)
    assert str(f) in msg and "analysis.snr_treshold" in msg


def test_wrong_type_names_key_and_file(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text(yaml.safe_dump({"DEMO": {"reducer": {"gap": "forty"}}}))
    with pytest.raises(vconfig.ConfigError) as exc:
        vconfig.load_config(f)
    assert "DEMO.reducer.gap" in str(exc.value) and str(f) in str(exc.value)


def test_cfg_key_selects_subsection_and_overrides_win(tmp_path):
    f = tmp_path / "multi.yaml"
    f.write_text(yaml.safe_dump({"mine": {"analysis": {"snr_threshold": 7.0}}}))
    cfg = vconfig.load_config(f, overrides={"analysis": {"snr_sideband": 3.0}}, key="mine")
    assert cfg["analysis"]["snr_threshold"] == 7.0
    assert cfg["analysis"]["snr_sideband"] == 3.0
    with pytest.raises(vconfig.ConfigError, match="no key 'other'"):
        vconfig.load_config(f, key="other")


def test_env_overrides_data_root_and_db(monkeypatch, tmp_path):
    cfg = vconfig.load_config()
    monkeypatch.setenv("VO_DATA", str(tmp_path))
    assert vconfig.data_root(cfg) == tmp_path.resolve()
    assert vconfig.database_url(cfg) == f"sqlite:///{tmp_path.resolve() / 'vo.sqlite'}"
    monkeypatch.setenv("VO_DB_URL", "postgresql+psycopg://u@127.0.0.1/x")
    assert vconfig.database_url(cfg).startswith("postgresql")


def test_show_pars_cli_prints_docs_and_critical_flags():
    out = subprocess.run([sys.executable, "-m", "vo.cli", "show-pars", "DEMO.reducer"],
                         capture_output=True, text=True, check=True).stdout
    assert "DEMO.reducer.gap" in out and "critical" in out and "days" in out
    bad = subprocess.run([sys.executable, "-m", "vo.cli", "show-pars", "nosuch"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "nosuch" in bad.stderr


@pytest.mark.parametrize("name", ["config.yaml", "ztf_wd.yaml", "ztf_bulk.yaml", "postgres.yaml"])
def test_shipped_configs_validate(name):
    cfg = vconfig.load_config(vconfig.REPO_ROOT / "config" / name)
    assert cfg["project"]["name"]


PASSWORD = "pl4nted-S3cret"


def test_a_database_password_is_masked_in_the_run_config_and_show_pars(tmp_path):
    from vo.pipeline.lightcurves import run_config

    url = f"postgresql+psycopg://vo:{PASSWORD}@db.example:5432/vo"
    cfgfile = tmp_path / "secret.yaml"
    cfgfile.write_text(yaml.safe_dump({"database": {"url": url}, "ZTF": {"credentials_file": "~/.ztf.yaml"}}))
    cfg = vconfig.load_config(str(cfgfile))
    assert vconfig.database_url(cfg) == url  # the jobs still get the real URL
    outputs = {"config": str(tmp_path / "00_config.yaml"), "provenance": str(tmp_path / "provenance.yaml")}
    run_config(cfg, outputs)
    dumped = (tmp_path / "00_config.yaml").read_text()
    assert PASSWORD not in dumped and "vo:***@db.example:5432/vo" in dumped
    assert PASSWORD not in (tmp_path / "provenance.yaml").read_text()
    out = subprocess.run([sys.executable, "-m", "vo.cli", "show-pars", "database", "--configfile", str(cfgfile)],
                         capture_output=True, text=True, check=True)
    assert PASSWORD not in out.stdout + out.stderr and "***" in out.stdout


def test_mask_secrets_masks_url_passwords_and_password_keys_only():
    cfg = {"a": {"url": "https://user:pw@host/x", "plain": "sqlite:////tmp/vo.sqlite", "password": "pw",
                 "api_token": "t0k", "token": None}, "b": ["redis://:pw@h:6379/0", 3]}
    assert vconfig.mask_secrets(cfg) == {
        "a": {"url": "https://user:***@host/x", "plain": "sqlite:////tmp/vo.sqlite", "password": "***",
              "api_token": "***", "token": None}, "b": ["redis://:***@h:6379/0", 3]}


@pytest.mark.parametrize("override, key", [({"analysis": {"snr_threshold": -5}}, "analysis.snr_threshold"),
                                           ({"DEMO": {"reducer": {"gap": 0}}}, "DEMO.reducer.gap"),
                                           ({"ZTF": {"reducer": {"radius": -3.0}}}, "ZTF.reducer.radius"),
                                           ({"association": {"radius": 0.0}}, "association.radius")])
def test_impossible_values_are_refused_naming_key_value_and_file(tmp_path, override, key):
    f = tmp_path / "bad.yaml"
    f.write_text(yaml.safe_dump(override))
    with pytest.raises(vconfig.ConfigError) as exc:
        vconfig.load_config(f)
    value = key.split(".")
    node = override
    for part in value:
        node = node[part]
    msg = str(exc.value)
    assert key in msg and str(f) in msg and repr(node) in msg, msg


@pytest.mark.parametrize("key", ["exposures", "ccds"])
def test_an_explicitly_empty_list_is_not_every_exposure(tmp_path, key):
    f = tmp_path / "empty.yaml"
    f.write_text(yaml.safe_dump({"images": {"enabled": True, key: []}}))
    with pytest.raises(vconfig.ConfigError) as exc:
        vconfig.load_config(f)
    assert f"images.{key}" in str(exc.value) and str(f) in str(exc.value)


def test_workflow_config_is_what_snakemake_runs(tmp_path):
    """``snakemake --configfile F`` merges F over config/config.yaml (the Snakefile's configfile);
    the vo command and the rule scripts read F the same way, so hashes and plans agree."""
    f = tmp_path / "mine.yaml"
    f.write_text(yaml.safe_dump({"project": {"name": "MINE"}, "analysis": {"snr_sideband": 3.0}}))
    base = vconfig.read_yaml(vconfig.DEFAULT_CONFIG)
    cfg = vconfig.workflow_config(f, {"references": {"min_overlap": 0.3}})
    assert cfg["project"]["name"] == "MINE" and cfg["analysis"]["snr_sideband"] == 3.0
    assert cfg["references"]["first"] == base["references"]["first"]  # from config/config.yaml
    assert cfg["references"]["min_overlap"] == 0.3
    assert vconfig.workflow_config(None) == vconfig.load_config(None)
    f.write_text(yaml.safe_dump({"references": {"select": "someday"}}))
    with pytest.raises(vconfig.ConfigError, match="mine.yaml"):
        vconfig.workflow_config(f)


def test_snakemake_names_the_config_file_of_a_bad_value(tmp_path):
    """Through Snakemake (a dry run) a bad value or key is named with the file that sets it, or
    with --config; the error says key and value too."""
    from workflow_helpers import smk

    bad = tmp_path / "bad.yaml"
    bad.write_text("analysis:\n  snr_threshold: -5\n")
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("analysis:\n  snr_treshold: 5\n")
    for args, where, what in (
            (["--configfile", str(bad)], str(bad), "invalid value for analysis.snr_threshold: -5"),
            (["--configfile", str(unknown)], str(unknown), "unknown key analysis.snr_treshold"),
            (["--config", "bogus_section=1"], "--config", "unknown key bogus_section")):
        out = smk(["-n", "--cores", "1", *args], tmp_path, check=False)
        text = out.stdout + out.stderr
        assert out.returncode != 0 and f"{where}: {what}" in text, text[-2000:]


def test_validate_files_names_the_last_file_with_the_value(tmp_path):
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("analysis:\n  snr_threshold: 5\n")
    b.write_text("analysis:\n  snr_threshold: -1\n")
    cfg = vconfig.deep_merge(vconfig.read_yaml(a), vconfig.read_yaml(b))
    with pytest.raises(vconfig.ConfigError, match=rf"^{re.escape(str(b))}: invalid value for analysis.snr_threshold"):
        vconfig.validate_files(cfg, [a, b])
    vconfig.validate_files(vconfig.read_yaml(a), [a])  # a good config passes
