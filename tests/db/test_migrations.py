"""Schema migrations (Alembic) on SQLite and a real PostgreSQL server: a database at an older
revision, or made before migrations existed, is upgraded in place with its rows intact and
then has exactly the models' schema."""

from __future__ import annotations

import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import traceback

import pytest
import sqlalchemy as sa
from test_ingest import Products, snapshot

from vo.db import get_engine, init_db
from vo.db import migrate

#: Indexes revision 0002 adds, and some it drops.
ADDED = {("images", "ix_images_filename"), ("cutouts", "ix_cutouts_filename")}
DROPPED = {("sources", "ix_sources_name"), ("measurements", "ix_measurements_cutouts_id")}


def _indexes(engine) -> set[tuple[str, str]]:
    insp = sa.inspect(engine)
    return {(t, ix["name"]) for t in insp.get_table_names() for ix in insp.get_indexes(t)}


def _revision(engine) -> str | None:
    with engine.connect() as conn:
        return migrate.current_revision(conn)


def _diffs(engine) -> list:
    with engine.connect() as conn:
        return migrate.schema_diffs(conn)


@pytest.fixture
def old_db(db_url, tmp_path):
    """A database at the first revision holding one ingested RA bin (real files); returns
    (engine, products, snapshot of every row)."""
    engine = get_engine(db_url)
    assert migrate.upgrade(engine, migrate.BASELINE) == (None, migrate.BASELINE)
    products = Products(tmp_path / "data", n=40, seed=4)
    products.ingest_all(engine)
    yield engine, products, snapshot(engine)
    engine.dispose()


def test_new_database_is_at_head_with_the_models_schema(engine):
    assert _revision(engine) == migrate.head() != migrate.BASELINE
    assert _diffs(engine) == []
    init_db(engine)  # again: nothing to do
    assert _revision(engine) == migrate.head()


def test_upgrade_keeps_the_rows(old_db):
    engine, products, rows = old_db
    assert _revision(engine) == migrate.BASELINE
    assert _diffs(engine) != [] and not ADDED & _indexes(engine) and DROPPED <= _indexes(engine)
    init_db(engine)  # what every ingest job does first
    assert _revision(engine) == migrate.head()
    assert _diffs(engine) == []
    assert ADDED <= _indexes(engine) and not DROPPED & _indexes(engine)
    assert snapshot(engine) == rows
    products.ingest_all(engine)  # the upgraded database takes the same rows again: no change
    assert snapshot(engine) == rows
    # and back down, and up again
    migrate.downgrade(engine, migrate.BASELINE)
    assert _revision(engine) == migrate.BASELINE and DROPPED <= _indexes(engine)
    assert snapshot(engine) == rows
    assert migrate.upgrade(engine) == (migrate.BASELINE, migrate.head())
    assert _diffs(engine) == [] and snapshot(engine) == rows


def test_bulk_tables_lose_only_their_provenance_foreign_key(old_db):
    """Revision 0003: lightcurves, measurements and scores keep their parents' foreign keys
    (enforced after the upgrade, on SQLite too: the pragma is back on) and lose the one to
    provenances."""
    engine, products, rows = old_db

    def fks(table):
        return {(tuple(fk["constrained_columns"]), fk["referred_table"])
                for fk in sa.inspect(engine).get_foreign_keys(table)}

    assert (("provenance_id",), "provenances") in fks("lightcurves")
    init_db(engine)
    for table, parent in (("lightcurves", (("source_id",), "sources")),
                          ("measurements", (("cutouts_id",), "cutouts")),
                          ("scores", (("measurement_id",), "measurements"))):
        assert parent in fks(table) and (("provenance_id",), "provenances") not in fks(table)
    assert snapshot(engine) == rows
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
        conn.execute(sa.text("UPDATE lightcurves SET source_id = 999999"))


