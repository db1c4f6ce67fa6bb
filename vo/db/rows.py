"""Rows helpers shared by every ingest: one write transaction with retries, provenance rows,
source ids, and file names relative to the data root."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Iterable

import pandas as pd
import sqlalchemy as sa

from vo import provenance as vprov
import vo.db.models as m
from vo.db.bulk import IngestError, upsert
from vo.db.engine import Session, write_engine


def records(df: pd.DataFrame) -> list[dict]:
    """Rows of ``df`` as dicts of plain Python values, NaN as None."""
    return df.astype(object).where(pd.notna(df), None).to_dict("records")


def relative(path, data_root) -> str:
    path = Path(path).resolve()
    root = Path(data_root).resolve()
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        raise IngestError(f"{path}: not under the data root {root}") from None


def chunks(values: list, n: int = 900):
    for i in range(0, len(values), n):
        yield values[i:i + n]


def source_ids(session, project: str, names: Iterable[str], what: str = "") -> dict[str, int]:
    """``{name: id}`` of the project's sources; raises naming the sources not in the database."""
    names = sorted({str(n) for n in names})
    out = {}
    for chunk in chunks(names):
        out.update(session.execute(sa.select(m.Source.name, m.Source.id).where(
            m.Source.project == project, m.Source.name.in_(chunk))).tuples().all())
    missing = [n for n in names if n not in out]
    if missing:
        raise IngestError(f"{what}: {len(missing)} source(s) of project {project} are not in the "
                          f"database (ingest the targets first): {', '.join(missing[:10])}")
    return out


def provenance_id(session, step: str, obs: str | None, hash_: str, what: str = "") -> int:
    """Id of a provenance row; raises if it was not ingested."""
    pid = session.scalar(sa.select(m.Provenance.id).where(
        m.Provenance.step == step, m.Provenance.obs == (obs or ""), m.Provenance.hash == hash_))
    if pid is None:
        raise IngestError(f"{what}: provenance {step}.{obs or '-'} {hash_} is not in the database "
                          "(ingest the provenances first)")
    return pid


def ingest_provenances(session, provenances: Iterable[vprov.Provenance],
                       git_commit: str | None = None) -> dict[str, int]:
    """Add provenances (existing ones are kept as they are); returns ``{key: hash}``."""
    provenances = list(provenances)
    rows = [{"step": p.step, "obs": p.obs or "", "hash": p.hash, "code_version": str(p.code_version),
             "parameters": p.parameters, "upstreams": p.upstreams, "git_commit": git_commit}
            for p in provenances]
    upsert(session, m.Provenance, rows)
    return {p.key: p.hash for p in provenances}


def retryable(exc: sa.exc.DBAPIError) -> bool:
    """PostgreSQL deadlock (40P01) or serialization failure (40001): safe to run again."""
    return getattr(exc.orig, "sqlstate", None) in ("40P01", "40001")


def in_transaction(engine, fn: Callable, *args, retries: int = 3):
    """Run ``fn(session, *args)`` in one write transaction (commit, or roll back on error)."""
    for attempt in range(retries + 1):
        try:
            with Session(write_engine(engine)) as session, session.begin():
                return fn(session, *args)
        except sa.exc.DBAPIError as exc:
            if attempt == retries or not retryable(exc):
                raise
            time.sleep(0.05 * 2 ** attempt)
