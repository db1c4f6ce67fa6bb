"""Fake point sources injected into new images, and detection efficiency (the ``injection`` step).

:func:`inject_fakes` adds point sources of known magnitude to an :class:`~vo.images.image.Image`:
each fake is the image's own PSF (:meth:`vo.images.extract.psf.PSFModel.render`, pixel-integrated at
the fake's sub-pixel position) times its flux ``10**(-0.4 (mag - zp))`` (e-, gain 1), drawn
as Poisson counts, so the fake carries its own shot noise exactly like a real star; the
weight map is updated to ``1 / (1/w + lambda)`` with ``lambda`` the fake's expected e- in each
pixel. Positions are uniform over the image, away from its edges, from flagged pixels and
from each other. Everything is drawn from one numpy Generator (pass ``seed`` as an int, or a
Generator made with :func:`vo.images.instruments.democam.simulate.rng_for` from the seed, exposure and CCD).

The same steps (subtraction, detection, measurement, scoring) then run on the injected image;
:func:`match_fakes` and :func:`efficiency_table` compare their output with the truth table:
detection efficiency and flux bias per magnitude bin.
"""

from __future__ import annotations

import os
from dataclasses import replace

import numpy as np
from astropy.io import fits
from astropy.table import Table
from scipy.spatial import cKDTree

from vo.images import flags as pixflags
from vo.images.image import Image
from vo.images.extract.psf import PSFModel
from vo.io.fits import FitsError, open_fits, write_fits


#: defaults of the config's ``injection`` section
DEFAULT_PARS = {"n_fakes": 50, "mag_range": [-3.0, 0.5], "relative_to_limit": True, "seed": 4321,
                "stamp_size": 31, "margin": 20, "min_separation": 15.0, "match_radius": 2.0,
                "bin_width": 0.5}
CANDIDATE_FACTOR = 20  # random positions drawn per requested fake before the selection


class InjectionError(ValueError):
    """Fakes cannot be injected (no room, bad magnitudes); the message names the image."""


def _rng(seed) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def draw_magnitudes(n: int, mag_range, seed=0, limmag: float | None = None) -> np.ndarray:
    """``n`` magnitudes uniform in ``mag_range`` (mag); offsets from ``limmag`` when it is given."""
    lo, hi = (float(v) for v in mag_range)
    if not hi >= lo:
        raise InjectionError(f"magnitude range {mag_range}: upper end below lower end")
    m = _rng(seed).uniform(lo, hi, n)
    return m + limmag if limmag is not None else m


def fake_positions(image: Image, n: int, rng: np.random.Generator, margin: int = 20,
                   min_separation: float = 15.0, name: str = "image") -> tuple[np.ndarray, np.ndarray]:
    """``n`` positions (0-based pix) uniform over the image, ``margin`` pix from its edges, on
    pixels with no flag and weight > 0, and ``min_separation`` pix from each other."""
    ny, nx = image.shape
    if nx <= 2 * margin or ny <= 2 * margin:
        raise InjectionError(f"{name}: image {image.shape} too small for a {margin} pix margin")
    m = CANDIDATE_FACTOR * max(n, 1)
    x = rng.uniform(margin, nx - 1 - margin, m)
    y = rng.uniform(margin, ny - 1 - margin, m)
    ix, iy = np.rint(x).astype(int), np.rint(y).astype(int)
    ok = (image.flags[iy, ix] == 0) & (image.weight[iy, ix] > 0)
    x, y = x[ok], y[ok]
    kept = np.empty((n, 2))
    k = 0
    for xi, yi in zip(x, y):  # greedy: each candidate checked against the <= n kept ones
        if k == n:
            break
        if k and np.min(np.hypot(kept[:k, 0] - xi, kept[:k, 1] - yi)) < min_separation:
            continue
        kept[k] = xi, yi
        k += 1
    if k < n:
        raise InjectionError(f"{name}: room for only {k} of {n} fakes {min_separation} pix "
                             f"apart on unflagged pixels; inject fewer or lower min_separation")
    return kept[:, 0].copy(), kept[:, 1].copy()


