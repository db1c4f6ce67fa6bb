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
from dataclasses import asdict, dataclass
from pathlib import Path

from vo import provenance as vprov
from vo.io.atomic import write_text
from vo.paths import Paths

log = logging.getLogger("vo.pipeline.plan")

#: source files whose code decides the plan (their modification times enter the key)
_CODE = ("vo/pipeline/plan.py", "vo/pipeline/py", "vo/catalog.py", "vo/images/instruments/base.py",
         "vo/images/instruments/decam.py", "vo/images/instruments/calibrated.py", "vo/images/instruments/democam/__init__.py",
         "vo/images/instruments/democam/plan.py", "vo/images/reference/pairing.py")
_MEMORY: dict[str, "Plan"] = {}


@dataclass(frozen=True)
class Plan:
    """What a run will do.

    ra_bins : RA bins (deg) with targets (``project.ra_bins``, or every bin of the catalog).
    exposures, ccds : science exposures and CCDs of the image pipeline (empty when it is off).
    filters : exposure -> filter.
    bias, flats : bias frames; filter -> flat frames.
    references : ``"exposure ccd"`` of each CCD of a new exposure -> the ``[exposure, ccd]``
        reference images coadded onto its grid (best first; empty: nothing overlaps it).
    new : new exposure -> [patch of sky, filter], in time order.
    unreferenced : exposures that are neither references nor new with a reference (calibrated only).
    patches : exposure -> patch of sky (``p00``, ...).
    grids : ``"exposure ccd"`` of a new image -> the grid its references are coadded on
        (:func:`vo.images.reference.pairing.coadd_grid`).
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
    patches: dict
    grids: dict

    def reference_images(self, exposure: str, ccd: str) -> list[tuple[str, str]]:
        """The (exposure, ccd) reference images of one new image (empty: none overlaps it)."""
        return [tuple(r) for r in self.references.get(f"{exposure} {ccd}", [])]

    def coadd_grid(self, exposure: str, ccd: str) -> dict | None:
        """The grid the references of new image ``exposure`` ``ccd`` are coadded on (None: it has none)."""
        return self.grids.get(f"{exposure} {ccd}")

    def new_exposures(self) -> dict[str, tuple[str, str]]:
        return {e: tuple(k) for e, k in self.new.items()}

    def image_config(self, cfg: dict) -> dict:
        """``cfg`` with the exposures and calibration frames listed, so that nothing reads the raw
        folder again to find them (:func:`get_plan` of it is this plan)."""
        icfg = {**cfg, "images": {**cfg["images"], "exposures": list(self.exposures),
                                  "bias_exposures": list(self.bias), "flat_exposures": dict(self.flats)}}
        _MEMORY[plan_key(icfg)] = self
        return icfg


def instrument(cfg: dict):
    """The run's :class:`~vo.images.instruments.base.Instrument` (``images.instrument``)."""
    from vo.images.instruments import get_instrument
    return get_instrument(cfg["images"]["instrument"], cfg)


def instrument_key(cfg: dict) -> str:
    """The instrument as it appears in provenance keys and file names (upper case)."""
    return cfg["images"]["instrument"].upper()


def exposures(cfg: dict) -> list[str]:
    """Science exposures of this run (config list, or what the instrument lists)."""
    return list(cfg["images"]["exposures"] or instrument(cfg).exposure_names(cfg))


def ccds(cfg: dict) -> list[str]:
    """CCDs of this run: ``images.ccds`` (checked against the instrument's) or all of them."""
    names = instrument(cfg).section_names()
    wanted = cfg["images"]["ccds"]
    if wanted:
        unknown = sorted(set(wanted) - set(names))
        if unknown:
            raise ValueError(f"images.ccds: unknown sections {unknown} of {cfg['images']['instrument']}")
        return [c for c in names if c in wanted]
    return names


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
    if cfg["images"]["enabled"] and not instrument(cfg).simulated:
        parts["raw"] = sorted(_stat(p) for p in instrument(cfg).input_files())
    return vprov.short_hash(parts)


def build_plan(cfg: dict) -> Plan:
    """The plan of ``cfg``, computed (reads the catalog and the raw folder)."""
    from vo.catalog import Catalog

    ra_bins = [int(b) for b in (cfg["project"]["ra_bins"] or Catalog.from_config(cfg).load().ra_bins())]
    if not cfg["images"]["enabled"]:
        return Plan(ra_bins, [], [], {}, [], {}, {}, {}, [], {}, {})
    from vo.images.reference.pairing import image_table, plan_references

    inst = instrument(cfg)
    names, cal, sections = exposures(cfg), inst.calibration_names(cfg), ccds(cfg)
    rows = inst.image_rows(cfg, names, sections)  # the raw headers, read once
    filters = {r["exposure"]: r["filter"] for r in rows}
    pairing = plan_references(image_table(rows), cfg["references"])
    return Plan(ra_bins, names, sections, {e: filters.get(e) or inst.exposure_filter(Paths(cfg), e) for e in names},
                cal["bias"], cal["flat"], {f"{e} {c}": [list(r) for r in v] for (e, c), v in pairing.references.items()},
                {e: list(k) for e, k in pairing.new.items()}, list(pairing.unreferenced), dict(pairing.patches),
                {f"{e} {c}": g for (e, c), g in pairing.grids.items()})


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
