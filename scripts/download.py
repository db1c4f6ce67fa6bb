"""download: fetch raw photometry of one RA bin's targets into the shared raw store (skips sources already stored with the same download parameters) and write the project's manifest.

Run by Snakemake (rule download) or by hand to debug it: python scripts/download.py --help
"""
import sys
from pathlib import Path

# run from a checkout without installing vo (Snakemake copies scripts; __real_file__ is the original)
sys.path.insert(0, str(Path(globals().get("__real_file__", __file__)).resolve().parents[1]))
from vo.pipeline.scripting import rule_main  # noqa: E402

rule_main("download", __doc__, globals().get("snakemake"))
