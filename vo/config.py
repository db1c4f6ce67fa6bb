"""Load, merge and validate the workflow configuration.

One YAML file holds a section per step; ``config/schema.yaml`` gives every parameter a
type, a default, a doc string and a ``critical`` flag.  Critical parameters enter the
provenance hash of their step (see :mod:`vo.provenance`); the others never do.
"""

from __future__ import annotations

import copy
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

import jsonschema
import yaml

SCHEMA_PATH = Path(__file__).with_name("schema.yaml")
REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO_ROOT / "config" / "config.yaml"


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the file and the key."""


def load_class(spec: str, base: type | None = None, key: str = "class") -> type:
    """The class a config names: ``"package.module.Class"``, ``"package.module:Class"`` or
    ``"path/to/file.py:Class"`` (a file path, absolute or relative to the working directory).

    ``base``: the class must be it or a subclass. Errors name ``key`` and the value.
    """
    import importlib
    import importlib.util

    text = str(spec).strip()
    module_name, sep, cls_name = text.rpartition(":") if ":" in text else text.rpartition(".")
    if not module_name or not cls_name:
        raise ConfigError(f"{key}: {spec!r} is not 'module.Class', 'module:Class' or 'file.py:Class'")
    try:
        if module_name.endswith(".py") or os.sep in module_name:
            path = Path(module_name).expanduser().resolve()
            if not path.is_file():
                raise ConfigError(f"{key}: {spec!r}: no file {path}")
            mod_spec = importlib.util.spec_from_file_location(f"vo_extension_{path.stem}", path)
            module = importlib.util.module_from_spec(mod_spec)
            mod_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"{key}: {spec!r}: cannot import {module_name!r} ({exc})") from None
    cls = getattr(module, cls_name, None)
    if not isinstance(cls, type):
        raise ConfigError(f"{key}: {spec!r}: {module_name!r} has no class {cls_name!r}")
    if base is not None and not issubclass(cls, base):
        raise ConfigError(f"{key}: {spec!r} is not a subclass of {base.__module__}.{base.__qualname__}")
    return cls


def load_schema() -> dict:
    """The parsed schema (read once per process; treat it as read-only)."""
    return _schema()


@lru_cache(maxsize=1)
def _schema() -> dict:
    with open(SCHEMA_PATH) as f:
        return yaml.safe_load(f)


@dataclass(frozen=True)
class Parameter:
    """One configuration parameter as the schema declares it."""

    key: str  # dotted path, e.g. "DEMO.reducer.gap"
    type: Any
    default: Any
    doc: str
    critical: bool


def iter_parameters(schema: dict | None = None, prefix: str = "") -> Iterator[Parameter]:
    """Yield every leaf parameter of the schema (objects with ``properties`` are recursed)."""
    schema = load_schema() if schema is None else schema
    for key, sub in schema.get("properties", {}).items():
        path = f"{prefix}{key}"
        if sub.get("type") == "object" and "properties" in sub:
            yield from iter_parameters(sub, path + ".")
        else:
            yield Parameter(path, sub.get("type"), sub.get("default"), sub.get("description", ""),
                            bool(sub.get("critical", False)))


def defaults(schema: dict | None = None) -> dict:
    """The configuration made of the schema's defaults only."""
    schema = load_schema() if schema is None else schema
    out = {}
    for key, sub in schema.get("properties", {}).items():
        if sub.get("type") == "object" and "properties" in sub:
            out[key] = defaults(sub)
        elif "default" in sub:
            out[key] = copy.deepcopy(sub["default"])
    return out


