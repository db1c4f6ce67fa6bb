"""reduce: turn one RA bin's raw photometry into light curves (per season and filter, flux in uJy, robust statistics).

Run by Snakemake (rule reduce) or by hand to debug it: python scripts/reduce.py --help
"""
from vo.scripting import rule_main

rule_main("reduce", __doc__, globals().get("snakemake"))
