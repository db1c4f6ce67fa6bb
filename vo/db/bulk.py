"""Bulk upsert: ``INSERT ... ON CONFLICT`` on a table's natural key, for many rows at once.

* PostgreSQL, :data:`COPY_MIN_ROWS` rows or more: the rows are streamed with binary ``COPY``
  (psycopg 3 ``cursor.copy()``) into a temporary table, then written with ONE ``INSERT ... SELECT
  ... ORDER BY key ON CONFLICT (key) DO UPDATE ... WHERE <a value changed>``.  The temporary
  table is dropped at once (and in any case at the end of the transaction).
* PostgreSQL, rows the caller knows are new (``new=True``: it holds :func:`lock` on the
  rows' scope and :func:`has_rows` found none), :data:`COPY_MIN_ROWS` or more: binary ``COPY``
  straight into the table, the fastest way in (no temporary table, no conflict checks; about
  3 times less server time than the ``ON CONFLICT`` path).
* Otherwise (SQLite, few rows, or rows that leave a column with a Python-side default to
  SQLAlchemy): ``executemany`` of the same ``INSERT ... ON CONFLICT`` in
  batches of ``batch_size``.

All are idempotent (an existing row is updated only where a value differs, or left alone;
new rows are new because the caller's lock keeps others out of their scope) and lock the
rows in the same order, the natural key's (strings in code-point order: Python's ``sorted``
and PostgreSQL's ``COLLATE "C"``), so concurrent jobs queue instead of deadlocking.  None
commits.
"""

from __future__ import annotations

import itertools
from typing import Iterable

import numpy as np
import sqlalchemy as sa

import vo.db.models as m
from vo.db.engine import json_dumps

#: Fewer rows than this go through executemany: a temporary table costs a few catalog writes.
COPY_MIN_ROWS = 500
DEFAULT_BATCH = 5000
#: First key (int4) of the advisory locks of :func:`lock` ("vo" + 2; objects use "vo" + 1).
LOCK_CLASS = 0x766F02
_TEMP_NAMES = itertools.count()


class IngestError(ValueError):
    """Products that cannot be ingested; the message names the file or the rows."""


def finite_or_none(values) -> list:
    """Floats as plain Python values with NaN/inf as ``None`` (NULL), as the drivers take them."""
    values = np.asarray(values, dtype=float)
    out = values.tolist()
    bad = ~np.isfinite(values)
    if bad.any():
        for i in np.flatnonzero(bad).tolist():
            out[i] = None
    return out


def insert_for(session, table: sa.Table):
    """The dialect's ``INSERT`` (with ``on_conflict_do_*``) of ``table``."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:
        raise NotImplementedError(f"ingest supports SQLite and PostgreSQL, not {dialect}")
    return insert(table)


def insert_returning(session, table: sa.Table, columns: dict[str, list], returning: tuple[str, ...]) -> list:
    """Insert new rows given as columns; returns the ``returning`` columns of each row.
    PostgreSQL: one ``INSERT ... SELECT FROM unnest(arrays) RETURNING`` (a statement of fixed
    size whatever the number of rows); elsewhere executemany with ``RETURNING``."""
    cols = list(columns)
    out = [table.c[r] for r in returning]
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import ARRAY

        src = sa.func.unnest(*(sa.bindparam(f"v_{c}", columns[c], type_=ARRAY(table.c[c].type)) for c in cols)
                             ).table_valued(*cols).render_derived()
        stmt = sa.insert(table).from_select(cols, sa.select(*(src.c[c] for c in cols))).returning(*out)
        return session.execute(stmt).all()
    rows = [dict(zip(cols, values)) for values in zip(*columns.values())]
    return session.execute(sa.insert(table).returning(*out, sort_by_parameter_order=True), rows).all()


def _sorted_columns(table: sa.Table, key: tuple[str, ...], columns: dict[str, list]) -> dict[str, list]:
    """The columns with their rows in natural-key order; two rows with one key are an error."""
    keys = list(zip(*(columns[c] for c in key)))
    order = sorted(range(len(keys)), key=keys.__getitem__)
    for a, b in zip(order, order[1:]):
        if keys[a] == keys[b]:
            raise IngestError(f"{table.name}: two rows with the same {key} = {keys[a]}")
    if order == list(range(len(order))):  # already in order (e.g. rows of one file by row index)
        return columns
    return {c: [v[i] for i in order] for c, v in columns.items()}


def _on_conflict(stmt, table: sa.Table, key, update):
    if not update:
        return stmt.on_conflict_do_nothing(index_elements=list(key))
    changed = sa.or_(*(table.c[c].is_distinct_from(stmt.excluded[c]) for c in update))
    return stmt.on_conflict_do_update(index_elements=list(key), set_={c: stmt.excluded[c] for c in update},
                                      where=changed)


def lock(session, *key) -> bool:
    """PostgreSQL: take a transaction-level advisory lock on ``key`` (e.g. a table name and
    a file name), held until commit, so that the writers of one scope queue; returns True.
    SQLite: nothing to take (its write transactions are serialised, ``BEGIN IMMEDIATE``),
    returns False: bulk writes there never take the ``new`` path.

    Take it before any lock of :mod:`vo.db.objects` (one lock order).
    """
    if session.get_bind().dialect.name != "postgresql":
        return False
    session.execute(sa.text("SELECT pg_advisory_xact_lock(:cls, hashtext(:key))"),
                    {"cls": LOCK_CLASS, "key": "\x1f".join(map(str, key))})
    return True


def has_rows(session, model, **scope) -> bool:
    """Whether ``model``'s table has a row with these column values (a list: any of them)."""
    table = model.__table__
    where = [table.c[c].in_(v) if isinstance(v, (list, tuple)) else table.c[c] == v for c, v in scope.items()]
    return session.execute(sa.select(sa.literal(1)).select_from(table).where(*where).limit(1)).first() is not None


