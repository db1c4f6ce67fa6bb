"""Every path template of the workflow, in one place (used by the Snakefile and the scripts).

Raw data is shared between projects and never hashed::

    {data_root}/{OBS}/{OBS}_photometry_RA{ra:03d}.h5

Products embed the provenance hash of the step that made them::

    {data_root}/{PROJECT}/{step}-{hash}/...      (version_control: true)
    {data_root}/{PROJECT}/{step}/...             (version_control: false)
"""

from __future__ import annotations

from pathlib import Path

from vo import config as vconfig
from vo import provenance as vprov

#: File-name patterns inside a step folder; ``{obs}`` and ``{ra_bin}`` (3 digits) are
#: Snakemake wildcards as well as ``str.format`` fields.
FILES = {
    "targets": "targets_RA{ra_bin}.h5",
    "download": "{obs}_RA{ra_bin}_manifest.json",
    "reduce": "{obs}_photometry_RA{ra_bin}_reduced.h5",
    "analysis": "{obs}_RA{ra_bin}_analysis.h5",
    "histograms": "{obs}_RA{ra_bin}_histograms.nc",
    "combine": "{obs}_histograms.nc",
    "efficiency": "{obs}_efficiency.csv",
    "plots": "{obs}_detections.png",
    "ingest": "{obs}_RA{ra_bin}_ingest.json",
    # image pipeline: {obs} is the instrument; {exposure}, {ccd}, {filter} as named
    "bias": "{obs}_bias_{ccd}.fits",
    "flat": "{obs}_flat_{filter}_{ccd}.fits",
    "image": "{exposure}/{ccd}.image.fits",
    "sources": "{exposure}/{ccd}.sources.fits",
    "psf": "{exposure}/{ccd}.psf.fits",
    "background": "{exposure}/{ccd}.bg.fits",
    "wcs": "{exposure}/{ccd}.wcs.fits",
    "zp": "{exposure}/{ccd}.zp.fits",
    "ingest_images": "{exposure}/{ccd}.ingest.json",
    "reference": "{field}_{filter}_{ccd}",  # prefix: .image.fits, .psf.fits, .sources.fits
    "difference": "{exposure}/{ccd}.sub.fits",
    "aligned_reference": "{exposure}/{ccd}.refaligned.fits",
    "candidates": "{exposure}/{ccd}.candidates.fits",
    "cutouts": "{exposure}/{ccd}.cutouts.h5",
    "measurements": "{exposure}/{ccd}.measurements.fits",
    "training_set": "{exposure}/{ccd}.training.fits",
    "rb_model": "democam_rb_model.json",
    "scores": "{exposure}/{ccd}.scores.fits",
    "association": "{exposure}/{ccd}.association.json",
    "alerts": "{exposure}.alerts.avro",
    "forced": "{exposure}.forced.fits",  # forced photometry of known objects not detected in the exposure
    "efficiency_fakes": "{exposure}/{ccd}.efficiency.fits",
    "efficiency_summary": "efficiency_summary.fits",
    "efficiency_plot": "efficiency_summary.png",
}

#: The step whose folder holds each kind of product (kinds not listed are steps themselves).
KIND_STEP = {"histograms": "analysis", "efficiency": "combine", "plots": "combine",
             "bias": "calibration", "flat": "calibration", "image": "preprocessing",
             "sources": "extraction", "psf": "extraction", "background": "extraction",
             "wcs": "astrometry", "zp": "zero_point", "reference": "references",
             "difference": "subtraction", "aligned_reference": "subtraction", "candidates": "detection",
             "training_set": "rb_training", "rb_model": "rb_training", "scores": "scoring",
             "efficiency_fakes": "injection", "efficiency_summary": "injection",
             "efficiency_plot": "injection", "forced": "alerts"}


def ra_bin_str(ra_bin: int | str) -> str:
    """Three-digit RA-bin label, e.g. ``7 -> "007"``."""
    return f"{int(ra_bin):03d}"


