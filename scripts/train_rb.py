"""train_rb: train the DemoCam real/bogus model (boosted stumps) on every CCD's training set.

Run by Snakemake (rule train_rb) or by hand to debug it: python scripts/train_rb.py --help
"""
import sys
from pathlib import Path

# run from a checkout without installing vo (Snakemake copies scripts; __real_file__ is the original)
sys.path.insert(0, str(Path(globals().get("__real_file__", __file__)).resolve().parents[1]))
from vo.pipeline.scripting import rule_main  # noqa: E402

rule_main("train_rb", __doc__, globals().get("snakemake"))
