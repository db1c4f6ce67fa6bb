"""ZTF forced-photometry service files -> difference-flux light curves (real files and hostile ones)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from vo.lightcurves.observatories.ztf_forced import (FLAG_BITS, ForcedPhotometryError, fcqfid, forced_lightcurve,
                                                     read_forced_photometry)

DATA = Path(__file__).resolve().parents[1] / "data" / "ztf_forced_photometry"
FILES = sorted(DATA.glob("forcedphotometry_*.txt"))


def raw_rows(path: Path) -> list[list[str]]:
    """The data rows of a file as the service wrote them (independent of the reader)."""
    lines = [ln for ln in path.read_text().splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    return [ln.split() for ln in lines[1:]]


def test_real_files_read_every_epoch_and_the_header():
    assert len(FILES) == 2
    for path, n, ra in zip(FILES, (92, 55), (106.88522654146342, 245.3167016)):
        t = read_forced_photometry(path)
        assert len(t) == n == len(raw_rows(path))
        assert t.attrs["ra"] == pytest.approx(ra, abs=1e-12)
        assert np.isfinite(t.attrs["jd_start"]) and t.attrs["jd_end"] > t.attrs["jd_start"]
        assert t["forcediffimflux"].dtype == float and t["filter"].isin(["ZTF_g", "ZTF_r", "ZTF_i"]).all()
        # each value is the file's own, row by row
        col = list(t.columns).index("forcediffimflux")
        assert np.array_equal(t["forcediffimflux"].to_numpy(), [float(r[col]) for r in raw_rows(path)])


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name.split("_")[-1])
def test_fluxes_are_the_service_fluxes_on_the_ab_scale(path):
    """No baseline: flux (uJy) = forcediffimflux * 10**(0.4 (23.9 - zpdiff)) to 1e-6, and a
    detection's magnitude is the guide's zpdiff - 2.5 log10(forcediffimflux) (mag space, an
    independent path), its limit zpdiff - 2.5 log10(5 forcediffimfluxunc)."""
    t = read_forced_photometry(path)
    lc = forced_lightcurve(t, {"baseline": "none"})
    t = t.sort_values("jd", kind="stable").reset_index(drop=True)
    expect = t["forcediffimflux"] * 10 ** (0.4 * (23.9 - t["zpdiff"]))
    np.testing.assert_allclose(lc["flux"], expect, rtol=1e-6)
    np.testing.assert_allclose(lc["flux_diff"], expect, rtol=1e-6)
    det = lc["is_detection"].to_numpy()
    assert det.sum() >= 5
    guide_mag = t["zpdiff"] - 2.5 * np.log10(t["forcediffimflux"].where(det))
    np.testing.assert_allclose(lc["mag"][det], guide_mag[det], atol=1e-6)
    np.testing.assert_allclose(lc["mag_lim"], t["zpdiff"] - 2.5 * np.log10(5 * t["forcediffimfluxunc"]), atol=1e-6)
    snr = t["forcediffimflux"] / t["forcediffimfluxunc"]
    np.testing.assert_allclose(lc["snr"], snr, rtol=1e-9)
    assert np.array_equal(det, (snr > 3).to_numpy() & (lc["flag"] == 0).to_numpy())
    assert lc["mag"][~det].isna().all()


def test_bad_epochs_are_flagged_by_the_criteria():
    """infobitssci > 0, scisigpix > 25 DN, sciinpseeing > 5 pix (Yao et al. 2019), harmful
    procstatus codes; procstatus 57 (no reference source near a hostless transient) is not."""
    t = read_forced_photometry(FILES[1])
    lc = forced_lightcurve(t)
    t = t.sort_values("jd", kind="stable").reset_index(drop=True)
    flag = lc["flag"].to_numpy()
    assert np.array_equal(flag & FLAG_BITS["infobits"] > 0, t["infobitssci"].to_numpy() > 0)
    assert np.array_equal(flag & FLAG_BITS["scisigpix"] > 0, t["scisigpix"].to_numpy() > 25)
    assert np.array_equal(flag & FLAG_BITS["seeing"] > 0, t["sciinpseeing"].to_numpy() > 5)
    assert (t["procstatus"] == 57).sum() > 10 and not (flag & FLAG_BITS["procstatus"]).any()
    assert 0 < (flag > 0).sum() < len(flag)
    # the cloudy epochs (infobitssci >= 2**25) are among them
    assert (flag[t["infobitssci"].to_numpy() >= 2 ** 25] > 0).all()


def synthetic(n_pre: int = 60, offset_dn: float = 40.0, excess: float = 1.5, seed: int = 3) -> pd.DataFrame:
    """A forced-photometry table of one reference: n_pre quiet epochs (a constant offset from
    reference-image light, noise ``excess`` x the quoted errors), then a transient."""
    rng = np.random.default_rng(seed)
    jd_quiet = 2459000 + np.sort(rng.uniform(0, 300, n_pre))
    jd_event = 2459450 + np.arange(30) * 2.0
    jd = np.r_[jd_quiet, jd_event]
    signal = np.r_[np.zeros(n_pre), 3000 * np.exp(-np.arange(30) / 15)]
    unc = np.full(jd.size, 20.0)
    flux = offset_dn + signal + rng.normal(0, excess * 20.0, jd.size)
    return pd.DataFrame({"field": 600, "ccdid": 5, "qid": 2, "filter": "ZTF_r", "jd": jd, "forcediffimflux": flux,
                         "forcediffimfluxunc": unc, "zpdiff": 26.0, "procstatus": 0, "infobitssci": 0,
                         "scisigpix": 10.0, "sciinpseeing": 2.0})


def test_auto_baseline_and_error_rescaling_recover_the_truth():
    t = synthetic()
    lc = forced_lightcurve(t)
    scale = 10 ** (0.4 * (23.9 - 26.0))
    (key, (c, n, s)), = lc.attrs["baselines"].items()
    assert key == 600 * 10000 + 5 * 100 + 2 * 10 + 2 and n == 60
    assert c == pytest.approx(40.0 * scale, abs=3 * 1.5 * 20 * scale / np.sqrt(60))
    assert s == pytest.approx(1.5, rel=0.2)          # the excess scatter is found
    assert lc.attrs["t_peak"] == pytest.approx(2459450, abs=8)
    quiet = lc["is_baseline"].to_numpy()
    assert abs(np.median(lc["flux"][quiet])) < 1e-9 and lc["fluxerr"].iloc[0] == pytest.approx(20 * scale * s)
    # the reduced chi^2 of the quiet epochs is now about 1
    chi2 = np.sum((lc["flux"][quiet] / lc["fluxerr"][quiet]) ** 2) / (quiet.sum() - 1)
    assert chi2 == pytest.approx(1.0, abs=0.3)


def test_explicit_window_none_and_too_few_baseline_epochs():
    t = synthetic(n_pre=6)                            # fewer than baseline_min_epochs (10) before the peak
    lc = forced_lightcurve(t)
    assert lc.attrs["baselines"] == {} and lc["baseline"].isna().all()
    np.testing.assert_allclose(lc["flux"], lc["flux_diff"])
    lc = forced_lightcurve(t, {"baseline": [2459000, 2459400]})
    assert set(lc.attrs["baselines"]) == {6000522} and lc.attrs["baselines"][6000522][1] == 6
    with pytest.raises(ValueError, match="baseline"):
        forced_lightcurve(t, {"baseline": "pre"})


def test_each_reference_has_its_own_baseline():
    a, b = synthetic(seed=1), synthetic(offset_dn=-80.0, seed=2)
    b["ccdid"] = 6
    lc = forced_lightcurve(pd.concat([a, b], ignore_index=True))
    base = lc.attrs["baselines"]
    scale = 10 ** (0.4 * (23.9 - 26.0))
    assert set(base) == {6000522, 6000622}
    assert base[6000522][0] == pytest.approx(40 * scale, abs=8 * scale)
    assert base[6000622][0] == pytest.approx(-80 * scale, abs=8 * scale)
    assert np.array_equal(lc["fcqfid"], fcqfid(pd.concat([a, b]).sort_values("jd", kind="stable")))


def test_null_values_are_flagged_not_fatal(tmp_path):
    text = FILES[0].read_text().splitlines()
    first = next(i for i, ln in enumerate(text) if ln.strip() and not ln.lstrip().startswith("#") and "," not in ln)
    names = [n.strip() for n in next(ln for ln in text if "forcediffimflux," in ln).split(",")]
    row = text[first].split()
    row[names.index("forcediffimflux")] = "-99999"
    text[first] = " " + " ".join(row)
    row2 = text[first + 1].split()
    row2[names.index("forcediffimfluxunc")] = "null"
    text[first + 1] = " " + " ".join(row2)
    path = tmp_path / "nulls.txt"
    path.write_text("\n".join(text) + "\n")
    lc = forced_lightcurve(read_forced_photometry(path))
    assert (lc["flag"] & FLAG_BITS["null_flux"] > 0).sum() == 2
    assert not lc["is_detection"][lc["flag"] > 0].any()


@pytest.mark.parametrize("edit, message", [
    (lambda s: s.replace("forcediffimflux,", "fluxdiff,", 1), r"lacks columns \['forcediffimflux'\]"),
    (lambda s: "\n".join(ln for ln in s.splitlines() if "forcediffimflux," not in ln), "no column line"),
    (lambda s: s.replace(" 26.2221 1 2459092.9892245", " 26.2221 1 yesterday", 1), "'jd' has the non-numeric value 'yesterday'"),
    (lambda s: s.replace(" 0 747 12 0 ZTF_g", " 0 747 12 0 ZTF_g 99", 1), "data row 1 has 41 values for 40 columns"),
    (lambda s: s.replace(" 0 747 12 0 ZTF_g", " 0 747 12 0 ZTF_u", 1), r"unknown filter\(s\) \['ZTF_u'\]"),
])
def test_bad_files_give_errors_naming_the_file(tmp_path, edit, message):
    path = tmp_path / "bad_lc.txt"
    path.write_text(edit(FILES[0].read_text()))
    with pytest.raises(ForcedPhotometryError, match=message) as err:
        read_forced_photometry(path)
    assert str(path) in str(err.value)
    with pytest.raises(ForcedPhotometryError, match="cannot read"):
        read_forced_photometry(tmp_path / "missing.txt")
