"""``snakemake --report`` carries a runtime and memory table per rule, built from the benchmark files."""

import base64
import csv
import re
import shutil
import zipfile
from pathlib import Path

import pytest
import yaml

from vo import config as vconfig
from vo.pipeline import status as vstatus
from vo.paths import Paths
from workflow_helpers import smk

pytestmark = pytest.mark.slow


def load_cfg(root: Path, cfgfile: Path) -> dict:
    """The config snakemake ran with (config/config.yaml, then the file), in ``root``."""
    return vconfig.workflow_config(cfgfile, {"project": {"data_root": str(root)}})


def html_rows(html: str) -> dict[str, dict]:
    """The table of the benchmark page: {rule: {column: text}}."""
    header = re.findall(r"<th>(.*?)</th>", html)
    rows = {}
    for tr in re.findall(r"<tr>(.*?)</tr>", html, re.S):
        cells = re.findall(r"<td>(.*?)</td>", tr, re.S)
        if cells:
            rows[cells[0]] = dict(zip(header, cells))
    return rows


def tsv_runs(folder: Path) -> list[dict]:
    """The rows of every benchmark file of one rule, read with the csv module."""
    out = []
    for tsv in sorted(folder.glob("*.tsv")):
        with open(tsv, newline="") as f:
            out += list(csv.DictReader(f, delimiter="\t"))
    return out


def check_table(rows: dict, bench_dir: Path) -> None:
    """Each rule's row agrees with its benchmark files (one file per job of the run)."""
    for rule in ("targets", "reduce", "analysis", "master_bias", "preprocess", "extract", "astrometry",
                 "zero_point", "ingest_images", "simulate_exposure"):
        runs = tsv_runs(bench_dir / rule)
        row = rows[rule]
        assert int(row["jobs"]) == len(list((bench_dir / rule).glob("*.tsv"))) == len(runs) > 0, rule
        seconds = [float(r["s"]) for r in runs]
        assert float(row["total s"]) == pytest.approx(sum(seconds), abs=0.01), rule
        assert float(row["max s"]) == pytest.approx(max(seconds), abs=0.01), rule
        assert float(row["max RSS MiB"]) == pytest.approx(max(float(r["max_rss"]) for r in runs), abs=0.01)
        assert float(row["max RSS MiB"]) > 10, "a Python process takes tens of MiB"
    assert int(rows["preprocess"]["jobs"]) == 2  # two exposures of one CCD


def test_html_report_has_the_benchmark_table(small_run, tmp_path):
    root, cfgfile = small_run
    P = Paths(load_cfg(root, cfgfile))
    report = tmp_path / "report.html"
    smk(["--configfile", str(cfgfile), "--report", str(report)], root)
    text = report.read_text()
    entry = re.search(re.escape(f'"{P.benchmark_summary()}": ') + r'\{.*?"data_uri": "data:text/html;[^"]*?base64,'
                      r'([A-Za-z0-9+/=]+)"', text, re.S)
    assert entry, "the benchmark table is in the report"
    assert "Runtime and memory per rule" in text  # the caption
    check_table(html_rows(base64.b64decode(entry.group(1)).decode()), P.project_dir / "benchmarks")


def test_zip_report_has_the_benchmark_table(small_run, tmp_path):
    root, cfgfile = small_run
    P = Paths(load_cfg(root, cfgfile))
    report = tmp_path / "report.zip"
    smk(["--configfile", str(cfgfile), "--report", str(report)], root)
    name = Path(P.benchmark_summary()).name
    with zipfile.ZipFile(report) as z:
        member = next(n for n in z.namelist() if n.endswith("/" + name))
        html = z.read(member).decode()
    check_table(html_rows(html), P.project_dir / "benchmarks")


def test_benchmark_table_leaves_out_other_configs(small_run, tmp_path):
    """Benchmark files named with another config's hash are not this run's; unhashed ones are."""
    src, cfgfile = small_run
    root = tmp_path / "run"
    shutil.copytree(src, root)
    cfg = load_cfg(root, cfgfile)
    P = Paths(cfg)
    before = vstatus.benchmark_table(cfg, P).set_index("rule")
    bench = P.project_dir / "benchmarks"
    one = next((bench / "extract").glob("*.tsv"))
    shutil.copy(one, one.with_name(re.sub(r"-[0-9a-f]{10}\.tsv$", "-0123456789.tsv", one.name)))
    shutil.copy(next((bench / "targets").glob("*.tsv")), bench / "targets" / "targets_again.tsv")
    after = vstatus.benchmark_table(cfg, P).set_index("rule")
    assert after.loc["extract", "jobs"] == before.loc["extract", "jobs"] == 2
    assert after.loc["targets", "jobs"] == before.loc["targets", "jobs"] + 1
    assert list(after.columns) == ["jobs", "total_s", "mean_s", "max_s", "max_rss_mib", "cpu_s"]
    assert (after["mean_s"] <= after["max_s"]).all() and (after["max_s"] <= after["total_s"] + 1e-9).all()


def test_vo_status_prints_the_benchmark_table(small_run):
    import os
    import subprocess
    import sys

    from workflow_helpers import REPO

    root, cfgfile = small_run
    env = dict(os.environ, VO_DATA=str(root))
    env.pop("VO_DB_URL", None)
    out = subprocess.run([sys.executable, "-m", "vo.cli", "status", "--configfile", str(cfgfile), "--benchmarks"],
                         capture_output=True, text=True, env=env, cwd=REPO, check=True).stdout
    table = out.split("\n\n", 1)[1].splitlines()
    assert table[0].split() == ["rule", "jobs", "total_s", "mean_s", "max_s", "max_rss_mib", "cpu_s"]
    rows = {line.split()[0]: line.split() for line in table[1:]}
    assert rows["preprocess"][1] == "2" and float(rows["preprocess"][5]) > 10
