"""Spatially varying PSFs in ZOGY: the image in tiles, each subtracted with its own PSFs.

ZOGY's kernels are built from one PSF per image. Where the PSF changes across the CCD (real
cameras: 10-30% from centre to corner), a kernel from the centre's PSFs mismatches the corner
stars: their fluxes on a 2048x4096 CCD with a 30% FWHM change came out 14-19% low. So the
prepared images are cut into tiles of about ``tile_size`` pix (equal cores covering the image),
each padded by a margin of twice the kernel half-size on every side (real image, so the FFT's
wrap-around stays in the margin), subtracted with both PSF models evaluated at the core's
centre, and the cores are put back together. The difference's PSF is kept per tile
(:attr:`~vo.images.subtract.common.Difference.psf_grid`), so detection and measurements fit
each candidate with its tile's PSF. Inside a tile the PSF still changes a little; with cores of
512 pix and a 30% change the local mismatch is within +-3% at the core's corners and averages
out over the core.

Seams: every tile sees the same sky-subtracted, inpainted images and the same noise levels; only
the kernels differ, by the PSF change over one tile, so the maps are continuous to that level.
"""

from __future__ import annotations

import numpy as np

from vo.images.subtract.common import Difference, Prepared

MAPS = ("diff", "diff_err", "score", "score_corr", "flux", "flux_err")


def tile_edges(n: int, size: int) -> np.ndarray:
    """Edges (pix) of ``round(n / size)`` (at least 1) equal cores covering ``0..n``."""
    k = max(1, int(round(n / max(int(size), 1))))
    return np.linspace(0, n, k + 1).round().astype(int)


def tile_index(edges: np.ndarray, v) -> np.ndarray:
    """Index of the core holding coordinate(s) ``v`` (pix; clipped to the image)."""
    return np.clip(np.searchsorted(edges, np.asarray(v, float), side="right") - 1, 0, len(edges) - 2)


def unit_stamp(psf_model, x: float, y: float, half: int) -> np.ndarray:
    """Unit-sum PSF stamp (2 half + 1 square, float64) of ``psf_model`` at (x, y) (pix)."""
    stamp = np.asarray(psf_model.evaluate(float(x), float(y), 2 * half + 1), np.float64)
    return stamp / stamp.sum()


def _sub(p: Prepared, sl) -> Prepared:
    return Prepared(new=p.new[sl], ref=p.ref[sl], var_new=p.var_new[sl], var_ref=p.var_ref[sl],
                    sigma_new=p.sigma_new, sigma_ref=p.sigma_ref, mask=p.mask[sl], flags=p.flags[sl],
                    rho_new=p.rho_new, rho_ref=p.rho_ref)


def subtract_tiles(p: Prepared, new_psf, ref_psf, half: int, size: int, run) -> tuple[Difference, dict]:
    """Run ``run(prepared_tile, pn, pr) -> (Difference, info)`` on each padded tile with the PSF
    stamps of both models at the core's centre, and assemble the cores.

    Returns the Difference (``psf`` = the tile nearest the CCD centre's, ``psf_grid`` every
    tile's, ``tile_edges`` the core edges) and the centre tile's info with ``tiles`` added.
    """
    ny, nx = p.new.shape
    ey, ex = tile_edges(ny, size), tile_edges(nx, size)
    margin = 2 * half
    out = {name: np.empty((ny, nx), np.float32) for name in MAPS}
    grid = np.zeros((len(ey) - 1, len(ex) - 1, 2 * half + 1, 2 * half + 1), np.float32)
    kernels = None
    ic, jc = tile_index(ey, (ny - 1) / 2), tile_index(ex, (nx - 1) / 2)
    info = {}
    for i in range(len(ey) - 1):
        for j in range(len(ex) - 1):
            y0, y1, x0, x1 = ey[i], ey[i + 1], ex[j], ex[j + 1]
            py0, py1, px0, px1 = max(0, y0 - margin), min(ny, y1 + margin), max(0, x0 - margin), min(nx, x1 + margin)
            xc, yc = (x0 + x1 - 1) // 2, (y0 + y1 - 1) // 2  # a pixel: the stamps centred on it
            d, inf = run(_sub(p, (slice(py0, py1), slice(px0, px1))),
                         unit_stamp(new_psf, xc, yc, half), unit_stamp(ref_psf, xc, yc, half))
            core = (slice(y0 - py0, y1 - py0), slice(x0 - px0, x1 - px0))
            for name in MAPS:
                out[name][y0:y1, x0:x1] = getattr(d, name)[core]
            grid[i, j] = d.psf
            if d.kernel_grid is not None:
                if kernels is None:
                    kernels = np.zeros(grid.shape[:2] + d.kernel_grid.shape[2:], np.float32)
                kernels[i, j] = d.kernel_grid[0, 0]
            if (i, j) == (ic, jc):
                info = inf
    info["tiles"] = [len(ey) - 1, len(ex) - 1]
    d = Difference(psf=grid[ic, jc].copy(), flags=p.flags, psf_grid=grid, tile_edges=(ey, ex),
                   kernel_grid=kernels, **out)
    return d, info


def templates(d: Difference, x, y, new_psf=None):
    """The profile in ``d.diff`` of a point source of the new image at each (x, y) (pix): a list
    of (indices, stamps (n, k, k) or one stamp (k, k)), unit sum.

    With the new image's PSF model and the difference's kernels (ZOGY), each source's own
    ``kernel * P_new(x, y)``: exact wherever the model is, inside a tile too (with one kernel per
    tile and the PSF of the tile's centre, corner sources of a CCD whose FWHM grows 30% read 3-7%
    off). Else the tile's PSF (``psf_grid``), else ``d.psf``."""
    from scipy import signal

    x, y = np.atleast_1d(np.asarray(x, float)), np.atleast_1d(np.asarray(y, float))
    grid = d.kernel_grid if (new_psf is not None and d.kernel_grid is not None) else d.psf_grid
    if grid is None or d.tile_edges is None:
        return [(np.arange(x.size), d.psf)]
    ey, ex = d.tile_edges
    key = tile_index(ey, y) * grid.shape[1] + tile_index(ex, x)
    flat = grid.reshape(-1, *grid.shape[2:])
    out = []
    for k in np.unique(key):
        idx = np.flatnonzero(key == k)
        if grid is d.psf_grid:
            out.append((idx, flat[k]))
            continue
        half = d.psf.shape[0] // 2
        pn = np.asarray(new_psf.evaluate(np.rint(x[idx]), np.rint(y[idx]), 2 * half + 1), np.float64)
        pn /= pn.sum(axis=(1, 2), keepdims=True)
        t = signal.fftconvolve(pn, flat[k][None].astype(np.float64), mode="same", axes=(1, 2))
        out.append((idx, t / t.sum(axis=(1, 2), keepdims=True)))
    return out


class LocalPSF:
    """The difference image's PSF where each source is (:func:`templates`), for measurements
    (:func:`vo.images.detect.measure.psf_stamps`): ``stamps(x, y)`` -> (n, k, k) unit-sum
    stamps centred on the pixels nearest (x, y); ``central`` is the difference's central PSF."""

    def __init__(self, d: Difference, new_psf=None):
        self.d, self.new_psf, self.central = d, new_psf, d.psf

    def stamps(self, x, y) -> np.ndarray:
        x, y = np.atleast_1d(np.asarray(x, float)), np.atleast_1d(np.asarray(y, float))
        k = self.d.psf.shape[0]
        out = np.empty((x.size, k, k))
        for idx, st in templates(self.d, x, y, self.new_psf):
            out[idx] = st
        return out
