"""FITS helpers: atomic writes, provenance cards, and reads that fail clearly.

Every product FITS file carries its provenance in the primary header: ``VO_STEP``,
``VO_HASH``, ``VO_CODE`` (code version), ``VO_PROJ``, ``VO_OBS`` (observatory or
instrument) and ``VO_PARS`` (critical parameters and upstream hashes as JSON, long-string
CONTINUE cards), so a file found on disk can be re-ingested without the database.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

from astropy.io import fits

from vo.io.atomic import atomic_path


class FitsError(ValueError):
    """A FITS file that cannot be used; the message names the file and the problem."""


def provenance_cards(attrs: dict) -> list[tuple[str, object, str]]:
    """Header cards for the provenance attributes made by :func:`vo.provenance.file_attrs`."""
    pars = json.dumps({"parameters": attrs.get("parameters", {}),
                       "upstreams": attrs.get("upstreams", {})}, sort_keys=True, default=str)
    return [("VO_STEP", attrs.get("step", ""), "pipeline step that made this file"),
            ("VO_HASH", attrs.get("provenance_hash", ""), "provenance hash of the step"),
            ("VO_CODE", str(attrs.get("code_version", "")), "code version of the step"),
            ("VO_PROJ", attrs.get("project", ""), "project"),
            ("VO_OBS", attrs.get("obs", ""), "observatory or instrument"),
            ("VO_PARS", pars, "")]  # long JSON: CONTINUE cards, no room for a comment


def add_provenance(header: fits.Header, attrs: dict | None) -> fits.Header:
    """Add the provenance cards to ``header`` (in place) and return it."""
    if attrs:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", fits.verify.VerifyWarning)
            for key, value, comment in provenance_cards(attrs):
                header[key] = (value, comment)
    return header


def read_provenance(header: fits.Header) -> dict:
    """Provenance attributes from a header written with :func:`add_provenance`."""
    if "VO_STEP" not in header:
        return {}
    extra = json.loads(header.get("VO_PARS", "{}") or "{}")
    return {"step": header["VO_STEP"], "provenance_hash": header.get("VO_HASH", ""),
            "code_version": header.get("VO_CODE", ""), "project": header.get("VO_PROJ", ""),
            "obs": header.get("VO_OBS", ""), **extra}


def write_fits(path: str | os.PathLike, hdul: fits.HDUList, attrs: dict | None = None) -> None:
    """Write ``hdul`` atomically; provenance ``attrs`` go into the primary header."""
    add_provenance(hdul[0].header, attrs)
    with atomic_path(path) as tmp:
        hdul.writeto(tmp, overwrite=True, output_verify="exception")


def open_fits(path: str | os.PathLike, required: tuple[str, ...] = ()) -> fits.HDUList:
    """Open a FITS file fully into memory, checking it is complete and has ``required`` HDUs.

    Raises :class:`FitsError` naming the file for a missing file, a truncated or corrupt
    file, or a missing HDU.
    """
    path = Path(path)
    if not path.exists():
        raise FitsError(f"{path}: file not found")
    # our own file object: astropy leaves the files it opens itself unclosed when reading fails
    # (ResourceWarning); ``hdul.close()`` closes this one on success
    fh = None
    try:
        fh = open(path, "rb")
        with warnings.catch_warnings():
            warnings.simplefilter("error", fits.verify.VerifyWarning)
            warnings.filterwarnings("error", message=".*truncated.*")
            hdul = fits.open(fh, memmap=False, lazy_load_hdus=False)
            for hdu in hdul:
                _ = hdu.data  # forces reading: a truncated file fails here, not later
    except Exception as exc:  # astropy raises OSError/ValueError/TypeError variants
        if fh is not None:
            fh.close()
        raise FitsError(f"{path}: not a readable FITS file ({type(exc).__name__}: {exc})") from exc
    names = [h.name for h in hdul]
    missing = [r for r in required if r not in names]
    if missing:
        hdul.close()
        raise FitsError(f"{path}: missing HDU(s) {missing}; present: {names}")
    return hdul
