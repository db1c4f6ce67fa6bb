"""Atomic file writes: write to a temporary name in the same folder, then rename.

A killed job therefore never leaves a partial or corrupt file under the final name.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it to ``path`` if the block succeeds.

    The temporary file keeps the final suffix (so libraries that look at extensions
    behave) and is removed if the block raises.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix if suffix is None else suffix
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; products are shared
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def remove_orphans(path: str | os.PathLike) -> list[Path]:
    """Delete the temporary files of :func:`atomic_path` for ``path`` that a killed writer left
    (``.{stem}.XXXXXXXX.tmp{suffix}``); returns them.

    Call it only where no other process can be writing ``path`` at the same time: the one
    job that makes it (Snakemake runs one job per output), or a writer holding its lock.
    """
    path = Path(path)
    name = re.compile(re.escape(f".{path.stem}.") + r"[a-z0-9_]{8}" + re.escape(f".tmp{path.suffix}"))
    found = [p for p in path.parent.glob(".*.tmp*") if name.fullmatch(p.name)] if path.parent.is_dir() else []
    for tmp in found:
        tmp.unlink(missing_ok=True)
    return found


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write a text file atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def checksum(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """sha256 hex digest of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
