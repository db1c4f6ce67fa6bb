"""ingest: put one RA bin's products (sources, raw photometry, light curves, detections, provenance) into the database.

Run by Snakemake (rule ingest) or by hand to debug it: python scripts/ingest.py --help
"""
from vo.scripting import rule_main

rule_main("ingest", __doc__, globals().get("snakemake"))
