"""Cutouts (vo.images.detect.cutouts) on the synthetic scene of test_detect.py: stamps, edges, files."""

from __future__ import annotations

from dataclasses import replace

import h5py
import numpy as np
import pytest
from astropy.table import Table

from test_detect import BAD_COLUMN_FLAGGED, NAN_COLUMNS, synthetic_scene
from vo.images import flags as pixflags
from vo.images.detect.cutouts import (STAMPS, CutoutsError, make_cutouts, read_cutouts,
                               write_cutouts)
from vo.images.detect import detect_candidates


@pytest.fixture(scope="module")
def scene():
    d, new, ref, truth, psf, wcs = synthetic_scene()
    cands = detect_candidates(d, wcs=wcs)
    return d, new, ref, cands


@pytest.fixture(scope="module")
def cut(scene):
    d, new, ref, cands = scene
    return make_cutouts(cands, new, ref, d, size=41)


def test_stamps_are_the_image_pixels(scene, cut):
    d, new, ref, cands = scene
    n = len(cands)
    assert len(cut) == n and cut.size == 41
    for name in STAMPS:
        arr = getattr(cut, name)
        assert arr.shape == (n, 41, 41), name
    assert cut.new.dtype == cut.sub.dtype == cut.sub_weight.dtype == np.float32
    assert cut.sub_flags.dtype == np.uint16
    # stamps well inside the CCD equal the image slices around the nearest pixel
    inner = np.flatnonzero(~cut.candidates["off_edge"])
    assert len(inner) > 10
    for i in inner:
        x0, y0 = int(np.rint(cands["x"][i])), int(np.rint(cands["y"][i]))
        sl = (slice(y0 - 20, y0 + 21), slice(x0 - 20, x0 + 21))
        assert np.array_equal(cut.new[i], new.sci[sl], equal_nan=True)
        assert np.array_equal(cut.ref[i], ref.sci[sl], equal_nan=True)
        assert np.array_equal(cut.sub[i], d.diff[sl], equal_nan=True)
        assert np.array_equal(cut.new_flags[i], new.flags[sl])
        assert np.array_equal(cut.sub_flags[i], d.flags[sl])
        assert np.allclose(cut.sub_weight[i][np.isfinite(d.diff[sl])], 1 / d.diff_err[sl][np.isfinite(d.diff[sl])] ** 2)
        assert cut.candidates["x0"][i] == x0 and cut.candidates["y0"][i] == y0
    # the candidate table travels with the stamps
    assert np.array_equal(cut.candidates["snr"], cands["snr"])


def test_ccd_edges_padded_and_flagged(scene, cut):
    d, new, ref, cands = scene
    ny, nx = new.shape
    edge = np.flatnonzero(cut.candidates["off_edge"])
    # the source 2 pix from the bottom row and the one next to the NaN columns are among them
    assert np.any(cands["y"][edge] < 5) and np.any(cands["x"][edge] < NAN_COLUMNS + 6)
    for i in edge:
        x0, y0 = cut.candidates["x0"][i], cut.candidates["y0"][i]
        k = np.arange(-20, 21)
        off = ~(((y0 + k)[:, None] >= 0) & ((y0 + k)[:, None] < ny) & ((x0 + k)[None, :] >= 0) & ((x0 + k)[None, :] < nx))
        assert off.any()
        for name in ("new", "ref", "sub"):
            assert np.all(np.isnan(getattr(cut, name)[i][off])), name
            assert np.all(getattr(cut, f"{name}_weight")[i][off] == 0)
            assert np.all(getattr(cut, f"{name}_flags")[i][off] & pixflags.EDGE)
            assert np.all(getattr(cut, f"{name}_flags")[i][off] & pixflags.NAN)
            assert np.all(np.isfinite(getattr(cut, name)[i][~off & (getattr(cut, f"{name}_flags")[i] == 0)]))
    # the NaN columns of the CCD itself are NaN and flagged in the stamps (no crash, no fill)
    i = edge[np.argmin(cands["x"][edge])]
    assert np.isnan(cut.sub[i][:, :3]).all() and np.all(cut.new_flags[i][:, :3] & pixflags.NAN)


