"""ZOGY image subtraction (Zackay, Ofek & Gal-Yam 2016, ApJ 830, 27) with scipy.fft.

Notation (their eqs. 13-17, 25-31): N, R new and reference images (sky subtracted, e-), P_n,
P_r their unit-sum PSFs, sigma_n, sigma_r their background noise (e-), F_n = 1 and
F_r = flux ratio ref/new (so every flux below is in e- of the NEW image)::

    den^2 = sigma_n^2 F_r^2 |P_r^|^2 + sigma_r^2 F_n^2 |P_n^|^2
    D^    = (F_r P_r^ N^ - F_n P_n^ R^) / den            (unit background noise)
    F_D   = F_n F_r / sqrt(sigma_n^2 F_r^2 + sigma_r^2 F_n^2),  P_D^ = F_r F_n P_r^ P_n^ / (F_D den)
    k_n^  = F_n F_r^2 conj(P_n^) |P_r^|^2 / den^2,  k_r^ = F_r F_n^2 conj(P_r^) |P_n^|^2 / den^2
    S     = k_n * N - k_r * R = S_n - S_r,  F_S = sum F_n^2 F_r^2 |P_n^|^2 |P_r^|^2 / den^2
    V(S)  = V_n * k_n^2 + V_r * k_r^2 + sigma_ast^2 (|grad S_n|^2 + |grad S_r|^2) + (eps S_r)^2
    score = S / sqrt(F_S),  S_corr = S / sqrt(V(S)),  alpha = S / F_S,  err(alpha) = sqrt(V(S)) / F_S

The output ``diff`` is D / F_D (e- of the new image, PSF P_D).

Correlated noise: every variance term above assumes white noise.  The aligned (resampled) reference
is not white, so each term is multiplied by the kernel's correlation factor
(:func:`~vo.images.subtract.common.correlation_factor` of the noise autocorrelation measured on the
image's sky, :func:`~vo.images.subtract.common.noise_correlation`): ``V_r k_r^2`` becomes
``c_r V_r k_r^2`` and so on, and ``score`` is divided by the matching background factor.  Without
it the score's sky rms was 1.08-1.12 on DemoCam (a 5-sigma threshold was really 4.5 sigma).

Cost on a 2048x4096 CCD: 4 full-size real FFTs forward (N, R, V_n, V_r), 4 inverse (D, S_n,
S_r, V), and 4 kernel transforms (P_n, P_r, k_n^2, k_r^2) done as row transforms of the few
non-zero rows followed by column transforms (about half a full FFT each). Kernel spectra for the
real-space kernels k_n, k_r and P_D come from a small grid (the kernels are compact). The PSFs are
each image's model at the CCD centre (no spatial variation of the kernels).  Everything else is
a few in-place float32 / complex64 passes: S_n^ and S_r^ reuse the two products of D^
(``k_n^ = X F_r P_r^ / den`` with ``X = F_r F_n conj(P_r^ P_n^) / den``), spectra and maps are
overwritten where they are no longer needed, and full-size scratch arrays are reused (on
2048x4096 every new array costs page faults: about as much as a pass over it).

The per-pixel error of ``diff`` is the local approximation
``sqrt(V_n sum(k_Dn^2) + V_r sum(k_Dr^2)) / F_D`` (exact where the variance varies slowly
over the kernel, i.e. everywhere but the cores of bright stars); ``score_corr`` uses the exact
convolution.
"""

from __future__ import annotations

import numpy as np
import scipy.fft as sfft

from vo.images.subtract.common import Difference, Prepared, correlation_factor, robust_std

EPS = 1e-12


