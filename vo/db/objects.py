"""Race-free association of measurements to sky objects in the database.

Two jobs that see the same new transient at the same time must create ONE object.  Both
backends serialise the "look for objects near here, else create one" transaction:

* PostgreSQL: transaction-level advisory locks (``pg_advisory_xact_lock``) on coarse
  HEALPix cells.  A batch locks, in ascending order (so jobs queue and never deadlock), the
  cell of every position and its 8 neighbours; cells are at least 4 association radii wide,
  so two positions within one radius of each other always share a locked cell (the cell of
  either one).  A job that waited for the lock then reads the objects committed by the
  other (READ COMMITTED: every statement sees the latest commits) and joins them.
  Jobs in other parts of the sky do not wait for each other.  Cells are at most
  :data:`LOCK_LEVEL_MAX` fine (about 7 arcmin): a CCD takes tens of locks, not thousands
  (the server's lock table is shared by all jobs).  Every batch first takes a sky-wide lock
  in shared mode; a batch that would need more than :data:`MAX_CELL_LOCKS` cell locks takes
  it in exclusive mode instead (and no cell locks).
* SQLite: the transaction opens with ``BEGIN IMMEDIATE`` (:func:`vo.db.engine.write_engine`),
  which takes the database's single write lock before the first read.

Object names continue a per-year counter (table ``object_counters``) incremented with
``UPDATE ... RETURNING`` under its row lock, taken after the cell locks (one lock order).
The matching itself is :func:`vo.sky.associate` (pure numpy).
"""

from __future__ import annotations

from dataclasses import dataclass

import astropy.units as u
import numpy as np
import sqlalchemy as sa
from astropy.table import Table
from astropy_healpix import HEALPix, nside_to_pixel_resolution

import vo.db.models as m
from vo import sky as assoc
from vo.db.bulk import insert_for, insert_returning
from vo.db.rows import in_transaction

#: First key (int4) of the advisory locks of object association ("vo" + 1).
LOCK_CLASS = 0x766F01
#: Lock cells are at least this many association radii wide.
_CELL_RADII = 4.0
#: Finest HEALPix level of the lock cells (level 9: pixels of 6.9 arcmin).
LOCK_LEVEL_MAX = 9
#: A batch with more lock cells than this locks the whole sky instead.
MAX_CELL_LOCKS = 1000
#: Second key of the sky-wide lock (cell keys are >= 0).
_SKY_KEY = -1
#: HEALPix ranges per SELECT where they are ORed (SQLite: at most 1000 levels of expression).
_OR_BATCH = 400


@dataclass
class ObjectAssociation:
    """Result of an association: per measurement its object's id and name, and which
    objects this call created (names)."""

    object_ids: np.ndarray
    names: np.ndarray
    created: list[str]


def lock_level(radius_arcsec: float, finest: int = LOCK_LEVEL_MAX) -> int:
    """Nested HEALPix level of the lock cells: the finest (at most ``finest``) whose pixels
    are >= ``_CELL_RADII`` radii wide.  The objects near a batch are read from the cells of
    ``lock_level(radius, HEALPIX_LEVEL)`` (smaller: fewer objects read)."""
    for level in range(min(m.HEALPIX_LEVEL, finest), -1, -1):
        if nside_to_pixel_resolution(2 ** level).to_value(u.arcsec) >= _CELL_RADII * radius_arcsec:
            return level
    raise ValueError(f"association radius {radius_arcsec} arcsec is too large")


def lock_cells(ra, dec, level: int) -> np.ndarray:
    """Sorted unique cells (level ``level``, nested) of the positions and their neighbours."""
    hp = HEALPix(nside=2 ** level, order="nested")
    pix = hp.lonlat_to_healpix(np.asarray(ra) * u.deg, np.asarray(dec) * u.deg)
    cells = np.concatenate([pix, hp.neighbours(pix).ravel()])
    return np.unique(cells[cells >= 0]).astype(np.int64)