@pytest.mark.parametrize("how", ["init_db", "upgrade_to_revision"])
def test_database_from_before_migrations_is_upgraded(old_db, how):
    """Tables but no alembic_version table (made by create_all before migrations existed):
    taken to be at the baseline and upgraded."""
    engine, _, rows = old_db
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE alembic_version"))
    assert _revision(engine) is None
    if how == "init_db":
        init_db(engine)
    else:
        assert migrate.upgrade(engine, migrate.head()) == (None, migrate.head())
    assert _revision(engine) == migrate.head() and _diffs(engine) == []
    assert snapshot(engine) == rows


def test_every_revision_goes_down_to_base_and_up(db_url):
    engine = get_engine(db_url)
    try:
        revisions = [s.revision for s in migrate.scripts().walk_revisions("base", "heads")][::-1]
        assert revisions[0] == migrate.BASELINE and revisions[-1] == migrate.head()
        for rev in revisions:  # one revision at a time, by the migrations (not create_all)
            migrate.upgrade(engine, rev)
            assert _revision(engine) == rev
        assert _diffs(engine) == []
        migrate.downgrade(engine, "base")
        assert set(sa.inspect(engine).get_table_names()) <= {"alembic_version"}
        init_db(engine)
        assert _diffs(engine) == [] and _revision(engine) == migrate.head()
    finally:
        engine.dispose()


def _init_job(url, barrier, queue):
    try:
        engine = get_engine(url)
        barrier.wait(timeout=60)
        init_db(engine)
        engine.dispose()
        queue.put("ok")
    except BaseException:  # noqa: BLE001 - reported to the test
        queue.put(traceback.format_exc())


def test_eight_jobs_upgrade_an_old_database_at_once(old_db, db_url):
    engine, _, rows = old_db
    engine.dispose()
    ctx = mp.get_context("fork")
    barrier, queue = ctx.Barrier(8), ctx.Queue()
    procs = [ctx.Process(target=_init_job, args=(db_url, barrier, queue)) for _ in range(8)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert results == ["ok"] * 8, results
    assert _revision(engine) == migrate.head() and _diffs(engine) == []
    assert snapshot(engine) == rows


def test_vo_db_command(db_url, tmp_path):
    env = {**os.environ, "VO_DB_URL": db_url, "VO_DATA": str(tmp_path)}

    def vo(*args):
        out = subprocess.run([sys.executable, "-m", "vo.cli", "db", *args], env=env, capture_output=True,
                             text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()

    assert vo("current") == f"vo: database at revision none (unstamped); newest {migrate.head()}"
    assert vo("upgrade", migrate.BASELINE) == f"vo: database at revision {migrate.BASELINE} (was unstamped)"
    assert vo("upgrade") == f"vo: database at revision {migrate.head()} (was {migrate.BASELINE})"
    assert vo("current") == f"vo: database at revision {migrate.head()}; newest {migrate.head()}"
    engine = get_engine(db_url)
    try:
        assert _diffs(engine) == []
    finally:
        engine.dispose()


def test_new_revision_is_empty_when_the_models_match(tmp_path, monkeypatch):
    """``vo db revision`` autogenerates from the database to the models: on a database at
    head nothing differs, so the new revision changes nothing."""
    migrations = tmp_path / "migrations"
    shutil.copytree(migrate.MIGRATIONS, migrations, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(migrate, "MIGRATIONS", migrations)
    migrate.scripts.cache_clear()
    engine = get_engine(f"sqlite:///{tmp_path / 'vo.sqlite'}")
    try:
        init_db(engine)
        before = migrate.head()
        path = migrate.new_revision(engine, "Nothing to change")
        assert path.parent == migrations / "versions" and path.name.startswith(f"{int(before) + 1:04d}_")
        text = path.read_text()
        assert f"down_revision = {before!r}" in text and "op." not in text.split("def upgrade")[1]
        assert migrate.head() == path.name[:4]
    finally:
        engine.dispose()
        migrate.scripts.cache_clear()


def test_schema_diffs_see_a_missing_index(engine):
    with engine.begin() as conn:
        conn.execute(sa.text("DROP INDEX ix_images_filename"))
    assert [d[0] for d in _diffs(engine)] == ["add_index"]


def test_database_newer_than_the_code_is_refused(engine):
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '9999'"))
    with pytest.raises(RuntimeError, match="revision 9999, which this version of vo does not know"):
        init_db(engine)
