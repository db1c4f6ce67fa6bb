"""download: fetch raw photometry of one RA bin's targets into the shared raw store (skips sources already stored with the same download parameters) and write the project's manifest.

Run by Snakemake (rule download) or by hand to debug it: python scripts/download.py --help
"""
from vo.scripting import rule_main

rule_main("download", __doc__, globals().get("snakemake"))