def _objects_in_cells(session, provenance_id: int, cells: np.ndarray, level: int) -> list:
    """Rows (id, name, ra, dec), by id, of the objects of ``provenance_id`` whose
    ``healpix`` (column level) lies in one of the coarse ``cells``: ``healpix`` ranges given
    as arrays joined with ``unnest`` on PostgreSQL (one short statement however many ranges),
    ORed BETWEENs in batches of :data:`_OR_BATCH` elsewhere (SQLite limits expression depth)."""
    shift = 2 * (m.HEALPIX_LEVEL - level)
    breaks = np.flatnonzero(np.diff(cells) != 1) + 1
    lo = (cells[np.r_[0, breaks]] << shift).tolist()
    hi = (((cells[np.r_[breaks - 1, cells.size - 1]] + 1) << shift) - 1).tolist()
    obj = m.SkyObject.__table__.c  # Core columns on the session's connection: no ORM row loading
    conn = session.connection()
    stmt = sa.select(obj.id, obj.name, obj.ra, obj.dec).where(obj.provenance_id == provenance_id)
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import ARRAY
        ranges = sa.func.unnest(sa.bindparam("lo", lo, type_=ARRAY(sa.BigInteger)),
                                sa.bindparam("hi", hi, type_=ARRAY(sa.BigInteger))
                                ).table_valued("lo", "hi").render_derived()
        stmt = stmt.join(ranges, obj.healpix.between(ranges.c.lo, ranges.c.hi))
        return conn.execute(stmt.order_by(obj.id)).all()
    rows = []
    for i in range(0, len(lo), _OR_BATCH):
        rows += conn.execute(stmt.where(sa.or_(*(obj.healpix.between(a, b) for a, b in
                                                   zip(lo[i:i + _OR_BATCH], hi[i:i + _OR_BATCH]))))).all()
    return sorted(rows, key=lambda r: r.id)


def _set_object_ids(session, mids: np.ndarray, object_ids: np.ndarray) -> None:
    """``measurements.object_id`` of the rows ``mids``: one UPDATE ... FROM unnest on
    PostgreSQL, executemany elsewhere."""
    t = m.Measurement.__table__
    if session.get_bind().dialect.name == "postgresql":
        session.execute(sa.text("UPDATE measurements SET object_id = v.oid FROM unnest(CAST(:mids AS bigint[]), "
                                "CAST(:oids AS bigint[])) AS v(mid, oid) WHERE measurements.id = v.mid"),
                        {"mids": mids.tolist(), "oids": object_ids.tolist()})
        return
    session.execute(sa.update(t).where(t.c.id == sa.bindparam("mid"))
                    .values(object_id=sa.bindparam("oid")).execution_options(synchronize_session=False),
                    [{"mid": a, "oid": b} for a, b in zip(mids.tolist(), object_ids.tolist())])


def _lock(session, cells: np.ndarray) -> None:
    """Take the sky-wide lock (shared), then the advisory locks of ``cells`` in ascending
    order in one statement (``unnest`` of a sorted array yields its elements in order and the
    scan locks them one row at a time); or, past :data:`MAX_CELL_LOCKS` cells, the sky-wide
    lock alone, exclusive."""
    if session.get_bind().dialect.name != "postgresql":
        return  # SQLite: the BEGIN IMMEDIATE write lock is already held
    if cells.size > MAX_CELL_LOCKS:
        session.execute(sa.text("SELECT pg_advisory_xact_lock(:cls, :sky)"), {"cls": LOCK_CLASS, "sky": _SKY_KEY})
        return
    session.execute(sa.text("SELECT pg_advisory_xact_lock_shared(:cls, :sky)"), {"cls": LOCK_CLASS, "sky": _SKY_KEY})
    session.execute(sa.text("SELECT count(pg_advisory_xact_lock(:cls, k)) "
                            "FROM unnest(CAST(:keys AS integer[])) AS k"),
                    {"cls": LOCK_CLASS, "keys": np.sort(cells).astype(int).tolist()})


def reserve_counters(session, year_counts: dict[int, int]) -> dict[int, int]:
    """Reserve ``n`` consecutive name counters per year; returns the first of each block."""
    table = m.ObjectCounter.__table__
    start = {}
    for year in sorted(year_counts):
        n = int(year_counts[year])
        session.execute(insert_for(session, table).values(year=int(year), next_counter=0)
                        .on_conflict_do_nothing(index_elements=["year"]))
        end = session.execute(sa.update(table).where(table.c.year == int(year))
                              .values(next_counter=table.c.next_counter + n)
                              .returning(table.c.next_counter)).scalar_one()
        start[int(year)] = int(end) - n
    return start


