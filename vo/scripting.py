"""Entry point shared by the rule scripts in ``scripts/``.

Under Snakemake (``script:`` directive) a script takes its config, wildcards, inputs,
outputs and log from the ``snakemake`` object.  Run by hand
(``python scripts/reduce.py --obs DEMO --ra-bin 123``) it builds the same config and
asks :func:`vo.workflow.rule_io` for the same paths, so one rule can be debugged alone.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from vo import config as vconfig
from vo import workflow


def _setup_logging(logfile: str | None) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if logfile:
        handlers.append(logging.FileHandler(logfile, mode="w"))
    logging.basicConfig(level=logging.INFO, handlers=handlers, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _parse_overrides(pairs: list[str]) -> dict:
    """``["DEMO.reducer.gap=60", ...]`` -> nested dict (values parsed as YAML)."""
    import yaml

    out: dict = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--set expects KEY=VALUE, got {pair!r}")
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = yaml.safe_load(value)
    return out


def rule_main(step: str, doc: str, snakemake=None, argv: list[str] | None = None) -> None:
    """Run rule ``step`` from Snakemake or from the command line."""
    func = getattr(workflow, step if step.startswith("run_") else f"run_{step}")
    if snakemake is not None:
        _setup_logging(snakemake.log[0] if len(snakemake.log) else None)
        cfg = vconfig.complete(dict(snakemake.config), "snakemake config")
        wc = dict(snakemake.wildcards.items())
        inputs = {k: v for k, v in snakemake.input.items()}
        outputs = {k: v for k, v in snakemake.output.items()}
        obs, ra_bin = wc.get("obs"), wc.get("ra_bin")
    else:
        ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
        ap.add_argument("--configfile", default=None, help="config YAML (default: config/config.yaml)")
        ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a parameter, e.g. --set DEMO.reducer.gap=60 (repeatable)")
        if step not in ("targets", "run_config"):
            ap.add_argument("--obs", required=True, help="observatory, e.g. DEMO or ZTF")
        if step in workflow.PER_BIN:
            ap.add_argument("--ra-bin", type=int, required=True, help="integer RA bin (deg)")
        ap.add_argument("--log", default=None, help="also log to this file")
        args = ap.parse_args(argv)
        _setup_logging(args.log)
        cfg = vconfig.load_config(args.configfile, _parse_overrides(args.set))
        obs = getattr(args, "obs", None)
        ra_bin = getattr(args, "ra_bin", None)
        ra_bins = None
        if step in ("targets", "combine", "plots"):
            from vo.catalog import Catalog
            ra_bins = cfg["project"]["ra_bins"] or Catalog.from_config(cfg).load().ra_bins()
        inputs, outputs = workflow.rule_io(step, cfg, obs, ra_bin, ra_bins)
    kwargs = {"inputs": inputs, "outputs": outputs}
    if step in workflow.PER_BIN:
        kwargs.update(obs=obs, ra_bin=ra_bin)
    elif step in ("combine", "plots"):
        kwargs.update(obs=obs)
    if step in ("targets", "run_config"):
        kwargs.pop("inputs")
    t0 = time.perf_counter()
    func(cfg, **kwargs)
    logging.getLogger("vo").info("%s done in %.2f s", step, time.perf_counter() - t0)
