"""targets: read the catalog, propagate proper motions, write one targets file per RA bin.

Run by Snakemake (rule targets) or by hand to debug it: python scripts/targets.py --help
"""
from vo.scripting import rule_main

rule_main("targets", __doc__, globals().get("snakemake"))
