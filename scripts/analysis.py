"""analysis: quality checks, event finder, simulated injections and histograms for one RA bin.

Run by Snakemake (rule analysis) or by hand to debug it: python scripts/analysis.py --help
"""
from vo.scripting import rule_main

rule_main("analysis", __doc__, globals().get("snakemake"))
