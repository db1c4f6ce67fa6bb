"""Fitting the PSF model (:mod:`vo.images.extract.psf`) to the stars of an image.

Three stages, all vectorised over stars with numpy:

1. :func:`fit_stars`: a free elliptical Moffat plus local sky per star (batched
   Levenberg-Marquardt). Gives each star's own width (the yardstick of stage 3) and the start.
2. :func:`initial_model`: polynomials of the shape parameters over the image, a least-squares fit
   to the per-star parameters; only a starting point. Averaging parameters is not averaging
   profiles: the Moffat ``alpha``-``beta`` degeneracy lets stars of one width scatter widely in
   ``(a, beta)``, and a mean of such pairs has another width (on the real DECam stamps the mean
   came out 4-9% wider than the stars, faint stars counting as much as bright ones).
3. :func:`refine_model`: the polynomial coefficients fitted **to the stars' pixels** jointly
   (with each star's flux and position), weighted by the model variance, so a star counts
   by its signal-to-noise. The sky is the background map, as in PSF photometry: a free local
   sky per star (stage 1) absorbs the real PSF's extended wings on real stars (up to 5 sigma per
   pixel around the brightest DECam stars), which made the model's wings too steep and its
   fluxes 2-4% below large-aperture fluxes; without it they agree to 1-2% and DemoCam fluxes stay
   within 0.3% (benchmarks/psf_real.py). Stars that the model does not describe are rejected with a *centred*
   robust test (residual power and width relative to the median of the used stars, against
   their MAD) and the model is refitted; finally the model's FWHM at the bright stars is compared
   with their own fitted FWHMs: a model that disagrees by more than ``tol`` is refitted with a
   lower order and, if still off, marked not ok with the reason (``PSFModel.ok``/``why``) for
   the steps downstream, never silently used.

Why not photutils' ``EPSFBuilder``: an oversampled pixel grid, which on near-undersampled survey
images (FWHM 2-3 pix) aliases and misses the wings (see :mod:`vo.images.extract.psf`), and it
builds one PSF per image with no spatial variation.
"""

from __future__ import annotations

import numpy as np
from astropy.table import Table

from vo.images.extract.psf import (BETA_RANGE, PARAMS, PSFError, PSFModel, _design, cut_stamps,
                                   shape_jacobian, shape_to_size, size_to_shape,
                                   moffat_fwhm, moffat_pixels, n_terms, stamp_grid)

FWHM_TOL = 0.05      # the model's FWHM must be within this fraction of the bright stars' own
MIN_SCALE = 0.01     # floor of the robust scales in the rejection tests (log-width, residual power)


