"""efficiency_summary: combine every CCD's fake-injection efficiency table into one table and plot.

Run by Snakemake (rule efficiency_summary) or by hand to debug it: python scripts/efficiency_summary.py --help
"""
import sys
from pathlib import Path

# run from a checkout without installing vo (Snakemake copies scripts; __real_file__ is the original)
sys.path.insert(0, str(Path(globals().get("__real_file__", __file__)).resolve().parents[1]))
from vo.pipeline.scripting import rule_main  # noqa: E402

rule_main("efficiency_summary", __doc__, globals().get("snakemake"))
