"""Gaia photometry converted to cameras' photometric systems.

Every relation is ``m = G + sum_k c_k X**k`` with ``X = BP - RP`` inside the relation's colour
range, for one Gaia release and one system (a camera's natural bands, or SDSS):

* ``("gaia_dr3", "sdss")``: SDSS g, r, i from Gaia (E)DR3. Riello et al. 2021, A&A 649, A3,
  Appendix C, Tables C.1 (validity ranges) and C.2 (``G - m`` polynomials, signs turned here,
  and their scatter); the Gaia DR3 documentation section 5.5.1 gives the same relations.
  NOTE: transcribed without network access; check them against Table C.2 when convenient.
* ``("gaia_dr2", "decam")``: the DECam natural g, r, i, z of the DESI Legacy Imaging Surveys
  (the relations their zero points are calibrated with: R. Zhou 2020-04-12, in legacypipe
  ``py/legacypipe/gaiacat.py``, ``gaia_to_decam``, BSD-3-Clause; colour range -0.6 to 4.1).
* ``("gaia_dr2", "bass_mzls")``: the Legacy Surveys' north: 90Prime (BASS) g, r and Mosaic3
  (MzLS) z, same source.

* ``("gaia_dr3", "decam")`` and ``("gaia_dr3", "bass_mzls")``: the DR2 fits above on DR3
  photometry, as legacypipe applies them to Gaia EDR3, with a larger scatter and a note in the
  zero point (:data:`RELATION_NOTES`); no DR3 fit to these cameras is published that we know of.

A release/system pair that is not here is refused with a message naming both (a Gaia DR2
table with the DR3 SDSS relations is off by up to 0.03 mag with colour; an SDSS relation on
DECam z does not exist) rather than guessed. Filter names are read per system (:func:`band`): the first
word of DECam's ``FILTER`` (``"r DECam SDSS c0002 ..."``), BASS's ``bokr``/``bokg``, MzLS's ``zd``,
SDSS's ``g r i`` (``sdss_`` prefix allowed). A bare upper-case ``R`` or ``I`` is Johnson-Cousins,
not SDSS, and is refused.
"""

from __future__ import annotations

import numpy as np

_RIELLO = {"g": (0.2199, -0.6365, -0.1548, 0.0064),
           "r": (-0.09837, 0.08592, 0.1907, -0.1701, 0.02263),
           "i": (-0.293, 0.6404, -0.09609, -0.002104)}
#: (release, system) -> band -> (coefficients c_k of m = G + sum c_k X^k, (X min, X max), sigma mag)
RELATIONS: dict[tuple[str, str], dict[str, tuple[tuple[float, ...], tuple[float, float], float]]] = {
    ("gaia_dr3", "sdss"): {
        "g": (tuple(-c for c in _RIELLO["g"]), (0.3, 3.0), 0.0745),
        "r": (tuple(-c for c in _RIELLO["r"]), (0.0, 3.0), 0.03776),
        "i": (tuple(-c for c in _RIELLO["i"]), (0.5, 2.0), 0.04092)},
    ("gaia_dr2", "decam"): {  # scatter not given with the relations: 0.03 mag assumed
        "g": ((-0.1178631039, 0.3650113495, 0.5608615360, -0.2850687702, -1.0243473939, 1.4378375491,
               0.0679401731, -1.1713172509, 0.9107811975, -0.3374324004, 0.0683946390, -0.0073089582,
               0.0003230170), (-0.6, 4.1), 0.03),
        "r": ((0.1139078673, -0.2868955307, 0.0013196434, 0.1029151074, 0.1196710702, -0.3729031390,
               0.1859874242, 0.1370162451, -0.1808580848, 0.0803219195, -0.0180218196, 0.0020584707,
               -0.0000953486), (-0.6, 4.1), 0.03),
        "i": ((0.3396481660, -0.6491867119, -0.3330769819, 0.4381097294, 0.5752125977, -1.4746570523,
               1.2979140762, -0.6371018151, 0.1948940062, -0.0382055596, 0.0046907449, -0.0003296841,
               0.0000101480), (-0.6, 4.1), 0.03),
        "z": ((0.4811198057, -0.9990015041, 0.1403990019, 0.2150988888, -0.2917655866, 0.1326831887,
               -0.0259205004, 0.0018548776), (-0.6, 4.1), 0.03)},
    ("gaia_dr2", "bass_mzls"): {
        "g": ((-0.1299895823, 0.3120393968, 0.5989482686, 0.3125882487, -1.9401592247, 1.1011670449,
               2.0741304659, -3.3930306403, 2.1857291197, -0.7674676232, 0.1542300648, -0.0167007725,
               0.0007573720), (-0.6, 4.1), 0.03),
        "r": ((0.0901464643, -0.2463711147, 0.0094963025, -0.1187138789, 0.4131107392, -0.1832183301,
               -0.6015486252, 0.9802538471, -0.6613809948, 0.2426395251, -0.0505867727, 0.0056462458,
               -0.0002625789), (-0.6, 4.1), 0.03),
        "z": ((0.4862049092, -1.0278704657, 0.1220984456, 0.3000129189, -0.3770662617, 0.1696090596,
               -0.0331679127, 0.0023867628), (-0.6, 4.1), 0.03)},
}
#: DR2 fits used on Gaia DR3 tables, as legacypipe itself does (``gaia_to_decam`` on its EDR3
#: chunks): DR3 G and BP-RP differ from DR2's by up to about 0.01-0.02 mag with colour and
#: magnitude, so the scatter grows from 0.03 to 0.036 mag (0.02 added in quadrature) and the zero
#: point says which relation it used (``meta["relation"]``)
DR2_ON_DR3_EXTRA_SIGMA = 0.02
for _system in ("decam", "bass_mzls"):
    RELATIONS[("gaia_dr3", _system)] = {
        b: (coef, rng, float(np.hypot(sig, DR2_ON_DR3_EXTRA_SIGMA)))
        for b, (coef, rng, sig) in RELATIONS[("gaia_dr2", _system)].items()}