def fit_stars(sub, weight, rms, x, y, fwhm0: float, half: int, subsample: int = 3,
              n_iter: int = 40) -> Table:
    """Fit a free elliptical Moffat plus a constant local sky to each star (batched
    Levenberg-Marquardt).

    The local sky absorbs the error of the background map under the star: a map estimated
    with the stars' faint wings in its meshes (sep, SExtractor) sits a few e- above the true
    sky, which, left in, cuts the wings of every PSF star and biases beta high (3.16 for 3.0
    at FWHM 3.5 pix) and so the PSF fluxes low by 1%.

    Parameters
    ----------
    sub : 2-D float32 array
        Background-subtracted image (e-).
    weight : 2-D float32 array
        Inverse variance (1/e-^2), 0 where flagged: only where it is > 0 do pixels enter.
    rms : 2-D float32 array
        Background RMS (e-). The fit weights are ``1 / (rms**2 + model)`` (gain 1: e-), from the
        current model, not the data: weights computed from the noisy data bias the profile.
    x, y : arrays
        Starting positions (0-based pix).
    fwhm0 : float
        Starting FWHM (pix).
    half : int
        Half-size of the fitting stamps (pix).

    Returns
    -------
    Table with x, y, flux (e-), a11, a12, a22 (1/pix^2), beta, s11, s12, s22 (pix, the size
    matrix of :mod:`vo.images.extract.psf`), fwhm, sky (e-/pix, local level above
    ``sub``), chi2 (reduced), ok.
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    n = x.size
    ix, iy, _, _ = stamp_grid(x, y, half)
    (d, w, s), _ = cut_stamps([sub, weight, rms], ix, iy)
    d = d.astype(np.float32)
    inside = (w > 0).astype(np.float32)
    s2 = np.where(w > 0, s.astype(np.float32) ** 2, 1)
    beta0 = 3.0
    alpha0 = fwhm0 / (2 * np.sqrt(2 ** (1 / beta0) - 1))
    npar = 8  # flux, x0, y0, a11, a12, a22, beta, sky
    p = np.zeros((n, npar))
    p[:, 1], p[:, 2] = x, y
    p[:, 3], p[:, 5], p[:, 6] = 1 / alpha0 ** 2, 1 / alpha0 ** 2, beta0
    p[:, 0] = np.maximum((d * inside).sum(axis=(1, 2)), 1.0)
    ixf, iyf = ix.astype(np.float32), iy.astype(np.float32)

    def model(k, q, derivs):
        dx = ixf[k] - q[:, 1, None, None].astype(np.float32)
        dy = iyf[k] - q[:, 2, None, None].astype(np.float32)
        return moffat_pixels(dx, dy, q[:, 3], q[:, 4], q[:, 5], q[:, 6], subsample, derivs)

    def valid(k, q):
        return ((q[:, 3] > 0) & (q[:, 5] > 0) & (q[:, 3] * q[:, 5] - q[:, 4] ** 2 > 0)
                & (q[:, 6] > BETA_RANGE[0]) & (q[:, 6] < BETA_RANGE[1]) & (q[:, 0] > 0)
                & (np.abs(q[:, 1] - x[k]) < half / 2) & (np.abs(q[:, 2] - y[k]) < half / 2))

    lam = np.full(n, 1e-3)
    c = np.full(n, np.inf)
    act = np.arange(n)  # stars still iterating: only these are evaluated
    for _ in range(n_iter):
        if act.size == 0:
            break
        q = p[act]
        m, dm = model(act, q, True)
        fm = q[:, 0, None, None].astype(np.float32) * m
        u = inside[act] / (s2[act] + np.maximum(fm, 0))
        r = d[act] - fm - q[:, 7, None, None].astype(np.float32)
        c_cur = (u * r * r).sum(axis=(1, 2), dtype=np.float64)
        c[act] = c_cur
        J = np.empty((npar,) + m.shape, np.float32)
        J[0] = m
        J[1:7] = q[:, 0, None, None].astype(np.float32) * dm
        J[7] = 1
        J = J.reshape(npar, act.size, -1)
        uf, rf = u.reshape(act.size, -1), r.reshape(act.size, -1)
        H = np.einsum("inp,np,jnp->nij", J, uf, J, dtype=np.float64)
        g = np.einsum("inp,np,np->ni", J, uf, rf, dtype=np.float64)
        diag = np.einsum("nii->ni", H) + 1e-30
        H = H + (lam[act, None] * diag)[:, :, None] * np.eye(npar)
        bad_h = ~np.all(np.isfinite(H), axis=(1, 2)) | (np.linalg.det(H) <= 0)
        H[bad_h] = np.eye(npar)
        g[bad_h] = 0
        trial = q + np.linalg.solve(H, g[..., None])[..., 0]
        ok = valid(act, trial) & ~bad_h
        c_new = np.full(act.size, np.inf)
        if ok.any():
            rt = (d[act[ok]] - trial[ok, 0, None, None].astype(np.float32) * model(act[ok], trial[ok], False)
                  - trial[ok, 7, None, None].astype(np.float32))
            c_new[ok] = (u[ok] * rt * rt).sum(axis=(1, 2), dtype=np.float64)
        better = c_new < c_cur
        converged = better & ((c_cur - c_new) < 1e-5 * c_cur + 1e-2)
        p[act[better]] = trial[better]
        c[act[better]] = c_new[better]
        lam[act] = np.where(better, lam[act] / 3, lam[act] * 5)
        act = act[~converged & (lam[act] < 1e6) & ~bad_h]
    ok_all = valid(np.arange(n), p) & np.isfinite(c)
    dof = np.maximum(inside.sum(axis=(1, 2)) - npar, 1)
    t = Table()
    t["x"], t["y"], t["flux"] = p[:, 1], p[:, 2], p[:, 0]
    for k, name in enumerate(("a11", "a12", "a22", "beta")):
        t[name] = p[:, 3 + k]
    with np.errstate(invalid="ignore", divide="ignore"):
        t["s11"], t["s12"], t["s22"] = shape_to_size(p[:, 3], p[:, 4], p[:, 5])
    t["fwhm"] = moffat_fwhm(p[:, 3], p[:, 4], p[:, 5], p[:, 6])
    t["sky"] = p[:, 7]
    t["chi2"] = c / dof
    t["ok"] = ok_all
    return t


def _uv(x, y, shape):
    ny, nx = shape
    return (2 * np.asarray(x, float) / max(nx - 1, 1) - 1, 2 * np.asarray(y, float) / max(ny - 1, 1) - 1)


def max_order(n_stars: int, order: int) -> int:
    """``order`` lowered until there are at least 3 stars per polynomial term."""
    while order > 0 and n_stars < 3 * n_terms(order):
        order -= 1
    return order


def initial_model(stars: Table, shape, order: int, subsample: int = 3, clip: float = 3.0,
                  n_clip: int = 5, name: str = "image") -> PSFModel:
    """Polynomials of the shape parameters fitted to single-star fits (centred, sigma-clipped
    least squares): the starting point of :func:`refine_model`.

    The order is lowered when there are too few stars (fewer than 3 per polynomial term).
    Raises :class:`PSFError` naming ``name`` when no star is usable.
    """
    stars = stars.copy()
    ok = np.asarray(stars["ok"], bool)
    use = ok.copy()
    if use.sum() < 1:
        raise PSFError(f"{name}: no usable PSF star (of {len(stars)} candidates)")
    order = max_order(int(use.sum()), order)
    D = _design(*_uv(stars["x"], stars["y"], shape), order)
    P = np.stack([np.asarray(stars[k], float) for k in PARAMS], axis=1)
    for _ in range(n_clip):
        coef, *_ = np.linalg.lstsq(D[use], P[use], rcond=None)
        res = P - D @ coef
        centre = np.median(res[use], axis=0)
        scale = 1.4826 * np.median(np.abs(res[use] - centre), axis=0) + 1e-12
        new = ok & np.all(np.abs(res - centre) < clip * scale, axis=1)
        if new.sum() < max(3, n_terms(order)) or np.array_equal(new, use):
            break
        use = new
    coef, *_ = np.linalg.lstsq(D[use], P[use], rcond=None)
    stars["used"] = use
    return PSFModel(coeffs=coef.T.copy(), order=order, shape=(int(shape[0]), int(shape[1])),
                    subsample=int(subsample), stars=stars)


class _Stamps:
    """The pixels of the PSF stars and the joint model's evaluation on them."""

    def __init__(self, sub, weight, rms, x, y, half, D, subsample):
        self.ix, self.iy, _, _ = stamp_grid(x, y, half)
        (d, w, s), _ = cut_stamps([sub, weight, rms], self.ix, self.iy)
        self.d = d.astype(np.float32)
        self.inside = (w > 0).astype(np.float32)
        self.s2 = np.where(w > 0, s.astype(np.float32) ** 2, 1).astype(np.float32)
        self.D, self.subsample = D, subsample

    def shape_params(self, coef):
        """(4, N) s11, s12, s22 (pix), beta at the stars from the (4, T) coefficients."""
        return coef @ self.D.T

    def moffat(self, coef):
        """(a11, a12, a22, beta) at the stars (the profile's parameters)."""
        s11, s12, s22, beta = self.shape_params(coef)
        return (*size_to_shape(s11, s12, s22), beta)

    @staticmethod
    def valid(par) -> bool:
        s11, s12, s22, beta = par
        return bool(np.all((s11 > 0) & (s22 > 0) & (s11 * s22 - s12 * s12 > 0)
                           & (beta > BETA_RANGE[0]) & (beta < BETA_RANGE[1])))

    def model(self, coef, ps, derivs=False):
        """Unit-flux profiles (N, S, S) (and their 6 derivatives) at star parameters ``ps``
        (N, 3: flux (e-), x, y (pix))."""
        dx = self.ix - ps[:, 1, None, None].astype(np.float32)
        dy = self.iy - ps[:, 2, None, None].astype(np.float32)
        return moffat_pixels(dx, dy, *self.moffat(coef), self.subsample, derivs)

    def chi2(self, m, ps):
        """Per-star chi^2 and the weights, residuals (model variance: sky RMS^2 + model)."""
        fm = ps[:, 0, None, None].astype(np.float32) * m
        u = self.inside / (self.s2 + np.maximum(fm, 0))
        r = self.d - fm
        return (u * r * r).sum(axis=(1, 2), dtype=np.float64), u, r


