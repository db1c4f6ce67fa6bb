"""The fast inpainting (vo.images.subtract.common.inpaint / inpaint_many, used by prepare) gives
the SAME pixels (bitwise) as the original per-image implementation, pasted below as the
reference: random masks with scattered pixels, blobs and wide masked borders (most masked pixels
then have no good neighbour and are set to 0 without the gather), masks touching the image edges,
several Gaussian widths, NaNs under the mask, and both images of a pair at once.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from vo.images.subtract import common
from vo.images.subtract.common import inpaint, inpaint_many, parameters, prepare


# --- reference: vo.images.subtract.common.inpaint before the speed-up (verbatim) ---------------
REF_CHUNK = 65536


def ref_inpaint(img: np.ndarray, mask: np.ndarray, sigma: float) -> np.ndarray:
    """Replace the masked pixels of ``img`` by a Gaussian-weighted mean of the unmasked neighbours.

    Normalised convolution (``G * (img m) / G * m``, ``m`` = good pixels, ``G`` a Gaussian of
    ``sigma`` pix truncated at 3 sigma) evaluated at the masked pixels only (a gather of their
    neighbourhoods: the cost grows with the masked area, not the image size); pixels with almost no
    good neighbour (holes wider than a few sigma) get 0, the sky level of a sky-subtracted image.
    Why not a library inpainting (astropy's interpolate_replace_nans, skimage biharmonic): they
    convolve or solve over the whole CCD, much slower on 2048x4096, and a smooth local mean is all
    that is needed to keep bad values from ringing through the FFTs.
    """
    iy, ix = np.nonzero(mask)
    if iy.size == 0:
        return img
    r = max(int(np.ceil(3 * sigma)), 1)
    k = np.arange(-r, r + 1)
    dy, dx = (a.ravel() for a in np.meshgrid(k, k, indexing="ij"))
    g = np.exp(-(dx ** 2 + dy ** 2) / (2 * sigma ** 2)).astype(np.float32)
    ny, nx = img.shape
    out = img.copy()
    for lo in range(0, iy.size, REF_CHUNK):
        yy = iy[lo:lo + REF_CHUNK, None] + dy
        xx = ix[lo:lo + REF_CHUNK, None] + dx
        inside = (yy >= 0) & (yy < ny) & (xx >= 0) & (xx < nx)
        np.clip(yy, 0, ny - 1, out=yy)
        np.clip(xx, 0, nx - 1, out=xx)
        w = np.where(inside & ~mask[yy, xx], g, np.float32(0))
        den = w.sum(axis=1)
        num = (w * img[yy, xx]).sum(axis=1)
        out[iy[lo:lo + REF_CHUNK], ix[lo:lo + REF_CHUNK]] = np.where(
            den > 0.05 * g.sum(), num / np.maximum(den, 1e-12), np.float32(0))
    return out


# ------------------------------------------------------------------------------------------------


def random_mask(shape, rng, border=0, frac=0.01, n_blobs=20, edge_cols=False):
    """Scattered masked pixels, small rectangular blobs, an optional masked border of ``border``
    pix (the no-coverage frame of an aligned reference) and optional masked edge columns."""
    ny, nx = shape
    mask = rng.random(shape) < frac
    for _ in range(n_blobs):
        y, x = rng.integers(0, ny), rng.integers(0, nx)
        mask[y:y + rng.integers(1, 12), x:x + rng.integers(1, 12)] = True
    if border:
        mask[:border] = mask[-border:] = True
        mask[:, :border] = mask[:, -border:] = True
    if edge_cols:
        mask[:, :2] = True
        mask[-1] = True
    return mask


def same_bits(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape
    if np.issubdtype(a.dtype, np.floating):
        bits = np.uint32 if a.dtype == np.float32 else np.uint64
        np.testing.assert_array_equal(a.view(bits), b.view(bits))
    else:
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("sigma", [0.3, 1.0, 1.91, 3.4])
@pytest.mark.parametrize("border", [0, 3, 40])
def test_inpaint_matches_reference(sigma, border):
    rng = np.random.default_rng(int(sigma * 100) + border)
    shape = (301, 187)
    mask = random_mask(shape, rng, border=border, edge_cols=border == 0)
    img = rng.normal(5, 10, shape).astype(np.float32)
    expected = ref_inpaint(img, mask, sigma)
    got = inpaint(img, mask, sigma)
    same_bits(got, expected)
    assert not np.shares_memory(got, img)
    r = max(int(np.ceil(3 * sigma)), 1)
    if border > r:  # the skipped pixels exist and are 0, as in the reference
        assert (got[:border - r] == 0).all() and (expected[:border - r] == 0).all()
    # masked pixels really get a weighted mean (sigma 0.3: the 4 side neighbours weigh < 5% of
    # the kernel, so the reference sets every masked pixel to 0)
    assert ((mask & (got != img) & (got != 0)).sum() > 100) == (sigma >= 0.5)


@pytest.mark.parametrize("sigma", [1.0, 2.2])
def test_inpaint_many_pair_matches_two_reference_calls(sigma):
    rng = np.random.default_rng(7)
    shape = (256, 320)
    mask = random_mask(shape, rng, border=25, frac=0.02)
    new = rng.normal(0, 10, shape).astype(np.float32)
    ref = rng.normal(0, 3, shape).astype(np.float32) * np.float32(2)
    got_new, got_ref = inpaint_many((new, ref), mask, sigma)
    same_bits(got_new, ref_inpaint(new, mask, sigma))
    same_bits(got_ref, ref_inpaint(ref, mask, sigma))


def test_inpaint_chunking_and_float64(monkeypatch):
    """Several gather chunks give the same bits; a float64 image keeps its dtype and values."""
    rng = np.random.default_rng(3)
    shape = (200, 150)
    mask = random_mask(shape, rng, border=10, frac=0.05)
    img = rng.normal(0, 1, shape)
    expected = ref_inpaint(img, mask, 1.5)
    monkeypatch.setattr(common, "INPAINT_CHUNK", 997)
    same_bits(inpaint(img, mask, 1.5), expected)


def test_inpaint_nan_and_edge_cases():
    rng = np.random.default_rng(11)
    shape = (120, 90)
    mask = random_mask(shape, rng, border=15)
    img = rng.normal(0, 1, shape).astype(np.float32)
    img[mask & (rng.random(shape) < 0.3)] = np.nan  # NaN under the mask only
    got, expected = inpaint(img, mask, 1.2), ref_inpaint(img, mask, 1.2)
    np.testing.assert_array_equal(got, expected)  # NaN == NaN here
    assert np.isnan(got).sum() == np.isnan(expected).sum()
    # no masked pixel: a copy of the image
    none = np.zeros(shape, bool)
    same_bits(inpaint(img, none, 1.2), img)
    # everything masked but one pixel: only its neighbours within the cut get a value
    one = np.ones(shape, bool)
    one[60, 45] = False
    same_bits(inpaint(img, one, 1.2), ref_inpaint(img, one, 1.2))


def test_prepare_inpaints_both_images_like_the_reference():
    """prepare's inpainted images: unchanged good pixels, and the masked ones equal to the
    reference inpainting of the prepared image itself (only good pixels enter the mean)."""
    rng = np.random.default_rng(5)
    shape = (256, 256)
    mask_new = random_mask(shape, rng, frac=0.005, n_blobs=10)
    mask_ref = np.zeros(shape, bool)
    mask_ref[:30] = mask_ref[:, -20:] = True  # the aligned reference's no-coverage border

    def image(sky, noise, bad):
        sci = (sky + rng.normal(0, noise, shape)).astype(np.float32)
        weight = np.full(shape, 1 / noise ** 2, np.float32)
        weight[bad] = 0
        return SimpleNamespace(sci=sci, weight=weight, flags=np.zeros(shape, np.uint16))

    new, ref = image(100.0, 10.0, mask_new), image(50.0, 4.0, mask_ref)
    fwhm = 4.0
    p = prepare(new, ref, parameters(), fwhm)
    np.testing.assert_array_equal(p.mask, mask_new | mask_ref)
    sigma = fwhm / 2.355
    for got in (p.new, p.ref):
        assert got.dtype == np.float32
        same_bits(got, ref_inpaint(got, p.mask, sigma))
    assert (p.ref[:20, 100] == 0).all() and (p.new[:20, 100] == 0).all()  # beyond the cut: sky 0
    assert np.abs(p.ref[31, 5:200]).max() < 4.0 * 4  # a smooth mean of sky-subtracted pixels
