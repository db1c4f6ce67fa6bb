"""combine: sum one observatory's per-bin histograms and efficiency counts; write the efficiency table.

Run by Snakemake (rule combine) or by hand to debug it: python scripts/combine.py --help
"""
import sys
from pathlib import Path

# run from a checkout without installing vo (Snakemake copies scripts; __real_file__ is the original)
sys.path.insert(0, str(Path(globals().get("__real_file__", __file__)).resolve().parents[1]))
from vo.pipeline.scripting import rule_main  # noqa: E402

rule_main("combine", __doc__, globals().get("snakemake"))
