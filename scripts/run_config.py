"""run_config: write the run's final merged config (00_config_{hash}.yaml) and provenance.yaml.

Run by Snakemake (rule run_config) or by hand to debug it: python scripts/run_config.py --help
"""
from vo.scripting import rule_main

rule_main("run_config", __doc__, globals().get("snakemake"))
