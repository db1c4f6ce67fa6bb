"""scoring: real/bogus score of each kept measurement of one CCD (democam_rb or braai d6_m7).

Run by Snakemake (rule scoring) or by hand to debug it: python scripts/scoring.py --help
"""
import sys
from pathlib import Path

# run from a checkout without installing vo (Snakemake copies scripts; __real_file__ is the original)
sys.path.insert(0, str(Path(globals().get("__real_file__", __file__)).resolve().parents[1]))
from vo.pipeline.scripting import rule_main  # noqa: E402

rule_main("scoring", __doc__, globals().get("snakemake"))
