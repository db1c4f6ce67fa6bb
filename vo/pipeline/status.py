"""``vo status``: what a run has made, per step and provenance hash, from the files and the database.

The products the config asks for come from the same ``rule_io`` functions the Snakefile uses
(:func:`vo.pipeline.lightcurves.rule_io`, :func:`vo.pipeline.image_io.rule_io`), one call per job of the
workflow (:func:`jobs`).  Each product is then

* ``done``: the file exists;
* ``flagged``: it exists but records a failure: a skipped-product marker
  (:mod:`vo.pipeline.skipped`), an astrometric solution with ``ASTR_OK = F`` or a zero point with
  ``ZP_OK = F`` (the reason is read from the file);
* ``failed``: it does not exist and its job's log records an error (the rule scripts log why a
  job failed, :func:`vo.pipeline.scripting.rule_main`); the reason is the log's last ``ERROR`` line;
* ``missing``: it does not exist, and no log says its job failed (not run yet, or deleted since).

Per step the table also counts the files in the folders of the step's other provenance hashes
(earlier configs) and the database rows of every table keyed by provenance (with how many are
marked ``bad``), for the current and the other hashes.
"""

from __future__ import annotations

import json
import os
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from vo import provenance as vprov
from vo import steps as vsteps
from vo.paths import Paths
from vo.pipeline import image_io as image_rules
from vo.pipeline import lightcurves as workflow
from vo.pipeline.plan import get_plan

#: Outputs Snakemake deletes once used (``temp()``): never expected to stay.
TEMPORARY = {"aligned_reference"}
#: Product files this small are read for failure flags (header-only FITS, markers, receipts), bytes.
SMALL_FILE = 200_000
STATES = ("done", "flagged", "failed", "missing")


@dataclass
class Job:
    """One job of the workflow: its rule, wildcards and output files (``outputs``: those that stay;
    ``io``: the job's (inputs, outputs) of ``rule_io``, temporary outputs too)."""

    rule: str
    wildcards: dict
    outputs: list[str]
    io: tuple = (None, None)


@dataclass
class StepStatus:
    """Counts of one step (``key``: ``step`` or ``step.OBS``) at one provenance hash."""

    step: str
    obs: str
    hash: str
    current: bool
    counts: dict = field(default_factory=lambda: dict.fromkeys(STATES, 0))
    files_on_disk: int = 0
    db_rows: dict = field(default_factory=dict)  # table -> [rows, bad rows]
    problems: list = field(default_factory=list)  # (state, path, reason)

    @property
    def expected(self) -> int:
        return sum(self.counts.values())


def _outputs(files: dict) -> list[str]:
    out = []
    for key, value in files.items():
        if key not in TEMPORARY:
            out += [value] if isinstance(value, str) else list(value)
    return out


def lightcurve_jobs(cfg: dict, paths: Paths, ra_bins: list[int]) -> list[Job]:
    """The light-curve jobs of ``cfg`` over ``ra_bins`` (targets, per bin, per observatory)."""
    def job(rule, wildcards, obs=None, b=None):
        io = workflow.rule_io(rule, cfg, obs, b, ra_bins, paths=paths)
        return Job(rule, wildcards, _outputs(io[1]), io)

    out = [job("targets", {})]
    for obs in (o.upper() for o in cfg["project"]["obs_names"]):
        for b in ra_bins:
            out += [job(rule, {"obs": obs, "ra_bin": f"{int(b):03d}"}, obs, b) for rule in workflow.PER_BIN]
        out += [job(rule, {"obs": obs}, obs) for rule in ("combine", "plots")]
    return out


def image_jobs(cfg: dict, paths: Paths) -> list[Job]:
    """The image-pipeline jobs of ``cfg`` (raw exposures and their simulation are not products)."""
    plan = get_plan(cfg)
    cfg = plan.image_config(cfg)  # the raw folder is read once, into the plan
    exposures, ccds, filt_of = plan.exposures, plan.ccds, plan.filters
    news = plan.new_exposures()
    democam_rb = cfg["scoring"]["algorithm"] == "democam_rb"
    out = []

    def add(rule, exposure=None, ccd=None, filt=None):
        io = image_rules.rule_io(rule, cfg, exposure, ccd, filt, paths=paths)
        wc = {"exposure": exposure, "ccd": ccd, "filter": filt}
        out.append(Job(rule, {k: v for k, v in wc.items() if v is not None}, _outputs(io[1]), io))

    for c in ccds if plan.bias else ():  # calibrated images have no calibration frames
        add("master_bias", ccd=c)
        for f in sorted(set(filt_of.values())):
            add("master_flat", ccd=c, filt=f)
    for e in exposures:
        for c in ccds:
            for rule in ("preprocess", "extract", "astrometry", "zero_point", "ingest_images"):
                add(rule, e, c, filt_of[e])
    per_new = ["references", "subtraction", "detection", "cutouts", "measurements", "scoring", "association", "efficiency"]
    for e in news:
        for c in ccds:
            for rule in per_new + (["rb_training_set"] if democam_rb else []):
                add(rule, e, c)
        add("alerts", e)
    if news:
        if democam_rb:
            add("train_rb")
        add("efficiency_summary")
    return out


