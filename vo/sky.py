"""Positions on the sky: unit vectors, tangent-plane projections, image footprints, and the
association of detections (measurements) to sky objects with their names.

Geometry (:func:`unit_vectors`, :func:`chord`, :func:`gnomonic`, :func:`inverse_gnomonic`,
:func:`footprint`) is written here once for every stage.  Angles are in degrees unless a name
says arcsec.

Association:

A measurement joins the nearest existing object within the association radius; measurements
that match no object are grouped among themselves (friends of friends within the radius:
several epochs of one new transient in the same batch make one object) and each group
becomes a new object at the mean position of its members.  Object positions are fixed when
the object is created, so an association never moves an object under another job's feet.

New objects are named ``VO{yy}{aaaa}``: ``yy`` is the UTC year (two digits) of the object's
first detection and ``aaaa`` a base-26 lower-case counter (``aaaa``, ``aaab``, ..., ``zzzz``,
then ``baaaa``...) that increases monotonically within a year, like TNS names.  Names are
deterministic for a given order of association: new objects of one batch are numbered by
(first detection time, ra, dec).

This module is pure (no database); :mod:`vo.db.objects` runs the association race-free
against the ``objects`` table.
"""

from __future__ import annotations

import numpy as np
from astropy.table import Table
from astropy.time import Time
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

#: Letters of the counter part of a name; names have at least this many.
NAME_LETTERS = 4
NAME_PREFIX = "VO"


def unit_vectors(ra, dec) -> np.ndarray:
    """Unit vectors (..., 3) of positions (deg)."""
    ra, dec = np.radians(np.asarray(ra, float)), np.radians(np.asarray(dec, float))
    cd = np.cos(dec)
    return np.stack([cd * np.cos(ra), cd * np.sin(ra), np.sin(dec)], axis=-1)


def chord(radius_arcsec: float) -> float:
    """Chord length on the unit sphere of an angle in arcsec."""
    return 2.0 * np.sin(np.radians(radius_arcsec / 3600.0) / 2.0)


def gnomonic(ra, dec, ra0: float, dec0: float) -> tuple[np.ndarray, np.ndarray]:
    """Tangent-plane (gnomonic) coordinates (xi, eta; deg) of (ra, dec) about (ra0, dec0), all
    in deg; NaN for points more than 90 deg away."""
    ra, dec = np.radians(np.asarray(ra, float)), np.radians(np.asarray(dec, float))
    a0, d0 = np.radians(ra0), np.radians(dec0)
    cosc = np.sin(d0) * np.sin(dec) + np.cos(d0) * np.cos(dec) * np.cos(ra - a0)
    with np.errstate(divide="ignore", invalid="ignore"):
        xi = np.cos(dec) * np.sin(ra - a0) / cosc
        eta = (np.cos(d0) * np.sin(dec) - np.sin(d0) * np.cos(dec) * np.cos(ra - a0)) / cosc
    bad = cosc <= 0
    xi, eta = np.degrees(xi), np.degrees(eta)
    xi[bad] = np.nan
    eta[bad] = np.nan
    return xi, eta


def inverse_gnomonic(xi, eta, ra0: float, dec0: float) -> tuple[np.ndarray, np.ndarray]:
    """(ra, dec) in deg of tangent-plane coordinates (xi, eta; deg) about (ra0, dec0)."""
    x, y = np.radians(np.asarray(xi, float)), np.radians(np.asarray(eta, float))
    a0, d0 = np.radians(ra0), np.radians(dec0)
    den = np.cos(d0) - y * np.sin(d0)
    ra = a0 + np.arctan2(x, den)
    dec = np.arctan2(np.sin(d0) + y * np.cos(d0), np.hypot(x, den))
    return np.degrees(ra) % 360.0, np.degrees(dec)


