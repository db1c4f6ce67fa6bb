"""ZTF DR light curves as a HATS catalog (hats-import, lsdb): cones read only the partitions
that overlap them and return exactly the objects a brute-force search of the file returns."""

from __future__ import annotations

import astropy.units as u
import numpy as np
import pandas as pd
import pytest
from astropy_healpix import HEALPix

from testdata import DATA as TEST_DATA
from vo.config import load_config
from vo.lightcurves.observatories.ztf import VirtualZTF
from vo.lightcurves.observatories.ztf_bulk import BulkIndex, ZTFError
from vo.lightcurves.observatories.ztf_hats import HatsIndex, convert_to_hats

PARQUET = TEST_DATA / "ztf_dr5_full" / "ztf_000250_zg_c01_q1_dr5.parquet"
PIXEL_THRESHOLD = 300            # objects per partition at most: the excerpt splits into many


@pytest.fixture(scope="module")
def objects() -> pd.DataFrame:
    return pd.read_parquet(PARQUET, columns=["objectid", "objra", "objdec"])


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    out = tmp_path_factory.mktemp("hats")
    return convert_to_hats([PARQUET], out, name="ztf_dr5_excerpt", pixel_threshold=PIXEL_THRESHOLD,
                           tmp_dir=out / "tmp")


def brute_force(objects, ra, dec, radius_deg) -> set:
    """Objects within the cone by the haversine formula, straight from the file."""
    ra1, dec1, ra2, dec2 = map(np.radians, (objects["objra"], objects["objdec"], ra, dec))
    h = np.sin((dec2 - dec1) / 2) ** 2 + np.cos(dec1) * np.cos(dec2) * np.sin((ra2 - ra1) / 2) ** 2
    sep = np.degrees(2 * np.arcsin(np.sqrt(h)))
    return set(objects.loc[sep <= radius_deg, "objectid"])


def test_conversion_keeps_every_object(catalog, objects):
    index = HatsIndex(catalog)
    assert index.n_partitions >= 10
    everything = index.catalog.compute(progress_bar=False)
    assert len(everything) == len(objects) == 5449
    assert set(everything["objectid"]) == set(objects["objectid"])


@pytest.mark.parametrize("k", [0, 1234, 4321])
def test_cone_of_a_tenth_of_a_degree_is_exact_and_reads_only_its_partitions(catalog, objects, k):
    index = HatsIndex(catalog)
    ra, dec = float(objects["objra"].iloc[k]), float(objects["objdec"].iloc[k])
    table, meta = index.query(ra, dec, 360.0)
    assert set(table["oid"]) == brute_force(objects, ra, dec, 0.1)
    n_read = meta["partitions_read"]
    assert 1 <= n_read < index.n_partitions
    # the partitions read are those whose HEALPix pixel overlaps the cone, by astropy-healpix
    # (independent of lsdb's own cone), and they hold every object of the brute-force search
    overlapping = set()
    for p in index.catalog.get_healpix_pixels():
        hp = HEALPix(nside=2 ** p.order, order="nested")
        if p.pixel in set(hp.cone_search_lonlat(ra * u.deg, dec * u.deg, 0.1 * u.deg).tolist()):
            overlapping.add((p.order, p.pixel))
    assert n_read == len(overlapping)
    # the rows are the bulk mode's rows for the same cone
    bulk, _ = BulkIndex(PARQUET.parent).query(ra, dec, 360.0)
    pd.testing.assert_frame_equal(table.reset_index(drop=True), bulk.reset_index(drop=True), check_dtype=False)


def test_observatory_in_hats_mode_reads_each_batch_once(catalog, objects, tmp_path):
    cfg = load_config(overrides={"ZTF": {"mode": "hats", "hats_dir": str(catalog), "radius": 3.0},
                                 "project": {"data_root": str(tmp_path)}})
    obs = VirtualZTF.from_config(cfg)
    targets = pd.DataFrame({"name": [f"T{k}" for k in (5, 50, 500)],
                            "ra": objects["objra"].iloc[[5, 50, 500]].to_numpy(),
                            "dec": objects["objdec"].iloc[[5, 50, 500]].to_numpy(), "mag": np.nan})
    manifest = obs.download_all_sources(targets, tmp_path / "ZTF_photometry_RA000.h5")
    assert [e["status"] for e in manifest["sources"]] == ["downloaded"] * 3
    lcs = obs.reduce_store(tmp_path / "ZTF_photometry_RA000.h5", targets)
    assert {lc.attrs["source_name"] for lc in lcs} <= {"T5", "T50", "T500"} and lcs
    assert "hats_dir" in obs.download_params()
    with pytest.raises(ZTFError, match="not a HATS catalog"):
        HatsIndex(tmp_path)
