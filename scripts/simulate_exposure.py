"""simulate_exposure: DemoCam only: simulate one raw science exposure (all CCDs) and its truth table.

Run by Snakemake (rule simulate_exposure) or by hand to debug it: python scripts/simulate_exposure.py --help
"""
import sys
from pathlib import Path

# run from a checkout without installing vo (Snakemake copies scripts; __real_file__ is the original)
sys.path.insert(0, str(Path(globals().get("__real_file__", __file__)).resolve().parents[1]))
from vo.pipeline.scripting import rule_main  # noqa: E402

rule_main("simulate_exposure", __doc__, globals().get("snakemake"))
