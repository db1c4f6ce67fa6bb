"""Bad input to the transient steps (image pipeline II) is flagged and logged, never a crash.

Through Snakemake on DemoCam (1 CCD of 512x512, 2 reference epochs and 2 new ones): the
astrometry of one new exposure is made to fail after the fact (its WCS file replaced by a failed
solution, as the astrometry step writes it); the workflow then completes, every transient
product of that CCD is a skipped marker saying why, the other new exposure is processed as
usual, no temporary file is left, and ``snakemake -n`` has nothing to do.

With the rule bodies: a reference that does not overlap the new image and a reference with no
good input give skipped products (and the steps after them), with the reason in the files and
the log, and nothing else written; a new image whose zero point failed is still subtracted, with
the flux ratio of the stars it shares with the reference (and skipped, saying so, without them).
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import yaml
from astropy.io import fits

from vo import config as vconfig
from vo.pipeline import images as R
from vo.pipeline.skipped import skipped_reason
from workflow_helpers import job_counts, smk

pytestmark = pytest.mark.slow

BROKEN = "dc_f00_r_003"  # the second new exposure: its astrometry "fails"
GOOD = "dc_f00_r_002"


def _config(root: Path) -> tuple[Path, dict]:
    over = {"project": {"name": "BADTR", "obs_names": [], "data_root": str(root)}, "images": {"enabled": True},
            "DemoCam": {"n_ccds": 1, "n_exposures": 4, "reference_epochs": 2, "ccd_shape": [512, 512],
                        "n_bias": 3, "n_flats": 2}}
    cfgfile = root / "bad.yaml"
    cfgfile.write_text(yaml.safe_dump(over))
    return cfgfile, vconfig.load_config(overrides=over)


def _no_temporaries(root: Path) -> list[str]:
    return [str(p) for p in root.rglob("*") if ".tmp" in p.name]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from vo.images.astrometry import read_wcs, write_wcs

    root = tmp_path_factory.mktemp("badtr")
    cfgfile, cfg = _config(root)
    ccd = R.ccds(cfg)[0]
    wcs_file = R.rule_io("astrometry", cfg, BROKEN, ccd)[1]["wcs"]
    smk(["--cores", "2", "--configfile", str(cfgfile), "--until", "astrometry"], root)
    sol = read_wcs(wcs_file)
    sol.ok, sol.reason = False, "test: too few matched stars"
    with fits.open(wcs_file) as hdul:
        attrs = {k: hdul[0].header[k] for k in hdul[0].header if k.startswith("VO_")}
    write_wcs(wcs_file, sol)
    with fits.open(wcs_file, mode="update") as hdul:  # keep the provenance cards the rule wrote
        hdul[0].header.update(attrs)
    out = smk(["--cores", "2", "--configfile", str(cfgfile)], root)
    return root, cfgfile, cfg, ccd, out.stdout + out.stderr


def test_workflow_completes_and_flags_the_broken_ccd(run):
    root, cfgfile, cfg, ccd, log = run
    for step, kind in (("subtraction", "difference"),  # (aligned_reference is a temp() file)
                       ("detection", "candidates"), ("cutouts", "cutouts"), ("measurements", "measurements"),
                       ("scoring", "scores"), ("association", "receipt"), ("rb_training_set", "training_set"),
                       ("efficiency", "efficiency")):
        path = R.rule_io(step, cfg, BROKEN, ccd)[1][kind]
        why = skipped_reason(path)
        assert why is not None and "astrometry failed" in why and "too few matched stars" in why, (step, why)
        good = R.rule_io(step, cfg, GOOD, ccd)[1][kind]
        assert skipped_reason(good) is None, (step, good)
    # the skip is logged in the rule's log file
    logs = "".join(p.read_text() for p in (root / "BADTR" / "logs" / "subtraction").glob(f"{BROKEN}*"))
    assert "skipped" in logs and "astrometry failed" in logs, logs[-2000:]
    # alerts: written for both exposures; the broken CCD's contribute none
    assert Path(R.rule_io("alerts", cfg, BROKEN)[1]["alerts"]).exists()
    assert Path(R.rule_io("alerts", cfg, GOOD)[1]["alerts"]).exists()
    con = sqlite3.connect(root / "vo.sqlite")
    n_meas = dict(con.execute(
        "select e.name, count(*) from measurements m join cutouts c on m.cutouts_id = c.id "
        "join subtractions s on c.subtraction_id = s.id join images i on s.image_id = i.id "
        "join exposures e on i.exposure_id = e.id group by e.name").fetchall())
    assert BROKEN not in n_meas and n_meas.get(GOOD, 0) > 0, n_meas
    assert _no_temporaries(root) == []


def test_nothing_to_do_afterwards(run):
    root, cfgfile, *_ = run
    out = smk(["-n", "--configfile", str(cfgfile)], root)
    assert "Nothing to be done" in out.stdout + out.stderr


# -- rule bodies: a reference with no overlap, a reference with no good input ------------------

def test_reference_without_overlap_skips_subtraction_and_after(run, tmp_path, caplog):
    from vo.images.image import read_image, write_image

    root, _, cfg, ccd, _ = run
    inputs, outputs = R.rule_io("subtraction", cfg, GOOD, ccd)
    ref = read_image(inputs["ref_image"])
    ref.header["CRVAL1"] = (ref.header["CRVAL1"] + 30.0) % 360.0  # the same coadd, 30 deg away
    moved = tmp_path / "moved.image.fits"
    write_image(moved, ref)
    out = {k: str(tmp_path / Path(v).name) for k, v in outputs.items()}
    with caplog.at_level(logging.WARNING, logger="vo.images"):
        R.run_subtraction(cfg, GOOD, ccd, {**inputs, "ref_image": str(moved)}, out)
    for path in out.values():
        why = skipped_reason(path)
        assert why is not None and "does not overlap" in why and str(moved) in why, why
    assert "skipped" in caplog.text and GOOD in caplog.text
    # the next step passes the reason on
    det_out = {"candidates": str(tmp_path / "c.candidates.fits")}
    R.run_detection(cfg, GOOD, ccd, {"difference": out["difference"]}, det_out)
    assert "does not overlap" in skipped_reason(det_out["candidates"])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["moved.image.fits", "c.candidates.fits", *(Path(v).name for v in out.values())])


def test_reference_with_no_good_input_is_skipped(run, tmp_path, caplog):
    from vo.images.astrometry import read_wcs, write_wcs

    root, _, cfg, ccd, _ = run
    inputs, outputs = R.rule_io("references", cfg, GOOD, ccd)
    failed = []
    for k, w in enumerate(inputs["wcs"]):
        sol = read_wcs(w)
        sol.ok, sol.reason = False, "test: no stars"
        failed.append(str(tmp_path / f"in{k}.wcs.fits"))
        write_wcs(failed[-1], sol)
    out = {k: str(tmp_path / Path(v).name) for k, v in outputs.items()}
    with caplog.at_level(logging.WARNING, logger="vo.images"):
        R.run_references(cfg, GOOD, ccd, {**inputs, "wcs": failed}, out)
    for path in out.values():
        assert "no input with a good WCS" in skipped_reason(path)
    assert "leaving out" in caplog.text and "skipped" in caplog.text
    # a subtraction with that reference is skipped in turn
    s_in, s_out = R.rule_io("subtraction", cfg, GOOD, ccd)
    s_in = {**s_in, "ref_image": out["image"], "ref_psf": out["psf"], "ref_sources": out["sources"]}
    s_out = {k: str(tmp_path / ("s_" + Path(v).name)) for k, v in s_out.items()}
    R.run_subtraction(cfg, GOOD, ccd, s_in, s_out)
    assert all("no input with a good WCS" in skipped_reason(p) for p in s_out.values())


def test_exposures_without_reference_are_listed_not_subtracted(tmp_path):
    """One reference epoch but references.min_images = 2: no reference, so no subtraction job;
    the workflow names these exposures at its start (onstart) instead of failing."""
    over = {"project": {"data_root": str(tmp_path), "obs_names": []}, "images": {"enabled": True},
            "DemoCam": {"n_exposures": 3, "reference_epochs": 1}, "references": {"min_images": 2, "first": 1}}
    cfg = vconfig.load_config(overrides=over)
    assert R.new_exposures(cfg) == {}
    assert R.unreferenced_exposures(cfg) == ["dc_f00_r_001", "dc_f00_r_002"]
    cfgfile = tmp_path / "noref.yaml"
    cfgfile.write_text(yaml.safe_dump(over))
    out = smk(["-n", "--configfile", str(cfgfile)], tmp_path)
    counts = job_counts(out.stdout + out.stderr)
    assert counts.get("zero_point") == 3 * len(R.ccds(cfg)) and "subtraction" not in counts and "references" not in counts, counts


def test_failed_zero_point_subtracts_with_matched_stars(run, tmp_path):
    """Only the flux ratio matters to the subtraction: with the new image's zero point failed, the
    stars both images see give it, the difference's MAGZP is the reference's carried over (within
    the zero points' errors of the image's own) and the measurements have magnitudes; the fakes
    of the efficiency step, which need the image's own calibration, are skipped saying why."""
    from vo.images.detect.measure import read_measurements
    from vo.images.photometry.zeropoint import read_zp, write_zp
    from vo.images.subtract import magnitude_zero_point, read_difference

    root, _, cfg, ccd, _ = run
    inputs, outputs = R.rule_io("subtraction", cfg, GOOD, ccd)
    own = read_zp(inputs["zp"])
    failed = read_zp(inputs["zp"])
    failed.ok, failed.reason, failed.zp = False, "test: no calibration star", float("nan")
    zp_file = str(tmp_path / "failed.zp.fits")
    write_zp(zp_file, failed)
    out = {k: str(tmp_path / Path(v).name) for k, v in outputs.items()}
    R.run_subtraction(cfg, GOOD, ccd, {**inputs, "zp": zp_file}, out)
    assert skipped_reason(out["difference"]) is None
    d = read_difference(out["difference"])
    assert d.meta["flux_scale"].startswith("matched stars") and d.meta["image_zp"] is None
    assert fits.getheader(out["difference"])["MAGZP"] == pytest.approx(magnitude_zero_point(d))
    assert magnitude_zero_point(d) == pytest.approx(own.zp, abs=0.03), (magnitude_zero_point(d), own.zp)
    # the steps after it: detection, cutouts, measurements with magnitudes
    chain = dict(out)  # this test's files replace the run's under the same input names
    for step in ("detection", "cutouts", "measurements"):
        s_in, s_out = R.rule_io(step, cfg, GOOD, ccd)
        s_in = {k: chain.get(k, v) for k, v in s_in.items()}
        s_out = {k: str(tmp_path / Path(v).name) for k, v in s_out.items()}
        getattr(R, f"run_{step}")(cfg, GOOD, ccd, s_in, s_out)
        assert all(skipped_reason(v) is None for v in s_out.values()), step
        chain.update(s_out)
    meas = read_measurements(chain["measurements"])
    assert len(meas) > 0 and np.isfinite(np.asarray(meas["mag"], float)[~np.asarray(meas["is_negative"])]).any()
    e_in, e_out = R.rule_io("efficiency", cfg, GOOD, ccd)
    e_out = {k: str(tmp_path / Path(v).name) for k, v in e_out.items()}
    R.run_efficiency(cfg, GOOD, ccd, {**e_in, "zp": zp_file, "aligned_reference": out["aligned_reference"]}, e_out)
    assert "zero point" in skipped_reason(e_out["efficiency"]) and "no calibration star" in skipped_reason(e_out["efficiency"])


def test_failed_zero_point_and_no_common_stars_is_skipped(run, tmp_path):
    from astropy.table import Table
    from vo.images.extract import read_sources, write_sources
    from vo.images.photometry.zeropoint import read_zp, write_zp

    root, _, cfg, ccd, _ = run
    inputs, outputs = R.rule_io("subtraction", cfg, GOOD, ccd)
    failed = read_zp(inputs["zp"])
    failed.ok, failed.reason, failed.zp = False, "test: no calibration star", float("nan")
    zp_file = str(tmp_path / "failed.zp.fits")
    write_zp(zp_file, failed)
    src = read_sources(inputs["sources"])
    few = Table(src[:2], meta=src.meta)
    src_file = str(tmp_path / "few.sources.fits")
    write_sources(src_file, few)
    out = {k: str(tmp_path / Path(v).name) for k, v in outputs.items()}
    R.run_subtraction(cfg, GOOD, ccd, {**inputs, "zp": zp_file, "sources": src_file}, out)
    why = skipped_reason(out["difference"])
    assert why is not None and "no zero point and only" in why and "no calibration star" in why, why