def jobs(cfg: dict, paths: Paths | None = None) -> list[Job]:
    """Every job of the workflow for ``cfg`` (light curves, and images when enabled)."""
    paths = paths or Paths(cfg)
    out = []
    if cfg["project"]["obs_names"]:
        out += lightcurve_jobs(cfg, paths, get_plan(cfg).ra_bins)
    if cfg["images"]["enabled"]:
        out += image_jobs(cfg, paths)
    return out


def job_log(paths: Paths, job: Job, vc: str) -> Path:
    """The log file of ``job`` (named as ``log_path`` in workflow/rules/common.smk names it; with
    ``images.jobs: exposure`` a per-CCD step has one log per exposure)."""
    names = vsteps.log_wildcards(job.rule)
    if job.rule in vsteps.PER_CCD and paths.cfg["images"]["jobs"] == "exposure":
        names = tuple(n for n in names if n != "ccd")
    template = paths.log(job.rule, *("{%s}" % n for n in names)).replace("_{vc}", "{vc}")
    return Path(template.format(**job.wildcards, vc=vc))


def log_error(path: Path) -> str | None:
    """The last ``ERROR`` line of a job's log (where a rule script says why it failed), or None
    when there is no log or it records no error."""
    if not path.exists():
        return None
    errors = [ln for ln in path.read_text(errors="replace").splitlines() if " ERROR " in ln]
    return errors[-1].strip()[:300] if errors else None


def failure_flag(path: Path) -> str | None:
    """Why an existing product records a failure (skipped marker, failed WCS or zero point, or a
    file that cannot be read), else None.  Only small files are read (header-only FITS, markers,
    JSON receipts)."""
    if path.stat().st_size > SMALL_FILE:
        return None
    try:
        return _recorded_failure(path)
    except (OSError, ValueError) as exc:  # astropy and h5py raise these for damaged files
        return f"unreadable: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"


def _recorded_failure(path: Path) -> str | None:
    name = path.name
    if name.endswith((".fits", ".fits.fz")):
        from astropy.io import fits

        h = fits.getheader(path, 0)
        if h.get("VO_SKIP", False):
            return f"skipped: {h.get('VO_WHY', '')}"
        for ok, msg, what in (("ASTR_OK", "ASTR_MSG", "astrometry failed"), ("ZP_OK", "ZP_MSG", "zero point failed")):
            if ok in h and not h[ok]:
                return f"{what}: {h.get(msg, '')}"
        return None
    from vo.pipeline.skipped import skipped_reason

    if name.endswith((".h5", ".hdf5")):
        import h5py

        h5py.File(path, "r").close()  # a damaged file raises here (skipped_reason would say "not skipped")
    why = skipped_reason(path) if name.endswith((".h5", ".hdf5", ".json")) else None
    return None if why is None else f"skipped: {why}"


def _is_product(name: str) -> bool:
    """Not a lock file nor an atomic write's temporary file (``.{stem}.XXXXXXXX.tmp``)."""
    return not (name.endswith(".lock") or name.startswith("."))


def _step_of(paths: Paths, product: str) -> str:
    """The step folder of a product path, without its hash (``reduce-3f9a1c2b7e`` -> ``reduce``)."""
    folder = Path(product).relative_to(paths.project_dir).parts[0]
    return re.sub(r"-[0-9a-f]{%d}$" % vprov.HASH_LENGTH, "", folder)


def _scope(step: str, job: Job, cfg: dict) -> str:
    sdef = vprov.STEPS[step]
    if sdef.images:
        return image_rules.instrument_key(cfg)
    return job.wildcards["obs"] if sdef.per_obs else ""


