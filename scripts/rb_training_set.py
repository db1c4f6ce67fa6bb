"""rb_training_set: the labelled real/bogus training set of one new CCD (fakes and artifacts injected, then subtracted, detected and measured).

Run by Snakemake (rule rb_training_set) or by hand to debug it: python scripts/rb_training_set.py --help
"""
import sys
from pathlib import Path

# run from a checkout without installing vo (Snakemake copies scripts; __real_file__ is the original)
sys.path.insert(0, str(Path(globals().get("__real_file__", __file__)).resolve().parents[1]))
from vo.pipeline.scripting import rule_main  # noqa: E402

rule_main("rb_training_set", __doc__, globals().get("snakemake"))