def _joint_step(st: _Stamps, coef, ps, lam):
    """One damped Gauss-Newton step of all coefficients and star parameters (Schur complement:
    the star blocks are 3x3, the coefficient block 4T x 4T)."""
    m, dm = st.model(coef, ps, True)
    c, u, r = st.chi2(m, ps)
    n, T = st.D.shape
    f = ps[:, 0, None, None].astype(np.float32)
    Js = np.stack([m, f * dm[0], f * dm[1]]).reshape(3, n, -1)
    Jp = (f * dm[2:]).reshape(4, n, -1)          # d model / d (a11, a12, a22, beta) per star
    J = shape_jacobian(*st.shape_params(coef)[:3]).astype(np.float32)   # d a / d s: (3, 3, n)
    Jp = np.concatenate([np.einsum("inp,ijn->jnp", Jp[:3], J), Jp[3:]])  # d model / d (s, beta)
    uf, rf = u.reshape(n, -1), r.reshape(n, -1)
    A = np.einsum("inp,np,jnp->nij", Js, uf, Js, dtype=np.float64)
    Bp = np.einsum("inp,np,knp->nik", Js, uf, Jp, dtype=np.float64)     # (n, 3, 4)
    Gp = np.einsum("knp,np,lnp->nkl", Jp, uf, Jp, dtype=np.float64)     # (n, 4, 4)
    gs = np.einsum("inp,np,np->ni", Js, uf, rf, dtype=np.float64)
    gp = np.einsum("knp,np,np->nk", Jp, uf, rf, dtype=np.float64)
    D = st.D
    B = (Bp[:, :, :, None] * D[:, None, None, :]).reshape(n, 3, 4 * T)  # columns (k, t)
    C = np.einsum("nkl,ns,nt->kslt", Gp, D, D).reshape(4 * T, 4 * T)
    gg = np.einsum("nk,nt->kt", gp, D).reshape(4 * T)
    A = A + lam * np.einsum("nii->ni", A)[:, :, None] * np.eye(3) + 1e-30 * np.eye(3)
    C = C + lam * np.diag(np.diag(C)) + 1e-30 * np.eye(4 * T)
    try:
        Ainv = np.linalg.inv(A)
        AB = Ainv @ B                                                    # (n, 3, 4T)
        S = C - np.einsum("nik,nil->kl", B, AB)
        rhs = gg - np.einsum("nik,ni->k", AB, gs)
        dg = np.linalg.lstsq(S, rhs, rcond=None)[0]
        ds = np.einsum("nij,nj->ni", Ainv, gs - B @ dg)
    except np.linalg.LinAlgError:  # a singular or non-finite system: no step (more damping)
        return c, coef + np.nan, ps + np.nan
    return c, coef + dg.reshape(4, T), ps + ds


