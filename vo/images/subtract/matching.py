"""Stars common to a new image and its reference: matching by sky position and the flux ratio.

Only the ratio of the two images' flux scales enters a subtraction; two absolute zero points
give it with both calibrations' errors (Gaia colour transformations: 0.01-0.03 mag each) and
not at all where the new image could not be calibrated (a cutout without a usable Gaia star).
The PSF fluxes of the stars both images see give it directly: :func:`flux_ratio` is their
clipped median ratio with its error, and the subtraction step uses it whenever enough stars
match and it is more precise than the zero points' (see
:func:`vo.pipeline.transient_steps.run_subtraction`).

Source tables are those of :func:`vo.images.extract.extract`: x, y (0-based pix), flux_psf (e-),
snr, flags.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from astropy.table import Table
from astropy.wcs import WCS
from scipy.spatial import cKDTree

MATCH_SNR = 10.0       # stars matched for registration and the flux ratio: S/N at least this
MATCH_RADIUS = 5.0     # first matching radius (pix), then 3 robust sigmas around the median offset
MIN_RATIO_STARS = 5    # stars for a flux ratio from matches (fewer: the zero points decide)


def bright(src: Table) -> np.ndarray:
    """Unflagged sources of S/N >= MATCH_SNR with a finite PSF flux (bool per row)."""
    return (np.asarray(src["snr"]) >= MATCH_SNR) & (np.asarray(src["flags"]) == 0) \
        & np.isfinite(np.asarray(src["flux_psf"], float))


def match_sources(new_src: Table, new_wcs: WCS, ref_src: Table, ref_wcs: WCS,
                  radius: float = MATCH_RADIUS):
    """Bright unflagged sources of the reference matched to the new image's, on its grid.

    Returns (i_new, i_ref, dx, dy): indices into the tables and the offsets (pix, new grid) of
    each match, new minus carried reference position, after a second pass within 3 robust
    sigmas (at least 0.3 pix) of the median offset.
    """
    bn, br = np.flatnonzero(bright(new_src)), np.flatnonzero(bright(ref_src))
    if bn.size == 0 or br.size == 0:
        return (np.zeros(0, int),) * 2 + (np.zeros(0),) * 2
    sky = ref_wcs.pixel_to_world(np.asarray(ref_src["x"])[br], np.asarray(ref_src["y"])[br])
    xr, yr = new_wcs.world_to_pixel(sky)
    xn, yn = np.asarray(new_src["x"])[bn], np.asarray(new_src["y"])[bn]
    d, j = cKDTree(np.c_[xn, yn]).query(np.c_[xr, yr])
    ok = d < radius
    for _ in range(2):
        if ok.sum() == 0:
            break
        dx, dy = xn[j] - xr, yn[j] - yr
        mx, my = np.median(dx[ok]), np.median(dy[ok])
        r = np.hypot(dx - mx, dy - my)
        ok = (d < radius) & (r < max(0.3, 3 * 1.4826 * np.median(r[ok])))
    return bn[j[ok]], br[ok], (xn[j] - xr)[ok], (yn[j] - yr)[ok]


@dataclass
class FluxRatio:
    """Reference / new flux ratio of matched stars.

    ratio : clipped median of the stars' ratios (reference e- per new e-); NaN without stars.
    err : its 1-sigma error (fraction: robust scatter x 1.2533 / sqrt(n)).
    scatter : robust scatter of one star's log ratio.  n : stars kept.  matches : stars matched.
    """

    ratio: float
    err: float
    scatter: float
    n: int
    matches: int

    @property
    def mag_err(self) -> float:
        """The error as a magnitude difference (mag)."""
        return float(2.5 / np.log(10) * self.err)


def flux_ratio(new_src: Table, new_wcs: WCS, ref_src: Table, ref_wcs: WCS, i_new=None, i_ref=None) -> FluxRatio:
    """:class:`FluxRatio` of the stars the two source lists share (matched by
    :func:`match_sources` unless the indices are given): 3-sigma-clipped median of the log ratios
    (three passes around the median; variables and blends out)."""
    if i_new is None or i_ref is None:
        i_new, i_ref, _, _ = match_sources(new_src, new_wcs, ref_src, ref_wcs)
    ratio = np.asarray(ref_src["flux_psf"], float)[i_ref] / np.asarray(new_src["flux_psf"], float)[i_new]
    lr = np.log(ratio[np.isfinite(ratio) & (ratio > 0)])
    if lr.size == 0:
        return FluxRatio(ratio=float("nan"), err=float("nan"), scatter=float("nan"), n=0, matches=int(len(i_new)))
    for _ in range(3):
        med = np.median(lr)
        mad = 1.4826 * np.median(np.abs(lr - med)) + 1e-3
        lr = lr[np.abs(lr - med) < 3 * mad]
    med = float(np.median(lr))
    scatter = float(1.4826 * np.median(np.abs(lr - med)))
    # the median's error: sqrt(pi/2) sigma / sqrt(n); at least 1e-3 (the clipping's floor)
    err = float(max(1.2533 * scatter, 1e-3) / np.sqrt(lr.size))
    return FluxRatio(ratio=float(np.exp(med)), err=err, scatter=scatter, n=int(lr.size), matches=int(len(i_new)))


def subtraction_zero_point(zp: float, zp_err: float, zp_ok: bool, ref_zp: float,
                           ratio: FluxRatio) -> tuple[float, str]:
    """The new image's zero point for the subtraction (mag; it sets the flux ratio with the
    reference's ``ref_zp``) and where it came from.

    Matched stars (at least :data:`MIN_RATIO_STARS`) give ``ref_zp - 2.5 log10(ratio)``; they are
    used when the new image's own zero point failed (``zp_ok`` false or NaN) or is less precise
    (``zp_err`` mag larger than the ratio's).  Otherwise the image's own zero point.  Raises
    ValueError when neither exists (the message says why)."""
    usable = ratio.n >= MIN_RATIO_STARS and np.isfinite(ratio.ratio) and ratio.ratio > 0
    own = bool(zp_ok) and np.isfinite(zp)
    if usable and (not own or not np.isfinite(zp_err) or ratio.mag_err < zp_err):
        return (float(ref_zp - 2.5 * np.log10(ratio.ratio)),
                f"matched stars ({ratio.n} of {ratio.matches}, ratio {ratio.ratio:.4f} +- {ratio.err:.4f})")
    if own:
        return float(zp), "zero points"
    raise ValueError(f"no zero point and only {ratio.n} stars in common with the reference "
                     f"(a flux ratio needs {MIN_RATIO_STARS})")
