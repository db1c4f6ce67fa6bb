"""The ``vo`` command."""

from __future__ import annotations

import argparse
import json
import os
import sys

from vo import config as vconfig


def _load(args) -> dict:
    from vo.pipeline.scripting import _parse_overrides
    return vconfig.workflow_config(args.configfile, _parse_overrides(args.set))


def _sections(step: str, cfg: dict) -> list[str]:
    """Config sections of a step or rule of the step table (``{obs}``: each observatory of the
    config), else ``step`` itself, a section."""
    from vo import steps as vsteps

    name = vsteps.step_of(step) if step in vsteps.RULES else step
    if name in vsteps.STEPS and vsteps.STEPS[name].sections:
        return [sec.format(obs=obs) for sec in vsteps.STEPS[name].sections
                for obs in (cfg["project"]["obs_names"] if "{obs}" in sec else [None])]
    return [step]


def cmd_show_pars(args) -> int:
    cfg = _load(args)
    sections = ([p.key.split(".")[0] for p in vconfig.iter_parameters()] if args.step == "all"
                else _sections(args.step, cfg))
    for section in dict.fromkeys(sections):
        print(f"[{section}]")
        print(vconfig.format_parameters(section, cfg))
        print()
    return 0


STEPS_BEGIN, STEPS_END = "<!-- steps:begin -->", "<!-- steps:end -->"


def with_step_table(text: str, where: str = "the document") -> str:
    """``text`` with the block between the step-table markers replaced by the rendered table."""
    from vo.steps import render_markdown

    if STEPS_BEGIN not in text or STEPS_END not in text:
        raise ValueError(f"{where}: no {STEPS_BEGIN} ... {STEPS_END} block to put the step table in")
    head, rest = text.split(STEPS_BEGIN, 1)
    _, tail = rest.split(STEPS_END, 1)
    return f"{head}{STEPS_BEGIN}\n{render_markdown()}{STEPS_END}{tail}"


def cmd_steps(args) -> int:
    from pathlib import Path

    from vo import steps as vsteps
    from vo.io.atomic import write_text

    if args.write:
        path = Path(args.write)
        write_text(path, with_step_table(path.read_text(), str(path)))
        print(f"vo: step table written into {path}")
    elif args.markdown:
        print(vsteps.render_markdown(), end="")
    else:
        for s in vsteps.TABLE:
            rules = ", ".join(f"{r.name}({', '.join(r.wildcards)})" for r in s.rules)
            print(f"{s.name:<14} v{s.code_version}  {s.half:<11} rules: {rules}")
            print(f"{'':<14}      upstream: {', '.join(s.upstream) or '-'}; config: {', '.join(s.sections) or '-'}")
    return 0


def cmd_provenance(args) -> int:
    from vo import provenance as vprov
    doc = vprov.provenance_document(_load(args))
    print(json.dumps(doc, indent=1, default=str) if args.json else
          "\n".join(f"{k:<20} {v['hash']}  (code {v['code_version']})" for k, v in doc["steps"].items()))
    return 0


def cmd_run(args) -> int:
    import subprocess
    from vo.project import SNAKEFILE
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(SNAKEFILE),
           "--cores", str(args.cores)]
    if args.configfile:
        cmd += ["--configfile", args.configfile]
    if args.profile:
        cmd += ["--profile", args.profile]
    return subprocess.run(cmd + args.snakemake_args).returncode


def cmd_populate(args) -> int:
    from vo.ingest.populate import populate
    counts = populate(_load(args))
    print(json.dumps(counts, indent=1, default=str))
    return 0


def cmd_db(args) -> int:
    """Database schema: upgrade in place, show the revision, write a migration (vo.db.migrate)."""
    from vo.db import migrate
    from vo.db.engine import engine_from_config
    engine = engine_from_config(_load(args))
    try:
        print(f"vo: {migrate.run_command(engine, args.action, args.revision, args.message)}")
    finally:
        engine.dispose()
    return 0


def cmd_status(args) -> int:
    """Per step and provenance hash: products done, flagged, failed, missing; database rows."""
    from vo.pipeline import status
    from vo.db.engine import engine_from_config

    cfg = _load(args)
    url = vconfig.database_url(cfg)
    absent = url.startswith("sqlite:///") and not os.path.exists(url[len("sqlite:///"):])
    engine = None if args.no_db or absent else engine_from_config(cfg)
    try:
        rows = status.status(cfg, engine)
    finally:
        if engine is not None:
            engine.dispose()
    print(status.to_json(rows) if args.json else status.format_table(rows, problems=args.problems))
    if args.references and cfg["images"]["enabled"]:
        print("\n" + status.reference_table(cfg))
    if args.benchmarks:
        print("\n" + status.benchmark_table(cfg).to_string(index=False, float_format=lambda x: f"{x:.2f}"))
    return 1 if any(s.counts["failed"] for s in rows) else 0


def cmd_resend_alerts(args) -> int:
    """Send again the alerts of files whose delivery did not complete (their state file says so)."""
    from vo.images import alerts
    cfg = _load(args)
    kw = alerts.alerts_config(cfg)
    if not kw["servers"]:
        raise vconfig.ConfigError("alerts.kafka_servers is not set: there is no broker to send to")
    unsent = alerts.unsent_files(args.paths or [str(vconfig.data_root(cfg))])
    alerts.resend_alerts(unsent, **kw)
    print(f"vo: resent {len(unsent)} alert file(s)")
    return 0