def _joint_fit(st: _Stamps, coef, ps, n_iter: int = 30):
    """Levenberg-Marquardt over the joint problem; returns coef, star params, per-star chi^2."""
    lam = 1e-3
    c_tot = np.inf
    for _ in range(n_iter):
        c, coef_t, ps_t = _joint_step(st, coef, ps, lam)
        c_tot = c.sum()
        par = st.shape_params(coef_t)
        if np.all(np.isfinite(coef_t)) and st.valid(par) and np.all(ps_t[:, 0] > 0) and np.all(np.isfinite(ps_t)):
            c_t = st.chi2(st.model(coef_t, ps_t), ps_t)[0].sum()
        else:
            c_t = np.inf
        tol = 1e-6 * c_tot + 1e-3
        if c_t < c_tot:
            coef, ps, lam = coef_t, ps_t, lam / 3
            if c_tot - c_t < tol:
                break
        elif c_t - c_tot < 100 * tol:
            # converged: the weights hold the model's own variance, which the Gauss-Newton step
            # leaves out, so at the minimum a step moves chi^2 by ~1e-4 of itself either way
            # (measured on DemoCam: 15 of 165,000); more damping only repeated the step (10-14
            # wasted model evaluations per fit)
            break
        else:
            lam *= 5
            if lam > 1e6:
                break
    return coef, ps, st.chi2(st.model(coef, ps), ps)[0]