def corners(wcs, nx: int, ny: int, edge: float = 0.5) -> np.ndarray:
    """Sky positions (4, 2; deg, ra in [0, 360)) of an image's corners: pixels (-edge, -edge),
    (nx - 1 + edge, -edge), (nx - 1 + edge, ny - 1 + edge), (-edge, ny - 1 + edge) of ``wcs``
    (astropy, 0-based pixels); ``edge=0.5``: the outer pixel edges, ``0``: the corner pixels'
    centres."""
    x = np.array([-edge, nx - 1 + edge, nx - 1 + edge, -edge])
    y = np.array([-edge, -edge, ny - 1 + edge, ny - 1 + edge])
    ra, dec = wcs.all_pix2world(x, y, 0)
    return np.column_stack([np.mod(ra, 360.0), dec])


def footprint(wcs, nx: int, ny: int) -> tuple[np.ndarray, np.ndarray]:
    """Sky positions (deg) of an image's centre (2,) and outer pixel corners (4, 2) (see
    :func:`corners`); ``wcs``: celestial WCS, ``nx``, ``ny``: image width and height (pixels)."""
    ra, dec = wcs.all_pix2world([(nx - 1) / 2], [(ny - 1) / 2], 0)
    return np.array([float(np.mod(ra[0], 360.0)), float(dec[0])]), corners(wcs, nx, ny)


def counter_letters(counter: int, letters: int = NAME_LETTERS) -> str:
    """Base-26 lower-case letters of a counter (0 -> ``aaaa``), at least ``letters`` long."""
    if counter < 0:
        raise ValueError(f"object counter must be >= 0, got {counter}")
    out = []
    while counter or len(out) < letters:
        counter, r = divmod(counter, 26)
        out.append(chr(ord("a") + r))
    return "".join(reversed(out))


def object_name(year: int, counter: int) -> str:
    """Object name ``VO{yy}{aaaa}`` of the ``counter``-th object (0-based) of ``year``."""
    return f"{NAME_PREFIX}{int(year) % 100:02d}{counter_letters(int(counter))}"


def mjd_year(mjd) -> np.ndarray:
    """UTC calendar year of MJDs (int array)."""
    mjd = np.atleast_1d(np.asarray(mjd, float))
    if mjd.size == 0:
        return np.zeros(0, int)
    if not np.isfinite(mjd).all():
        raise ValueError(f"non-finite MJD in {mjd[~np.isfinite(mjd)][:5]}")
    return np.array([int(s[:4]) for s in Time(mjd, format="mjd", scale="utc").isot], int)


def check_positions(ra, dec, what: str = "measurements") -> tuple[np.ndarray, np.ndarray]:
    """ra, dec as float arrays, with a clear error for non-finite or out-of-range values."""
    ra, dec = np.atleast_1d(np.asarray(ra, float)), np.atleast_1d(np.asarray(dec, float))
    if ra.shape != dec.shape:
        raise ValueError(f"{what}: ra {ra.shape} and dec {dec.shape} differ in shape")
    bad = ~np.isfinite(ra) | ~np.isfinite(dec) | (np.abs(dec) > 90)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{what}: bad sky position at row {i}: ra={ra[i]}, dec={dec[i]} (deg)")
    return ra % 360.0, dec


def match_existing(ra, dec, obj_ra, obj_dec, radius_arcsec: float) -> np.ndarray:
    """Index of the nearest object within ``radius_arcsec`` of each position, -1 if none."""
    n = np.size(ra)
    if n == 0 or np.size(obj_ra) == 0:
        return np.full(n, -1, int)
    tree = cKDTree(unit_vectors(obj_ra, obj_dec))
    dist, idx = tree.query(unit_vectors(ra, dec), k=1, distance_upper_bound=chord(radius_arcsec))
    return np.where(np.isfinite(dist), idx, -1).astype(int)


