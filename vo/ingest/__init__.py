"""Ingest: product files into the database.

Reads the files each step wrote (with the science packages' readers) and writes their rows
through :mod:`vo.db`: light-curve products (:mod:`.lightcurves`), one CCD's image products
(:mod:`.images`), transient products with association to objects (:mod:`.transients`), and
``vo populate`` (:mod:`.populate`), which rebuilds the database from the files.  Idempotent,
one transaction per file or CCD, safe when many jobs run at once.
"""
