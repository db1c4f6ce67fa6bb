"""Cone search: q3c on PostgreSQL when the extension is installed, HEALPix everywhere else.

The HEALPix path works on any database: the cone is covered by the pixels of a coarse
nested level chosen from the radius (astropy_healpix returns every pixel that overlaps the
cone, partially included); a coarse nested pixel is a contiguous range of fine indices, so
the query is a few ``healpix BETWEEN lo AND hi`` terms on the indexed column.  The candidates
are then cut to the exact great-circle distance with numpy.  Both paths return the same rows.
"""

from __future__ import annotations

import astropy.units as u
import numpy as np
import sqlalchemy as sa
from astropy_healpix import HEALPix, nside_to_pixel_resolution
from sqlalchemy.orm import Session

from vo.db.engine import has_q3c
from vo.db.models import HEALPIX_LEVEL

#: Aim for coarse pixels about this many times smaller than the cone radius: a handful of
#: index ranges and little area searched in vain.
_PIXELS_PER_RADIUS = 2.0


def great_circle_deg(ra1, dec1, ra2, dec2) -> np.ndarray:
    """Angular distance (deg) between positions in degrees (Vincenty formula, exact at
    all separations, unlike the haversine formula near 180 deg)."""
    ra1, dec1, ra2, dec2 = (np.radians(np.asarray(x, dtype=float)) for x in (ra1, dec1, ra2, dec2))
    dra = ra2 - ra1
    num = np.hypot(np.cos(dec2) * np.sin(dra),
                   np.cos(dec1) * np.sin(dec2) - np.sin(dec1) * np.cos(dec2) * np.cos(dra))
    den = np.sin(dec1) * np.sin(dec2) + np.cos(dec1) * np.cos(dec2) * np.cos(dra)
    return np.degrees(np.arctan2(num, den))


def coarse_level(radius_deg: float) -> int:
    """Nested HEALPix level whose pixels are about ``radius / 2`` (at most the column's level)."""
    for level in range(HEALPIX_LEVEL, -1, -1):
        res = nside_to_pixel_resolution(2 ** level).to_value(u.deg)
        if res * _PIXELS_PER_RADIUS >= radius_deg:
            return level
    return 0


def healpix_ranges(ra: float, dec: float, radius_deg: float) -> np.ndarray:
    """Inclusive ranges ``[[lo, hi], ...]`` of fine (column) HEALPix indices covering the cone."""
    level = coarse_level(radius_deg)
    hp = HEALPix(nside=2 ** level, order="nested")
    pix = np.unique(hp.cone_search_lonlat(ra * u.deg, dec * u.deg, radius_deg * u.deg))
    shift = 2 * (HEALPIX_LEVEL - level)
    # merge consecutive coarse pixels into one range
    breaks = np.flatnonzero(np.diff(pix) != 1) + 1
    starts = pix[np.r_[0, breaks]]
    ends = pix[np.r_[breaks - 1, pix.size - 1]]
    return np.column_stack([starts << shift, ((ends + 1) << shift) - 1]).astype(np.int64)


def _check_model(model) -> None:
    table = getattr(model, "__table__", None)
    if not (isinstance(model, type) and table is not None and {"ra", "dec", "healpix"} <= set(table.c.keys())):
        raise TypeError(f"{model!r} has no sky position (ra, dec, healpix) to search")


def cone_condition_healpix(model, ra: float, dec: float, radius_deg: float):
    """SQL condition selecting the HEALPix candidates of a cone (a superset of it)."""
    ranges = healpix_ranges(ra, dec, radius_deg)
    return sa.or_(*(model.healpix.between(int(lo), int(hi)) for lo, hi in ranges))


def cone_search(session: Session, model, ra: float, dec: float, radius_deg: float,
                *where, use_q3c: bool | None = None) -> list:
    """Rows of ``model`` within ``radius_deg`` of (``ra``, ``dec``), all in degrees.

    Parameters
    ----------
    session : an open session.
    model : a mapped class with sky positions (e.g. :class:`vo.db.models.Source`).
    ra, dec, radius_deg : cone centre and radius (deg).
    where : extra SQL conditions, e.g. ``Source.project == "DEMO"``.
    use_q3c : force (True) or refuse (False) the q3c path; default: q3c when the extension
        is installed in the database.

    Returns
    -------
    list of ``model`` instances, ordered by distance from the centre.
    """
    _check_model(model)
    if not np.isfinite([ra, dec, radius_deg]).all() or radius_deg < 0 or abs(dec) > 90:
        raise ValueError(f"bad cone ra={ra}, dec={dec}, radius={radius_deg} (deg)")
    ra = float(ra) % 360.0
    if use_q3c is None:
        use_q3c = has_q3c(session)
    if use_q3c:
        cond = sa.func.q3c_radial_query(model.ra, model.dec, ra, float(dec), float(radius_deg))
        rows = session.scalars(sa.select(model).where(cond, *where)).all()
        dist = great_circle_deg(ra, dec, [r.ra for r in rows], [r.dec for r in rows])
    else:
        cond = cone_condition_healpix(model, ra, dec, radius_deg)
        rows = session.scalars(sa.select(model).where(cond, *where)).all()
        dist = great_circle_deg(ra, dec, [r.ra for r in rows], [r.dec for r in rows])
        keep = dist <= radius_deg
        rows = [r for r, k in zip(rows, keep) if k]
        dist = dist[keep]
    return [rows[i] for i in np.argsort(dist, kind="stable")]
