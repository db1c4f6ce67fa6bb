"""master_flat: combine the flat exposures of one CCD and filter into a master flat (median 1).

Run by Snakemake (rule master_flat) or by hand to debug it: python scripts/master_flat.py --help
"""
import sys
from pathlib import Path

# run from a checkout without installing vo (Snakemake copies scripts; __real_file__ is the original)
sys.path.insert(0, str(Path(globals().get("__real_file__", __file__)).resolve().parents[1]))
from vo.pipeline.scripting import rule_main  # noqa: E402

rule_main("master_flat", __doc__, globals().get("snakemake"))
