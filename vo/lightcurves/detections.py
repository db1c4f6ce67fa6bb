"""An event found in a light curve (virtualobserver's ``DetectionInTime``).

The same class whether it comes from an analysis file (:func:`detections_of`: the rows of the
analysis's ``/detections`` table) or from the database (:mod:`vo.db` maps it onto the
``detections`` table). Times are MJD (days), ``peak_mag`` AB mag, ``dmag`` mag.
"""

from __future__ import annotations

import math

#: The attributes of a detection (columns of the analysis's table and of the database's).
FIELDS = ("obs", "filter", "time_start", "time_peak", "time_end", "peak_snr", "peak_mag", "dmag", "n_epochs",
          "simulated", "sim_type", "sim_params")


class DetectionInTime:
    """An event: its time window and peak, S/N and magnitude, and whether it was injected.

    ``source_name`` and ``filekey`` name the source and the light curve it was found in
    (from a file); from the database, ``source`` and ``lightcurve`` are its rows.
    """

    def __init__(self, source_name: str | None = None, filekey: str | None = None, **fields):
        unknown = sorted(set(fields) - set(FIELDS))
        if unknown:
            raise TypeError(f"DetectionInTime: unknown fields {unknown} (known: {', '.join(FIELDS)})")
        self.__dict__["_source_name"] = source_name
        self.__dict__["_lc_key"] = filekey
        fields = {**{k: None for k in FIELDS}, "simulated": False, "filter": "", **fields}
        for key, value in fields.items():
            if isinstance(value, float) and math.isnan(value):
                value = None
            setattr(self, key, value)

    @property
    def name(self) -> str:
        """The source's name (from the file, or the database row's source)."""
        src = getattr(self, "source", None)
        return src.name if src is not None else self.__dict__.get("_source_name")

    def window(self) -> tuple[float | None, float | None]:
        """(start, end) of the event (MJD)."""
        return self.time_start, self.time_end

    def plot(self, lightcurve=None, ax=None):
        """The light curve (given, or the database row's) with the event window shaded and its
        peak marked; returns the axes."""
        lc = lightcurve if lightcurve is not None else getattr(self, "lightcurve", None)
        if lc is None:
            raise ValueError(f"{self!r}: give the light curve to plot (no database light curve attached)")
        ax = lc.plot(ax=ax)
        if self.time_start is not None and self.time_end is not None:
            ax.axvspan(self.time_start, self.time_end, color="orange", alpha=0.25, label="event")
        ax.axvline(self.time_peak, color="red", lw=1)
        return ax

    def __repr__(self) -> str:
        kind = f"simulated {self.sim_type}" if self.simulated else "real"
        return f"DetectionInTime({self.name!r}, {self.filter or 'all'}, peak MJD {self.time_peak:.3f}, {kind})"


def detections_of(table) -> list[DetectionInTime]:
    """The detections of an analysis ``/detections`` table (a DataFrame) as objects."""
    cols = [c for c in FIELDS if c in table.columns]
    out = []
    for rec in table.to_dict("records"):
        fields = {c: rec[c] for c in cols}
        if fields.get("n_epochs") is not None and not (isinstance(fields["n_epochs"], float)
                                                        and math.isnan(fields["n_epochs"])):
            fields["n_epochs"] = int(fields["n_epochs"])
        out.append(DetectionInTime(rec.get("source_name"), rec.get("filekey"), **fields))
    return out
