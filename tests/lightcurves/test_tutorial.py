"""docs/tutorial_virtualobserver.py: every call of virtualobserver's README usage sections,
run against the demo survey (the workflow through Snakemake, the database, the files)."""

from __future__ import annotations

import importlib.util

from vo.config import REPO_ROOT


def test_virtualobserver_readme_session_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("VO_DATA", str(tmp_path))
    monkeypatch.delenv("VO_DB_URL", raising=False)
    spec = importlib.util.spec_from_file_location("tutorial", REPO_ROOT / "docs" / "tutorial_virtualobserver.py")
    tutorial = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tutorial)
    done = tutorial.main(tmp_path)
    assert done["run"] and done["cfg_file"] and done["custom_analysis"] and done["delete"]
    assert done["download_all_sources"] == 12 and done["catalog"] == 300
    assert done["reduce"] >= 3 and done["db_reduce_save_add"] >= 3
    assert done["populate_sources"] >= 1 and done["detections"] >= 0
