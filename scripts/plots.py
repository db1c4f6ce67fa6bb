"""plots: light curves with detections and the efficiency table, for snakemake --report.

Run by Snakemake (rule plots) or by hand to debug it: python scripts/plots.py --help
"""
from vo.scripting import rule_main

rule_main("plots", __doc__, globals().get("snakemake"))