def cmd_subtract(args) -> int:
    from vo.images.calibrate.calibrated import CalibratedImageError
    from vo.images.pair import PairError, subtract_files
    from vo.io.fits import FitsError

    cfg = _load(args) if (args.configfile or args.set) else None
    read_kw = {k: v for k, v in (("gain", args.gain), ("hdu", args.hdu)) if v is not None}
    try:
        r = subtract_files(args.new, args.refs, args.output, args.method, args.candidates, cfg, read_kw)
    except (CalibratedImageError, PairError, FitsError) as exc:
        print(f"vo subtract: {exc}", file=sys.stderr)
        return 2
    for info in r.meta["references"]:
        print(f"vo subtract: {info['name']}: offset ({info['offset'][0]:+.3f}, {info['offset'][1]:+.3f}) pix "
              f"from {info['matches']} stars, flux ratio {info['flux_ratio']:.4f}")
    n_neg = int(r.candidates["is_negative"].sum())
    print(f"vo subtract: {args.output} ({args.method}), {len(r.candidates)} candidates "
          f"({len(r.candidates) - n_neg} positive, {n_neg} negative)")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="vo", description="Survey photometry and light curves.")
    sub = ap.add_subparsers(dest="command", required=True)

    def common(p):
        p.add_argument("--configfile", default=None, help="config YAML (default config/config.yaml)")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a parameter, e.g. --set analysis.snr_threshold=6")
        return p

    p = common(sub.add_parser("show-pars", help="list a step's parameters: type, value, critical, doc"))
    p.add_argument("step", help="a step or rule (vo steps), a config section (e.g. DEMO.reducer), or 'all'")
    p.set_defaults(func=cmd_show_pars)
    p = sub.add_parser("steps", help="the step table: steps, rules, files, upstreams, config sections")
    p.add_argument("--markdown", action="store_true", help="as the Markdown table of docs/architecture.md")
    p.add_argument("--write", metavar="FILE", help="put the Markdown table into FILE (between its markers)")
    p.set_defaults(func=cmd_steps)
    p = common(sub.add_parser("provenance", help="print each step's provenance hash"))
    p.add_argument("--json", action="store_true", help="the whole provenance document as JSON")
    p.set_defaults(func=cmd_provenance)
    p = sub.add_parser("run", help="run the workflow (snakemake)")
    p.add_argument("--configfile", default=None)
    p.add_argument("--profile", default="profiles/local")
    p.add_argument("--cores", default="all")
    p.add_argument("snakemake_args", nargs=argparse.REMAINDER, help="passed on to snakemake")
    p.set_defaults(func=cmd_run)
    p = common(sub.add_parser("populate", help="rebuild database rows from the files on disk"))
    p.set_defaults(func=cmd_populate)
    p = common(sub.add_parser("db", help="database schema: upgrade in place (migrations), current revision"))
    p.add_argument("action", choices=["upgrade", "downgrade", "current", "revision"])
    p.add_argument("revision", nargs="?", default="head", help="target of upgrade/downgrade (default head)")
    p.add_argument("-m", "--message", help="what a new revision changes (vo db revision)")
    p.set_defaults(func=cmd_db)
    p = common(sub.add_parser("status", help="products per step and provenance hash: done, flagged, failed, "
                                             "missing; database rows"))
    p.add_argument("--json", action="store_true", help="the table as JSON, with every failed/flagged product")
    p.add_argument("--problems", type=int, default=5, metavar="N",
                   help="list up to N failed or flagged products per step, with why (default 5)")
    p.add_argument("--no-db", action="store_true", help="files only; do not read the database")
    p.add_argument("--benchmarks", action="store_true", help="also runtime and memory per rule (benchmark files)")
    p.add_argument("--references", action="store_true",
                   help="also the reference plan: the reference images of each new image (reference policy)")
    p.set_defaults(func=cmd_status)
    p = common(sub.add_parser("subtract", help="subtract reference FITS image(s) from a new one: difference "
                                               "file and candidate table"))
    p.add_argument("new", help="the new image (calibrated FITS with a celestial WCS)")
    p.add_argument("refs", nargs="+", metavar="REF", help="reference image(s); several are coadded")
    p.add_argument("-o", "--output", required=True, help="difference file to write (FITS)")
    p.add_argument("--method", choices=["zogy", "alard_lupton"], default="zogy")
    p.add_argument("--candidates", help="candidate table to write (default OUTPUT.candidates.fits)")
    p.add_argument("--gain", type=float, help="e- per data unit, for images without a GAIN keyword")
    p.add_argument("--hdu", help="name or index of the data HDU (default: the first 2-D image)")
    p.set_defaults(func=cmd_subtract)
    p = common(sub.add_parser("resend-alerts", help="send alert files that did not reach Kafka again"))
    p.add_argument("paths", nargs="*", help="alert files (default: every .avro under the data root)")
    p.set_defaults(func=cmd_resend_alerts)
    args = ap.parse_args(argv)
    try:
        return args.func(args)
    except vconfig.ConfigError as exc:
        print(f"vo: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