def group_positions(ra, dec, radius_arcsec: float) -> np.ndarray:
    """Friends-of-friends groups (labels 0..G-1) of positions closer than ``radius_arcsec``."""
    n = np.size(ra)
    if n == 0:
        return np.zeros(0, int)
    pairs = cKDTree(unit_vectors(ra, dec)).query_pairs(chord(radius_arcsec), output_type="ndarray")
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def new_objects(ra, dec, mjd, radius_arcsec: float) -> tuple[np.ndarray, Table]:
    """Group unmatched measurements into new objects, ordered by (first mjd, ra, dec).

    Returns the object index of each measurement and a Table of the new objects (ra, dec:
    mean position of the members (deg); mjd_first (MJD); n_detections; year of mjd_first).
    """
    labels = group_positions(ra, dec, radius_arcsec)
    if labels.size == 0:
        return labels, Table({"ra": np.zeros(0), "dec": np.zeros(0), "mjd_first": np.zeros(0),
                              "n_detections": np.zeros(0, int), "year": np.zeros(0, int)})
    n_groups = int(labels.max()) + 1
    count = np.bincount(labels, minlength=n_groups)
    # mean unit vector of each group (robust across RA = 0/360)
    vec = unit_vectors(ra, dec)
    mean = np.column_stack([np.bincount(labels, vec[:, k], n_groups) for k in range(3)])
    mean /= np.linalg.norm(mean, axis=1, keepdims=True)
    g_ra = np.degrees(np.arctan2(mean[:, 1], mean[:, 0])) % 360.0
    g_dec = np.degrees(np.arcsin(np.clip(mean[:, 2], -1, 1)))
    first = np.full(n_groups, np.inf)
    np.minimum.at(first, labels, np.asarray(mjd, float))
    order = np.lexsort((g_dec, g_ra, first))
    rank = np.empty(n_groups, int)
    rank[order] = np.arange(n_groups)
    table = Table({"ra": g_ra[order], "dec": g_dec[order], "mjd_first": first[order],
                   "n_detections": count[order], "year": mjd_year(first[order])})
    return rank[labels], table


def assign_names(years, counters: dict[int, int]) -> tuple[list[str], dict[int, int]]:
    """Names of new objects of the given years, continuing ``counters`` (year -> next counter).

    Returns the names (in the order given) and the updated counters (a new dict).
    """
    counters = {int(k): int(v) for k, v in counters.items()}
    names = []
    for year in np.asarray(years, int):
        c = counters.get(int(year), 0)
        names.append(object_name(int(year), c))
        counters[int(year)] = c + 1
    return names, counters


def associate(ra, dec, mjd, objects: Table | None, radius_arcsec: float,
              counters: dict[int, int] | None = None) -> tuple[np.ndarray, Table, dict[int, int]]:
    """Associate measurements to objects, creating and naming new ones.

    Parameters
    ----------
    ra, dec : arrays (deg)
        Measurement positions.
    mjd : array (MJD)
        Measurement times (the first one names a new object's year).
    objects : Table or None
        Existing objects with columns ``name``, ``ra``, ``dec`` (deg).
    radius_arcsec : float
        Association radius (arcsec).
    counters : dict year -> next counter, optional
        Where new names continue (default: every year starts at ``aaaa``).

    Returns
    -------
    names : str array, the object name of each measurement.
    created : Table of the new objects (name, ra, dec, mjd_first, n_detections, year).
    counters : the updated counters.
    """
    if not radius_arcsec > 0:
        raise ValueError(f"association radius must be > 0 arcsec, got {radius_arcsec}")
    ra, dec = check_positions(ra, dec)
    mjd = np.broadcast_to(np.asarray(mjd, float), ra.shape)
    if objects is None or len(objects) == 0:
        obj_names, obj_ra, obj_dec = np.zeros(0, "U16"), np.zeros(0), np.zeros(0)
    else:
        missing = {"name", "ra", "dec"} - set(objects.colnames)
        if missing:
            raise ValueError(f"objects table lacks columns {sorted(missing)}")
        obj_names = np.asarray(objects["name"]).astype(str)
        obj_ra, obj_dec = check_positions(objects["ra"], objects["dec"], "objects")
    idx = match_existing(ra, dec, obj_ra, obj_dec, radius_arcsec)
    free = idx < 0
    k, created = new_objects(ra[free], dec[free], mjd[free], radius_arcsec)
    new_names, counters = assign_names(created["year"], counters or {})
    created.add_column(np.array(new_names, dtype="U32"), name="name", index=0)
    names = np.empty(ra.size, dtype=object)
    names[~free] = obj_names[idx[~free]]
    names[free] = np.asarray(new_names, dtype=object)[k] if k.size else []
    return names.astype(str), created, counters