def refine_model(sub, weight, rms, model: PSFModel, half: int, clip: float = 3.0,
                 n_clip: int = 3, use=None, name: str = "image") -> PSFModel:
    """Fit ``model``'s coefficients jointly to the pixels of its stars (see the module doc).

    Parameters
    ----------
    sub, weight, rms : 2-D arrays
        Background-subtracted image (e-), inverse variance (1/e-^2, 0 = masked), sky RMS (e-).
    model : PSFModel
        The starting model (:func:`initial_model`); its ``stars`` table (x, y, flux, fwhm,
        snr, ok) names the candidate stars: all with a good single fit enter the joint fit
        (the start's own clipping of parameters rejects good stars: the degenerate
        ``alpha``-``beta`` pairs scatter widely).
    half : int
        Half-size of the stars' fitting stamps (pix).
    use : boolean array, optional
        Fit exactly these stars (no rejection); by default the candidates pass the tests.

    Returns the refined model; its ``stars`` gain columns ``flux_joint`` (e-), ``chi2_joint``
    (reduced), ``fwhm_model`` (pix: the model's FWHM at the star) and an updated ``used``, and
    ``stars.meta`` the total ``chi2`` and ``npix`` of the used stars.
    """
    stars = model.stars.copy()
    snr = np.asarray(stars["snr"], float) if "snr" in stars.colnames else np.full(len(stars), 100.0)
    if use is not None:
        use, n_clip = np.asarray(use, bool).copy(), 0
    else:
        use = np.asarray(stars["ok"], bool).copy()  # every good single fit: the tests decide
        # a galaxy among faint stars pulls the polynomial to its width locally, where the per-star
        # test below (star against the model at its place) no longer sees it: first a test of each
        # width against the median of all (centred, robust; the PSF's own variation is in the scale)
        lw = np.log(np.asarray(stars["fwhm"], float))
        if use.sum() >= 3:
            c_lw, s_lw = _robust(lw, use)
            use &= np.abs(lw - c_lw) <= clip * s_lw + 2 / np.maximum(snr, 1)
    order = model.order
    D = _design(*_uv(stars["x"], stars["y"], model.shape), order)
    st_all = _Stamps(sub, weight, rms, np.asarray(stars["x"], float), np.asarray(stars["y"], float),
                     half, D, model.subsample)
    ps_all = np.stack([np.asarray(stars[k], float) for k in ("flux", "x", "y")], axis=1)
    coef = np.asarray(model.coeffs, float).copy()
    chi = np.full(len(stars), np.nan)
    dof = np.maximum(st_all.inside.sum(axis=(1, 2)) - 3, 1)
    use &= dof >= 6  # a star with (almost) every pixel masked has no say and a singular block
    for _ in range(n_clip + 1):
        st = _subset(st_all, use)
        coef, ps, c = _joint_fit(st, coef, ps_all[use])
        ps_all[use] = ps
        chi[:] = np.nan
        chi[use] = c
        fw_model = moffat_fwhm(*st_all.moffat(coef))
        bad = _outliers(stars["fwhm"], fw_model, chi, dof, use, snr, clip)
        if not bad.any() or use.sum() - bad.sum() < max(3, n_terms(order)):
            break
        use &= ~bad
    stars["flux_joint"] = ps_all[:, 0]
    stars["chi2_joint"] = chi / dof
    stars["used"] = use
    stars.meta.update({"chi2": float(np.nansum(chi[use])), "npix": int(st_all.inside[use].sum())})
    out = PSFModel(coeffs=coef, order=order, shape=model.shape, subsample=model.subsample, stars=stars)
    stars["fwhm_model"] = out.fwhm(stars["x"], stars["y"])
    return out


