"""Where the tests find things: the repository, and ``tests/data`` (small real files, each folder
with its source and licence)."""

from pathlib import Path

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
DATA = TESTS / "data"
