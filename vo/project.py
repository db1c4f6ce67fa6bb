"""Project: the Python entry point, as virtualobserver users know it.

    proj = Project(name="wd_search", obs_names=["ZTF"], catalog_kwargs={"default": "WD"},
                   obs_kwargs={"reducer": {"radius": 3, "gap": 40}},
                   ZTF={"credentials_file": "~/.ztf.yaml"})
    proj.run()

Constructor keyword arguments override the config file.  ``run()`` runs the Snakemake
workflow with the merged config, so the Python API and ``snakemake`` produce the same files.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from vo import config as vconfig
from vo import provenance as vprov
from vo.io.atomic import write_text
from vo.paths import Paths

_UNSET = object()
OBSERVATORIES = ("DEMO", "ZTF")
SNAKEFILE = vconfig.REPO_ROOT / "workflow" / "Snakefile"


class Parameters:
    """Attribute access to a config section that validates every change.

    ``proj.pars.version_control = True`` or ``proj.pars.DEMO.reducer.gap = 60``;
    ``vc`` is short for ``version_control``.
    """

    _ALIASES = {"vc": "version_control"}

    def __init__(self, root: dict, path: tuple[str, ...] = (), owner: str = "Project"):
        object.__setattr__(self, "_root", root)
        object.__setattr__(self, "_path", path)
        object.__setattr__(self, "_owner", owner)

    def _node(self) -> dict:
        node = self._root
        for p in self._path:
            node = node[p]
        return node

    def _resolve(self, name: str) -> tuple[dict, str]:
        name = self._ALIASES.get(name, name)
        node = self._node()
        if name in node:
            return node, name
        if not self._path and name in self._root["project"]:
            return self._root["project"], name
        raise AttributeError(f"{self._owner} has no parameter {'.'.join(self._path + (name,))!r}")

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        node, key = self._resolve(name)
        value = node[key]
        if isinstance(value, dict):
            sub = self._path + (key,) if node is self._node() else ("project", key)
            return Parameters(self._root, sub, self._owner)
        return value

    def __setattr__(self, name: str, value) -> None:
        node, key = self._resolve(name)
        old = node[key]
        node[key] = value
        try:
            vconfig.validate(self._root, f"{self._owner}.pars")
        except vconfig.ConfigError:
            node[key] = old
            raise

    def to_dict(self) -> dict:
        return self._node()

    def __repr__(self) -> str:
        return f"Parameters({'.'.join(self._path) or 'all'}: {yaml.safe_dump(self._node(), sort_keys=False)})"


class Observatories(dict):
    """Observatories by name; ``observatories[0]`` also works, in ``obs_names`` order."""

    def __getitem__(self, key):
        if isinstance(key, int):
            key = list(self.keys())[key]
        return super().__getitem__(key.upper() if isinstance(key, str) else key)


class Project:
    """A named project: config, catalog, observatories, and the workflow that runs them.

    Parameters
    ----------
    name : project name (products go to ``{data_root}/{NAME}``).
    obs_names : observatories, e.g. ``["DEMO"]`` or ``["ZTF"]``.
    catalog_kwargs, analysis_kwargs, simulator_kwargs, histogram_kwargs, database_kwargs :
        overrides of those config sections.
    obs_kwargs : overrides applied to every observatory section (e.g. ``{"reducer": {...}}``).
    cfg_file : config file; not given: ``config/{name}.yaml`` if it exists, else the schema
        defaults; ``None``: no file.  A given file that does not exist is an error.
    cfg_key : top-level key of ``cfg_file`` holding the config.
    version_control, data_root : shortcuts for ``project.version_control``/``project.data_root``.
    analysis_module, analysis_class : a custom analysis (a subclass of
        :class:`vo.lightcurves.analysis.Analysis`): a module path (``"extensions.my_analysis"``,
        importable) or file (``"extensions/my_analysis.py"``) and the class name; sets
        ``analysis.class_path``.
    **observatory_kwargs : per-observatory overrides, e.g. ``ZTF={...}``, applied last.
    """

    def __init__(self, name: str | None = None, obs_names: list[str] | None = None,
                 catalog_kwargs: dict | None = None, analysis_kwargs: dict | None = None,
                 obs_kwargs: dict | None = None, simulator_kwargs: dict | None = None,
                 histogram_kwargs: dict | None = None, database_kwargs: dict | None = None,
                 cfg_file=_UNSET, cfg_key: str | None = None, version_control: bool | None = None,
                 data_root: str | None = None, analysis_module: str | None = None,
                 analysis_class: str | None = None, **observatory_kwargs):
        unknown = [k for k in observatory_kwargs if k.upper() not in OBSERVATORIES]
        if unknown:
            raise TypeError(f"Project() got unknown keyword arguments {unknown}; observatory "
                            f"sections are {', '.join(OBSERVATORIES)}")
        if cfg_file is _UNSET:
            guess = vconfig.REPO_ROOT / "config" / f"{name}.yaml" if name else None
            cfg_file = guess if guess is not None and guess.exists() else None
        elif cfg_file is not None:
            cfg_file = Path(cfg_file)
            if not cfg_file.is_absolute() and not cfg_file.exists():
                cfg_file = vconfig.REPO_ROOT / "config" / cfg_file
        base = vconfig.defaults()
        source = "<defaults>"
        if cfg_file is not None:
            base = vconfig.deep_merge(base, vconfig.read_yaml(cfg_file, cfg_key))
            source = str(cfg_file)
        vconfig.validate(base, source)
        over: dict = {"project": {}}
        if name is not None:
            over["project"]["name"] = name
        if obs_names is not None:
            over["project"]["obs_names"] = [o.upper() for o in obs_names]
        if version_control is not None:
            over["project"]["version_control"] = version_control
        if data_root is not None:
            over["project"]["data_root"] = str(data_root)
        for section, kw in (("catalog", catalog_kwargs), ("analysis", analysis_kwargs),
                            ("simulator", simulator_kwargs), ("histograms", histogram_kwargs),
                            ("database", database_kwargs)):
            if kw:
                over[section] = kw
        if analysis_module or analysis_class:
            if not (analysis_module and analysis_class):
                raise TypeError("Project(): give analysis_module and analysis_class together")
            sep = ":" if analysis_module.endswith(".py") else "."
            over["analysis"] = {**over.get("analysis", {}), "class_path": f"{analysis_module}{sep}{analysis_class}"}
        if over.get("analysis", {}).get("class_path"):  # keys the built-in analysis does not know
            # are the custom class's parameters (without a custom class they are typos: an error)
            known = vconfig.load_schema()["properties"]["analysis"]["properties"]
            extra = {k: v for k, v in over["analysis"].items() if k not in known}
            if extra:
                over["analysis"] = {**{k: v for k, v in over["analysis"].items() if k in known},
                                    "custom": {**over["analysis"].get("custom", {}), **extra}}
        cfg = vconfig.deep_merge(base, over)
        for obs in cfg["project"]["obs_names"]:
            if obs_kwargs:
                cfg = vconfig.deep_merge(cfg, {obs: obs_kwargs})
        for obs, kw in observatory_kwargs.items():
            cfg = vconfig.deep_merge(cfg, {obs.upper(): kw})
        vconfig.validate(cfg, f"{source} + Project() keyword arguments")
        self.cfg = cfg
        self.pars = Parameters(self.cfg, owner=f"Project({self.name!r})")
        self._catalog = None
        self._observatories = None

    @property
    def name(self) -> str:
        return self.cfg["project"]["name"]

    @property
    def paths(self) -> Paths:
        return Paths(self.cfg)

    @property
    def catalog(self):
        """The target catalog (loaded on first use)."""
        if self._catalog is None:
            from vo.catalog import Catalog
            self._catalog = Catalog.from_config(self.cfg).load()
        return self._catalog

    @property
    def observatories(self) -> Observatories:
        if self._observatories is None:
            from vo.lightcurves.observatories import get_observatory
            self._observatories = Observatories(
                (o, get_observatory(o, self.cfg)) for o in self.cfg["project"]["obs_names"])
        return self._observatories

    def provenances(self) -> dict:
        """Each step's provenance (hash, code version, critical parameters, upstreams)."""
        return {k: p.to_dict() for k, p in vprov.all_provenances(self.cfg).items()}

    def write_config(self) -> Path:
        """Write the merged config to ``{project_dir}/00_config_{hash}.yaml``; return its path.

        ``data_root`` is written as an absolute path so the file works from any directory.
        """
        cfg = vconfig.deep_merge(self.cfg, {"project": {"data_root": str(self.paths.data_root)}})
        path = Paths(cfg).run_config()
        write_text(path, yaml.safe_dump(cfg, sort_keys=False))
        return path

    def snakemake_command(self, cores: int = 1, dry_run: bool = False,
                          extra_args: list[str] | tuple = ()) -> list[str]:
        return [sys.executable, "-m", "snakemake", "--snakefile", str(SNAKEFILE),
                "--directory", str(vconfig.REPO_ROOT), "--configfile", str(self.write_config()),
                "--cores", str(cores), *(["-n"] if dry_run else []), *extra_args]

    def run(self, cores: int = 1, dry_run: bool = False, extra_args: list[str] | tuple = ()) -> None:
        """Run the workflow for this project (backfills whatever is missing)."""
        subprocess.run(self.snakemake_command(cores, dry_run, extra_args), check=True)