def file_status(cfg: dict, paths: Paths | None = None) -> dict[tuple, StepStatus]:
    """Per ``(step, obs, hash)``: the config's products counted by state, and the files in the step
    folders of other hashes (``{step}-{hash}/`` that the config does not use)."""
    paths = paths or Paths(cfg)
    table: dict[tuple, StepStatus] = {}
    for job in jobs(cfg, paths):
        step = _step_of(paths, job.outputs[0])  # a job writes into one step's folder
        obs = _scope(step, job, cfg)
        h = paths.step_hash(step, obs or None)
        st = table.setdefault((step, obs, h), StepStatus(step, obs, h, current=True))
        missing = {p for p in map(Path, job.outputs) if not p.exists()}
        job_error = log_error(job_log(paths, job, paths.step_suffix(step, obs or None))) if missing else None
        for p in map(Path, job.outputs):
            if p in missing:
                why = job_error
                state = "missing" if why is None else "failed"
            else:
                why = failure_flag(p)
                state = "flagged" if why else "done"
            st.counts[state] += 1
            if why:
                st.problems.append((state, str(p), why))
    if paths.version_control and paths.project_dir.is_dir():
        current = {(s.step, s.hash) for s in table.values()}
        for folder in sorted(paths.project_dir.iterdir()):
            m = re.fullmatch(r"(\w+)-([0-9a-f]{%d})" % vprov.HASH_LENGTH, folder.name)
            if not (m and folder.is_dir() and m.group(1) in vprov.STEPS):
                continue
            step, h = m.groups()
            n = sum(1 for _, _, files in os.walk(folder) for f in files if _is_product(f))
            if (step, h) in current:
                for st in table.values():
                    if (st.step, st.hash) == (step, h):
                        st.files_on_disk = n
            else:
                table[(step, "", h)] = StepStatus(step, "", h, current=False, files_on_disk=n)
    return table


def database_rows(engine) -> dict[tuple, dict]:
    """Rows of every table keyed by provenance: ``{(step, obs, hash): {table: [rows, bad rows]}}``."""
    import sqlalchemy as sa

    from vo.db import models as m

    out: dict[tuple, dict] = defaultdict(dict)
    prov = m.Provenance.__table__
    with engine.connect() as conn:
        present = set(sa.inspect(conn).get_table_names())
        for table in m.Base.metadata.sorted_tables:
            if table.name not in present or "provenance_id" not in table.c:
                continue
            bad = sa.func.sum(sa.cast(table.c.bad, sa.Integer)) if "bad" in table.c else sa.literal(0)
            q = (sa.select(prov.c.step, prov.c.obs, prov.c.hash, sa.func.count(), bad)
                 .select_from(table.join(prov, table.c.provenance_id == prov.c.id))
                 .group_by(prov.c.step, prov.c.obs, prov.c.hash))
            for step, obs, h, n, n_bad in conn.execute(q):
                out[(step, obs or "", h)][table.name] = [int(n), int(n_bad or 0)]
    return dict(out)


def status(cfg: dict, engine=None) -> list[StepStatus]:
    """The status table: files (and, with ``engine``, database rows) per step and hash, the
    config's steps first (in workflow order), then other hashes found on disk or in the database."""
    paths = Paths(cfg)
    table = file_status(cfg, paths)
    if engine is not None:
        for (step, obs, h), rows in database_rows(engine).items():
            match = [st for st in table.values() if st.step == step and st.hash == h]
            if not match:
                st = StepStatus(step, obs, h, current=False)
                table[(step, obs, h)] = st
                match = [st]
            match[0].db_rows = rows
            match[0].obs = match[0].obs or obs  # an earlier hash's folder does not name its observatory
    order = {s: i for i, s in enumerate(vprov.STEPS)}
    return sorted(table.values(), key=lambda s: (not s.current, order.get(s.step, len(order)), s.obs, s.hash))


def format_table(rows: list[StepStatus], problems: int = 0) -> str:
    """Text table of :func:`status` (``problems``: list up to this many failed/flagged products per step)."""
    head = f"{'step':<14} {'obs':<8} {'hash':<10} {'':1} {'expected':>8} {'done':>7} {'flagged':>7} " \
           f"{'failed':>7} {'missing':>7} {'on disk':>8}  database rows (bad)"
    lines = [head, "-" * len(head)]
    for st in rows:
        c = st.counts
        db = ", ".join(f"{t} {n}" + (f" ({b})" if b else "") for t, (n, b) in sorted(st.db_rows.items()))
        nums = (f"{st.expected:>8} {c['done']:>7} {c['flagged']:>7} {c['failed']:>7} {c['missing']:>7}"
                if st.current else f"{'-':>8} {'-':>7} {'-':>7} {'-':>7} {'-':>7}")
        lines.append(f"{st.step:<14} {st.obs or '-':<8} {st.hash:<10} {'*' if st.current else ' '} {nums} "
                     f"{st.files_on_disk:>8}  {db or '-'}")
        for state, path, why in st.problems[:problems]:
            lines.append(f"    {state}: {path}: {why}")
    lines.append("* = the hash of this config; other rows: earlier configs' folders and database rows")
    return "\n".join(lines)


