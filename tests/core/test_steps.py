"""The step table (vo/steps.py) is the one description of every step: the workflow, the scripts,
the provenance and the architecture document all agree with it."""

from __future__ import annotations

import re

import pytest

from vo import config as vconfig
from vo import provenance as vprov
from vo import steps as vsteps
from vo.cli import with_step_table
from testdata import REPO

#: rules of the Snakefile that are not steps' rules: the run's targets and its report
NOT_STEP_RULES = {"all", "benchmark_table"}


def _smk_rules() -> set[str]:
    text = "".join(p.read_text() for p in (REPO / "workflow").rglob("*.smk"))
    return set(re.findall(r"^\s*rule (\w+):", text, re.M))


def test_architecture_document_has_the_current_step_table():
    doc = (REPO / "docs" / "architecture.md").read_text()
    assert doc == with_step_table(doc), "docs/architecture.md is stale: run vo steps --write docs/architecture.md"


def test_every_snakemake_rule_is_in_the_table_and_every_table_rule_in_the_workflow():
    assert _smk_rules() - NOT_STEP_RULES == set(vsteps.RULES)


@pytest.mark.parametrize("rule", sorted(vsteps.RULES))
def test_every_rule_has_its_script_and_body(rule):
    script = REPO / "scripts" / f"{rule}.py"
    assert script.exists(), f"{rule}: no {script}"
    assert f'rule_main("{rule}"' in script.read_text(), f"{script} does not run rule {rule}"
    assert callable(vsteps.function(rule))


def test_product_kinds_are_unique_and_belong_to_one_step():
    kinds = [k for s in vsteps.TABLE for k in s.files]
    assert len(kinds) == len(set(kinds))
    for s in vsteps.TABLE:
        for r in s.rules:
            assert set(r.outputs) <= set(s.files), f"{r.name} writes kinds its step {s.name} does not name"


def test_upstreams_are_earlier_steps_and_provenance_covers_every_step():
    seen = set()
    for s in vsteps.TABLE:
        assert set(s.upstream) <= seen, f"{s.name}: upstream {set(s.upstream) - seen} not declared before it"
        seen.add(s.name)
    cfg = vconfig.load_config(None, {"images": {"enabled": True}})
    provs = vprov.all_provenances(cfg)
    assert {p.step for p in provs.values()} == set(vsteps.STEPS)
    for p in provs.values():
        assert p.code_version == vsteps.STEPS[p.step].code_version


def test_a_code_version_bump_changes_the_step_and_downstream_hashes(monkeypatch):
    cfg = vconfig.load_config(None, {"images": {"enabled": True}})
    before = {k: p.hash for k, p in vprov.all_provenances(cfg).items()}
    bumped = dict(vsteps.STEPS)
    bumped["detection"] = vsteps.Step(**{**vsteps.STEPS["detection"].__dict__, "code_version": "99"})
    monkeypatch.setattr(vprov, "STEPS", bumped)
    after = {k: p.hash for k, p in vprov.all_provenances(cfg).items()}
    changed = {k.split(".")[0] for k in before if before[k] != after[k]}
    assert changed == {"detection", "cutouts", "measurements", "rb_training", "scoring", "association",
                       "injection", "alerts"}