def inject_fakes(image: Image, psf: PSFModel, zp: float, n: int, mags, seed=0,
                 pars: dict | None = None, positions=None) -> tuple[Image, Table]:
    """Add ``n`` fake point sources to ``image``.

    Parameters
    ----------
    image : Image (sci e-, weight 1/e-^2, flags); not modified.
    psf : PSFModel of the image.
    zp : float
        Zero point: ``m = -2.5 log10(flux_e) + zp`` (mag).
    n : int
        Number of fakes.
    mags : array of ``n`` magnitudes, or a ``(lo, hi)`` tuple: uniform draws in that range (mag).
    seed : int or numpy Generator.
    pars : the ``injection`` config section (``stamp_size``, ``margin``, ``min_separation``).
    positions : optional ``(x, y)`` arrays of ``n`` positions (0-based pix) instead of random ones.

    Returns
    -------
    (Image, Table): the injected image (float32 arrays, new weights; pixels pushed above the
    header's ``SATURATE`` get the SATURATED flag and weight 0) and the truth table: ``fake_id``,
    ``x``, ``y`` (0-based pix), ``ra``, ``dec`` (deg, from the image WCS), ``mag``, ``flux`` (e-,
    total), ``flux_stamp`` (e- expected inside the stamp), ``snr`` (expected optimal PSF S/N
    with the injected image's variances).
    """
    p = {**DEFAULT_PARS, **(pars or {})}
    name = image_name(image)
    image.check(name)
    rng = _rng(seed)
    if isinstance(mags, tuple):
        mags = draw_magnitudes(n, mags, rng)
    mags = np.atleast_1d(np.asarray(mags, np.float64))
    if mags.shape != (n,) or not np.all(np.isfinite(mags)):
        raise InjectionError(f"{name}: need {n} finite magnitudes, got shape {mags.shape}")
    if not np.isfinite(zp):
        raise InjectionError(f"{name}: zero point {zp} is not finite")
    size = int(p["stamp_size"])
    if size < 3 or size % 2 == 0:
        raise InjectionError(f"{name}: stamp_size must be odd and >= 3, got {size}")
    if positions is None:
        x, y = fake_positions(image, n, rng, int(p["margin"]), float(p["min_separation"]), name)
    else:
        x, y = (np.asarray(v, np.float64) for v in positions)
        if x.shape != (n,) or y.shape != (n,):
            raise InjectionError(f"{name}: need {n} positions, got {x.shape} and {y.shape}")
    flux = 10 ** (-0.4 * (mags - zp))
    ix, iy, stamps = psf.render(x, y, size // 2)
    lam = flux[:, None, None] * stamps                            # expected e- per pixel
    ny, nx = image.shape
    inside = (ix >= 0) & (ix < nx) & (iy >= 0) & (iy < ny)
    counts = rng.poisson(np.where(inside, lam, 0.0)).astype(np.float64)
    sci = image.sci.astype(np.float64)
    lam_map = np.zeros(image.shape)
    np.add.at(sci, (iy[inside], ix[inside]), counts[inside])
    np.add.at(lam_map, (iy[inside], ix[inside]), lam[inside])
    flags = image.flags.copy()
    good = image.weight > 0
    var = np.where(good, 1.0 / np.where(good, image.weight, 1.0) + lam_map, 0.0)
    weight = np.where(good, 1.0 / np.where(good, var, 1.0), 0.0)
    sat = image.header.get("SATURATE")
    if sat is not None:
        hit = (lam_map > 0) & (sci >= float(sat))
        flags[hit] |= pixflags.SATURATED
        weight[hit] = 0.0
    out = replace(image, sci=sci.astype(np.float32), weight=weight.astype(np.float32), flags=flags,
                  header=image.header.copy())
    # expected optimal S/N: flux * sqrt(sum p^2 / var) over the good stamp pixels
    jx, jy = np.clip(ix, 0, nx - 1), np.clip(iy, 0, ny - 1)
    w_st = np.where(inside, weight[jy, jx], 0.0)
    snr = flux * np.sqrt((stamps.astype(np.float64) ** 2 * w_st).sum(axis=(1, 2)))
    truth = Table()
    truth["fake_id"] = np.arange(n, dtype=np.int32)
    truth["x"], truth["y"] = x, y
    try:
        ra, dec = image.wcs.all_pix2world(x, y, 0)
    except Exception:  # noqa: BLE001 - no usable WCS: positions stay in pixels
        ra = dec = np.full(n, np.nan)
    truth["ra"], truth["dec"] = ra, dec
    truth["mag"], truth["flux"] = mags, flux
    truth["flux_stamp"] = (lam * inside).sum(axis=(1, 2))
    truth["snr"] = snr
    for col, unit in (("x", "pix"), ("y", "pix"), ("ra", "deg"), ("dec", "deg"), ("mag", "mag")):
        truth[col].unit = unit
    truth.meta.update({"ZP": float(zp), "N_FAKES": n, "STAMP": size})
    return out, truth


def image_name(image: Image) -> str:
    """Exposure and CCD of an image (for messages), or ``image``."""
    h = image.header
    parts = [str(h[k]) for k in ("EXPOSURE", "CCD") if k in h]
    return "/".join(parts) or "image"


# --------------------------------------------------------------------------- efficiency


def match_fakes(truth: Table, detections: Table, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Nearest detection (``x``, ``y``, pix) within ``radius`` pix of each fake, one-to-one.

    Returns the detection row of each fake (-1: none) and the distance (pix; inf: none).
    Closer pairs are matched first, so a detection counts for one fake only.
    """
    n = len(truth)
    idx = np.full(n, -1)
    dist = np.full(n, np.inf)
    if n == 0 or len(detections) == 0:
        return idx, dist
    tp = np.column_stack([np.asarray(truth["x"], float), np.asarray(truth["y"], float)])
    dp = np.column_stack([np.asarray(detections["x"], float), np.asarray(detections["y"], float)])
    pairs = cKDTree(tp).sparse_distance_matrix(cKDTree(dp), radius, output_type="ndarray")
    order = np.argsort(pairs["v"], kind="stable")
    used_t, used_d = np.zeros(n, bool), np.zeros(len(detections), bool)
    for i, j, d in zip(pairs["i"][order], pairs["j"][order], pairs["v"][order]):  # pairs within radius only
        if not used_t[i] and not used_d[j]:
            used_t[i] = used_d[j] = True
            idx[i], dist[i] = j, d
    return idx, dist


def efficiency_table(truth: Table, detections: Table, radius: float, bin_width: float = 0.5,
                     flux_column: str = "flux", bins=None) -> Table:
    """Detection efficiency and flux bias of fakes per magnitude bin.

    Parameters
    ----------
    truth : the truth table of :func:`inject_fakes` (``x``, ``y``, ``mag``, ``flux``).
    detections : what the pipeline kept on the injected image (``x``, ``y`` pix and, for the
        bias, ``flux_column`` in e-); filter it first (cuts, real/bogus) to get the efficiency
        of the whole chain.
    radius : match radius (pix).
    bin_width : magnitude bin width (mag); bins span the truth magnitudes unless ``bins``
        (edges, mag) are given.

    Returns
    -------
    Table with per bin: ``mag_lo``, ``mag_hi``, ``mag_mid``, ``n_injected``, ``n_detected``,
    ``efficiency`` and its binomial error ``efficiency_err`` (Wilson score half-width, 68%),
    ``flux_bias`` (median of flux_measured / flux_true - 1 of the detected fakes; NaN without
    detections or without ``flux_column``) and ``flux_bias_err`` (1.2533 * robust std / sqrt(n)),
    ``median_snr`` (expected S/N of the bin's fakes, when the truth has ``snr``).
    """
    mag = np.asarray(truth["mag"], float)
    if bins is None:
        if mag.size == 0:
            bins = np.array([0.0, bin_width])
        else:
            lo = np.floor(mag.min() / bin_width) * bin_width
            nb = max(int(np.ceil((mag.max() - lo) / bin_width + 1e-9)), 1)
            bins = lo + bin_width * np.arange(nb + 1)
            if bins[-1] <= mag.max():
                bins = np.append(bins, bins[-1] + bin_width)
    bins = np.asarray(bins, float)
    idx, _ = match_fakes(truth, detections, radius)
    found = idx >= 0
    ratio = np.full(len(truth), np.nan)
    if flux_column in getattr(detections, "colnames", ()) and found.any():
        ratio[found] = np.asarray(detections[flux_column], float)[idx[found]] / np.asarray(truth["flux"], float)[found] - 1
    which = np.digitize(mag, bins) - 1
    nbins = len(bins) - 1
    rows = {k: np.full(nbins, np.nan) for k in ("efficiency", "efficiency_err", "flux_bias", "flux_bias_err",
                                                 "median_snr")}
    n_inj, n_det = np.zeros(nbins, int), np.zeros(nbins, int)
    has_snr = "snr" in truth.colnames
    for b in range(nbins):  # per bin (a few tens): medians do not vectorise over ragged groups
        sel = which == b
        n_inj[b], n_det[b] = sel.sum(), (sel & found).sum()
        if n_inj[b]:
            rows["efficiency"][b], rows["efficiency_err"][b] = _wilson(n_det[b], n_inj[b])
            if has_snr:
                rows["median_snr"][b] = np.median(np.asarray(truth["snr"], float)[sel])
        r = ratio[sel & found]
        r = r[np.isfinite(r)]
        if r.size:
            med = np.median(r)
            rows["flux_bias"][b] = med
            rows["flux_bias_err"][b] = 1.2533 * 1.4826 * np.median(np.abs(r - med)) / np.sqrt(r.size)
    out = Table()
    out["mag_lo"], out["mag_hi"] = bins[:-1], bins[1:]
    out["mag_mid"] = (bins[:-1] + bins[1:]) / 2
    out["n_injected"], out["n_detected"] = n_inj, n_det
    for k, v in rows.items():
        out[k] = v
    out.meta.update({"RADIUS": float(radius), "N_FAKES": len(truth), "N_FOUND": int(found.sum())})
    return out


def combine_efficiency(tables: list[Table]) -> Table:
    """One efficiency table from several (e.g. every CCD of a night) of :func:`efficiency_table`.

    Bins are the multiples of the bin width that :func:`efficiency_table` uses, so equal
    ``mag_lo`` are the same bin: counts are summed and the efficiency recomputed (Wilson error);
    ``flux_bias`` is the mean of the tables' bin medians weighted by their detections (its error
    propagated the same way), ``median_snr`` the injection-weighted mean.  ``meta["MAG50"]``: the
    magnitude where the efficiency falls through 50% (linear interpolation; NaN if it never does).
    No table (every CCD skipped): a table with no bins.
    """
    n_tables = len(tables)
    if not tables:  # every CCD skipped: an empty table (N_FAKES 0, MAG50 NaN)
        tables = [Table({k: np.zeros(0) for k in ("mag_lo", "mag_hi", "n_injected", "n_detected")})]
    lo = np.round(np.concatenate([np.asarray(t["mag_lo"], float) for t in tables]), 6)
    hi = np.round(np.concatenate([np.asarray(t["mag_hi"], float) for t in tables]), 6)
    col = {k: np.concatenate([np.asarray(t[k], float) if k in t.colnames else np.full(len(t), np.nan)
                              for t in tables])
           for k in ("n_injected", "n_detected", "flux_bias", "flux_bias_err", "median_snr")}
    keys, which = np.unique(lo, return_inverse=True)
    nb = keys.size
    n_inj = np.bincount(which, col["n_injected"], nb).astype(int)
    n_det = np.bincount(which, col["n_detected"], nb).astype(int)
    wb = np.where(np.isfinite(col["flux_bias"]), col["n_detected"], 0)
    ws = np.where(np.isfinite(col["median_snr"]), col["n_injected"], 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        bias = np.bincount(which, wb * np.nan_to_num(col["flux_bias"]), nb) / np.bincount(which, wb, nb)
        bias_err = np.sqrt(np.bincount(which, (wb * np.nan_to_num(col["flux_bias_err"])) ** 2, nb)) / np.bincount(which, wb, nb)
        snr = np.bincount(which, ws * np.nan_to_num(col["median_snr"]), nb) / np.bincount(which, ws, nb)
    eff = np.full(nb, np.nan)
    err = np.full(nb, np.nan)
    for b in np.flatnonzero(n_inj):  # a few tens of bins
        eff[b], err[b] = _wilson(int(n_det[b]), int(n_inj[b]))
    out = Table()
    out["mag_lo"] = keys
    out["mag_hi"] = np.array([hi[lo == k].max() for k in keys])
    out["mag_mid"] = (out["mag_lo"] + out["mag_hi"]) / 2
    out["n_injected"], out["n_detected"] = n_inj, n_det
    out["efficiency"], out["efficiency_err"] = eff, err
    out["flux_bias"], out["flux_bias_err"], out["median_snr"] = bias, bias_err, snr
    out.meta.update({"N_TABLES": n_tables, "N_FAKES": int(n_inj.sum()), "N_FOUND": int(n_det.sum()),
                     "MAG50": mag50(np.asarray(out["mag_mid"]), eff)})
    return out


def mag50(mag: np.ndarray, eff: np.ndarray) -> float:
    """Magnitude where ``eff`` (ordered by ``mag``) first drops through 0.5 (linear interpolation)."""
    ok = np.isfinite(eff)
    m, e = mag[ok], eff[ok]
    for k in range(1, m.size):
        if e[k - 1] >= 0.5 > e[k]:
            return float(m[k - 1] + (e[k - 1] - 0.5) / (e[k - 1] - e[k]) * (m[k] - m[k - 1]))
    return float("nan")


def plot_efficiency(path, table: Table, title: str = "") -> None:
    """Efficiency (with errors) and flux bias versus magnitude, to a PNG (atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from vo.io.atomic import atomic_path

    fig, (a1, a2) = plt.subplots(2, 1, sharex=True, figsize=(6, 6))
    a1.errorbar(table["mag_mid"], table["efficiency"], yerr=table["efficiency_err"], fmt="o-")
    a1.axhline(0.5, ls=":", c="grey")
    a1.set_ylabel("detection efficiency")
    a1.set_title(title or f"{table.meta.get('N_FAKES', '')} fakes; m50 = {table.meta.get('MAG50', np.nan):.2f}")
    a2.errorbar(table["mag_mid"], table["flux_bias"], yerr=table["flux_bias_err"], fmt="o-")
    a2.axhline(0, ls=":", c="grey")
    a2.set_ylabel("flux bias (measured / true - 1)")
    a2.set_xlabel("magnitude")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)


def _wilson(k: int, n: int, z: float = 1.0) -> tuple[float, float]:
    """Efficiency k/n and the half-width of its Wilson score interval (z sigma)."""
    p = k / n
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return p, float(half)


# --------------------------------------------------------------------------- files


def write_table(path: str | os.PathLike, table: Table, extname: str, attrs: dict | None = None) -> None:
    """Write a fakes or efficiency table atomically as a FITS binary table HDU ``extname``."""
    t = Table(table, copy=False)
    t.meta = {}
    hdu = fits.BinTableHDU(t, name=extname)
    for key, value in table.meta.items():
        if len(key) <= 8 and isinstance(value, (int, float, str, bool)):
            # FITS has no NaN: an undefined value (read back as NaN)
            hdu.header[key] = None if isinstance(value, float) and not np.isfinite(value) else value
    write_fits(path, fits.HDUList([fits.PrimaryHDU(), hdu]), attrs)


def read_table(path: str | os.PathLike, extname: str, columns=()) -> Table:
    """Read a table written by :func:`write_table`; FitsError naming the file if unusable."""
    with open_fits(path, required=(extname,)) as hdul:
        t = Table(hdul[extname].data)
        for key in ("ZP", "N_FAKES", "STAMP", "RADIUS", "N_FOUND", "N_TABLES", "MAG50"):
            if key in hdul[extname].header:
                value = hdul[extname].header[key]
                t.meta[key] = float("nan") if value is None or isinstance(value, fits.card.Undefined) else value
    missing = [c for c in columns if c not in t.colnames]
    if missing:
        raise FitsError(f"{path}: {extname} lacks columns {missing}")
    return t


def write_fakes(path, truth: Table, attrs: dict | None = None) -> None:
    """Truth table of the fakes (HDU ``FAKES``)."""
    write_table(path, truth, "FAKES", attrs)


def read_fakes(path) -> Table:
    return read_table(path, "FAKES", ("fake_id", "x", "y", "mag", "flux"))


def write_efficiency(path, table: Table, attrs: dict | None = None) -> None:
    """Efficiency table (HDU ``EFFICIENCY``)."""
    write_table(path, table, "EFFICIENCY", attrs)


def read_efficiency(path) -> Table:
    return read_table(path, "EFFICIENCY", ("mag_lo", "mag_hi", "n_injected", "n_detected", "efficiency"))