def reference_table(cfg: dict) -> str:
    """The reference plan as text: each new image (exposure, CCD), its filter and patch of sky,
    and the reference images coadded onto its grid; then the exposures not subtracted."""
    plan = get_plan(cfg)
    pol = cfg["references"]
    lines = [f"references: select {pol['select']} (first {pol['first']}, before {pol['before']}, range "
             f"{pol['date_range']}, listed {len(pol['images'])}), best {pol['best']} by {pol['rank']}, "
             f"min_overlap {pol['min_overlap']}, min_images {pol['min_images']}"]
    news = plan.new_exposures()
    for e, (patch, filt) in news.items():
        for c in plan.ccds:
            refs = plan.reference_images(e, c)
            lines.append(f"  {e} {c} [{filt}, {patch}] <- "
                         + (", ".join(f"{r} {rc}" for r, rc in refs) if refs else "none overlaps: not subtracted"))
    if plan.unreferenced:
        lines.append(f"  not subtracted (no reference overlaps them): {', '.join(plan.unreferenced)}")
    if not news:
        lines.append("  no new image has a reference")
    return "\n".join(lines)


def benchmark_table(cfg: dict, paths: Paths | None = None):
    """Runtime and memory per rule from the benchmark files of this config's jobs (``benchmark:``
    in the rules; files named with another config's hash are left out): a DataFrame with columns
    rule, jobs, total_s, mean_s, max_s (wall seconds), max_rss_mib (largest resident set, MiB)
    and cpu_s (CPU seconds, summed), slowest rule first."""
    import pandas as pd

    paths = paths or Paths(cfg)
    current = {p.hash for p in vprov.all_provenances(cfg).values()}
    parts = []
    for tsv in sorted((paths.project_dir / "benchmarks").glob("*/*.tsv")):
        m = re.search(r"-([0-9a-f]{%d})$" % vprov.HASH_LENGTH, tsv.stem)
        if m and m.group(1) not in current:
            continue
        df = pd.read_csv(tsv, sep="\t")  # a row per repeat; Snakemake writes max_rss in MiB
        parts.append(pd.DataFrame({"rule": tsv.parent.name, "file": tsv.name, "s": df["s"],
                                   "max_rss": pd.to_numeric(df["max_rss"], errors="coerce"),
                                   "cpu_time": pd.to_numeric(df["cpu_time"], errors="coerce")}))
    columns = ["rule", "jobs", "total_s", "mean_s", "max_s", "max_rss_mib", "cpu_s"]
    if not parts:
        return pd.DataFrame(columns=columns)
    runs = pd.concat(parts, ignore_index=True)
    table = runs.groupby("rule").agg(jobs=("file", "nunique"), total_s=("s", "sum"), mean_s=("s", "mean"),
                                     max_s=("s", "max"), max_rss_mib=("max_rss", "max"), cpu_s=("cpu_time", "sum"))
    return table.reset_index().sort_values("total_s", ascending=False, ignore_index=True)[columns]


def write_benchmark_html(table, path: str | os.PathLike, title: str = "Runtime and memory per rule",
                         log: str | os.PathLike | None = None) -> None:
    """The :func:`benchmark_table` as an HTML page (for ``snakemake --report``), written atomically;
    ``log``: a file to note how many rules and jobs it covers."""
    from vo.io.atomic import write_text

    if log is not None:
        Path(log).write_text(f"{len(table)} rules, {int(table['jobs'].sum())} benchmarked jobs\n")
    header = {"rule": "rule", "jobs": "jobs", "total_s": "total s", "mean_s": "mean s", "max_s": "max s",
              "max_rss_mib": "max RSS MiB", "cpu_s": "CPU s"}
    body = table.rename(columns=header).to_html(index=False, float_format=lambda x: f"{x:.2f}")
    write_text(path, f"<html><head><meta charset='utf-8'><title>{title}</title></head><body>"
                     f"<h2>{title}</h2>{body}</body></html>")


def to_json(rows: list[StepStatus]) -> str:
    """The status rows as JSON (a list of objects)."""
    return json.dumps([{"step": s.step, "obs": s.obs, "hash": s.hash, "current": s.current, "expected": s.expected,
                        **s.counts, "files_on_disk": s.files_on_disk, "db_rows": s.db_rows,
                        "problems": [{"state": a, "path": p, "reason": w} for a, p, w in s.problems]}
                       for s in rows], indent=1)
