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
from vo import steps as vsteps

#: File-name patterns inside a step folder (from the step table); ``{obs}`` and ``{ra_bin}``
#: (3 digits) are Snakemake wildcards as well as ``str.format`` fields.
FILES = vsteps.FILES
#: The step whose folder holds each kind of product.
KIND_STEP = vsteps.KIND_STEP


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
        step = KIND_STEP[kind]
        name = FILES[kind].format(obs=obs, ra_bin=ra_bin_str(ra_bin) if ra_bin is not None else "",
                                  **fields)
        return self.step_dir(step, obs) / name

    def pattern(self, kind: str) -> str:
        """Snakemake output pattern of a product: the step folder's hash is the wildcard
        ``{vc}`` (``-{hash}`` or empty), checked against the config by the rules."""
        return str(self.project_dir / f"{KIND_STEP[kind]}{{vc}}" / FILES[kind])

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
