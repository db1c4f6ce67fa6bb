"""Observatories (surveys): download raw photometry and reduce it to light curves."""

from __future__ import annotations

#: Version of the download code (enters the ``download`` provenance hash).


def get_observatory(name: str, cfg: dict):
    """The observatory ``name`` (DEMO, ZTF) configured from the merged config ``cfg``."""
    name = name.upper()
    if name == "DEMO":
        from vo.lightcurves.observatories.demo import VirtualDemoObs
        return VirtualDemoObs.from_config(cfg)
    if name == "ZTF":
        from vo.lightcurves.observatories.ztf import VirtualZTF
        return VirtualZTF.from_config(cfg)
    raise KeyError(f"unknown observatory {name!r}; known: DEMO, ZTF")
