"""ingest_images: put one CCD's products (exposure, image, sources, PSF, WCS, zero point) into the database.

Run by Snakemake (rule ingest_images) or by hand to debug it: python scripts/ingest_images.py --help
"""
import sys
from pathlib import Path

# run from a checkout without installing vo (Snakemake copies scripts; __real_file__ is the original)
sys.path.insert(0, str(Path(globals().get("__real_file__", __file__)).resolve().parents[1]))
from vo.pipeline.scripting import rule_main  # noqa: E402

rule_main("ingest_images", __doc__, globals().get("snakemake"))
