"""grow_flags keeps every flag bit's meaning while growing it (a SATURATED ring stays SATURATED)."""

import numpy as np
from scipy import ndimage

from vo.images import flags as pf
from vo.images.subtract.common import grow_flags


def reference(flags, radius):
    """Per-bit maximum filter: the plain, slow definition."""
    out = flags.copy()
    size = 2 * radius + 1
    for bit in (1 << k for k in range(16)):
        b = ((flags & bit) != 0).astype(np.uint8)
        b = ndimage.maximum_filter1d(ndimage.maximum_filter1d(b, size, axis=0, mode="constant"), size,
                                     axis=1, mode="constant")
        out |= b.astype(np.uint16) * np.uint16(bit)
    for sl in (np.s_[:radius], np.s_[-radius:], np.s_[:, :radius], np.s_[:, -radius:]):
        out[sl] |= pf.EDGE
    return out


def test_grow_flags_matches_per_bit_definition():
    rng = np.random.default_rng(1)
    f = np.zeros((120, 90), np.uint16)
    f.flat[rng.integers(0, f.size, 150)] = rng.choice([1, 2, 4, 8, 16, 32, 256, 1024], 150)
    for r in (1, 2, 5, 9):
        np.testing.assert_array_equal(grow_flags(f, r), reference(f, r))


def test_saturated_ring_keeps_its_bit():
    f = np.zeros((41, 41), np.uint16)
    f[20, 20] = pf.SATURATED
    g = grow_flags(f, 3)
    assert g[17, 23] == pf.SATURATED and not (g[17:24, 17:24] & pf.COSMIC_RAY).any()
