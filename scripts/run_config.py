"""run_config: write the run's final merged config (00_config_{hash}.yaml) and provenance.yaml.

Run by Snakemake (rule run_config) or by hand to debug it: python scripts/run_config.py --help
"""
import sys
from pathlib import Path

# run from a checkout without installing vo (Snakemake copies scripts; __real_file__ is the original)
sys.path.insert(0, str(Path(globals().get("__real_file__", __file__)).resolve().parents[1]))
from vo.pipeline.scripting import rule_main  # noqa: E402

rule_main("run_config", __doc__, globals().get("snakemake"))