def _subset(st: _Stamps, use) -> _Stamps:
    sub = object.__new__(_Stamps)
    for k in ("ix", "iy", "d", "inside", "s2", "D"):
        setattr(sub, k, getattr(st, k)[use])
    sub.subsample = st.subsample
    return sub


def _robust(stat, use):
    """Median and MAD-based sigma (floored at MIN_SCALE) of ``stat`` over ``use``."""
    centre = np.median(stat[use])
    return centre, 1.4826 * np.median(np.abs(stat[use] - centre)) + MIN_SCALE


def _outliers(fw_star, fw_model, chi, dof, use, snr, clip: float) -> np.ndarray:
    """Used stars the joint model does not describe, by two centred robust tests.

    * width: ``log(fwhm_star / fwhm_model)`` off its median over the used stars by more than
      ``clip`` robust sigmas plus the star's own width noise (~2/S/N): galaxies, blends;
    * residual power ``e = sqrt(max(chi2 - dof, 0)) / S/N`` (the misfit relative to the star's
      signal: the same for every star a good model describes, whatever its brightness) among
      the stars whose misfit is significant (chi2 - dof > ``clip`` sqrt(2 dof)), above their
      median by ``clip`` robust sigmas: a neighbour, a star the polynomial cannot follow. Only
      among those: for fainter stars ``e`` is noise, and with them in the median every bright
      star (real PSFs are not exactly Moffat: e ~ 0.03) would be rejected.
    """
    snr = np.maximum(snr, 1)
    lw = np.log(np.asarray(fw_star, float) / fw_model)
    c_lw, s_lw = _robust(lw, use)
    wide = np.abs(lw - c_lw) > clip * s_lw + 2 / snr
    e = np.sqrt(np.maximum(chi - dof, 0)) / snr
    significant = use & (chi - dof > clip * np.sqrt(2 * dof))
    misfit = np.zeros_like(use)
    if significant.sum() >= 3:  # faint stars' e is noise (0 or ~sqrt(dof)/S/N): compare with peers
        c_e, s_e = _robust(e, significant)
        misfit = significant & (e - c_e > clip * s_e)
    return use & (wide | misfit)


def grid_range(model: PSFModel, n: int = 5) -> tuple[float, float]:
    """Smallest and largest FWHM (pix) of the model on an ``n`` x ``n`` grid over the image."""
    ny, nx = model.shape
    gx, gy = np.meshgrid(np.linspace(0, nx - 1, n), np.linspace(0, ny - 1, n))
    fw = model.fwhm(gx.ravel(), gy.ravel())
    return float(np.min(fw)), float(np.max(fw))


