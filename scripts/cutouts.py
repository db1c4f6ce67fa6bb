"""cutouts: new, reference and difference stamps (with weights and flags) around each candidate of one CCD.

Run by Snakemake (rule cutouts) or by hand to debug it: python scripts/cutouts.py --help
"""
import sys
from pathlib import Path

# run from a checkout without installing vo (Snakemake copies scripts; __real_file__ is the original)
sys.path.insert(0, str(Path(globals().get("__real_file__", __file__)).resolve().parents[1]))
from vo.pipeline.scripting import rule_main  # noqa: E402

rule_main("cutouts", __doc__, globals().get("snakemake"))
