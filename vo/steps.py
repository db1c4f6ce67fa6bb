"""THE step table: every step of the workflow, once.

A *step* is a unit of provenance: it has one folder per config (``{step}-{hash}``), one
provenance hash, and one code version.  A step is run by one or more *rules* (Snakemake rules,
rule scripts in ``scripts/`` and log folders share the rule's name); most steps have one rule of
the same name.  Everything else reads this table:

* :mod:`vo.provenance`: which config sections, upstream steps and code version make the hash;
* :mod:`vo.paths`: the file names of every product kind and the step folder that holds it;
* :mod:`vo.pipeline.scripting`: the command-line arguments of each rule script and the function
  it runs;
* :mod:`vo.pipeline.status` and the Snakefile: each rule's wildcards, log names, and which
  rules run per CCD;
* ``docs/architecture.md``: the rendered table (``vo steps --markdown``).

Adding a step is one entry here, one ``run_<rule>`` function, one rule in ``workflow/rules``
and one script (see ``docs/architecture.md``).  Bump a step's ``code_version`` when its results
change: its hash, and every downstream hash, changes with it.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Rule:
    """One rule (job kind) of a step.

    name : rule, script (``scripts/{name}.py``), log folder and body (``run_{name}``) name.
    wildcards : the job's wildcards, in the order its log and benchmark files are named by.
    outputs : product kinds the rule writes (keys of the step's ``files``).
    function : ``module:function`` of the rule body, called as ``function(cfg, **job, inputs,
        outputs)``.
    per_ccd : one job per (exposure, CCD); with ``images.jobs: exposure`` one job per exposure.
    """

    name: str
    wildcards: tuple[str, ...]
    outputs: tuple[str, ...]
    function: str
    per_ccd: bool = False


@dataclass(frozen=True)
class Step:
    """One step: a provenance unit with its own folder.

    name : the step's name (folder ``{name}-{hash}``, provenance, database ``provenances.step``).
    half : ``lightcurves`` or ``images``.
    sections : config sections whose critical parameters enter the hash (``{obs}`` is the
        observatory).
    upstream : steps whose hashes enter this one.
    code_version : bumped when the step's results change.
    files : product kind -> file name pattern inside the step folder (``{obs}``, ``{ra_bin}``,
        ``{exposure}``, ``{ccd}``, ``{filter}``, ``{field}``).
    rules : the rules that run the step.
    ingest : the database tables the step's products are indexed in ("" when none).
    per_obs : one provenance per observatory (light curves) or instrument (images).
    exclude : sub-sections of ``sections`` left out (they belong to another step).
    doc : one line saying what the step does.
    """

    name: str
    half: str
    sections: tuple[str, ...]
    upstream: tuple[str, ...]
    code_version: str
    files: dict
    rules: tuple[Rule, ...]
    ingest: str = ""
    per_obs: bool = True
    exclude: tuple[str, ...] = field(default_factory=tuple)
    doc: str = ""

    @property
    def images(self) -> bool:
        return self.half == "images"


_LC = "vo.pipeline.lightcurves"
_IM = "vo.pipeline.image_steps"
_TR = "vo.pipeline.transient_steps"
_BIN = ("obs", "ra_bin")
_CCD = ("exposure", "ccd")


def _rule(name, wildcards, outputs, module, per_ccd=False):
    return Rule(name, wildcards, outputs, f"{module}:run_{name}", per_ccd)


TABLE: tuple[Step, ...] = (
    # -- light curves (per observatory and RA bin) -----------------------------------------
    Step("targets", "lightcurves", ("catalog",), (), "1",
         {"targets": "targets_RA{ra_bin}.h5"},
         (_rule("targets", (), ("targets",), _LC),), ingest="sources", per_obs=False,
         doc="catalog targets with proper motion applied, split by RA bin"),
    Step("download", "lightcurves", ("{obs}",), ("targets",), "1",
         {"download": "{obs}_RA{ra_bin}_manifest.json"},
         (_rule("download", _BIN, ("download",), _LC),), ingest="raw_photometry",
         exclude=("{obs}.reducer", "{obs}.download"),
         doc="survey photometry of the bin's targets into the shared raw store; the project's manifest"),
    Step("reduce", "lightcurves", ("{obs}.reducer",), ("download",), "1",
         {"reduce": "{obs}_photometry_RA{ra_bin}_reduced.h5"},
         (_rule("reduce", _BIN, ("reduce",), _LC),), ingest="lightcurves",
         doc="raw photometry to light curves per source, filter and season"),
    Step("analysis", "lightcurves", ("analysis", "simulator", "histograms"), ("reduce",), "2",  # 2: periods
         {"analysis": "{obs}_RA{ra_bin}_analysis.h5", "histograms": "{obs}_RA{ra_bin}_histograms.nc"},
         (_rule("analysis", _BIN, ("analysis", "histograms"), _LC),), ingest="detections",
         doc="quality checks, event finder, injected events, additive histograms"),
    Step("combine", "lightcurves", (), ("analysis",), "1",
         {"combine": "{obs}_histograms.nc", "efficiency": "{obs}_efficiency.csv",
          "plots": "{obs}_detections.png"},
         (_rule("combine", ("obs",), ("combine", "efficiency"), _LC),
          _rule("plots", ("obs",), ("plots",), _LC)),
         doc="histograms summed over RA bins, efficiency table, plots for the report"),
    Step("ingest", "lightcurves", (), ("download", "reduce", "analysis"), "1",
         {"ingest": "{obs}_RA{ra_bin}_ingest.json"},
         (_rule("ingest", _BIN, ("ingest",), _LC),),
         ingest="sources, raw_photometry, lightcurves, detections",
         doc="the bin's products into the database (receipt file)"),
    # -- images: calibration to zero point (per exposure and CCD) --------------------------
    Step("calibration", "images", ("calibration",), (), "1",
         {"bias": "{obs}_bias_{ccd}.fits", "flat": "{obs}_flat_{filter}_{ccd}.fits"},
         (_rule("master_bias", ("ccd",), ("bias",), _IM),
          _rule("master_flat", ("filter", "ccd"), ("flat",), _IM)),
         doc="master bias per CCD and master flat per CCD and filter"),
    Step("preprocessing", "images", ("preprocessing",), ("calibration",), "1",
         {"image": "{exposure}/{ccd}.image.fits"},
         (_rule("preprocess", _CCD, ("image",), _IM, per_ccd=True),), ingest="images",
         doc="overscan, trim, bias, flat, gain; weight and flags"),
    Step("extraction", "images", ("extraction",), ("preprocessing",), "4",  # 4: joint fit stops at its minimum
         {"sources": "{exposure}/{ccd}.sources.fits", "psf": "{exposure}/{ccd}.psf.fits",
          "background": "{exposure}/{ccd}.bg.fits"},
         (_rule("extract", _CCD, ("sources", "psf", "background"), _IM, per_ccd=True),),
         ingest="source_lists, psfs",
         doc="background, sources, spatially varying PSF, photometry"),
    Step("astrometry", "images", ("astrometry", "catalog_excerpts"), ("extraction",), "1",
         {"wcs": "{exposure}/{ccd}.wcs.fits"},
         (_rule("astrometry", _CCD, ("wcs",), _IM, per_ccd=True),), ingest="world_coordinates",
         doc="TAN-SIP WCS against Gaia DR3"),
    Step("zero_point", "images", ("zero_point",), ("astrometry",), "3",  # 3: colour errors weight stars; DR3 on DECam
         {"zp": "{exposure}/{ccd}.zp.fits"},
         (_rule("zero_point", _CCD, ("zp",), _IM, per_ccd=True),), ingest="zero_points",
         doc="zero point, colour term, aperture correction, limiting magnitude"),
    Step("ingest_images", "images", (), ("preprocessing", "extraction", "astrometry", "zero_point"), "1",
         {"ingest_images": "{exposure}/{ccd}.ingest.json"},
         (_rule("ingest_images", _CCD, ("ingest_images",), _IM, per_ccd=True),),
         ingest="exposures, images, source_lists, psfs, world_coordinates, zero_points, catalog_excerpts",
         doc="one CCD's products into the database (receipt file)"),
    # -- images: references to alerts ------------------------------------------------------
    Step("references", "images", ("references",), ("zero_point",), "3",  # 3: per new CCD, over its footprint
         {"reference_image": "{exposure}/{ccd}.ref.image.fits", "reference_psf": "{exposure}/{ccd}.ref.psf.fits",
          "reference_sources": "{exposure}/{ccd}.ref.sources.fits"},
         (_rule("references", _CCD, ("reference_image", "reference_psf", "reference_sources"), _TR,
                per_ccd=True),), ingest="references",
         doc="the reference images overlapping a new CCD (reference policy) coadded over its footprint"),
    Step("subtraction", "images", ("subtraction",), ("zero_point", "references"), "5",  # 5: AL sky background; ratio from stars
         {"difference": "{exposure}/{ccd}.sub.fits", "aligned_reference": "{exposure}/{ccd}.refaligned.fits"},
         (_rule("subtraction", _CCD, ("difference", "aligned_reference"), _TR, per_ccd=True),),
         ingest="subtractions", doc="reference aligned to the new image and subtracted (ZOGY, Alard-Lupton)"),
    Step("detection", "images", ("detection",), ("subtraction",), "3",  # 3: fits with each one's PSF
         {"candidates": "{exposure}/{ccd}.candidates.fits"},
         (_rule("detection", _CCD, ("candidates",), _TR, per_ccd=True),),
         doc="positive and negative candidates on the score image"),
    Step("cutouts", "images", ("cutouts",), ("detection",), "1",
         {"cutouts": "{exposure}/{ccd}.cutouts.h5"},
         (_rule("cutouts", _CCD, ("cutouts",), _TR, per_ccd=True),), ingest="cutouts",
         doc="new, reference and difference stamps per candidate"),
    Step("measurements", "images", ("measurements",), ("cutouts",), "2",  # 2: PSF fluxes with each one's own PSF
         {"measurements": "{exposure}/{ccd}.measurements.fits"},
         (_rule("measurements", _CCD, ("measurements",), _TR, per_ccd=True),), ingest="measurements",
         doc="fluxes, shapes and analytic cuts per candidate"),
    Step("rb_training", "images", ("scoring", "injection"), ("measurements",), "3",  # 3: local PSF per candidate
         {"training_set": "{exposure}/{ccd}.training.fits", "rb_model": "democam_rb_model.json"},
         (_rule("rb_training_set", _CCD, ("training_set",), _TR, per_ccd=True),
          _rule("train_rb", (), ("rb_model",), _TR)),
         doc="labelled injections per new CCD; the democam_rb model trained on all of them"),
    Step("scoring", "images", ("scoring",), ("measurements", "rb_training"), "3",  # 3: local PSF per candidate
         {"scores": "{exposure}/{ccd}.scores.fits"},
         (_rule("scoring", _CCD, ("scores",), _TR, per_ccd=True),), ingest="scores",
         doc="real/bogus score per kept measurement"),
    Step("association", "images", ("association",), ("scoring",), "1",
         {"association": "{exposure}/{ccd}.association.json"},
         (_rule("association", _CCD, ("association",), _TR, per_ccd=True),),
         ingest="references, subtractions, cutouts, measurements, scores, objects",
         doc="transient products into the database; real measurements associated to objects"),
    Step("injection", "images", ("injection",), ("scoring",), "1",
         {"efficiency_fakes": "{exposure}/{ccd}.efficiency.fits", "efficiency_summary": "efficiency_summary.fits",
          "efficiency_plot": "efficiency_summary.png"},
         (_rule("efficiency", _CCD, ("efficiency_fakes",), _TR, per_ccd=True),
          _rule("efficiency_summary", (), ("efficiency_summary", "efficiency_plot"), _TR)),
         doc="fakes injected per new CCD: efficiency and flux bias per magnitude; combined"),
    Step("alerts", "images", (), ("association",), "1",
         {"alerts": "{exposure}.alerts.avro", "forced": "{exposure}.forced.fits"},
         (_rule("alerts", ("exposure",), ("alerts", "forced"), _TR),),
         doc="AVRO alerts per exposure; forced photometry of undetected known objects"),
)

#: Rules outside any step: they write raw data (never hashed) or the run's config.
UNHASHED_RULES: tuple[Rule, ...] = (
    Rule("run_config", (), (), f"{_LC}:run_config"),
    _rule("simulate_exposure", ("exposure",), (), _IM),
    _rule("simulate_calibration", ("exposure",), (), _IM),
)

STEPS: dict[str, Step] = {s.name: s for s in TABLE}
#: rule name -> (rule, its step or None)
RULES: dict[str, tuple[Rule, Step | None]] = {
    **{r.name: (r, None) for r in UNHASHED_RULES},
    **{r.name: (r, s) for s in TABLE for r in s.rules},
}
#: product kind -> file name pattern; product kind -> the step whose folder holds it
FILES: dict[str, str] = {k: v for s in TABLE for k, v in s.files.items()}
KIND_STEP: dict[str, str] = {k: s.name for s in TABLE for k in s.files}
#: rules that run per (exposure, CCD), and per (obs, RA bin)
PER_CCD: tuple[str, ...] = tuple(r.name for s in TABLE for r in s.rules if r.per_ccd)
PER_BIN: tuple[str, ...] = tuple(r.name for s in TABLE for r in s.rules if r.wildcards == _BIN)
IMAGE_RULES: tuple[str, ...] = tuple(name for name, (r, s) in RULES.items()
                                     if (s is not None and s.images) or r.function.startswith((_IM, _TR)))


def step_of(rule: str) -> str | None:
    """The step (provenance, folder) a rule belongs to; None for an unhashed rule."""
    _, s = RULES[rule]
    return s.name if s else None


def log_wildcards(rule: str) -> tuple[str, ...]:
    """The wildcards a rule's log and benchmark files are named by (``vc``: the step folder's
    ``-{hash}``, for hashed rules with wildcards)."""
    r, s = RULES[rule]
    if s is None or rule == "targets":
        return r.wildcards
    return (*r.wildcards, "vc")


def job_args(rule: str) -> tuple[str, ...]:
    """Keyword arguments of a rule body besides ``cfg``/``inputs``/``outputs`` (``filter`` is
    passed as ``filt``)."""
    return tuple("filt" if w == "filter" else w for w in RULES[rule][0].wildcards)


def function(rule: str):
    """The rule body of ``rule`` (imported on first use)."""
    import importlib

    module, name = RULES[rule][0].function.split(":")
    return getattr(importlib.import_module(module), name)


#: rules whose body takes no ``inputs`` (they read the config only)
NO_INPUTS = ("targets", "run_config")


def call(rule: str, cfg: dict, args: dict, inputs: dict, outputs: dict):
    """Run the body of ``rule``: ``function(cfg, **args, inputs=inputs, outputs=outputs)``, without
    ``inputs`` for :data:`NO_INPUTS`."""
    kwargs = dict(args, outputs=outputs) if rule in NO_INPUTS else dict(args, inputs=inputs, outputs=outputs)
    return function(rule)(cfg, **kwargs)


def render_markdown() -> str:
    """The step table as Markdown (``docs/architecture.md`` includes it; ``vo steps --markdown``)."""
    rows = ["| step | half | rules (wildcards) | upstream | config sections | files | database | what it does |",
            "|---|---|---|---|---|---|---|---|"]
    for s in TABLE:
        rules = "<br>".join(f"`{r.name}`({', '.join(r.wildcards)}){' per CCD' if r.per_ccd else ''}"
                            for r in s.rules)
        files = "<br>".join(f"`{v}`" for v in s.files.values())
        rows.append(f"| **{s.name}** v{s.code_version} | {s.half} | {rules} | {', '.join(s.upstream) or '-'} | "
                    f"{', '.join(s.sections) or '-'} | {files} | {s.ingest or '-'} | {s.doc} |")
    rows.append("")
    rows.append("Rules outside any step (raw data and the run's config, never hashed): "
                + ", ".join(f"`{r.name}`" for r in UNHASHED_RULES) + ".")
    return "\n".join(rows) + "\n"