def check_model(model: PSFModel, bright_snr: float) -> float:
    """Median over the bright used stars of (model FWHM at the star / the star's own fitted FWHM).

    Bright: S/N >= ``bright_snr``; where fewer than 3 are, the brighter half of the used stars.
    """
    s = model.stars
    use = np.asarray(s["used"], bool)
    snr = np.asarray(s["snr"], float) if "snr" in s.colnames else np.zeros(len(s))
    bright = use & (snr >= bright_snr)
    if bright.sum() < 3:
        bright = use & (snr >= np.median(snr[use]))
    ratio = np.asarray(s["fwhm_model"], float)[bright] / np.asarray(s["fwhm"], float)[bright]
    return float(np.median(ratio))


def fit_psf(sub, weight, rms, stars: Table, shape, order: int, half: int, subsample: int = 3,
            bright_snr: float = 50.0, tol: float = FWHM_TOL, name: str = "image") -> PSFModel:
    """The PSF model of an image from its fitted stars (:func:`fit_stars` plus an ``snr`` column).

    Joint fit (:func:`refine_model`) at ``order`` (with the star rejection), then on the stars
    it kept at each lower order; the order is chosen by the Bayesian information criterion.
    When the chosen model's FWHM at the bright stars is off their own by more than ``tol``, or anywhere on the image (a 5x5 grid) outside the used
    stars' range of widths widened by ``2 tol``, refitted at each lower order; if none agrees, the
    best is returned with ``ok = False`` and ``why`` saying so. ``fwhm_ratio`` keeps the check.
    """
    start = initial_model(stars, shape, order, subsample, name=name)
    models = {start.order: refine_model(sub, weight, rms, start, half, name=name)}
    used = np.asarray(models[start.order].stars["used"], bool)
    for o in range(start.order - 1, -1, -1):
        models[o] = refine_model(sub, weight, rms, initial_model(stars, shape, o, subsample, name=name),
                                 half, use=used, name=name)
    top = models[start.order].stars.meta
    # the order by the Bayesian information criterion on the same stars: a higher order must
    # lower the total chi^2 by ln(npix) per coefficient it adds, else its freedom fits noise (a
    # field of faint stars let order 2 bend the PSF 5% wide at the centre)
    bic = {o: m.stars.meta["chi2"] + 4 * n_terms(o) * np.log(max(top["npix"], 2)) for o, m in models.items()}
    chosen = min(bic, key=bic.get)
    best = None
    for o in range(chosen, -1, -1):
        model = models[o]
        model.fwhm_ratio = check_model(model, bright_snr)
        # nowhere on the image may the model be wider or narrower than its stars allow
        used = np.asarray(model.stars["used"], bool)
        lo, hi = grid_range(model)
        fw = np.asarray(model.stars["fwhm"], float)[used]
        inside = lo >= (1 - 2 * tol) * fw.min() and hi <= (1 + 2 * tol) * fw.max()
        if abs(model.fwhm_ratio - 1) <= tol and inside:
            return model
        if not inside:  # rank it after every model that stays within its stars
            model.fwhm_ratio = max(model.fwhm_ratio, 1 + 2 * tol) if model.fwhm_ratio >= 1 else \
                min(model.fwhm_ratio, 1 - 2 * tol)
        if best is None or abs(model.fwhm_ratio - 1) < abs(best.fwhm_ratio - 1):
            best = model
    best.ok = False
    lo, hi = grid_range(best)
    best.why = (f"{name}: the PSF model disagrees with its stars at every polynomial order: FWHM at "
                f"the bright stars {best.fwhm_ratio:.3f} x their own (tolerance {tol:.0%}), "
                f"{lo:.2f}-{hi:.2f} pix over the image")
    return best
