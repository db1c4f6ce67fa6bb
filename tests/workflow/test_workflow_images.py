"""The image pipeline through Snakemake on DemoCam: products, database rows, reruns."""

import sqlite3

import numpy as np
import pytest
import yaml
from astropy.io import fits

from workflow_helpers import job_counts, smk

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("imgdata")
    cfgfile = root / "img.yaml"
    cfgfile.write_text(yaml.safe_dump({
        "project": {"name": "IMGTEST", "obs_names": []},
        "images": {"enabled": True},
        "DemoCam": {"n_ccds": 1, "n_exposures": 3, "reference_epochs": 2, "ccd_shape": [512, 512],
                    "n_bias": 3, "n_flats": 3},
    }))
    smk(["--cores", "2", "--configfile", str(cfgfile)], root)
    return root, cfgfile


def test_every_ccd_is_calibrated_and_ingested(run):
    root, _ = run
    proj = root / "IMGTEST"
    zps = sorted(proj.glob("zero_point-*/*/*.zp.fits"))
    assert len(zps) == 3
    for f in zps:
        h = fits.getheader(f)
        assert h["ZP_OK"] and 25 < h["ZP"] < 35 and h["VO_STEP"] == "zero_point"
    for f in proj.glob("astrometry-*/*/*.wcs.fits"):
        assert fits.getheader(f)["ASTR_OK"]
    con = sqlite3.connect(root / "vo.sqlite")
    n = {t: con.execute(f"select count(*) from {t}").fetchone()[0]
         for t in ("exposures", "images", "source_lists", "psfs", "world_coordinates", "zero_points",
                   "catalog_excerpts")}
    assert n["exposures"] == 3 and n["images"] == 3 and n["zero_points"] == 3, n
    assert n["catalog_excerpts"] >= 1


def test_nothing_to_do_afterwards(run):
    root, cfgfile = run
    out = smk(["-n", "--configfile", str(cfgfile)], root)
    assert "Nothing to be done" in out.stdout + out.stderr


def test_extraction_change_reruns_only_extraction_and_after(run):
    root, cfgfile = run
    changed = root / "changed.yaml"
    changed.write_text(yaml.safe_dump({"extraction": {"minarea": 6}}))
    out = smk(["-n", "--configfile", str(cfgfile), str(changed)], root)
    counts = job_counts(out.stdout + out.stderr)
    assert {"extract", "astrometry", "zero_point", "ingest_images"} <= set(counts), counts
    assert not {"preprocess", "master_bias", "master_flat", "simulate_exposure"} & set(counts), counts


def test_new_epoch_is_subtracted_detected_measured_and_scored(run):
    """Reference from epochs 0-1 coadded on the grid of new epoch 2: difference, candidates,
    measurements, scores."""
    from vo.images.realbogus.score import read_scores
    from vo.images.subtract import read_difference

    root, _ = run
    proj = root / "IMGTEST"
    from vo.images.reference.coadd import read_reference

    refs = sorted(proj.glob("references-*/dc_f00_r_002/C01.ref.image.fits"))  # on the new image's grid
    assert len(refs) == 1
    ref = read_reference(str(refs[0]).replace(".image.fits", ""))
    assert ref.n_images == 2 and sorted(ref.meta["inputs"]) == ["DemoCam dc_f00_r_000 C01", "DemoCam dc_f00_r_001 C01"]
    diff = read_difference(next(proj.glob("subtraction-*/dc_f00_r_002/C01.sub.fits")))
    good = diff.flags == 0
    assert 0.8 < float(diff.score_corr[good].std()) < 1.6
    assert next(proj.glob("rb_training-*/democam_rb_model.json")).stat().st_size > 0
    scores = read_scores(next(proj.glob("scoring-*/dc_f00_r_002/C01.scores.fits")))
    assert len(scores) > 0 and ((scores["score"] >= 0) & (scores["score"] <= 1)).all()


def test_alerts_written_for_real_detections_with_objects(run):
    from fastavro import reader

    root, _ = run
    proj = root / "IMGTEST"
    alert_file = next(proj.glob("alerts-*/dc_f00_r_002.alerts.avro"))
    with open(alert_file, "rb") as f:
        packets = list(reader(f))
    con = sqlite3.connect(root / "vo.sqlite")
    names = {r[0] for r in con.execute("select name from objects")}
    n_real = con.execute("select count(*) from measurements where object_id is not null").fetchone()[0]
    assert len(packets) == n_real > 0
    assert {p["objectId"] for p in packets} <= names


def test_forced_photometry_and_efficiency_summary(run):
    """Each new exposure has a forced-photometry table of the known objects it did not detect
    (HDU FORCED, one row per object, none of them detected here) and the run an efficiency summary."""
    from astropy.table import Table

    root, _ = run
    proj = root / "IMGTEST"
    forced = Table.read(next(proj.glob("alerts-*/dc_f00_r_002.forced.fits")), hdu="FORCED")
    assert {"object", "ra", "dec", "mjd", "flux", "flux_err", "limmag"} <= set(forced.colnames)
    con = sqlite3.connect(root / "vo.sqlite")
    detected_here = {r[0] for r in con.execute(
        "select o.name from measurements m join objects o on m.object_id = o.id join cutouts c on m.cutouts_id = c.id "
        "join subtractions s on c.subtraction_id = s.id join images i on s.image_id = i.id "
        "join exposures e on i.exposure_id = e.id where e.name = 'dc_f00_r_002'")}
    assert not set(forced["object"]) & detected_here
    summary = Table.read(next(proj.glob("injection-*/efficiency_summary.fits")), hdu="EFFICIENCY")
    assert summary["n_injected"].sum() > 0 and np.nanmax(summary["efficiency"]) > 0.8
    assert next(proj.glob("injection-*/efficiency_summary.png")).stat().st_size > 1000

