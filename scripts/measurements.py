"""measurements: fluxes, magnitudes, shapes, dipole and bad-pixel measures of each candidate, with the analytic cuts.

Run by Snakemake (rule measurements) or by hand to debug it: python scripts/measurements.py --help
"""
import sys
from pathlib import Path

# run from a checkout without installing vo (Snakemake copies scripts; __real_file__ is the original)
sys.path.insert(0, str(Path(globals().get("__real_file__", __file__)).resolve().parents[1]))
from vo.pipeline.scripting import rule_main  # noqa: E402

rule_main("measurements", __doc__, globals().get("snakemake"))