def test_corner_and_outside_positions_never_crash(scene):
    d, new, ref, _ = scene
    ny, nx = new.shape
    t = Table({"x": [0.0, nx - 1.0, -3.0, nx + 50.0], "y": [0.0, ny - 1.0, 5.0, ny + 50.0]})
    c = make_cutouts(t, new, ref, d, size=15)
    assert c.new.shape == (4, 15, 15) and c.candidates["off_edge"].all()
    assert np.isnan(c.new[3]).all() and np.all(c.sub_flags[3] == (pixflags.EDGE | pixflags.NAN))
    assert c.new[0][7, 7] == new.sci[0, 0] and c.new[1][7, 7] == new.sci[ny - 1, nx - 1]
    # no candidates: empty stamps of the right shape
    e = make_cutouts(t[:0], new, ref, d, size=15)
    assert e.new.shape == (0, 15, 15) and len(e) == 0


def test_flagged_column_is_in_the_flags(scene, cut):
    d, new, ref, cands = scene
    near = np.flatnonzero(np.abs(cands["x"] - BAD_COLUMN_FLAGGED) < 3)
    assert len(near) > 0
    for i in near:
        assert np.any(cut.new_flags[i][:, 20 + BAD_COLUMN_FLAGGED - cut.candidates["x0"][i]] & pixflags.BAD)


def test_write_read_roundtrip(tmp_path, cut):
    path = tmp_path / "x" / "c.cutouts.h5"
    write_cutouts(path, cut, {"step": "cutouts", "provenance_hash": "h1", "code_version": "1"})
    back = read_cutouts(path)
    for name in STAMPS:
        a, b = getattr(cut, name), getattr(back, name)
        assert a.dtype == b.dtype and np.array_equal(a, b, equal_nan=True), name
    assert back.candidates.colnames == cut.candidates.colnames
    for c in cut.candidates.colnames:
        assert np.array_equal(np.asarray(back.candidates[c]), np.asarray(cut.candidates[c])), c
    with h5py.File(path) as f:  # plain h5py sees the layout and the provenance
        assert f["sub"].shape == (len(cut), 41, 41) and f.attrs["step"] == "cutouts"
        assert f.attrs["provenance_hash"] == "h1" and f.attrs["n_candidates"] == len(cut)


def test_empty_roundtrip(tmp_path, scene):
    d, new, ref, cands = scene
    e = make_cutouts(cands[:0], new, ref, d, size=41)
    write_cutouts(tmp_path / "e.h5", e)
    back = read_cutouts(tmp_path / "e.h5")
    assert len(back) == 0 and back.new.shape == (0, 41, 41)
    assert "snr" in back.candidates.colnames


def test_bad_input_is_named(tmp_path, scene, cut):
    d, new, ref, cands = scene
    with pytest.raises(CutoutsError, match="odd"):
        make_cutouts(cands, new, ref, d, size=40)
    with pytest.raises(CutoutsError, match="sub_weight"):
        make_cutouts(cands, new, ref, replace(d, diff_err=d.diff_err[:, :-1]), size=41)
    bad = cands.copy()
    bad["x"][2] = np.nan
    with pytest.raises(CutoutsError, match=r"\[2\]"):
        make_cutouts(bad, new, ref, d)
    with pytest.raises(CutoutsError, match="no column 'y'"):
        make_cutouts(Table({"x": [1.0]}), new, ref, d)
    with pytest.raises(CutoutsError, match="missing.h5"):
        read_cutouts(tmp_path / "missing.h5")
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    with pytest.raises(CutoutsError, match="junk.h5"):
        read_cutouts(tmp_path / "junk.h5")
    with h5py.File(tmp_path / "part.h5", "w") as f:
        f["new"] = cut.new
    with pytest.raises(CutoutsError, match="missing datasets"):
        read_cutouts(tmp_path / "part.h5")
    # a failed write leaves no file behind
    broken = replace(cut, sub=cut.sub[:, :5])
    with pytest.raises(CutoutsError, match="sub"):
        write_cutouts(tmp_path / "w" / "broken.h5", broken)
    assert not any(p.name.startswith(".broken") or p.name == "broken.h5" for p in (tmp_path / "w").iterdir())
