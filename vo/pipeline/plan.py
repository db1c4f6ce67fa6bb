"""The plan of a run, built once per config and kept in a file.

What the workflow needs to know before any job runs: the targets' RA bins (from the catalog),
the exposures, CCDs and calibration frames (from the config or the raw folder's headers), each
exposure's filter, which exposures build each reference and which new exposure is subtracted
from which reference (asked of the instrument, :meth:`~vo.images.instruments.base.Instrument.
reference_plan`).  Reading a 1.3-million-row catalog or a night's raw headers takes seconds, and
Snakemake parses the Snakefile again in every cluster job, so the plan is written to
``{project}/.plans/plan_{key}.json`` the first time and read from there afterwards.

``key`` hashes everything the plan depends on: the whole merged config, the catalog file's size
and modification time, the raw folder's listing (names, sizes, modification times; not for a
simulated camera, whose exposures come from the config), and the source files of the planning
code.  Any change to one of them gives a new plan; nothing has to be cleared by hand.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from vo import provenance as vprov
from vo.io.atomic import write_text
from vo.paths import Paths
from vo.pipeline import image_io

log = logging.getLogger("vo.pipeline.plan")

#: source files whose code decides the plan (their modification times enter the key)
_CODE = ("vo/pipeline/plan.py", "vo/pipeline/image_io.py", "vo/catalog.py", "vo/images/instruments/base.py",
         "vo/images/instruments/decam.py", "vo/images/instruments/democam/__init__.py",
         "vo/images/instruments/democam/plan.py")
_MEMORY: dict[str, "Plan"] = {}


@dataclass(frozen=True)
class Plan:
    """What a run will do.

    ra_bins : RA bins (deg) with targets (``project.ra_bins``, or every bin of the catalog).
    exposures, ccds : science exposures and CCDs of the image pipeline (empty when it is off).
    filters : exposure -> filter.
    bias, flats : bias frames; filter -> flat frames.
    references : ``"field filter"`` -> the exposures coadded into that reference.
    new : new exposure -> [field, filter] of its reference.
    unreferenced : exposures with no reference to be subtracted from (calibrated only).
    """

    ra_bins: list
    exposures: list
    ccds: list
    filters: dict
    bias: list
    flats: dict
    references: dict
    new: dict
    unreferenced: list

    def reference_sets(self) -> dict[tuple[str, str], list[str]]:
        return {tuple(k.split(" ", 1)): v for k, v in self.references.items()}

    def new_exposures(self) -> dict[str, tuple[str, str]]:
        return {e: tuple(k) for e, k in self.new.items()}

    def image_config(self, cfg: dict) -> dict:
        """``cfg`` with the exposures and calibration frames listed, so that nothing reads the raw
        folder again to find them."""
        return {**cfg, "images": {**cfg["images"], "exposures": list(self.exposures),
                                  "bias_exposures": list(self.bias), "flat_exposures": dict(self.flats)}}


def _stat(path: Path) -> list:
    try:
        st = path.stat()
    except OSError:
        return [str(path), None]
    return [str(path), st.st_size, st.st_mtime_ns]


def plan_key(cfg: dict) -> str:
    """Hash of everything the plan of ``cfg`` depends on (see the module docstring)."""
    from vo.catalog import Catalog

    repo = Path(__file__).resolve().parents[2]
    parts = {"config": cfg, "code": [_stat(repo / f) for f in _CODE]}
    if not cfg["project"]["ra_bins"]:
        parts["catalog"] = _stat(Catalog.from_config(cfg).get_fullname())
    if cfg["images"]["enabled"] and not image_io.instrument(cfg).simulated:
        raw = Paths(cfg).data_root / image_io.instrument_key(cfg) / "raw"
        parts["raw"] = sorted(_stat(raw / name) for name in (os.listdir(raw) if raw.is_dir() else []))
    return vprov.short_hash(parts)


def build_plan(cfg: dict) -> Plan:
    """The plan of ``cfg``, computed (reads the catalog and the raw folder)."""
    from vo.catalog import Catalog

    ra_bins = [int(b) for b in (cfg["project"]["ra_bins"] or Catalog.from_config(cfg).load().ra_bins())]
    if not cfg["images"]["enabled"]:
        return Plan(ra_bins, [], [], {}, [], {}, {}, {}, [])
    inst, paths = image_io.instrument(cfg), Paths(cfg)
    exposures, cal = image_io.exposures(cfg), inst.calibration_names(cfg)  # the raw folder, read once
    refs = inst.reference_plan(cfg, exposures)
    return Plan(ra_bins, exposures, image_io.ccds(cfg), {e: inst.exposure_filter(paths, e) for e in exposures},
                cal["bias"], cal["flat"], {f"{fld} {flt}": list(v) for (fld, flt), v in refs.sets.items()},
                {e: list(k) for e, k in refs.new.items()}, list(refs.unreferenced))


def get_plan(cfg: dict) -> Plan:
    """The plan of ``cfg``: from memory, else from its file, else built and written there."""
    key = plan_key(cfg)
    if key in _MEMORY:
        return _MEMORY[key]
    path = Paths(cfg).project_dir / ".plans" / f"plan_{key}.json"
    plan = None
    if path.exists():
        try:
            plan = Plan(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError) as exc:  # damaged: built again
            log.warning("%s: unreadable plan (%s); building it again", path, exc)
    if plan is None:
        plan = build_plan(cfg)
        try:
            write_text(path, json.dumps(asdict(plan), indent=1))
        except OSError as exc:  # a read-only data root: plan again next time
            log.warning("%s: cannot keep the plan (%s)", path, exc)
    _MEMORY[key] = plan
    return plan
