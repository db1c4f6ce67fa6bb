"""vo.images.reference.pairing: references chosen by filter and footprint overlap on the sky
(never by camera or CCD name), under each reference policy."""

from __future__ import annotations

import numpy as np
import pytest

from vo.images.reference.pairing import (ReferencePolicyError, coadd_grid, grid_wcs, image_table,
                                         overlap_fraction, plan_references)
from vo.sky import inverse_gnomonic

SIZE = 0.1  # deg, side of a square test footprint


def square(ra0: float, dec0: float, dx: float = 0.0, dy: float = 0.0, size: float = SIZE, rot: float = 0.0):
    """Corners (4, 2; deg) of a square of side ``size`` deg centred ``dx``, ``dy`` deg off (ra0, dec0)."""
    h = size / 2
    xy = np.array([[-h, -h], [h, -h], [h, h], [-h, h]])
    c, s = np.cos(np.radians(rot)), np.sin(np.radians(rot))
    xy = xy @ np.array([[c, s], [-s, c]]) + [dx, dy]
    ra, dec = inverse_gnomonic(xy[:, 0], xy[:, 1], ra0, dec0)
    return np.column_stack([ra, dec])


def row(exposure, ccd, filt, mjd, corners, seeing=1.0, depth=23.0):
    return {"exposure": exposure, "ccd": ccd, "filter": filt, "mjd": mjd, "seeing": seeing, "depth": depth,
            "corners": corners, "shape": (400, 300)}


@pytest.mark.parametrize("ra0,dec0", [(150.0, 2.0), (359.98, 0.0), (10.0, 85.0)])
def test_overlap_fraction_of_shifted_and_rotated_squares(ra0, dec0):
    t = image_table([row("a", "1", "r", 0, square(ra0, dec0)),
                     row("b", "1", "r", 0, square(ra0, dec0, dx=SIZE / 2)),
                     row("c", "1", "r", 0, square(ra0, dec0, dx=2 * SIZE)),
                     row("d", "1", "r", 0, square(ra0, dec0, rot=45.0)),
                     row("e", "1", "r", 0, square(ra0, dec0, dx=SIZE / 4, dy=SIZE / 4))])
    assert overlap_fraction(t, 0, 0) == pytest.approx(1.0, abs=1e-9)
    assert overlap_fraction(t, 0, 1) == pytest.approx(0.5, abs=0.01)
    assert overlap_fraction(t, 0, 2) == 0.0
    # a square rotated 45 deg about the same centre covers 2 (sqrt 2 - 1) = 0.828 of it (an octagon)
    assert overlap_fraction(t, 0, 3) == pytest.approx(2 * (np.sqrt(2) - 1), abs=0.03)  # sampled edges
    assert overlap_fraction(t, 0, 4) == pytest.approx(0.5625, abs=0.01)


def _night():
    """Two fields; in field A the reference epochs fall on CCD S4 and the new ones on S9 (as in the
    Legacy Surveys' testcase6), plus a CCD N1 next to A that no reference covers; field B far away."""
    a, b = (36.0, -5.0), (40.0, -5.0)
    return [row("e1", "S4", "g", 57000.0, square(*a), seeing=1.4),
            row("e2", "S4", "g", 57100.0, square(*a, dx=0.01), seeing=0.9),
            row("e3", "S4", "r", 57100.1, square(*a), seeing=1.0),
            row("e4", "S9", "g", 58400.0, square(*a, dx=0.02)),
            row("e4", "N1", "g", 58400.0, square(*a, dx=0.02 + 1.2 * SIZE)),
            row("e5", "S9", "r", 58401.0, square(*a, dy=0.03)),
            row("b1", "S1", "g", 57001.0, square(*b), seeing=1.1),
            row("b2", "N5", "g", 58402.0, square(*b, dy=-0.02))]


def test_references_are_chosen_by_the_sky_not_the_ccd_name():
    p = plan_references(image_table(_night()), {"select": "before", "before": "2018-01-01", "min_images": 1})
    assert p.candidates == ["e1", "b1", "e2", "e3"] and list(p.new) == ["e4", "e5", "b2"]
    assert p.references[("e4", "S9")] == [("e2", "S4"), ("e1", "S4")]  # same filter, best seeing first
    assert p.references[("e4", "N1")] == []  # nothing covers it: the references step says so
    assert p.references[("e5", "S9")] == [("e3", "S4")]  # r only
    assert p.references[("b2", "N5")] == [("b1", "S1")]
    assert p.new == {"e4": ("p00", "g"), "e5": ("p00", "r"), "b2": ("p01", "g")}
    assert p.patches["b1"] == "p01" and p.unreferenced == []


