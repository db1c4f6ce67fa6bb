"""Provenance hashes and paths: what changes a hash, and what does not."""

import pytest

from vo import config as vconfig
from vo import provenance as vprov
from vo.paths import Paths


@pytest.fixture
def cfg(tmp_path, monkeypatch):
    monkeypatch.setenv("VO_DATA", str(tmp_path))
    return vconfig.load_config(overrides={"project": {"obs_names": ["DEMO", "ZTF"]}})


def hashes(cfg):
    return {k: p.hash for k, p in vprov.all_provenances(cfg).items()}


def test_hash_is_canonical_sha256_of_step_version_params_upstreams(cfg):
    import hashlib, json
    p = vprov.provenance(cfg, "reduce", "DEMO")
    doc = {"step": "reduce", "obs": "DEMO", "code_version": p.code_version, "parameters": p.parameters,
           "upstreams": p.upstreams}
    expect = hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    assert p.hash == expect[:vprov.HASH_LENGTH]
    assert set(p.parameters) == {k.key for k in vconfig.section_parameters("DEMO.reducer") if k.critical}
    assert p.upstreams == {"download.DEMO": vprov.provenance(cfg, "download", "DEMO").hash}


def test_analysis_change_reruns_only_downstream(cfg):
    before = hashes(cfg)
    after = hashes(vconfig.deep_merge(cfg, {"analysis": {"snr_threshold": 6.0}}))
    changed = {k for k in before if before[k] != after[k]}
    assert changed == {"analysis.DEMO", "analysis.ZTF", "combine.DEMO", "combine.ZTF",
                       "ingest.DEMO", "ingest.ZTF"}


def test_observatory_change_leaves_other_observatory_alone(cfg):
    before = hashes(cfg)
    after = hashes(vconfig.deep_merge(cfg, {"ZTF": {"reducer": {"gap": 60.0}}}))
    changed = {k for k in before if before[k] != after[k]}
    assert changed == {"reduce.ZTF", "analysis.ZTF", "combine.ZTF", "ingest.ZTF"}


def test_non_critical_parameters_never_change_hashes(cfg):
    before = hashes(cfg)
    other = vconfig.deep_merge(cfg, {"ZTF": {"timeout": 5.0, "download": {"batch_size": 3}},
                                     "database": {"url": "sqlite:///x"},
                                     "project": {"data_root": "/elsewhere"}})
    assert hashes(other) == before


def test_paths_embed_hash_and_drop_it_without_version_control(cfg, tmp_path):
    P = Paths(cfg)
    h = P.step_hash("reduce", "DEMO")
    assert P.product("reduce", "DEMO", 7) == tmp_path / "DEMO" / f"reduce-{h}" / "DEMO_photometry_RA007_reduced.h5"
    assert P.raw_photometry("demo", 123) == tmp_path / "DEMO" / "DEMO_photometry_RA123.h5"
    P2 = Paths(vconfig.deep_merge(cfg, {"project": {"version_control": False}}))
    assert P2.product("reduce", "DEMO", 7) == tmp_path / "DEMO" / "reduce" / "DEMO_photometry_RA007_reduced.h5"
    assert P.run_config().name == f"00_config_{vprov.run_hash(cfg)}.yaml"
