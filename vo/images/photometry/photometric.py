"""Gaia DR3 photometry converted to other photometric systems.

Source: Riello et al. 2021, A&A 649, A3 ("Gaia Early Data Release 3: Photometric content and
validation"), Appendix C, Table C.2 (coefficients) and Table C.1 (validity ranges); the same
relations are the Gaia DR3 documentation, section 5.5.1 (DR3 G, BP, RP photometry is EDR3's).
They give ``G - m`` as a polynomial in ``X = BP - RP``::

    G - m = sum_k c_k X**k        (SDSS12 system, AB-like SDSS magnitudes)

so ``m = G - poly(X)``.  The scatter of each relation (``SIGMA``, mag) is the systematic error
of a converted magnitude for one star; a zero point averages it down over many stars.

Supported filters: SDSS ``g``, ``r``, ``i``.  The Gaia relations have no ``z`` band and no
Pan-STARRS1 bands, so those are refused rather than invented.  NOTE: the coefficients below
were transcribed without network access; check them against Table C.2 when convenient.
"""

from __future__ import annotations

import numpy as np

#: ``G - m`` polynomial coefficients in BP-RP, lowest order first (Riello+2021, Table C.2).
COEFFICIENTS: dict[str, tuple[float, ...]] = {
    "g": (0.2199, -0.6365, -0.1548, 0.0064),
    "r": (-0.09837, 0.08592, 0.1907, -0.1701, 0.02263),
    "i": (-0.293, 0.6404, -0.09609, -0.002104),
}
#: Scatter of each relation (mag), Riello+2021 Table C.2.
SIGMA: dict[str, float] = {"g": 0.0745, "r": 0.03776, "i": 0.04092}
#: Validity range of BP-RP (mag), Riello+2021 Table C.1.
VALID_RANGE: dict[str, tuple[float, float]] = {"g": (0.3, 3.0), "r": (0.0, 3.0), "i": (0.5, 2.0)}


def _filter_key(filt: str) -> str:
    key = str(filt).strip().lower()
    if key.startswith("sdss_"):
        key = key[5:]
    if key not in COEFFICIENTS:
        raise ValueError(f"no published Gaia DR3 transformation to filter {filt!r}; "
                         f"supported: {', '.join(COEFFICIENTS)} (SDSS)")
    return key


def supported_filters() -> list[str]:
    """Filters :func:`gaia_to_filter` can convert to."""
    return list(COEFFICIENTS)


def in_valid_range(bp_rp, filt: str) -> np.ndarray:
    """True where ``bp_rp`` (mag) lies inside the validity range of the ``filt`` relation."""
    lo, hi = VALID_RANGE[_filter_key(filt)]
    x = np.asarray(bp_rp, dtype=float)
    return np.isfinite(x) & (x > lo) & (x < hi)


def gaia_to_filter(g, bp_rp, filt: str) -> np.ndarray:
    """Magnitude in ``filt`` (SDSS g, r, i; mag) from Gaia G and BP-RP (mag).

    Outside the validity range (:data:`VALID_RANGE`) the colour is clamped to the range
    edge, so the result stays smooth and finite (useful for simulations); a calibration
    should keep only stars with :func:`in_valid_range`.  NaN inputs give NaN.
    """
    key = _filter_key(filt)
    lo, hi = VALID_RANGE[key]
    x = np.clip(np.asarray(bp_rp, dtype=float), lo, hi)
    g_minus_m = np.polynomial.polynomial.polyval(x, COEFFICIENTS[key])
    return np.asarray(g, dtype=float) - g_minus_m


def transformation_sigma(filt: str) -> float:
    """Scatter of the ``filt`` relation (mag): the systematic error of one converted star."""
    return SIGMA[_filter_key(filt)]