def test_policies_select_list_range_first_best_and_rank():
    t = image_table(_night())
    listed = plan_references(t, {"select": "list", "images": ["e2", "b1"], "min_images": 1})
    assert listed.references[("e4", "S9")] == [("e2", "S4")]
    assert "e1" in listed.new and "e3" in listed.unreferenced  # e3 (r) has no r reference listed
    ranged = plan_references(t, {"select": "range", "date_range": [57050, "2015-12-31"], "min_images": 1})
    assert ranged.candidates == ["e2", "e3"] and "e1" not in ranged.new  # before the range: unused
    first = plan_references(t, {"select": "first", "first": 1, "min_images": 1})
    assert first.candidates == ["e1", "b1", "e3"] and first.references[("e2", "S4")] == [("e1", "S4")]
    best = plan_references(t, {"select": "before", "before": 58000, "best": 1, "rank": "time", "min_images": 1})
    assert best.references[("e4", "S9")] == [("e2", "S4")]  # the closer in time
    two = plan_references(t, {"select": "before", "before": 58000, "min_images": 2})
    assert list(two.new) == ["e4"] and sorted(two.unreferenced) == ["b2", "e5"]


def test_bad_policies_name_the_key():
    t = image_table(_night())
    with pytest.raises(ReferencePolicyError, match="references.before"):
        plan_references(t, {"select": "before"})
    with pytest.raises(ReferencePolicyError, match=r"references.before: 'last winter'"):
        plan_references(t, {"select": "before", "before": "last winter"})
    with pytest.raises(ReferencePolicyError, match=r"references.images: .*'nope'"):
        plan_references(t, {"select": "list", "images": ["nope"]})
    rows = _night()
    rows[0]["depth"] = float("nan")
    with pytest.raises(ReferencePolicyError, match="rank is 'depth' but image e1 S4 has no depth"):
        plan_references(image_table(rows), {"select": "before", "before": 58000, "rank": "depth"})


def test_many_images_plan_quickly():
    """A night of 100 exposures x 62 CCDs against 5 earlier epochs (k-d tree, then exact overlaps)."""
    import time

    rows = []
    for k in range(105):
        ra = 30.0 + (k % 21) * 2.5
        for c in range(62):
            rows.append(row(f"x{k:03d}", f"c{c}", "r", 58000.0 + k, square(ra, (c - 31) * 0.12, dx=0.001 * (k // 21))))
    t0 = time.perf_counter()
    p = plan_references(image_table(rows), {"select": "first", "first": 1, "min_images": 1})
    assert len(p.new) == 84 and all(len(v) == 1 for v in p.references.values())
    assert time.perf_counter() - t0 < 120  # a loose bound against an accidental O(n^2) Python loop


@pytest.mark.parametrize("rot", [0.0, 30.0, 90.0])
def test_the_coadd_grid_is_the_planned_footprint_grown_by_the_margin(rot):
    """The grid of a new image (from its header footprint): its corner pixels land on the
    footprint's corners, the same pixel scale and orientation, the margin added on every side."""
    from astropy.wcs import WCS
    from vo.sky import corners

    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval, w.wcs.crpix = [150.0, 2.0], [120.0, 210.0]
    c, s = np.cos(np.radians(rot)), np.sin(np.radians(rot))
    w.wcs.cd = 0.25 / 3600 * np.array([[-c, s], [s, c]])
    t = image_table([{**row("n", "1", "r", 0, corners(w, 300, 400)), "shape": (400, 300)}])
    grid, shape = grid_wcs(coadd_grid(t, 0, 0.0))
    assert shape == (400, 300)
    x = np.array([-0.5, 299.5, 299.5, -0.5, 149.5])
    y = np.array([-0.5, -0.5, 399.5, 399.5, 199.5])
    ra, dec = grid.pixel_to_world_values(x, y)
    ra0, dec0 = w.pixel_to_world_values(x, y)
    assert np.allclose(ra, ra0, atol=1e-7) and np.allclose(dec, dec0, atol=1e-7)  # < 0.4 mas
    wide, shape = grid_wcs(coadd_grid(t, 0, 10.0))  # 10" = 40 pix more on every side
    assert shape == (480, 380)
    assert np.allclose(wide.pixel_to_world_values(40 + x, 40 + y), (ra0, dec0), atol=1e-7)
