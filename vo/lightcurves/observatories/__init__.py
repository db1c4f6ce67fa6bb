"""Observatories (surveys): download raw photometry and reduce it to light curves."""

from __future__ import annotations


def get_observatory(name: str, cfg: dict):
    """The observatory ``name`` (DEMO, ZTF) configured from the merged config ``cfg``; the
    class named by ``cfg[name]["class_path"]`` (a subclass of the built-in one) when given."""
    from vo.config import load_class

    name = name.upper()
    if name == "DEMO":
        from vo.lightcurves.observatories.demo import VirtualDemoObs as builtin
    elif name == "ZTF":
        from vo.lightcurves.observatories.ztf import VirtualZTF as builtin
    else:
        raise KeyError(f"unknown observatory {name!r}; known: DEMO, ZTF")
    custom = (cfg.get(name) or {}).get("class_path")
    cls = load_class(custom, builtin, f"{name}.class_path") if custom else builtin
    return cls.from_config(cfg)
