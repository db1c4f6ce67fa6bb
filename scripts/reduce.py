"""reduce: turn one RA bin's raw photometry into light curves (per season and filter, flux in uJy, robust statistics).

Run by Snakemake (rule reduce) or by hand to debug it: python scripts/reduce.py --help
"""
import sys
from pathlib import Path

# run from a checkout without installing vo (Snakemake copies scripts; __real_file__ is the original)
sys.path.insert(0, str(Path(globals().get("__real_file__", __file__)).resolve().parents[1]))
from vo.pipeline.scripting import rule_main  # noqa: E402

rule_main("reduce", __doc__, globals().get("snakemake"))
