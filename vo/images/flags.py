"""Pixel flag bits of the ``FLAGS`` HDU of preprocessed images (one place for all steps).

Flags are combined with bitwise OR; a pixel with any bit set is excluded from fits.
"""

from __future__ import annotations

import numpy as np

BAD = 1 << 0          # bad pixel/column from the instrument's bad-pixel mask
SATURATED = 1 << 1    # at or above the saturation level (and bleed trails)
COSMIC_RAY = 1 << 2   # cosmic-ray hit
EDGE = 1 << 3         # within the edge margin of the data section
NAN = 1 << 4          # non-finite value in the raw data or a calibration frame
LOW_FLAT = 1 << 5     # flat-field response too low to correct (vignetted corner)

NAMES = {"BAD": BAD, "SATURATED": SATURATED, "COSMIC_RAY": COSMIC_RAY, "EDGE": EDGE,
         "NAN": NAN, "LOW_FLAT": LOW_FLAT}
DTYPE = np.uint16


def describe(value: int) -> list[str]:
    """Names of the bits set in ``value``."""
    return [name for name, bit in NAMES.items() if int(value) & bit]


def header_cards() -> list[tuple[str, int, str]]:
    """FITS cards documenting the bits (for the FLAGS HDU header)."""
    return [(f"FLAG_{name[:3]}"[:8], bit, f"flag bit: {name}") for name, bit in NAMES.items()]
