"""Rows that are datasets: raw photometry and light curves read from, or added to, the database.

:mod:`vo.db.models.lightcurves` maps :class:`vo.lightcurves.datasets.RawPhotometry` and
:class:`~vo.lightcurves.datasets.Lightcurve` onto their tables, so a row *is* the dataset. Two
things tie a row to its file, both here:

* **load**: the table holds the file's path relative to the data root; a row read from the
  database gets ``folder`` = the session's data root (``Session(data_root=...)``, else the
  config's), so ``row.data``, ``row.plot()``, ``obs.reduce(row)`` and
  ``row.delete_data_from_disk()`` work on it.
* **insert**: a dataset added with ``session.add`` (after ``save()``) gets its path made
  relative to the data root, its file's sha256, and the columns the table needs from its
  attributes (observatory, filter, season, counts, statistics) and, for a light curve, the
  reduce provenance of the session's config; a missing source is an error naming it. A
  dataset the database indexes already (same natural key) updates that row.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import event
from sqlalchemy.orm import Session as _Session

from vo.db.models import lightcurves as _mapped  # noqa: F401  (the classes are mapped before the events)
from vo.io.atomic import checksum
from vo.lightcurves.datasets import Lightcurve, RawPhotometry

#: Lightcurve columns filled from its attributes when it is added without them.
_LC_COLUMNS = ("obs", "filter", "season", "reduction_number", "reduction_total", "flux_mean", "flux_rms",
               "mag_mean", "mjd_start", "mjd_end")


def session_data_root(session) -> Path:
    """The data root of a session's files: ``session.info["data_root"]``, else the config's."""
    root = session.info.get("data_root") if session is not None else None
    if root is None:
        from vo.config import data_root, load_config
        root = data_root(load_config())
        if session is not None:
            session.info["data_root"] = root
    return Path(root)


@event.listens_for(RawPhotometry, "load")
@event.listens_for(Lightcurve, "load")
def _on_load(target, context) -> None:
    target.folder = str(session_data_root(context.session))


def _relative(target, root: Path) -> None:
    """Make ``target.filename`` relative to ``root`` (its file must lie under it)."""
    full = Path(target.get_fullname()).resolve()
    try:
        rel = full.relative_to(root.resolve())
    except ValueError:
        raise ValueError(f"{target!r}: its file {full} is not under the data root {root}; save it there "
                         "first (the database indexes files of its data root)") from None
    target.filename, target.folder = rel.as_posix(), str(root)


def _prepare(session, target, root: Path, provenances: dict) -> None:
    name = type(target).__name__
    if target.filename is None:
        raise ValueError(f"{name} {target._filekey or ''}: save() it before adding it to the database")
    _relative(target, root)
    path = root / target.filename
    if not path.exists():
        raise ValueError(f"{name} {target.filekey}: its file {path} does not exist; save() it first")
    if target._filekey is None:
        target._filekey = target.filekey          # derived from the attributes
    if target.checksum is None:
        target.checksum = checksum(path)
    if target.source is None and target.source_id is None:
        raise ValueError(f"{name} {target.filekey}: set its source (a Source row) before adding it")
    a = target.attrs
    if isinstance(target, RawPhotometry):
        if target.obs is None:
            target.obs = str(a.get("obs") or "")
        if target.n_rows is None:
            target.n_rows = int(len(target.data)) if target.data is not None else 0
        if target.download_params_hash is None:
            target.download_params_hash = a.get("download_params_hash")
        return
    for col in _LC_COLUMNS:
        if getattr(target, col) is None and a.get(col) is not None:
            setattr(target, col, a[col])
    if target.n_epochs is None:
        target.n_epochs = len(target)
    if target.provenance_id is None and target.provenance is None:
        if target.obs not in provenances:  # one row per observatory and flush
            provenances[target.obs] = _reduce_provenance(session, target)
        target.provenance = provenances[target.obs]


def _reduce_provenance(session, lc):
    """The Provenance row of the reduce step of the session's config for ``lc``'s observatory
    (made when the database has none yet)."""
    import sqlalchemy as sa

    from vo import provenance as vprov
    from vo.db.models import Provenance

    cfg = session.info.get("cfg")
    if cfg is None:
        raise ValueError(f"Lightcurve {lc.filekey}: set its provenance (the reduce step's Provenance row), or "
                         "open the session with the config that reduced it (Session(cfg=...))")
    p = vprov.provenance(cfg, "reduce", lc.obs)
    with session.no_autoflush:
        row = session.scalars(sa.select(Provenance).where(
            Provenance.step == "reduce", Provenance.obs == (p.obs or ""), Provenance.hash == p.hash)).first()
    if row is None:
        row = Provenance(step="reduce", obs=p.obs or "", hash=p.hash, code_version=p.code_version,
                         parameters=p.parameters, upstreams=p.upstreams, git_commit=vprov.git_commit())
        session.add(row)
    return row


def _natural_key(obj) -> dict | None:
    """The natural key of a prepared dataset row (None while its provenance has no id)."""
    if isinstance(obj, RawPhotometry):
        sid = obj.source_id if obj.source_id is not None else getattr(obj.source, "id", None)
        return None if sid is None else {"source_id": sid, "obs": obj.obs}
    pid = obj.provenance_id if obj.provenance_id is not None else getattr(obj.provenance, "id", None)
    return None if pid is None else {"provenance_id": pid, "filename": obj.filename, "filekey": obj._filekey}


def _update_existing(session, obj) -> bool:
    """A dataset the database indexes already (same natural key) updates that row instead of
    adding a second one (virtualobserver re-attached re-reduced data); returns whether it did."""
    import sqlalchemy as sa

    key = _natural_key(obj)
    if key is None:
        return False
    cls = type(obj)
    with session.no_autoflush:
        existing = session.scalars(sa.select(cls).filter_by(**key)).first()
    if existing is None or existing is obj:
        return False
    for attr in sa.inspect(cls).column_attrs:      # attribute names (the filekey column is _filekey)
        value = getattr(obj, attr.key, None)
        if attr.key not in ("id", "created_at") and value is not None:
            setattr(existing, attr.key, value)
    session.expunge(obj)
    obj.id = existing.id
    return True


@event.listens_for(_Session, "before_flush")
def _before_flush(session, _context, _instances) -> None:
    new = [o for o in session.new if isinstance(o, (RawPhotometry, Lightcurve))]
    if new:
        root = session_data_root(session)
        provenances = {}
        for obj in new:
            _prepare(session, obj, root, provenances)
            _update_existing(session, obj)

