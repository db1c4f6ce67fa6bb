"""combine: sum one observatory's per-bin histograms and efficiency counts; write the efficiency table.

Run by Snakemake (rule combine) or by hand to debug it: python scripts/combine.py --help
"""
from vo.scripting import rule_main

rule_main("combine", __doc__, globals().get("snakemake"))
