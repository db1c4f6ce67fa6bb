"""Preprocessed CCD images: science (e-), weight (1/e-^2) and flags, and their FITS files.

File layout (:func:`write_image`):

- ``PRIMARY``: no data; the exposure keys (``INSTRUME``, ``EXPOSURE``, ``CCD``, ``FILTER``,
  ``MJD-OBS``, ``EXPTIME``, ``AIRMASS``, ``SATURATE`` (e-), ``RDNOISE`` (e-), ``GAIN`` = 1)
  and the provenance cards of :mod:`vo.io.fits`.
- ``SCI``: float32 image in electrons, with the same keys and the WCS of the (trimmed) pixel grid.
- ``WEIGHT``: float32 inverse variance (1/e-^2), 0 where a pixel is flagged.
- ``FLAGS``: uint16 pixel flags (bits in :mod:`vo.images.flags`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from vo.images import flags as pixflags
from vo.io.fits import FitsError, open_fits, write_fits

#: keys of the image header copied to the PRIMARY HDU (besides provenance)
PRIMARY_KEYS = ("INSTRUME", "EXPOSURE", "CCD", "FILTER", "MJD-OBS", "EXPTIME", "AIRMASS",
                "SATURATE", "RDNOISE", "GAIN", "BUNIT")
#: keys that describe an HDU's data layout, never carried from one HDU to another
STRUCTURAL_KEYS = ("SIMPLE", "XTENSION", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "NAXIS3", "EXTEND",
                   "PCOUNT", "GCOUNT", "EXTNAME", "EXTVER", "BZERO", "BSCALE", "BLANK",
                   "CHECKSUM", "DATASUM", "INHERIT")
HDUS = ("SCI", "WEIGHT", "FLAGS")


@dataclass
class Image:
    """One preprocessed CCD.

    Attributes
    ----------
    sci : float32 array (ny, nx), electrons (e-) above the bias, flat-fielded.
    weight : float32 array, inverse variance (1/e-^2); 0 where ``flags`` is non-zero.
    flags : uint16 array, bits of :mod:`vo.images.flags`.
    header : astropy Header with the exposure keys (see :data:`PRIMARY_KEYS`) and the WCS of
        this pixel grid (FITS convention: 1-based ``CRPIX``).
    """

    sci: np.ndarray
    weight: np.ndarray
    flags: np.ndarray
    header: fits.Header

    @property
    def shape(self) -> tuple[int, int]:
        return self.sci.shape

    @property
    def wcs(self) -> WCS:
        """The WCS of the image grid (TAN/TPV/SIP, as the header has it)."""
        return WCS(self.header)

    def check(self, where: str = "image") -> None:
        """Raise ValueError (naming ``where``) if the arrays disagree in shape or dtype."""
        if self.sci.ndim != 2:
            raise ValueError(f"{where}: SCI must be 2-D, got shape {self.sci.shape}")
        for name, arr, dtype in (("SCI", self.sci, np.float32), ("WEIGHT", self.weight, np.float32),
                                 ("FLAGS", self.flags, pixflags.DTYPE)):
            if arr.shape != self.sci.shape:
                raise ValueError(f"{where}: {name} shape {arr.shape} differs from SCI {self.sci.shape}")
            if arr.dtype != dtype:
                raise ValueError(f"{where}: {name} dtype {arr.dtype}, expected {np.dtype(dtype)}")


def data_cards(header: fits.Header) -> fits.Header:
    """A copy of ``header`` without the structural keys (NAXIS, BITPIX, EXTNAME, ...)."""
    out = header.copy()
    for key in STRUCTURAL_KEYS:
        out.remove(key, ignore_missing=True, remove_all=True)
    return out


def write_image(path: str | os.PathLike, image: Image, attrs: dict | None = None) -> None:
    """Write ``image`` atomically to a FITS file (PRIMARY, SCI, WEIGHT, FLAGS).

    ``attrs`` are the provenance attributes (see :func:`vo.io.fits.write_fits`).
    """
    image.check(str(path))
    cards = data_cards(image.header)
    primary = fits.PrimaryHDU()
    for key in PRIMARY_KEYS:
        if key in cards:
            primary.header[key] = (cards[key], cards.comments[key])
    sci = fits.ImageHDU(image.sci, header=cards, name="SCI")
    weight = fits.ImageHDU(image.weight, name="WEIGHT")
    weight.header["BUNIT"] = ("electron-2", "inverse variance; 0 where flagged")
    flg = fits.ImageHDU(image.flags, name="FLAGS")
    for key, value, comment in pixflags.header_cards():
        flg.header[key] = (value, comment)
    write_fits(path, fits.HDUList([primary, sci, weight, flg]), attrs)


def read_image(path: str | os.PathLike) -> Image:
    """Read an image written by :func:`write_image`.

    Raises :class:`vo.io.fits.FitsError` naming the file for a missing or truncated file, a
    missing HDU, or HDUs whose shapes disagree.
    """
    with open_fits(path, required=HDUS) as hdul:
        sci, weight, flg = (hdul[name].data for name in HDUS)
        if sci is None or sci.ndim != 2:
            raise FitsError(f"{path}: SCI HDU has no 2-D image")
        for name, arr in (("WEIGHT", weight), ("FLAGS", flg)):
            if arr is None or arr.shape != sci.shape:
                shape = None if arr is None else arr.shape
                raise FitsError(f"{path}: {name} HDU shape {shape} differs from SCI {sci.shape}")
        header = data_cards(hdul["SCI"].header)
        return Image(sci=np.asarray(sci, dtype=np.float32), weight=np.asarray(weight, dtype=np.float32),
                     flags=np.asarray(flg, dtype=pixflags.DTYPE), header=header)
