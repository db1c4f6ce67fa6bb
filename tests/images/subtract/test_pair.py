"""``vo subtract`` and :func:`vo.images.pair.subtract_files` on two real DECam files
(tests/data/decam/): the difference file astropy reads, the candidate table, the registration
figures, and clear errors for images that do not overlap or have no WCS."""

from __future__ import annotations

import numpy as np
from astropy.io import fits

from testdata import DATA
from vo.cli import main

NEW, REF = DATA / "decam" / "DEC-OBS18a.mini.fits", DATA / "decam" / "DEC-OBS04a.mini.fits"


def test_cli_writes_difference_and_candidates(tmp_path, capsys):
    out = tmp_path / "diff.fits"
    assert main(["subtract", str(NEW), str(REF), "-o", str(out)]) == 0
    said = capsys.readouterr().out
    assert "offset (-0.5" in said and "candidates" in said
    with fits.open(out) as hdul:
        names = [h.name for h in hdul]
        for hdu in ("DIFF", "ERROR", "SCORE", "SCORR", "FLAGS", "PSF"):
            assert hdu in names
        diff, err, flags = hdul["DIFF"].data, hdul["ERROR"].data, hdul["FLAGS"].data
        assert diff.shape == fits.getdata(NEW).shape
        good = flags == 0
        assert good.mean() > 0.5
        # the noise of the difference matches its error map (median pull, robust)
        assert 0.8 < 1.4826 * np.median(np.abs(diff[good] / err[good])) < 1.2
        assert abs(hdul["PSF"].data.sum() - 1) < 1e-3 and hdul[0].header["METHOD"] == "zogy"
        assert "registration" in hdul[0].header["VO_META"]
    cands = fits.getdata(tmp_path / "diff.candidates.fits", "CANDIDATES")
    assert len(cands) < 20 and np.all(np.isfinite(cands["flux"]))
    assert not list(tmp_path.glob(".*"))  # no temporary left


def test_cli_errors_for_no_overlap_and_no_wcs(tmp_path, capsys):
    far = tmp_path / "far.fits"
    with fits.open(REF) as hdul:
        hdul[0].header["CRVAL1"] += 1.0
        hdul.writeto(far)
    assert main(["subtract", str(NEW), str(far), "-o", str(tmp_path / "a.fits")]) == 2
    assert "does not overlap" in capsys.readouterr().err
    nowcs = tmp_path / "nowcs.fits"
    fits.PrimaryHDU(fits.getdata(REF), header=fits.Header({"GAIN": 4.0})).writeto(nowcs)
    assert main(["subtract", str(NEW), str(nowcs), "-o", str(tmp_path / "b.fits")]) == 2
    assert "nowcs.fits: no celestial WCS" in capsys.readouterr().err
    assert not (tmp_path / "a.fits").exists() and not (tmp_path / "b.fits").exists()
