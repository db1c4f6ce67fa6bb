"""Alard & Lupton (1998) subtraction: a spatially varying convolution kernel, a linear combination
of Gaussians times polynomials, fitted on stamps of bright isolated stars.

Kernel (``u, v`` kernel pixel offsets, ``x, y`` image position scaled to [-1, 1])::

    K(u, v; x, y) = a_0 B_0(u, v) + sum_k sum_m a_km T_m(x, y) B_k(u, v)
    B = exp(-(u^2 + v^2) / (2 s^2)) u^i v^j   (i + j <= degree of width s)

``B_0`` (the narrowest Gaussian, unit sum) carries the flux scale, which is spatially constant;
every other basis function with a non-zero sum has ``sum(B_k) B_0`` subtracted so that it changes
the shape only (the classic choice, keeping the photometric scale one number). ``T_m`` are the
monomials of total degree ``al_spatial_order``; a differential background of degree
``al_bg_order`` is fitted at the same time, and fitted again on the difference's whole sky
(:func:`residual_background`: the stamps alone left a pedestal). The basis functions are separable, so every
convolution is two 1-D convolutions.

Direction: the sharper image (smaller PSF FWHM) is convolved to match the broader one, the
"target". The difference is always new - reference in e- of the new image:
``diff = N - K*R - bg`` (reference convolved; PSF of diff = P_n) or
``diff = (K*N + bg - R) / a_0`` (new convolved; PSF of diff = K*P_n / a_0).

Errors: ``diff_err`` = sqrt(V_target + K^2 * V_conv) (scaled), with K at the CCD centre; the
flux image is the PSF fit (fixed weights) of the difference at every pixel and its variance is
the exact propagation of both variance maps through the fit and the centre kernel
(``P^2 * V_target + Q^2 * V_conv``, ``Q = P`` correlated with ``K``), so ``score_corr`` has the
source noise (and ``psf_error`` x the reference's PSF-filtered flux, as for ZOGY); ``score``
uses the background noise only.  Every variance term is multiplied by its kernel's correlation
factor for the image's measured noise autocorrelation (the resampled reference is not white noise;
see :func:`~vo.images.subtract.common.correlation_factor`).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage, signal

from vo.images.extract.psf import cut_stamps, stamp_grid
from vo.images.subtract.common import Difference, Prepared, SubtractionError, correlation_factor, robust_std
from vo.images.subtract.tiles import tile_edges

MIN_STARS = 3
MIN_STARS_PER_TERM = 10  # stars per spatial term of the kernel, else the spatial order is lowered


def poly_terms(u, v, order: int) -> np.ndarray:
    """Monomials u**i v**j with i + j <= order, shape (n_terms,) + u.shape (float32)."""
    return np.stack([(u ** i * v ** (t - i)).astype(np.float32)
                     for t in range(order + 1) for i in range(t, -1, -1)])


def basis(sigmas, degrees, half: int) -> tuple[list, np.ndarray, np.ndarray]:
    """The kernel basis on a (2 half + 1)^2 grid.

    Returns the list of separable factors ``(g_x, g_y)`` (1-D float64 arrays: B = g_y[:, None] *
    g_x[None, :]), the zero-sum corrections ``c_k`` (B_k' = B_k - c_k B_0) and the 2-D stamps
    of the corrected basis (n_basis, 2 half + 1, 2 half + 1).
    """
    if len(sigmas) != len(degrees):
        raise SubtractionError(f"al_sigmas ({len(sigmas)} values) and al_degrees ({len(degrees)} values) "
                               "must have one entry each per Gaussian")
    u = np.arange(-half, half + 1, dtype=np.float64)
    factors = []
    for s, deg in zip(sigmas, degrees):
        g = np.exp(-u ** 2 / (2 * s ** 2))
        for t in range(int(deg) + 1):
            for i in range(t, -1, -1):
                gx, gy = g * (u / s) ** i, g * (u / s) ** (t - i)
                factors.append((gx, gy))
    norm0 = factors[0][0].sum() * factors[0][1].sum()
    factors[0] = (factors[0][0] / norm0, factors[0][1])  # B_0 has unit sum
    b0 = np.outer(factors[0][1], factors[0][0])
    corr = np.array([0.0] + [gx.sum() * gy.sum() for gx, gy in factors[1:]])
    stamps = np.stack([b0] + [np.outer(gy, gx) - c * b0 for (gx, gy), c in zip(factors[1:], corr[1:])])
    return factors, corr, stamps


def convolve_basis(img: np.ndarray, factors, k: int, axes=(-2, -1)) -> np.ndarray:
    """Convolution of ``img`` with basis function ``k`` (separable; zero outside the image)."""
    gx, gy = factors[k]
    out = ndimage.convolve1d(img, gx, axis=axes[1], mode="constant")
    return ndimage.convolve1d(out, gy, axis=axes[0], mode="constant")


def select_stars(stars, mask: np.ndarray, half: int, n_max: int, shape) -> tuple[np.ndarray, np.ndarray]:
    """Positions (x, y) of the brightest usable stars whose stamps are inside and unmasked.

    Every PSF candidate with a good single fit (``ok``), not only those the PSF model kept
    (``used``): any constant source constrains the kernel (a compact galaxy too), and the
    kernel fit clips its own outliers."""
    if stars is None or len(stars) == 0:
        return np.zeros(0), np.zeros(0)
    x, y = np.asarray(stars["x"], float), np.asarray(stars["y"], float)
    use = np.ones(x.size, bool)
    for col in ("ok", "used"):
        if col in stars.colnames:
            use &= np.asarray(stars[col], bool)
            break
    ny, nx = shape
    use &= (x >= half) & (x < nx - half) & (y >= half) & (y < ny - half)
    if use.any():
        ix, iy, _, _ = stamp_grid(x[use], y[use], half)
        (m,), _ = cut_stamps([mask.astype(np.uint8)], ix, iy, fill=1)
        idx = np.flatnonzero(use)
        use[idx[m.reshape(len(idx), -1).any(axis=1)]] = False
    order = np.argsort(-np.asarray(stars["flux"], float)[use]) if "flux" in stars.colnames else slice(None)
    return x[use][order][:n_max], y[use][order][:n_max]


def constant_in_both(X, Y, xs, ys, radius: float, scale: float, tol: float = 1.5):
    """Keep the stars whose flux in ``Y`` over that in ``X`` (sums within ``radius`` pix) is
    within a factor ``tol`` of ``scale`` (the expected target / convolved ratio).

    A source present in one image only (a transient, a variable star, an injected fake bright
    enough to be a PSF star) would make the kernel map a star onto nothing: injected fakes
    among a few real stars drove the kernel sum to 0 and the fluxes 10% low."""
    if xs.size == 0:
        return xs, ys
    half = int(np.ceil(radius))
    ix, iy, dx, dy = stamp_grid(xs, ys, half)
    (sx, sy), _ = cut_stamps([X, Y], ix, iy)
    ap = (dx * dx + dy * dy) <= radius * radius
    fx, fy = (sx * ap).sum(axis=(1, 2)), (sy * ap).sum(axis=(1, 2))
    ok = (fx > 0) & (fy > 0)
    ratio = np.where(ok, fy / np.where(fx > 0, fx, 1), np.nan)
    ok &= np.abs(np.log(np.where(ok, ratio, 1) / scale)) < np.log(tol)
    return xs[ok], ys[ok]


def fit_kernel(X, Y, VX, VY, xs, ys, factors, corr, kh: int, sh: int, spatial: int, bg_order: int,
               scale: float, clip: float, shape) -> tuple[np.ndarray, np.ndarray, dict]:
    """Fit the kernel coefficients on star stamps (weighted linear least squares, clipped stamps).

    Returns the coefficient vector (a_0, a_km (basis-major), background terms), the stamps kept
    (bool) and fit figures.
    """
    ny, nx = shape
    ix, iy, _, _ = stamp_grid(xs, ys, sh + kh)
    (xst,), _ = cut_stamps([X], ix, iy)
    ixs, iys = ix[:, kh:-kh, kh:-kh], iy[:, kh:-kh, kh:-kh]
    (yst, vx, vy), _ = cut_stamps([Y, VX, VY], ixs, iys)
    conv = np.stack([convolve_basis(xst, factors, k)[:, kh:-kh, kh:-kh] for k in range(len(factors))])
    conv[1:] -= corr[1:, None, None, None] * conv[0]
    u = 2 * ixs / max(nx - 1, 1) - 1
    v = 2 * iys / max(ny - 1, 1) - 1
    T = poly_terms(u, v, spatial)
    Tb = poly_terms(u, v, bg_order)
    cols = [conv[0]] + [conv[k] * T[m] for k in range(1, len(factors)) for m in range(T.shape[0])] + list(Tb)
    A = np.stack(cols, axis=-1).reshape(len(xs), -1, len(cols)).astype(np.float64)
    b = yst.reshape(len(xs), -1).astype(np.float64)
    w = 1 / (vy + scale ** 2 * vx).reshape(len(xs), -1).astype(np.float64)
    keep = np.ones(len(xs), bool)
    for _ in range(4):
        AtA = np.einsum("npi,np,npj->ij", A[keep], w[keep], A[keep])
        Atb = np.einsum("npi,np,np->i", A[keep], w[keep], b[keep])
        coef = np.linalg.lstsq(AtA, Atb, rcond=None)[0]
        chi2 = (w * (b - A @ coef) ** 2).mean(axis=1)
        med, sig = np.median(chi2[keep]), robust_std(chi2[keep])
        new = keep & (chi2 < med + clip * max(sig, 1e-3 * med))
        if new.sum() < MIN_STARS or np.array_equal(new, keep):
            break
        keep = new
    info = {"n_stars": int(len(xs)), "n_stars_used": int(keep.sum()),
            "chi2_stamps": float(np.median(chi2[keep])), "n_basis": len(factors), "n_par": len(cols)}
    return coef, keep, info


def residual_background(diff: np.ndarray, mask: np.ndarray, order: int, info: dict | None = None,
                        step: int = 4, clip: float = 3.0) -> np.ndarray:
    """The differential background left in ``diff`` (e-/pix): a polynomial of total degree
    ``order`` in the scaled image position fitted to every ``step``-th unmasked pixel in each
    axis with ``clip``-sigma clipping (sources and their residuals out).

    Why: the kernel fit's background terms are constrained only by the stamps around bright
    stars (a few FWHM), where they trade off against the kernel's zero-sum wings and each
    image's sky estimate near the star; on a 4096x2048 CCD they left a pedestal of -2.6 e-/pix
    (0.15 sigma of the sky) everywhere, which a PSF fit turns into fluxes 0.6-1.1% low.  The
    whole image's sky fixes the pedestal; the kernel (and so the stars' residuals) is unchanged.
    ``info`` gets ``residual_background`` (its value at the centre, e-/pix).
    """
    ny, nx = diff.shape
    sy, sx = slice(step // 2, None, step), slice(step // 2, None, step)
    d = diff[sy, sx].astype(np.float64).ravel()
    ok = ~mask[sy, sx].ravel() & np.isfinite(d)
    yy, xx = np.mgrid[sy.start:ny:step, sx.start:nx:step]
    u, v = (2 * xx / max(nx - 1, 1) - 1).ravel(), (2 * yy / max(ny - 1, 1) - 1).ravel()
    A = poly_terms(u, v, order).T.astype(np.float64)
    coef = np.zeros(A.shape[1])
    for _ in range(5):
        if ok.sum() <= A.shape[1]:
            return np.zeros_like(diff)
        coef = np.linalg.lstsq(A[ok], d[ok], rcond=None)[0]
        r = d - A @ coef
        sig = robust_std(r[ok])
        new = ok & (np.abs(r) < clip * sig)
        if np.array_equal(new, ok):
            break
        ok = new
    if info is not None:
        info["residual_background"] = float(coef[0])
    uu = 2 * np.arange(nx, dtype=np.float32) / max(nx - 1, 1) - 1
    vv = 2 * np.arange(ny, dtype=np.float32) / max(ny - 1, 1) - 1
    return np.tensordot(coef.astype(np.float32), poly_terms(uu[None, :], vv[:, None], order), axes=1)


def alard_lupton(p: Prepared, pn: np.ndarray, pr: np.ndarray, fwhm_new: float, fwhm_ref: float,
                 fr: float, pars: dict, stars) -> tuple[Difference, dict]:
    """Alard-Lupton subtraction of prepared images (see the module docstring).

    Parameters
    ----------
    p : prepared images and variance maps.
    pn, pr : centred unit-sum PSF stamps (odd size) of the new and reference images.
    fwhm_new, fwhm_ref : PSF FWHM (pix).
    fr : flux ratio reference / new.
    pars : the ``subtraction`` section.
    stars : Table with x, y (0-based pix on the new grid), flux and optionally used/ok: the
        kernel is fitted on the brightest of these.
    """
    shape = p.new.shape
    ref_sharper = fwhm_ref <= fwhm_new
    X, Y, VX, VY = (p.ref, p.new, p.var_ref, p.var_new) if ref_sharper else (p.new, p.ref, p.var_new, p.var_ref)
    scale = 1 / fr if ref_sharper else fr  # flux of the target / flux of the convolved image
    fbig, fsmall = max(fwhm_new, fwhm_ref), min(fwhm_new, fwhm_ref)
    s_match = np.sqrt(max(fbig ** 2 - fsmall ** 2, 0.0)) / 2.3548
    sigmas = [max(0.5, f * s_match) for f in pars["al_sigmas"]]
    kh = int(np.ceil(pars["al_kernel_size"] * fbig))
    sh = int(np.ceil(2.5 * fbig))
    factors, corr, kstamps = basis(sigmas, pars["al_degrees"], kh)
    xs, ys = select_stars(stars, p.mask, sh + kh, int(pars["al_max_stars"]), shape)
    xs, ys = constant_in_both(X, Y, xs, ys, 1.5 * fbig, scale)
    if xs.size < MIN_STARS:
        raise SubtractionError(f"Alard-Lupton: {xs.size} usable stars (unflagged, inside by {sh + kh} pix) "
                               f"to fit the kernel; at least {MIN_STARS} are needed")
    spatial, bg_order = int(pars["al_spatial_order"]), int(pars["al_bg_order"])
    while spatial > 0 and xs.size < MIN_STARS_PER_TERM * (spatial + 1) * (spatial + 2) // 2:
        spatial -= 1  # too few stars to constrain a varying kernel
    bg_order = min(bg_order, spatial)
    coef, keep, info = fit_kernel(X, Y, VX, VY, xs, ys, factors, corr, kh, sh, spatial, bg_order,
                                  scale, float(pars["al_clip"]), shape)
    nT = (spatial + 1) * (spatial + 2) // 2
    ny, nx = shape
    yy, xx = np.mgrid[0:ny, 0:nx].astype(np.float32)
    u, v = 2 * xx / max(nx - 1, 1) - 1, 2 * yy / max(ny - 1, 1) - 1
    del xx, yy
    T = poly_terms(u, v, spatial)
    model = np.tensordot(coef[1 + (len(factors) - 1) * nT:].astype(np.float32), poly_terms(u, v, bg_order), axes=1)
    del u, v
    c0 = convolve_basis(X, factors, 0)
    model += np.float32(coef[0]) * c0
    for k in range(1, len(factors)):
        field = np.tensordot(coef[1 + (k - 1) * nT: 1 + k * nT].astype(np.float32), T, axes=1)
        model += field * (convolve_basis(X, factors, k) - np.float32(corr[k]) * c0)
    del c0, T
    # kernel at the centre (u = v = 0: only the constant spatial term)
    centre = np.array([coef[0]] + [coef[1 + (k - 1) * nT] for k in range(1, len(factors))])
    kc = np.tensordot(centre, kstamps, axes=1)
    a0 = float(coef[0])
    sgn, norm = (1.0, 1.0) if ref_sharper else (-1.0, a0)
    diff = (np.float32(sgn) * (Y - model) / np.float32(norm)).astype(np.float32)
    diff -= residual_background(diff, p.mask, bg_order, info)
    ref_matched = model if ref_sharper else Y  # the reference's stars, in the diff's PSF (x norm)
    del model
    fc = lambda a, k: signal.fftconvolve(a, k.astype(np.float32), mode="same").astype(np.float32)  # noqa: E731
    rY, rX = (p.rho_new, p.rho_ref) if ref_sharper else (p.rho_ref, p.rho_new)
    cf = correlation_factor  # variances of kernel sums of correlated noise (see zogy's docstring)
    var_diff = (VY + fc(VX, kc ** 2 * cf(kc, rX))) / np.float32(norm ** 2)
    diff_err = np.sqrt(np.maximum(var_diff, 0))
    # PSF of the difference: the target image's PSF (as matched by the kernel)
    P = pn if ref_sharper else signal.convolve(pn, kc, mode="same") / a0
    P = P / P.sum()
    Q = signal.correlate(P, kc, mode="full")  # weights of the convolved image's pixels in the fit
    p2 = float((P ** 2).sum())
    flux = fc(diff, P[::-1, ::-1]) / np.float32(p2)
    cP, cQ = cf(P, rY), cf(Q, rX)
    var_flux = (fc(VY, (P ** 2 * cP)[::-1, ::-1]) + fc(VX, (Q ** 2 * cQ)[::-1, ::-1])) / np.float32(norm ** 2 * p2 ** 2)
    eps = float(pars["psf_error"])
    if eps > 0:  # PSF-model error of constant stars, as in ZOGY's S_corr here (see zogy.zogy)
        var_flux += np.square(np.float32(eps / (norm * p2)) * fc(ref_matched, P[::-1, ::-1]))
    del ref_matched
    flux_err = np.sqrt(np.maximum(var_flux, 1e-12)).astype(np.float32)
    sY, sX = (p.sigma_new, p.sigma_ref) if ref_sharper else (p.sigma_ref, p.sigma_new)
    err_bg = np.sqrt(cP * sY ** 2 * p2 + cQ * sX ** 2 * float((Q ** 2).sum())) / (norm * p2)
    d = Difference(diff=diff, diff_err=diff_err.astype(np.float32), score=(flux / np.float32(err_bg)),
                   score_corr=flux / flux_err, flux=flux, flux_err=flux_err, psf=P.astype(np.float32),
                   flags=p.flags)
    # what a new image's point source becomes in diff, per tile: itself (reference convolved) or
    # the kernel at the tile's centre / a0 (new convolved); detection fits P_new(x, y) through it
    ey, ex = tile_edges(ny, int(pars["tile_size"]) or ny), tile_edges(nx, int(pars["tile_size"]) or nx)
    if ref_sharper:
        ey, ex = ey[[0, -1]], ex[[0, -1]]
        grid = np.zeros((1, 1, 3, 3), np.float32)
        grid[0, 0, 1, 1] = 1
    else:
        grid = np.zeros((len(ey) - 1, len(ex) - 1) + kstamps.shape[1:], np.float32)
        for i in range(len(ey) - 1):
            for j in range(len(ex) - 1):
                uc = np.array([2 * ((ex[j] + ex[j + 1] - 1) // 2) / max(nx - 1, 1) - 1])
                vc = np.array([2 * ((ey[i] + ey[i + 1] - 1) // 2) / max(ny - 1, 1) - 1])
                t = poly_terms(uc, vc, spatial)[:, 0]
                w = [coef[0]] + [float(coef[1 + (k - 1) * nT: 1 + k * nT] @ t) for k in range(1, len(factors))]
                grid[i, j] = np.tensordot(np.array(w), kstamps, axes=1) / a0
    d.kernel_grid, d.tile_edges = grid, (ey, ex)
    info.update({"spatial_order": spatial, "bg_order": bg_order, "convolved": "reference" if ref_sharper else "new", "kernel_sum": a0,
                 "kernel_half": kh, "basis_sigmas": [float(s) for s in sigmas],
                 "sigma_new": p.sigma_new, "sigma_ref": p.sigma_ref, "flux_ratio": fr,
                 "corr_factors": {"P": round(cP, 4), "Q": round(cQ, 4)},
                 "kernel_centre": kc.astype(np.float32)})
    return d, info