def centred_stamp(psf_model, shape: tuple[int, int], half: int) -> np.ndarray:
    """Unit-sum PSF stamp (2 half + 1 square, float64) of ``psf_model`` at the image centre."""
    from vo.images.subtract.tiles import unit_stamp

    ny, nx = shape
    return unit_stamp(psf_model, (nx - 1) // 2, (ny - 1) // 2, half)


def kernel_rfft2(stamp: np.ndarray, shape: tuple[int, int], workers: int = 1) -> np.ndarray:
    """rfft2 over the full grid ``shape`` of a centred odd stamp placed with its centre at (0, 0).

    Same result as ``rfft2`` of the zero-padded, wrapped stamp, but only the stamp's non-zero rows
    are transformed along x (the column transforms remain): about half the cost of a full rfft2.
    """
    ny, nx = shape
    k = stamp.shape[0]
    h = k // 2
    rows = np.zeros((k, nx), np.float32)
    cols = np.arange(-h, h + 1) % nx
    rows[:, cols] = stamp  # columns wrapped so the centre lands on x = 0
    rx = sfft.rfft(rows, axis=1, workers=workers)
    full = np.zeros((ny, rx.shape[1]), np.complex64)
    full[np.arange(-h, h + 1) % ny] = rx
    return sfft.fft(full, axis=0, overwrite_x=True, workers=workers)


def _abs2(z: np.ndarray, scale: float) -> np.ndarray:
    """``scale^2 |z|^2`` (float32) of a complex64 array: ``np.abs`` (one fast pass) squared in place."""
    out = np.abs(z)
    out *= np.float32(scale)
    np.multiply(out, out, out=out)
    return out


def _irfft2(a: np.ndarray, shape: tuple[int, int], workers: int = 1) -> np.ndarray:
    """``scipy.fft.irfft2(a, s=shape)`` with ``a`` overwritten: the column transforms in place,
    then the row c2r (irfft2 itself works on a copy: about 30% slower).  The same values (bitwise
    on power-of-2 shapes such as 4096 x 2048, else to float32 round-off)."""
    a = sfft.ifft(a, axis=0, overwrite_x=True, workers=workers)
    return sfft.irfft(a, n=shape[1], axis=1, overwrite_x=True, workers=workers)


def _gradient2(img: np.ndarray, out: np.ndarray, scratch: np.ndarray, add: bool = False) -> None:
    """``out = 4 |np.gradient(img)|^2`` (``out +=`` with ``add``), written into preallocated arrays.

    The differences are np.gradient's doubled (central ``f[i+1] - f[i-1]`` inside, twice the
    one-sided difference at the edges): exact power-of-2 scalings of np.gradient's values, so
    ``out / 4`` is its ``gx^2 + gy^2`` to the last bit, without its two full-size outputs and their
    temporaries.
    """
    gy = scratch if add else out
    np.subtract(img[2:], img[:-2], out=gy[1:-1])
    np.subtract(img[1], img[0], out=gy[0])
    np.subtract(img[-1], img[-2], out=gy[-1])
    gy[[0, -1]] *= 2
    np.multiply(gy, gy, out=gy)
    if add:
        out += gy
    gx = scratch
    np.subtract(img[:, 2:], img[:, :-2], out=gx[:, 1:-1])
    np.subtract(img[:, 1], img[:, 0], out=gx[:, 0])
    np.subtract(img[:, -1], img[:, -2], out=gx[:, -1])
    gx[:, [0, -1]] *= 2
    np.multiply(gx, gx, out=gx)
    out += gx


def small_grid_kernels(pn: np.ndarray, pr: np.ndarray, sn: float, sr: float, fn: float, fr: float) -> dict:
    """Real-space kernels of ZOGY on a small grid (compact kernels; float64).

    Returns k_n, k_r, k_dn, k_dr (D = k_dn * N - k_dr * R), P_D (unit sum), F_S, F_D, all
    centred stamps of the input size.
    """
    k = pn.shape[0]
    h = k // 2
    L = sfft.next_fast_len(2 * k)

    def spec(stamp):
        a = np.zeros((L, L))
        idx = np.arange(-h, h + 1) % L
        a[np.ix_(idx, idx)] = stamp
        return sfft.fft2(a)

    def real(s):
        a = np.real(sfft.ifft2(s))
        idx = np.arange(-h, h + 1) % L
        return a[np.ix_(idx, idx)]

    Pn, Pr = spec(pn), spec(pr)
    an2, ar2 = np.abs(Pn) ** 2, np.abs(Pr) ** 2
    den2 = sn ** 2 * fr ** 2 * ar2 + sr ** 2 * fn ** 2 * an2 + EPS
    den = np.sqrt(den2)
    f_d = fn * fr / np.sqrt(sn ** 2 * fr ** 2 + sr ** 2 * fn ** 2)
    out = {"k_n": real(fn * fr ** 2 * np.conj(Pn) * ar2 / den2),
           "k_r": real(fr * fn ** 2 * np.conj(Pr) * an2 / den2),
           "k_dn": real(fr * Pr / den), "k_dr": real(fn * Pn / den),
           "F_S": float(np.mean(fn ** 2 * fr ** 2 * an2 * ar2 / den2)), "F_D": float(f_d)}
    pd = real(fr * fn * Pr * Pn / (f_d * den))
    out["P_D"] = pd / pd.sum()
    return out


def zogy(p: Prepared, pn: np.ndarray, pr: np.ndarray, fr: float, sigma_ast: float,
         psf_error: float = 0.0, workers: int = 1) -> tuple[Difference, dict]:
    """ZOGY on prepared images (see the module docstring).

    Parameters
    ----------
    p : prepared images (sky subtracted, masked pixels inpainted) and their variance maps.
    pn, pr : centred unit-sum PSF stamps (odd size, same size) of the new and reference images.
    fr : flux ratio reference / new (F_n = 1).
    sigma_ast : astrometric registration noise per axis (pix).
    psf_error : fractional PSF-model error; adds ``(psf_error S_r)^2`` to V(S) (an extension
        of the paper's S_corr in the spirit of its astrometric term: the residual of a constant
        star scales with its flux, which S_r measures; transients absent from R are unaffected).

    Returns the :class:`Difference` (flags not yet grown: ``p.flags``) and a dict of kernel
    figures for the metadata.
    """
    shape = p.new.shape
    sn, sr, fn = p.sigma_new, p.sigma_ref, 1.0
    small = small_grid_kernels(pn, pr, sn, sr, fn, fr)
    f_s, f_d = small["F_S"], small["F_D"]
    c = {name: correlation_factor(small[name], rho)
         for name, rho in (("k_n", p.rho_new), ("k_r", p.rho_ref), ("k_dn", p.rho_new), ("k_dr", p.rho_ref))}

    # Fourier-space kernels on the rfft grid (complex64, built in place; scalars folded in):
    # Ka = F_r P_r^ / den and Kb = F_n P_n^ / den give D^ = Ka N^ - Kb R^, and with
    # X = F_r F_n conj(P_r^ P_n^) / den the docstring's k_n^ = X Ka and k_r^ = X Kb, so that
    # S_n^ = X (Ka N^) and S_r^ = X (Kb R^) reuse the two products of D^.
    Ka = kernel_rfft2(pr, shape, workers)
    Kb = kernel_rfft2(pn, shape, workers)
    inv_den = _abs2(Ka, sn * fr)     # sigma_n^2 F_r^2 |P_r^|^2 ...
    tmp = _abs2(Kb, sr * fn)
    inv_den += tmp                   # ... + sigma_r^2 F_n^2 |P_n^|^2 = den^2 (float32)
    inv_den += np.float32(EPS)
    np.sqrt(inv_den, out=inv_den)
    np.divide(np.float32(1), inv_den, out=inv_den)
    X = Ka * Kb
    np.conjugate(X, out=X)
    X *= np.multiply(inv_den, np.float32(fr * fn), out=tmp)
    Ka *= np.multiply(inv_den, np.float32(fr), out=tmp)
    Kb *= np.multiply(inv_den, np.float32(fn), out=tmp)
    del inv_den, tmp

    N = sfft.rfft2(p.new, workers=workers)
    N *= Ka                          # F_r P_r^ N^ / den
    R = sfft.rfft2(p.ref, workers=workers)
    R *= Kb                          # F_n P_n^ R^ / den
    del Ka, Kb
    D = _irfft2(N - R, shape, workers)
    N *= X
    Sn = _irfft2(N, shape, workers)
    del N
    R *= X
    Sr = _irfft2(R, shape, workers)
    del R, X

    V = sfft.rfft2(p.var_new, workers=workers)
    V *= kernel_rfft2(small["k_n"] ** 2 * c["k_n"], shape, workers)
    Vr = sfft.rfft2(p.var_ref, workers=workers)
    Vr *= kernel_rfft2(small["k_r"] ** 2 * c["k_r"], shape, workers)
    V += Vr
    del Vr
    V = _irfft2(V, shape, workers)
    buf = np.empty_like(V)           # full-size scratch arrays, reused (each new one costs page faults)
    if sigma_ast > 0:
        scratch = np.empty_like(V)
        _gradient2(Sn, buf, scratch)
        _gradient2(Sr, buf, scratch, add=True)
        del scratch
        buf *= np.float32(sigma_ast ** 2 / 4)  # _gradient2 gives 4 |grad|^2
        V += buf
    if psf_error > 0:
        np.multiply(Sr, Sr, out=buf)
        buf *= np.float32(psf_error ** 2)
        V += buf
    np.maximum(V, np.float32(1e-3 * f_s), out=V)  # var >= 0 (FFT round-off in empty regions)
    S = Sn
    S -= Sr
    del Sr
    sqrt_v = np.sqrt(V, out=V)
    a_n = sn ** 2 * float((small["k_n"] ** 2).sum())
    a_r = sr ** 2 * float((small["k_r"] ** 2).sum())
    bg_scale = (c["k_n"] * a_n + c["k_r"] * a_r) / (a_n + a_r)  # correlated / white background variance
    score_corr = S / sqrt_v
    flux_err = sqrt_v
    flux_err *= np.float32(1 / f_s)
    score = S * np.float32(1 / np.sqrt(f_s * bg_scale))
    flux = S
    flux *= np.float32(1 / f_s)
    diff = D
    diff *= np.float32(1 / f_d)
    # diff_err = sqrt(V_n sum(k_dn^2) c_dn + V_r sum(k_dr^2) c_dr) / F_D, the 1 / F_D^2 folded in
    var_d = np.multiply(p.var_new, np.float32((small["k_dn"] ** 2).sum() * c["k_dn"] / f_d ** 2))
    var_d += np.multiply(p.var_ref, np.float32((small["k_dr"] ** 2).sum() * c["k_dr"] / f_d ** 2), out=buf)
    del buf
    diff_err = np.sqrt(var_d, out=var_d)
    d = Difference(diff=diff, diff_err=diff_err, score=score, score_corr=score_corr, flux=flux,
                   flux_err=flux_err, psf=small["P_D"].astype(np.float32), flags=p.flags)
    d.kernel_grid = (small["k_dn"] / f_d).astype(np.float32)[None, None]
    d.tile_edges = (np.array([0, shape[0]]), np.array([0, shape[1]]))
    info = {"F_S": f_s, "F_D": f_d, "sigma_new": sn, "sigma_ref": sr, "flux_ratio": fr,
            "sigma_ast": float(sigma_ast), "psf_error": float(psf_error), "kernel_half": int(pn.shape[0] // 2),
            "corr_factors": {k: round(v, 4) for k, v in c.items()}}
    return d, info


__all__ = ["zogy", "centred_stamp", "kernel_rfft2", "small_grid_kernels", "robust_std"]
