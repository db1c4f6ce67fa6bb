"""vo: survey photometry, light curves and transients, as a Snakemake workflow and a Python package."""

__version__ = "0.1.0"
