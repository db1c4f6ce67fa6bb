"""A target of a project: one row of its catalog, with its raw photometry, light curves and
detections (virtualobserver's ``Source``).

The same class whether it comes from the catalog (an observatory's ``sources`` after a
download) or from the database (:mod:`vo.db` maps it onto the ``sources`` table, where
``raw_data``, ``lightcurves`` and ``detections`` are its rows).
"""

from __future__ import annotations

import math


class Source:
    """A target: ``name``, ``ra``, ``dec`` (deg, at the observation epoch), catalog ``mag``
    (mag), the full catalog row ``cat_row`` and the ``project`` it belongs to."""

    def __init__(self, name: str, ra: float, dec: float, mag: float | None = None, cat_row: dict | None = None,
                 project: str = "", raw_data: list | None = None):
        self.name, self.ra, self.dec, self.project = str(name), float(ra), float(dec), str(project)
        self.mag = None if mag is None or (isinstance(mag, float) and math.isnan(mag)) else float(mag)
        self.cat_row = dict(cat_row or {"name": self.name, "ra": self.ra, "dec": self.dec, "mag": self.mag})
        self.raw_data = list(raw_data or [])

    @classmethod
    def from_cat_row(cls, row: dict, project: str = "") -> "Source":
        """The source of a catalog row (needs ``name``, ``ra``, ``dec``)."""
        return cls(row["name"], row["ra"], row["dec"], row.get("mag"), row, project)

    def __repr__(self) -> str:
        return f"Source({self.name!r}, {self.project}, ra={self.ra:.5f}, dec={self.dec:.5f})"