def deep_merge(base: dict, override: dict) -> dict:
    """Return ``base`` updated recursively with ``override`` (neither is modified)."""
    out = copy.deepcopy(base)
    for key, value in (override or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def validate(cfg: dict, source: str = "<config>", schema: dict | None = None) -> None:
    """Raise :class:`ConfigError` naming ``source`` and the key for the first problem found."""
    schema = load_schema() if schema is None else schema
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = sorted(validator.iter_errors(cfg), key=lambda e: list(e.absolute_path))
    if not errors:
        return
    err = errors[0]
    path = ".".join(str(p) for p in err.absolute_path)
    if err.validator == "additionalProperties":
        allowed = sorted(err.schema.get("properties", {}))
        extra = sorted(set(err.instance) - set(allowed))
        where = f"{path}." if path else ""
        exc = ConfigError(f"{source}: unknown key {where}{extra[0]!s} (allowed here: {', '.join(allowed)})")
        exc.key = f"{where}{extra[0]!s}"
        raise exc
    exc = ConfigError(f"{source}: invalid value for {path or '<top>'}: {err.message}")
    exc.key = path
    raise exc


_MISSING = object()


def _at(data, key: str):
    """``data``'s value at dotted ``key``, or ``_MISSING``."""
    if not key:
        return _MISSING
    for part in key.split("."):
        if not isinstance(data, dict) or part not in data:
            return _MISSING
        data = data[part]
    return data


def validate_files(cfg: dict, files, overrides: dict | None = None) -> None:
    """:func:`validate` for a config merged from ``files`` (lowest precedence first) and then
    ``overrides`` (Snakemake's ``--config``): the error names where the offending value comes
    from (the last file that has that value at that key, else ``--config``) -- Snakemake's own
    check names the key and value but not the file."""
    try:
        validate(cfg, "config")
    except ConfigError as exc:
        key = getattr(exc, "key", "")
        bad = _at(cfg, key)
        source = "--config" if overrides and _at(overrides, key) is not _MISSING else "the merged config"
        for f in files:
            try:
                value = _at(read_yaml(f), key)
            except ConfigError:
                continue
            if value is not _MISSING and value == bad:
                source = str(f)
        raise ConfigError(f"{source}: {str(exc).removeprefix('config: ')}") from None


def read_yaml(path: str | os.PathLike, key: str | None = None) -> dict:
    """Read a YAML config file, optionally one top-level ``key`` of it."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: config file not found")
    try:
        with open(path) as f:
            data = yaml.safe_load(f) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    if key is not None:
        if key not in data:
            raise ConfigError(f"{path}: has no key {key!r} (cfg_key); keys are {sorted(data)}")
        data = data[key] or {}
    return data


def load_config(path: str | os.PathLike | None = None, overrides: dict | None = None,
                key: str | None = None) -> dict:
    """Defaults <- file <- overrides, validated; returns the full merged config.

    Parameters
    ----------
    path : config file (default ``config/config.yaml`` of the repository); ``None`` with no
        default file present gives the schema defaults.
    overrides : nested dict applied last (e.g. constructor keyword arguments).
    key : top-level key of the file that holds the config (virtualobserver's ``cfg_key``).
    """
    schema = load_schema()
    cfg = defaults(schema)
    source = "<defaults>"
    if path is None and DEFAULT_CONFIG.exists():
        path = DEFAULT_CONFIG
    if path is not None:
        source = str(path)
        from_file = read_yaml(path, key)
        validate(deep_merge(cfg, from_file), source, schema)
        cfg = deep_merge(cfg, from_file)
    if overrides:
        cfg = deep_merge(cfg, overrides)
        validate(cfg, f"{source} + keyword arguments", schema)
    return cfg


def workflow_config(path: str | os.PathLike | None = None, overrides: dict | None = None) -> dict:
    """The config ``snakemake --configfile path`` runs with: defaults <- ``config/config.yaml``
    (the Snakefile's ``configfile:``) <- ``path`` <- ``overrides``.  The ``vo`` command and the rule
    scripts run by hand read configs this way, so their hashes and plans are the workflow's."""
    cfg = load_config(None, None)
    if path is not None and Path(path).resolve() != DEFAULT_CONFIG.resolve():
        cfg = deep_merge(cfg, read_yaml(path))
        validate(cfg, str(path))
    if overrides:
        cfg = deep_merge(cfg, overrides)
        validate(cfg, f"{path or DEFAULT_CONFIG} + overrides")
    return cfg


def complete(cfg: dict, source: str = "<config>") -> dict:
    """Fill schema defaults into a (possibly partial) config dict and validate it."""
    schema = load_schema()
    merged = deep_merge(defaults(schema), cfg)
    validate(merged, source, schema)
    return merged


def get(cfg: dict, dotted: str) -> Any:
    """Value at a dotted key, e.g. ``get(cfg, "DEMO.reducer.gap")``."""
    node = cfg
    for part in dotted.split("."):
        node = node[part]
    return node


@lru_cache(maxsize=None)
def section_parameters(section: str) -> tuple[Parameter, ...]:
    """Parameters of one section (a step), e.g. ``"analysis"`` or ``"ZTF.reducer"``."""
    params = [p for p in iter_parameters() if p.key == section or p.key.startswith(section + ".")]
    if not params:
        sections = sorted({p.key.split(".")[0] for p in iter_parameters()})
        raise ConfigError(f"no config section {section!r}; sections are {', '.join(sections)}")
    return tuple(params)


def critical_subset(cfg: dict, section: str) -> dict:
    """The critical parameters of ``section`` with their values in ``cfg`` (flat, dotted keys)."""
    return {p.key: get(cfg, p.key) for p in section_parameters(section) if p.critical}


#: ``scheme://user:password@host``: the password part of a URL
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*):(?P<password>[^@\s]+)@")
#: keys whose values are secrets wherever they appear in a config
SECRET_KEYS = ("password", "passwd", "secret", "token")
MASK = "***"


def mask_secrets(value):
    """A copy of ``value`` (a config, a section, a string) fit to print or write: the password of
    every ``scheme://user:password@host`` URL and the value of every key named like a password
    (:data:`SECRET_KEYS`) replaced by ``***``."""
    if isinstance(value, dict):
        return {k: MASK if isinstance(k, str) and any(s in k.lower() for s in SECRET_KEYS) and v
                else mask_secrets(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(mask_secrets(v) for v in value)
    if isinstance(value, str):
        return _URL_PASSWORD.sub(lambda m: f"{m['head']}:{MASK}@", value)
    return value


def format_parameters(section: str, cfg: dict | None = None) -> str:
    """Human-readable table of a section's parameters: key, type, value/default, critical, doc
    (secrets masked, :func:`mask_secrets`)."""
    lines = []
    for p in section_parameters(section):
        value = mask_secrets(get(cfg, p.key) if cfg is not None else p.default)
        typ = p.type if isinstance(p.type, str) else "|".join(p.type or [])
        flag = "critical" if p.critical else "-"
        lines.append(f"{p.key:<38} {typ:<14} {value!r:<24} {flag:<9} {p.doc}")
    header = f"{'parameter':<38} {'type':<14} {'value':<24} {'critical':<9} description"
    return "\n".join([header, "-" * len(header)] + lines)


def data_root(cfg: dict) -> Path:
    """The data root: ``VO_DATA`` if set, else ``project.data_root`` (absolute path)."""
    root = os.environ.get("VO_DATA") or cfg["project"]["data_root"]
    return Path(root).expanduser().resolve()


def database_url(cfg: dict) -> str:
    """Database URL: ``VO_DB_URL``, else ``database.url``, else SQLite in the data root."""
    url = os.environ.get("VO_DB_URL") or cfg["database"]["url"]
    if url:
        return url
    return f"sqlite:///{data_root(cfg) / 'vo.sqlite'}"
