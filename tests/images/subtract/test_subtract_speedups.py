"""The in-place / fused pieces of the subtraction give the values of the plain numpy and scipy
expressions they replace: sep's in-place background subtraction, the doubled-difference gradient
norm, the in-place inverse FFT, the window OR along either axis and in-place inpainting."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.fft as sfft
from scipy import ndimage

from vo.images.extract.background import measure_background, subtract_background
from vo.images.subtract.common import _or_window, inpaint_many
from vo.images.subtract.zogy import _gradient2, _irfft2


def sky(shape, rng):
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return (100 + 0.05 * xx + 0.02 * yy + rng.normal(0, 5, shape)).astype(np.float32)


def test_subtract_background_equals_measured_map():
    rng = np.random.default_rng(2)
    data = sky((300, 260), rng)
    mask = rng.random(data.shape) < 0.05
    data[mask] = 0  # masked pixels finite, as prepare leaves them
    expected = data - measure_background(data, mask, 32, 3).bg
    subtract_background(data, mask, 32, 3)
    np.testing.assert_array_equal(data, expected)
    with pytest.raises(ValueError, match="float32"):
        subtract_background(data.astype(np.float64), mask, 32, 3)
    with pytest.raises(ValueError, match="C-contiguous"):
        subtract_background(data[:, ::2], None, 32, 3)


@pytest.mark.parametrize("shape", [(2, 2), (7, 5), (130, 97)])
def test_gradient2_is_four_times_numpy_gradient_norm(shape):
    rng = np.random.default_rng(shape[0])
    a, b = (rng.normal(0, 50, shape).astype(np.float32) for _ in range(2))
    out, scratch = np.empty_like(a), np.empty_like(a)
    _gradient2(a, out, scratch)
    gy, gx = np.gradient(a)
    np.testing.assert_array_equal(out / 4, gx * gx + gy * gy)  # exact: power-of-2 scalings
    _gradient2(b, out, scratch, add=True)
    gy2, gx2 = np.gradient(b)
    np.testing.assert_allclose(out / 4, gx * gx + gy * gy + gx2 * gx2 + gy2 * gy2, rtol=1e-6)


@pytest.mark.parametrize("shape", [(64, 48), (60, 45)])
def test_irfft2_in_place_equals_scipy(shape):
    img = np.random.default_rng(1).normal(0, 10, shape).astype(np.float32)
    spec = sfft.rfft2(img)
    expected = sfft.irfft2(spec, s=shape)
    got = _irfft2(spec.copy(), shape)
    assert got.dtype == expected.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6 * np.abs(img).max())  # float32 round-off
    if shape == (64, 48):  # powers of 2 (like 4096 x 2048): the very same operations
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("axis", [0, 1])
@pytest.mark.parametrize("size", [1, 3, 11, 13])
def test_or_window_equals_maximum_filter(axis, size):
    rng = np.random.default_rng(size)
    bits = rng.random((90, 70)) < 0.02
    got = _or_window(bits, size, axis)
    expected = ndimage.maximum_filter1d(bits.view(np.uint8), size, axis=axis, mode="constant") > 0
    assert got.shape == bits.shape and got.flags.c_contiguous
    np.testing.assert_array_equal(got, expected)


def test_inpaint_overwrite_equals_copy():
    rng = np.random.default_rng(4)
    shape = (120, 100)
    mask = rng.random(shape) < 0.03
    mask[:, :25] = True  # a wide hole: pixels set to 0 without the gather
    mask[50:55, 95:] = True  # against the right edge: clipped windows
    imgs = [rng.normal(0, 3, shape).astype(np.float32) for _ in range(2)]
    expected = inpaint_many(imgs, mask, 1.4)
    same = [img.copy() for img in imgs]
    got = inpaint_many(same, mask, 1.4, overwrite=True)
    for g, s, e, img in zip(got, same, expected, imgs):
        assert g is s
        np.testing.assert_array_equal(g, e)
        np.testing.assert_array_equal(g[~mask], img[~mask])
