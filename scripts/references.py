"""references: coadd the reference images that overlap one new CCD (the reference policy) onto its grid (image, PSF, sources, zero point).

Run by Snakemake (rule references) or by hand to debug it: python scripts/references.py --help
"""
import sys
from pathlib import Path

# run from a checkout without installing vo (Snakemake copies scripts; __real_file__ is the original)
sys.path.insert(0, str(Path(globals().get("__real_file__", __file__)).resolve().parents[1]))
from vo.pipeline.scripting import rule_main  # noqa: E402

rule_main("references", __doc__, globals().get("snakemake"))
