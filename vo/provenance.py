"""Provenance hashes: the one place where step hashes are computed.

``hash(step) = sha256(canonical JSON of {step, observatory, code version, critical
parameters, upstream hashes})``, shortened to :data:`HASH_LENGTH` hex digits.  The hash depends only on
the config and the code versions in the step table (:mod:`vo.steps`), never on
the machine, so every cluster job that re-parses the Snakefile computes the same value.

Light-curve steps other than ``targets`` are computed per observatory, image steps per
instrument: changing a ZTF parameter creates new ZTF folders and leaves DEMO's products
alone.  (The observatory or instrument is the provenance's ``obs``.)
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

from vo import config as vconfig
from vo import steps as vsteps

HASH_LENGTH = 10


#: the steps whose provenance is computed (:data:`vo.steps.STEPS`)
STEPS = vsteps.STEPS


def canonical_json(obj) -> str:
    """JSON with sorted keys and no whitespace: equal objects give equal strings."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def short_hash(obj) -> str:
    """sha256 of the canonical JSON of ``obj``, shortened to :data:`HASH_LENGTH` digits."""
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:HASH_LENGTH]


def git_commit() -> str | None:
    """Commit of the code in use, when it runs from a git checkout (not part of any hash)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent,
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


@dataclass(frozen=True)
class Provenance:
    """A step's provenance: what made a product."""

    step: str
    obs: str | None
    code_version: str
    parameters: dict
    upstreams: dict  # {step key: hash}

    @property
    def key(self) -> str:
        """``step`` or ``step.OBS``: the name of this provenance in provenance.yaml."""
        return f"{self.step}.{self.obs}" if self.obs else self.step

    @property
    def hash(self) -> str:
        return short_hash({"step": self.step, "obs": self.obs, "code_version": self.code_version,
                           "parameters": self.parameters, "upstreams": self.upstreams})

    def to_dict(self) -> dict:
        return {"step": self.step, "obs": self.obs, "hash": self.hash,
                "code_version": self.code_version, "parameters": self.parameters,
                "upstreams": self.upstreams}


def _critical(cfg: dict, step: vsteps.Step, obs: str | None) -> dict:
    params = {}
    excluded = [e.format(obs=obs) for e in step.exclude]
    for section in step.sections:
        section = section.format(obs=obs)
        for key, value in vconfig.critical_subset(cfg, section).items():
            if not any(key == e or key.startswith(e + ".") for e in excluded):
                params[key] = value
    return params


def provenance(cfg: dict, step: str, obs: str | None = None) -> Provenance:
    """Provenance of ``step`` (for observatory ``obs`` where the step is per observatory)."""
    if step not in STEPS:
        raise KeyError(f"unknown step {step!r}; steps are {', '.join(STEPS)}")
    sdef = STEPS[step]
    if sdef.per_obs and not obs:
        raise ValueError(f"step {step!r} is computed per observatory: give obs")
    obs = obs if sdef.per_obs else None
    ups = {}
    for up in sdef.upstream:
        p = provenance(cfg, up, obs)
        ups[p.key] = p.hash
    return Provenance(step, obs, sdef.code_version, _critical(cfg, sdef, obs), ups)


def file_attrs(cfg: dict, step: str, obs: str | None) -> dict:
    """Provenance attributes stored in every product file (so files can be re-ingested)."""
    p = provenance(cfg, step, obs)
    return {"step": step, "obs": obs or "", "provenance_hash": p.hash,
            "code_version": p.code_version, "parameters": p.parameters, "upstreams": p.upstreams,
            "project": cfg["project"]["name"].upper()}


def scopes(cfg: dict, sdef: vsteps.Step) -> list:
    """The observatories or instruments a step runs for in this config."""
    if sdef.images:
        return [cfg["images"]["instrument"].upper()] if cfg["images"]["enabled"] else []
    return cfg["project"]["obs_names"] if sdef.per_obs else [None]


def all_provenances(cfg: dict) -> dict[str, Provenance]:
    """Every step's provenance for the observatories in ``project.obs_names`` and, when
    the image pipeline is enabled, for ``images.instrument``."""
    out = {}
    for step, sdef in STEPS.items():
        for obs in scopes(cfg, sdef):
            p = provenance(cfg, step, obs)
            out[p.key] = p
    return out


def run_hash(cfg: dict) -> str:
    """Hash of a whole run: of every step hash (names ``00_config_{hash}.yaml``)."""
    return short_hash({k: p.hash for k, p in all_provenances(cfg).items()})


def provenance_document(cfg: dict) -> dict:
    """Contents of ``provenance.yaml``: each step's hash, version, parameters and upstreams."""
    return {"run_hash": run_hash(cfg), "git_commit": git_commit(),
            "steps": {k: p.to_dict() for k, p in all_provenances(cfg).items()}}
