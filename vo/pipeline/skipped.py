"""Skipped products: what a transient step writes when its input cannot be processed.

A new CCD whose astrometry failed, whose reference has no good input or does not overlap it, or
whose images cannot be subtracted must not stop the night's workflow.  The step then writes, in
place of each of its outputs, a small marker file of the same name and format that says why
(FITS: a primary header with ``VO_SKIP = T`` and ``VO_WHY``; HDF5: the same two attributes; JSON:
``{"skipped": why}``), with the step's provenance.  Every later step that finds a skipped input
writes skipped outputs in turn (the reason passed on), so Snakemake sees every product made,
``snakemake -n`` has nothing left to do, and the reason is in each file and in the rule logs.

Steps raise :class:`SkipProduct` for such conditions; any other error fails the job as usual.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from astropy.io import fits

from vo.io.atomic import atomic_path, write_text
from vo.io.fits import write_fits
from vo.io.hdf5 import write_attrs

SKIP_KEY = "VO_SKIP"
WHY_KEY = "VO_WHY"


class SkipProduct(Exception):
    """The input of a step cannot be processed for a known, flagged reason (the message)."""


def write_skipped(path: str | os.PathLike, reason: str, attrs: dict | None = None) -> None:
    """Write a skipped-product marker at ``path`` (format from the suffix), atomically."""
    path = Path(path)
    name = path.name
    if name.endswith((".fits", ".fits.fz")):
        hdu = fits.PrimaryHDU()
        hdu.header[SKIP_KEY] = (True, "product skipped: see VO_WHY")
        hdu.header[WHY_KEY] = reason
        write_fits(path, fits.HDUList([hdu]), attrs)
    elif name.endswith((".h5", ".hdf5")):
        import h5py

        with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
            write_attrs(f, {**(attrs or {}), SKIP_KEY: True, WHY_KEY: reason})
    elif name.endswith(".json"):
        write_text(path, json.dumps({"skipped": reason, **({"provenance": attrs} if attrs else {})},
                                    indent=1, default=str))
    else:
        raise ValueError(f"{path}: no skipped-product format for this file type")


def skipped_reason(path: str | os.PathLike) -> str | None:
    """The reason of a skipped-product marker at ``path``, or None for a real product (and for a
    file that cannot be read: the step's own reader then says what is wrong with it, naming it)."""
    path = Path(path)
    name = path.name
    if not path.exists():
        return None
    if name.endswith((".fits", ".fits.fz")):
        try:
            header = fits.getheader(path, 0)
        except (OSError, ValueError):
            return None
        return str(header.get(WHY_KEY, "")) if header.get(SKIP_KEY, False) else None
    if name.endswith((".h5", ".hdf5")):
        import h5py

        try:
            with h5py.File(path, "r") as f:
                return str(f.attrs.get(WHY_KEY, "")) if f.attrs.get(SKIP_KEY, False) else None
        except (OSError, ValueError):
            return None
    if name.endswith(".json"):
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError:
            return None
        return str(data["skipped"]) if isinstance(data, dict) and "skipped" in data else None
    return None


def first_skipped(paths) -> tuple[str, str] | None:
    """(path, reason) of the first skipped marker among ``paths`` (str or lists of str), or None."""
    for p in paths:
        for q in (p if isinstance(p, (list, tuple)) else [p]):
            why = skipped_reason(q)
            if why is not None:
                return str(q), why
    return None
