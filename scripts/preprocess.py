"""preprocess: overscan, trim, bias, flat and gain for one CCD; image with weight and flags.

Run by Snakemake (rule preprocess) or by hand to debug it: python scripts/preprocess.py --help
"""
import sys
from pathlib import Path

# run from a checkout without installing vo (Snakemake copies scripts; __real_file__ is the original)
sys.path.insert(0, str(Path(globals().get("__real_file__", __file__)).resolve().parents[1]))
from vo.pipeline.scripting import rule_main  # noqa: E402

rule_main("preprocess", __doc__, globals().get("snakemake"))