def upsert(session, model, rows: list[dict] | dict[str, list], update: Iterable[str] = (),
           batch_size: int = DEFAULT_BATCH, new: bool = False) -> int:
    """Insert rows into ``model``'s table; on a natural-key conflict update the ``update``
    columns (only where they differ) or, with no ``update`` columns, do nothing.

    ``rows``: dicts with the same keys, or columns ``{name: list of values}`` of one length
    (cheaper: no dict per row).  Values are plain Python ones (None for NULL).  ``new``: the
    caller holds :func:`lock` on the rows' scope and found none of them (:func:`has_rows`),
    so PostgreSQL takes them with a plain ``COPY``.  Returns the number of rows.
    """
    if isinstance(rows, dict):
        columns = {c: list(v) for c, v in rows.items()}
    else:
        columns = {c: [r[c] for r in rows] for c in (rows[0] if rows else ())}
    n = len(next(iter(columns.values()), ()))
    if n == 0:
        return 0
    if any(len(v) != n for v in columns.values()):
        raise ValueError(f"{model.__tablename__}: columns of different lengths "
                         f"{ {c: len(v) for c, v in columns.items()} }")
    table = model.__table__
    key = m.NATURAL_KEYS[table.name]
    columns = _sorted_columns(table, key, columns)
    update = list(update)
    if session.get_bind().dialect.name == "postgresql" and n >= COPY_MIN_ROWS and \
            not any(c.default is not None and c.name not in columns for c in table.c):
        json_cols = [c for c in columns if isinstance(table.c[c].type, sa.JSON)]
        if new and not json_cols:
            _copy(session, table.name, list(columns), columns)
        else:
            _copy_upsert(session, table, key, columns, update)
        return n
    stmt = _on_conflict(insert_for(session, table), table, key, update)
    names = list(columns)
    for i in range(0, n, batch_size):
        session.execute(stmt, [dict(zip(names, values))
                               for values in zip(*(v[i:i + batch_size] for v in columns.values()))])
    return n


def _copy_upsert(session, table: sa.Table, key, columns: dict[str, list], update: list[str]) -> None:
    """PostgreSQL: binary COPY into a temporary table, then one INSERT ... SELECT ... ON CONFLICT."""
    from sqlalchemy.dialects.postgresql import insert

    cols = list(columns)
    quote = session.get_bind().dialect.identifier_preparer.quote
    json_cols = [c for c in cols if isinstance(table.c[c].type, sa.JSON)]
    temp = f"_vo_upsert_{next(_TEMP_NAMES)}"
    # JSON travels as text (serialised by json_dumps, None as JSON null, as SQLAlchemy's JSON
    # type writes it) and is cast back
    select_list = ", ".join(f"{quote(c)}::text AS {quote(c)}" if c in json_cols else quote(c) for c in cols)
    session.execute(sa.text(f"CREATE TEMPORARY TABLE {temp} ON COMMIT DROP AS "
                            f"SELECT {select_list} FROM {quote(table.name)} WITH NO DATA"))
    values = {c: [json_dumps(v) for v in columns[c]] if c in json_cols else columns[c] for c in cols}
    _copy(session, temp, cols, values)
    src = sa.table(temp, *(sa.column(c) for c in cols))
    order = [src.c[c].collate("C") if isinstance(table.c[c].type, sa.String) else src.c[c] for c in key]
    selected = [sa.cast(src.c[c], table.c[c].type) if c in json_cols else src.c[c] for c in cols]
    stmt = insert(table).from_select(cols, sa.select(*selected).order_by(*order))
    session.execute(_on_conflict(stmt, table, key, update))
    session.execute(sa.text(f"DROP TABLE {temp}"))


def _copy(session, table_name: str, cols: list[str], columns: dict[str, list]) -> None:
    """Binary ``COPY`` of ``columns`` into the columns ``cols`` of ``table_name``."""
    quote = session.get_bind().dialect.identifier_preparer.quote
    types = dict(session.execute(sa.text(
        "SELECT attname, atttypid FROM pg_attribute WHERE attrelid = CAST(:t AS regclass) AND attnum > 0 "
        "AND NOT attisdropped"), {"t": quote(table_name)}).tuples().all())
    dbapi_conn = session.connection().connection.driver_connection
    copy_sql = f"COPY {quote(table_name)} ({', '.join(quote(c) for c in cols)}) FROM STDIN (FORMAT BINARY)"
    with dbapi_conn.cursor() as cur, cur.copy(copy_sql) as copy:
        copy.set_types([types[c] for c in cols])
        for row in zip(*(columns[c] for c in cols)):
            copy.write_row(row)