class Paths:
    """Paths of one run, computed from its merged config."""

    def __init__(self, cfg: dict):
        self.cfg = cfg
        self.data_root = vconfig.data_root(cfg)
        self.project = cfg["project"]["name"].upper()
        self.version_control = bool(cfg["project"]["version_control"])
        self._hashes: dict[tuple, str] = {}  # step hashes, computed once per Paths (a run's snapshot)

    # -- shared, unhashed ------------------------------------------------------------
    def raw_photometry(self, obs: str, ra_bin: int | str) -> Path:
        obs = obs.upper()
        return self.data_root / obs / f"{obs}_photometry_RA{ra_bin_str(ra_bin)}.h5"

    def catalog_cache(self) -> Path:
        return self.data_root / "catalogs"

    def raw_exposure(self, instrument: str, exposure: str, suffix: str = ".fits") -> Path:
        """Raw exposure (multi-extension FITS, one HDU per CCD; ``.fits.fz`` when compressed)."""
        return self.data_root / instrument.upper() / "raw" / f"{exposure}{suffix}"

    def raw_truth(self, instrument: str, exposure: str) -> Path:
        """Truth table of a simulated exposure (DemoCam), next to the exposure."""
        return self.data_root / instrument.upper() / "raw" / f"{exposure}.truth.fits"

    def excerpt_tile(self, catalog: str, tile: int) -> Path:
        """Cached reference-catalog tile (HEALPix index ``tile``), shared by all projects."""
        return self.catalog_cache() / catalog / f"{catalog}_tile{int(tile):06d}.fits"

    # -- per project -----------------------------------------------------------------
    @property
    def project_dir(self) -> Path:
        return self.data_root / self.project

    def step_hash(self, step: str, obs: str | None = None) -> str:
        """Provenance hash of ``step`` (computed on first use: a Paths is one config's snapshot)."""
        key = (step, obs)
        if key not in self._hashes:
            self._hashes[key] = vprov.provenance(self.cfg, step, obs).hash
        return self._hashes[key]

    def step_suffix(self, step: str, obs: str | None = None) -> str:
        """``-{hash}`` with version control, ``""`` without."""
        return f"-{self.step_hash(step, obs)}" if self.version_control else ""

    def step_dir(self, step: str, obs: str | None = None) -> Path:
        return self.project_dir / f"{step}{self.step_suffix(step, obs)}"

    def product(self, kind: str, obs: str | None = None, ra_bin: int | str | None = None,
                **fields: str) -> Path:
        """Path of a product; ``kind`` is a key of :data:`FILES`; ``fields`` fill
        ``{exposure}``, ``{ccd}`` and ``{filter}`` of image products."""
        step = KIND_STEP.get(kind, kind)
        name = FILES[kind].format(obs=obs, ra_bin=ra_bin_str(ra_bin) if ra_bin is not None else "",
                                  **fields)
        return self.step_dir(step, obs) / name

    def pattern(self, kind: str) -> str:
        """Snakemake output pattern of a product: the step folder's hash is the wildcard
        ``{vc}`` (``-{hash}`` or empty), checked against the config by the rules."""
        return str(self.project_dir / f"{KIND_STEP.get(kind, kind)}{{vc}}" / FILES[kind])

    def run_config(self) -> Path:
        return self.project_dir / f"00_config_{vprov.run_hash(self.cfg)}.yaml"

    def provenance_file(self) -> Path:
        return self.project_dir / "provenance.yaml"

    def log(self, rule: str, *wildcards: str) -> str:
        return str(self.project_dir / "logs" / rule / ("_".join(wildcards) or rule)) + ".log"

    def benchmark(self, rule: str, *wildcards: str) -> str:
        return str(self.project_dir / "benchmarks" / rule / ("_".join(wildcards) or rule)) + ".tsv"

    def benchmark_summary(self) -> str:
        """Per-rule runtime and memory of the run's benchmark files (HTML table for the report)."""
        return str(self.project_dir / "benchmarks" / f"summary_{vprov.run_hash(self.cfg)}.html")
