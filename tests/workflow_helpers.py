"""Running the Snakemake workflow from tests."""

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "workflow" / "Snakefile"),
             "--directory", str(REPO)]


def smk_env(data_root):
    """Environment of a test run: data under ``data_root``, the default SQLite database."""
    env = dict(os.environ, VO_DATA=str(data_root))
    env.pop("VO_DB_URL", None)
    return env


def snakemake_command(args, workdir=REPO):
    """The snakemake command line; ``workdir`` holds its ``.snakemake`` folder (locks, metadata)."""
    return SNAKEMAKE[:-1] + [str(workdir)] + list(args)


def smk(args, data_root, check=True, workdir=REPO):
    out = subprocess.run(snakemake_command(args, workdir), capture_output=True, text=True,
                         env=smk_env(data_root), cwd=REPO)
    if check and out.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{out.stdout[-4000:]}\n{out.stderr[-6000:]}")
    return out


def job_counts(text):
    """Parse Snakemake's 'Job stats' table: {rule: count}."""
    counts = {}
    m = re.search(r"Job stats:\n(.*?)\n\n", text, re.S)
    if not m:
        return counts
    for line in m.group(1).splitlines()[2:]:
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit() and parts[0] != "total":
            counts[parts[0]] = int(parts[1])
    return counts