def associate_in_session(session, ra, dec, mjd, provenance_id: int, radius_arcsec: float,
                         measurement_ids=None) -> ObjectAssociation:
    """Associate positions to the objects of ``provenance_id`` inside the caller's write
    transaction (see the module doc); creates the missing objects and, with
    ``measurement_ids``, sets ``measurements.object_id``.

    Parameters
    ----------
    ra, dec : arrays (deg); mjd : array (MJD) of the measurements.
    provenance_id : id of the association step's provenance (objects are per provenance).
    radius_arcsec : association radius (arcsec).
    measurement_ids : optional ids of the ``measurements`` rows, same length as ``ra``.
    """
    ra, dec = assoc.check_positions(ra, dec)
    mjd = np.broadcast_to(np.asarray(mjd, float), ra.shape)
    if ra.size == 0:
        return ObjectAssociation(np.zeros(0, np.int64), np.zeros(0, str), [])
    _lock(session, lock_cells(ra, dec, lock_level(radius_arcsec)))
    level = lock_level(radius_arcsec, m.HEALPIX_LEVEL)
    obj = m.SkyObject
    rows = _objects_in_cells(session, provenance_id, lock_cells(ra, dec, level), level)
    existing = None
    if rows:
        oid, name, ora, odec = zip(*rows)
        existing = Table({"id": np.array(oid, np.int64), "name": np.array(name, "U32"),
                          "ra": np.array(ora, float), "dec": np.array(odec, float)})
    # names of new objects: first find how many per year, then reserve that many counters
    _, created, _ = assoc.associate(ra, dec, mjd, existing, radius_arcsec)
    years, n_per_year = np.unique(np.asarray(created["year"], int), return_counts=True)
    start = reserve_counters(session, dict(zip(years.tolist(), n_per_year.tolist())))
    names, created, _ = assoc.associate(ra, dec, mjd, existing, radius_arcsec, counters=start)
    ids = {} if existing is None else dict(zip(existing["name"].tolist(), existing["id"].tolist()))
    if len(created):
        n = len(created)
        cra, cdec = np.asarray(created["ra"], float), np.asarray(created["dec"], float)
        new = {"name": np.asarray(created["name"]).astype(str).tolist(), "provenance_id": [int(provenance_id)] * n,
               "ra": cra.tolist(), "dec": cdec.tolist(), "mjd_first": np.asarray(created["mjd_first"], float).tolist(),
               "healpix": m.healpix_index(cra, cdec).tolist()}
        ids.update({name: int(i) for i, name in insert_returning(session, obj.__table__, new, ("id", "name"))})
    object_ids = np.array([ids[n] for n in names], np.int64)
    if measurement_ids is not None:
        mids = np.asarray(measurement_ids, np.int64)
        if mids.shape != ra.shape:
            raise ValueError(f"{mids.size} measurement ids for {ra.size} positions")
        _set_object_ids(session, mids, object_ids)
    return ObjectAssociation(object_ids, names, [str(n) for n in created["name"]])


def associate_objects(engine, ra, dec, mjd, provenance_id: int, radius_arcsec: float,
                      measurement_ids=None) -> ObjectAssociation:
    """:func:`associate_in_session` in its own write transaction (retried on deadlock)."""
    return in_transaction(engine, associate_in_session, ra, dec, mjd, provenance_id, radius_arcsec,
                          measurement_ids)


def _measurements_in_session(session, measurement_ids, provenance_id: int, radius_arcsec: float):
    t = m.Measurement.__table__
    mids = sorted({int(i) for i in measurement_ids})
    rows = session.execute(sa.select(t.c.id, t.c.ra, t.c.dec, t.c.mjd).where(t.c.id.in_(mids))
                           .order_by(t.c.id)).all()
    missing = set(mids) - {r[0] for r in rows}
    if missing:
        raise ValueError(f"measurements {sorted(missing)[:10]} not in the database")
    arr = np.array([tuple(r) for r in rows], float).reshape(-1, 4)
    return associate_in_session(session, arr[:, 1], arr[:, 2], arr[:, 3], provenance_id, radius_arcsec,
                                measurement_ids=arr[:, 0].astype(np.int64))


def associate_measurements(engine, measurement_ids, provenance_id: int,
                           radius_arcsec: float) -> ObjectAssociation:
    """Associate ``measurements`` rows (by id; positions and times from the table) to
    objects and store their ``object_id``, in one transaction.  Results are in ascending
    id order."""
    return in_transaction(engine, _measurements_in_session, measurement_ids, provenance_id,
                          radius_arcsec)
