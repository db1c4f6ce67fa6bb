"""astrometry: match one CCD's sources to Gaia DR3 and fit a TAN-SIP WCS (a failure is flagged).

Run by Snakemake (rule astrometry) or by hand to debug it: python scripts/astrometry.py --help
"""
import sys
from pathlib import Path

# run from a checkout without installing vo (Snakemake copies scripts; __real_file__ is the original)
sys.path.insert(0, str(Path(globals().get("__real_file__", __file__)).resolve().parents[1]))
from vo.pipeline.scripting import rule_main  # noqa: E402

rule_main("astrometry", __doc__, globals().get("snakemake"))
