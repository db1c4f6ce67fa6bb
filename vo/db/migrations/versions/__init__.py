"""Schema revisions, oldest first: ``0001_initial``, then each file's ``down_revision``."""