RELATION_NOTES = {("gaia_dr3", "decam"): "gaia_dr2 fit (legacypipe gaia_to_decam) applied to Gaia DR3",
                  ("gaia_dr3", "bass_mzls"): "gaia_dr2 fit (legacypipe) applied to Gaia DR3"}
#: instrument name (lower case, INSTRUME) -> photometric system
INSTRUMENT_SYSTEMS = {"decam": "decam", "90prime": "bass_mzls", "mosaic3": "bass_mzls", "mosaic": "bass_mzls"}
_ALIASES = {"bass_mzls": {"bokr": "r", "bokg": "g", "zd": "z"}}


class PhotometricError(ValueError):
    """No published relation for this Gaia release, system and band; the message names them."""


def system_for(instrument: str | None) -> str:
    """The photometric system of an instrument (``INSTRUME``), SDSS for any other."""
    return INSTRUMENT_SYSTEMS.get(str(instrument or "").strip().lower(), "sdss")


def band(filt: str, system: str = "sdss") -> str:
    """Our band name of a header ``FILTER`` value in ``system`` (see the module doc)."""
    raw = str(filt).strip()
    word = raw.split()[0] if raw else ""
    if word in ("R", "I", "V", "B", "U"):
        raise PhotometricError(f"filter {filt!r}: an upper-case {word} is Johnson-Cousins, not SDSS "
                               f"{word.lower()}; there is no Gaia relation for it here")
    key = word.lower()
    key = key[5:] if key.startswith("sdss_") else key
    return _ALIASES.get(system, {}).get(key, key)


def relation(filt: str, system: str = "sdss", release: str = "gaia_dr3"):
    """(coefficients, colour range, sigma) for ``filt`` in ``system`` from Gaia ``release``."""
    table = RELATIONS.get((release, system))
    if table is None:
        have = ", ".join(f"{r}->{s}" for r, s in RELATIONS)
        raise PhotometricError(f"no published {release} -> {system} photometric relation here (have {have})")
    b = band(filt, system)
    if b not in table:
        raise PhotometricError(f"no published {release} relation to {system} band {b!r} (filter {filt!r}); "
                               f"bands: {', '.join(table)}")
    return table[b]


def supported_filters(system: str = "sdss", release: str = "gaia_dr3") -> list[str]:
    """Bands :func:`gaia_to_filter` can convert to in ``system`` from ``release``."""
    return list(RELATIONS.get((release, system), {}))


def in_valid_range(bp_rp, filt: str, system: str = "sdss", release: str = "gaia_dr3") -> np.ndarray:
    """True where ``bp_rp`` (mag) lies inside the relation's colour range."""
    lo, hi = relation(filt, system, release)[1]
    x = np.asarray(bp_rp, dtype=float)
    return np.isfinite(x) & (x > lo) & (x < hi)


def gaia_to_filter(g, bp_rp, filt: str, system: str = "sdss", release: str = "gaia_dr3") -> np.ndarray:
    """Magnitude (mag, AB) in ``filt`` of ``system`` from Gaia G and BP-RP (mag) of ``release``.

    Outside the colour range the colour is clamped to its edge (smooth and finite, useful for
    simulations); a calibration keeps only stars :func:`in_valid_range`. NaN gives NaN.
    """
    coef, (lo, hi), _ = relation(filt, system, release)
    x = np.clip(np.asarray(bp_rp, dtype=float), lo, hi)
    return np.asarray(g, dtype=float) + np.polynomial.polynomial.polyval(x, coef)


def colour_slope(bp_rp, filt: str, system: str = "sdss", release: str = "gaia_dr3") -> np.ndarray:
    """d m / d(BP-RP) of :func:`gaia_to_filter` (mag/mag; 0 where the colour is clamped): turns
    a star's colour error into the error of its converted magnitude."""
    coef, (lo, hi), _ = relation(filt, system, release)
    x = np.asarray(bp_rp, dtype=float)
    slope = np.polynomial.polynomial.polyval(np.clip(x, lo, hi), np.polynomial.polynomial.polyder(coef))
    return np.where((x >= lo) & (x <= hi), slope, 0.0)


def transformation_sigma(filt: str, system: str = "sdss", release: str = "gaia_dr3") -> float:
    """Scatter of the relation (mag): the systematic error of one converted star."""
    return relation(filt, system, release)[2]
