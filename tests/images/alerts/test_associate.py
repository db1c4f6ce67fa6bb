"""Association of measurements to objects and object names (pure, no database)."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.table import Table

from vo.db.spatial import great_circle_deg
from vo.sky import (assign_names, associate, counter_letters, group_positions, match_existing,
                                 mjd_year, object_name)


def test_names():
    assert counter_letters(0) == "aaaa"
    assert counter_letters(1) == "aaab"
    assert counter_letters(26) == "aaba"
    assert counter_letters(26 ** 4 - 1) == "zzzz"
    assert counter_letters(26 ** 4) == "baaaa"  # overflow keeps names unique and sortable by length
    assert object_name(2024, 27) == "VO24aabb"
    assert object_name(2100, 0) == "VO00aaaa"
    names = [counter_letters(i) for i in range(2000)]
    assert len(set(names)) == 2000 and names == sorted(names)  # monotonic
    assert mjd_year([60310.0, 60000.0, 51544.0]).tolist() == [2024, 2023, 2000]
    with pytest.raises(ValueError, match=">= 0"):
        counter_letters(-1)
    assert assign_names([2024, 2023, 2024], {2024: 5}) == (["VO24aaaf", "VO23aaaa", "VO24aaag"],
                                                            {2024: 7, 2023: 1})


def _truth(seed=11, n_obj=200, n_epochs=6, scatter=0.15):
    """Objects spread over a 0.5 deg field across RA = 0, observed at several epochs."""
    rng = np.random.default_rng(seed)
    ra0 = rng.uniform(-0.25, 0.25, n_obj) % 360.0
    dec0 = rng.uniform(-30.25, -29.75, n_obj)
    ra, dec, mjd, truth = [], [], [], []
    for e in range(n_epochs):
        seen = rng.random(n_obj) < 0.7
        d = rng.normal(0, scatter / 3600, (2, seen.sum()))
        ra.append((ra0[seen] + d[0] / np.cos(np.radians(dec0[seen]))) % 360.0)
        dec.append(dec0[seen] + d[1])
        mjd.append(np.full(seen.sum(), 60300.0 + 3 * e))
        truth.append(np.flatnonzero(seen))
    return ra0, dec0, *(np.concatenate(x) for x in (ra, dec, mjd, truth))


def test_associate_recovers_true_objects_epoch_by_epoch():
    ra0, dec0, ra, dec, mjd, truth = _truth()
    objects = Table(names=("name", "ra", "dec"), dtype=("U16", float, float))
    counters: dict = {}
    assigned = np.empty(ra.size, dtype="U16")
    for t in np.unique(mjd):  # one exposure after the other, as the workflow does
        sel = mjd == t
        names, created, counters = associate(ra[sel], dec[sel], mjd[sel], objects, 1.0, counters)
        assigned[sel] = names
        for row in created:
            objects.add_row((row["name"], row["ra"], row["dec"]))
    # one object per true object, and every measurement of a true object got that object
    seen_truth = np.unique(truth)
    assert len(objects) == seen_truth.size
    for k in seen_truth:
        assert np.unique(assigned[truth == k]).size == 1
    assert np.unique(assigned).size == seen_truth.size
    assert sum(counters.values()) == len(objects)
    # objects sit at their creating measurement: within a few scatter of the truth
    row = {n: i for i, n in enumerate(objects["name"])}
    k_of = {assigned[i]: truth[i] for i in range(ra.size)}
    i_obj = np.array([row[n] for n in k_of])
    k = np.array(list(k_of.values()))
    sep = great_circle_deg(objects["ra"][i_obj], objects["dec"][i_obj], ra0[k], dec0[k]) * 3600
    assert sep.max() < 0.8


def test_batch_groups_new_epochs_and_orders_names():
    # three epochs of one new object (within 0.3") and two unrelated ones, in one batch
    ra = np.array([10.0, 10.0 + 0.2 / 3600, 10.0 - 0.1 / 3600, 50.0, 30.0])
    dec = np.array([0.0, 0.1 / 3600, 0.0, 1.0, 1.0])
    mjd = np.array([60002.0, 60001.0, 60003.0, 60001.5, 60001.5])
    names, created, counters = associate(ra, dec, mjd, None, 1.0, {2023: 3})
    assert len(created) == 3
    # numbered by first detection, then ra: object at ra 10 (mjd 60001), then ra 30, then ra 50
    assert names.tolist() == ["VO23aaad"] * 3 + ["VO23aaaf", "VO23aaae"]
    assert created["n_detections"].tolist() == [3, 1, 1]
    assert created["mjd_first"].tolist() == [60001.0, 60001.5, 60001.5]
    assert counters == {2023: 6}
    # mean position of the group
    assert abs(created["ra"][0] - 10.0 - (0.1 / 3 / 3600)) < 1e-9


def test_match_existing_nearest_within_radius_and_ra_wrap():
    obj_ra, obj_dec = np.array([359.9999, 0.0005, 120.0]), np.array([0.0, 0.0, 45.0])
    ra = np.array([0.0000, 0.0004, 120.0 + 0.9 / 3600 / np.cos(np.radians(45)), 120.0 + 1.1 / 3600 / np.cos(np.radians(45))])
    dec = np.array([0.0, 0.0, 45.0, 45.0])
    # 0.36" from obj 0 (across RA 0) / 0.36" from obj 1; 0.9" from obj 2; 1.1" from obj 2 (outside)
    assert match_existing(ra, dec, obj_ra, obj_dec, 1.0).tolist() == [0, 1, 2, -1]
    assert match_existing(ra, dec, obj_ra[:0], obj_dec[:0], 1.0).tolist() == [-1] * 4
    assert group_positions([], [], 1.0).size == 0


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="row 1"):
        associate([1.0, np.nan], [0.0, 0.0], 60000.0, None, 1.0)
    with pytest.raises(ValueError, match="dec=95"):
        associate([1.0], [95.0], 60000.0, None, 1.0)
    with pytest.raises(ValueError, match="radius"):
        associate([1.0], [0.0], 60000.0, None, 0.0)
    with pytest.raises(ValueError, match="lacks columns"):
        associate([1.0], [0.0], 60000.0, Table({"ra": [1.0], "dec": [0.0]}), 1.0)
    names, created, _ = associate([], [], [], None, 1.0)
    assert names.size == 0 and len(created) == 0
