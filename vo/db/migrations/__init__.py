"""Alembic migrations of the database schema (:mod:`vo.db.migrate` runs them).

``env.py`` is Alembic's environment; ``versions/`` holds one file per revision, each
upgrading the schema of the previous one in place (and downgrading it back).
"""
