"""DECam, the Dark Energy Camera on the Blanco 4-m telescope (CTIO).

62 science CCDs named S1..S31 and N1..N31 (``DETPOS``), each 2048x4096 pixels read by two
amplifiers (A, B) with their own gain, read noise, saturation and overscan
(``GAINA``/``GAINB``, ``RDNOISEA``/``RDNOISEB``, ``SATURATA``/``SATURATB``,
``DATASECA``/``DATASECB``, ``BIASSECA``/``BIASSECB`` in raw files).  ``FILTER`` holds a long
description such as ``"i DECam SDSS c0003 7835.0 1470.0"``; its first word is the filter.
Processed (InstCal) images and cutouts have no overscan; their WCS is TPV and kept as is.
S7 (amplifier B unstable) and N30 (dead since 2012) are known bad but keep their names.
"""

from __future__ import annotations

from vo.images.instruments.base import Instrument

#: Science CCDs in ``CCDNUM`` order (1..62), the DECam focal-plane numbering.
SECTIONS = (
    "S29", "S30", "S31", "S25", "S26", "S27", "S28", "S20", "S21", "S22", "S23", "S24",
    "S14", "S15", "S16", "S17", "S18", "S19", "S8", "S9", "S10", "S11", "S12", "S13",
    "S1", "S2", "S3", "S4", "S5", "S6", "S7",
    "N1", "N2", "N3", "N4", "N5", "N6", "N7", "N8", "N9", "N10", "N11", "N12", "N13",
    "N14", "N15", "N16", "N17", "N18", "N19", "N20", "N21", "N22", "N23", "N24", "N25",
    "N26", "N27", "N28", "N29", "N30", "N31",
)
#: Known bad science CCDs (still named and readable).
BAD_SECTIONS = ("S7", "N30")


def ccdnum(name: str) -> int:
    """DECam ``CCDNUM`` (1..62) of a science CCD name, e.g. ``"N6" -> 37``."""
    try:
        return SECTIONS.index(name) + 1
    except ValueError:
        raise KeyError(f"{name!r} is not a DECam science CCD; names are S1..S31, N1..N31") from None


class DECam(Instrument):
    """The Dark Energy Camera (raw or processed multi-extension FITS, ``.fits`` or ``.fits.fz``)."""

    name = "DECam"
    pixel_scale = 0.263  # arcsec/pix at the centre of the focal plane
    filters = ("u", "g", "r", "i", "z", "Y", "VR", "N964")
    keywords = {
        **Instrument.keywords,
        "ra": ("RA", "RA_EXP", "TELRA"),       # RA is sexagesimal hours in raw primary headers
        "dec": ("DEC", "DEC_EXP", "TELDEC"),
        "section": ("DETPOS", "EXTNAME", "CCDNAME"),
    }
    default_gain = 4.0        # e-/ADU, typical of DECam amplifiers
    default_read_noise = 7.0  # e-

    def section_names(self) -> list[str]:
        """The 62 science CCDs in ``CCDNUM`` order."""
        return list(SECTIONS)
