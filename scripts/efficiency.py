"""efficiency: inject fakes of known flux into one new CCD, run the same subtraction, detection, cuts and real/bogus score, and write the detection efficiency and flux bias per magnitude.

Run by Snakemake (rule efficiency) or by hand to debug it: python scripts/efficiency.py --help
"""
import sys
from pathlib import Path

# run from a checkout without installing vo (Snakemake copies scripts; __real_file__ is the original)
sys.path.insert(0, str(Path(globals().get("__real_file__", __file__)).resolve().parents[1]))
from vo.pipeline.scripting import rule_main  # noqa: E402

rule_main("efficiency", __doc__, globals().get("snakemake"))
