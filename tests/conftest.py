"""Shared fixtures: databases.

``db_url`` is parametrised over ``sqlite`` and ``postgresql``, so every database test runs on
both backends.  PostgreSQL is a real temporary server started with the system's ``pg_ctl``
(:mod:`vo.db.testing`, which the benchmarks use too); each test gets a fresh database in it.
Without ``pg_ctl`` the PostgreSQL variants are skipped locally and FAIL when the ``CI``
environment variable is set (CI must test both backends; ``.ci/install-postgres.sh``
installs the server).
"""

from __future__ import annotations

import os

import pytest


def _unavailable(reason: str):
    if os.environ.get("CI"):
        pytest.fail(f"PostgreSQL tests cannot run on CI: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres_server():
    """A temporary PostgreSQL server on 127.0.0.1 (:func:`vo.db.testing.temporary_server`; q3c
    is created in each database by ``init_db`` when the server has the extension)."""
    from vo.db.testing import PostgresUnavailable, temporary_server

    try:
        with temporary_server() as server:
            yield server
    except PostgresUnavailable as exc:
        _unavailable(str(exc))
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    """URL of an empty database: a SQLite file, or a fresh database on the temporary server."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'vo.sqlite'}"
        return
    server = request.getfixturevalue("postgres_server")
    name = server.create_database()
    try:
        yield server.url(name)
    finally:
        server.drop_database(name)


@pytest.fixture
def engine(db_url):
    """An engine on an initialised empty database (tables, indexes, q3c where available)."""
    from vo.db import get_engine, init_db
    eng = get_engine(db_url)
    init_db(eng)
    yield eng
    eng.dispose()


@pytest.fixture(scope="session")
def small_run(tmp_path_factory):
    """A finished small workflow run, shared by the tests that read one without changing it
    (``vo status``, ``snakemake --report``): 20 DEMO targets and two 512x512 DemoCam exposures of
    one CCD, SQLite.  Returns ``(data root, config file)``; tests that change it work on a copy."""
    import yaml

    from workflow_helpers import smk

    root = tmp_path_factory.mktemp("small_run")
    cfgfile = root / "small.yaml"
    cfgfile.write_text(yaml.safe_dump({
        "project": {"name": "SMALL"},
        "catalog": {"max_targets": 20},
        "DEMO": {"n_seasons": 2, "epochs_per_season": 30},
        "images": {"enabled": True},
        "DemoCam": {"n_ccds": 1, "n_exposures": 2, "reference_epochs": 2, "ccd_shape": [512, 512],
                    "n_bias": 3, "n_flats": 3},
    }))
    smk(["--cores", "2", "--configfile", str(cfgfile)], root)
    return root, cfgfile
