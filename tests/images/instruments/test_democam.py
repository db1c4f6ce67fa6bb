"""DemoCam simulation: determinism, names, and the truth table checked against the raw pixels."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.wcs import WCS
import astropy.units as u

from vo import config as vconfig
from vo.images.instruments import get_instrument
from vo.paths import Paths

pytest.importorskip("vo.images.photometry.photometric",
                    reason="vo.images.photometry.photometric (gaia_to_filter, the 'astrometry' helper's module) "
                           "is not written yet; DemoCam needs it for star magnitudes")
from vo.images.instruments.democam import plan  # noqa: E402
from vo.images.instruments.democam import simulate as sim  # noqa: E402


def make_cfg(tmp_path, **demo):
    over = {"project": {"data_root": str(tmp_path)}, "images": {"enabled": True, "instrument": "DemoCam"},
            "DemoCam": {"ccd_shape": [512, 256], "n_ccds": 2, "n_exposures": 3, **demo}}
    return vconfig.load_config(overrides=over)


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
    return make_cfg(tmp_path_factory.mktemp("democam"))


@pytest.fixture(scope="module")
def written(cfg):
    """One science exposure (index 1: has transients) written and read back."""
    raw, truth = sim.write_exposure(cfg, "dc_f00_r_001")
    return raw, truth


def overscan_corrected_electrons(inst, raw_path, ccd):
    """Minimal reduction for the tests: row-wise overscan median per amp, trim, gain."""
    sec = inst.read_section(raw_path, ccd)
    out = np.empty(sec.trimmed_shape, dtype=np.float64)
    y0, x0 = sec.datasec[0].start, sec.datasec[1].start
    for ((ds, dx), (os_, ox)), gain in zip(sec.overscans, sec.gain):
        level = np.median(sec.data[os_, ox], axis=1)[:, None]
        out[ds.start - y0:ds.stop - y0, dx.start - x0:dx.stop - x0] = (sec.data[ds, dx] - level) * gain
    return sec, out


def test_names(cfg):
    names = sim.science_exposure_names(cfg)
    assert names == ["dc_f00_r_000", "dc_f00_r_001", "dc_f00_r_002"]
    inst = get_instrument("DemoCam", cfg)
    assert inst.exposure_names(cfg) == names
    assert inst.section_names() == ["C01", "C02"]
    cal = inst.calibration_names(cfg)
    assert cal["bias"][0] == "dc_bias_000" and len(cal["bias"]) == cfg["DemoCam"]["n_bias"]
    assert cal["flat"]["r"] == ["dc_flat_r_000", "dc_flat_r_001", "dc_flat_r_002"]
    assert inst.exposure_filter(Paths(cfg), "dc_f00_r_002") == "r"
    assert inst.raw_path(Paths(cfg), "dc_f00_r_000").name == "dc_f00_r_000.fits"
    with pytest.raises(ValueError, match="dc_f00_g_000"):
        sim.exposure_plan(cfg, "dc_f00_g_000")  # filter g is not simulated
    with pytest.raises(ValueError, match="bogus"):
        sim.simulate_exposure(cfg, "bogus")


def test_deterministic(cfg, tmp_path):
    a, ta = sim.simulate_exposure(cfg, "dc_f00_r_000")
    b, tb = sim.simulate_exposure(cfg, "dc_f00_r_000")
    for ha, hb in zip(a[1:], b[1:]):
        np.testing.assert_array_equal(ha.data, hb.data)
    np.testing.assert_array_equal(ta["flux"], tb["flux"])
    c, _ = sim.simulate_exposure(cfg, "dc_f00_r_002")
    assert not np.array_equal(a[1].data, c[1].data)
    other = make_cfg(tmp_path, seed=8)
    d, _ = sim.simulate_exposure(other, "dc_f00_r_000")
    assert not np.array_equal(a[1].data, d[1].data)


def test_gaia_catalog(cfg):
    cat = sim.gaia_catalog(cfg)
    for col in ("source_id", "ra", "dec", "ra_error", "dec_error", "pmra", "pmdec", "parallax",
                "ref_epoch", "phot_g_mean_mag", "phot_bp_mean_mag", "phot_rp_mean_mag",
                "phot_g_mean_flux_over_error", "phot_bp_mean_flux_over_error",
                "phot_rp_mean_flux_over_error"):
        assert col in cat.colnames, col
    assert cat["ra_error"].unit == u.mas and cat["pmra"].unit == u.mas / u.yr and cat["ra"].unit == u.deg
    assert np.all(cat["ref_epoch"] == 2016.0)
    assert len(np.unique(cat["source_id"])) == len(cat)
    assert np.std(cat["pmra"]) > 1.0  # proper motions are there
    assert 12.0 <= cat["phot_g_mean_mag"].min() and cat["phot_g_mean_mag"].max() <= 21.0
    np.testing.assert_allclose(cat["phot_bp_mean_mag"] - cat["phot_rp_mean_mag"], cat["bp_rp"], atol=1e-9)
    assert "colour_offset_r" not in cat.colnames  # hidden truth stays hidden


def test_raw_file_and_headers(cfg, written):
    raw_path, _ = written
    inst = get_instrument("DemoCam", cfg)
    info = inst.read_exposure_header(raw_path)
    plan = sim.exposure_plan(cfg, "dc_f00_r_001")
    assert info["exposure"] == "dc_f00_r_001" and info["filter"] == "r" and info["kind"] == "object"
    assert info["mjd"] == pytest.approx(plan["mjd"], abs=1e-7)
    assert info["exptime"] == cfg["DemoCam"]["exptime"]
    with fits.open(raw_path) as hdul:
        assert [h.name for h in hdul[1:]] == ["C01", "C02"]
        h = hdul["C01"].header
        for key in ("DATASEC", "DATASECA", "DATASECB", "BIASSECA", "BIASSECB", "GAINA", "GAINB",
                    "RDNOISEA", "RDNOISEB", "SATURATE", "CTYPE1", "A_3_0"):
            assert key in h, key
        for key in ("DATE-OBS", "MJD-OBS", "EXPTIME", "FILTER", "RA", "DEC", "AIRMASS"):
            assert key in hdul[0].header, key
        assert hdul["C01"].data.dtype == np.uint16


def test_truth_fluxes_from_raw_pixels(tmp_path):
    """Aperture sums of isolated, unsaturated stars on a low-sky exposure (overscan, gain and
    the true flat removed) equal the truth fluxes to 1%."""
    cfg = make_cfg(tmp_path, ccd_shape=[1024, 512], sky_brightness={"r": 30.0}, seeing_fwhm=[1.0, 1.0],
                   cosmic_rate=0.0, n_bad_columns=0)
    raw_path, truth_path = sim.write_exposure(cfg, "dc_f00_r_001")
    truth = sim.read_truth(truth_path)
    inst = get_instrument("DemoCam", cfg)
    ratios = []
    for ccd in inst.section_names():
        sec, e = overscan_corrected_electrons(inst, raw_path, ccd)
        e /= sim.flat_pattern(cfg, ccd, "r")
        t = truth[truth["ccd"] == ccd]
        yy, xx = np.indices(e.shape)
        for row in t[(t["flux"] > 5e4) & (t["flux"] < 8e5) & t["inside"] & ~t["saturated"]]:
            half = np.ceil((8.0 if row["flux"] > 1e5 else 3.0) * row["fwhm"])
            radius = half * np.sqrt(2) + 1.5  # the whole stamp of the star
            d_other = np.hypot(t["x"] - row["x"], t["y"] - row["y"])
            crowded = (d_other > 0) & (d_other < radius + 2 * half + 10) & (t["flux"] > 1e-3 * row["flux"])
            if crowded.any() or not (radius + 12 < row["x"] < e.shape[1] - radius - 12
                                     and radius + 12 < row["y"] < e.shape[0] - radius - 12):
                continue
            r = np.hypot(xx - row["x"], yy - row["y"])
            sky = np.mean(e[(r > radius + 2) & (r < radius + 10)])  # mean: a linear bias slope cancels
            ratios.append(np.sum(e[r <= radius] - sky) / row["flux"])
    ratios = np.array(ratios)
    assert len(ratios) >= 5, f"too few isolated bright stars ({len(ratios)})"
    assert abs(np.median(ratios) - 1) < 0.005, ratios
    assert np.percentile(np.abs(ratios - 1), 90) < 0.01, ratios


def test_truth_wcs_and_positions(cfg, written):
    raw_path, truth_path = written
    truth = sim.read_truth(truth_path)
    p = cfg["DemoCam"]
    nos = p["overscan_columns"]
    ccds = truth.meta["ccds"]
    assert np.hypot(ccds["offset_east"], ccds["offset_north"]).max() <= p["pointing_error"]
    assert np.abs(ccds["offset_rotation"]).max() <= p["rotation_error"]
    with fits.open(raw_path) as hdul:
        for ccd, true_header in truth.meta["wcs"].items():
            true_wcs = WCS(true_header)
            head_wcs = WCS(hdul[ccd].header)
            t = truth[(truth["ccd"] == ccd) & truth["inside"]]
            # the truth positions and the true WCS agree (x, y on the trimmed grid)
            ra, dec = true_wcs.all_pix2world(t["x"], t["y"], 0)
            sep = SkyCoord(ra, dec, unit="deg").separation(SkyCoord(t["ra"], t["dec"], unit="deg"))
            assert sep.to(u.mas).max() < 1 * u.mas
            # the header WCS (untrimmed grid) is off by the pointing offset and rotation
            hra, hdec = head_wcs.all_pix2world(t["x"] + nos, t["y"], 0)
            off = SkyCoord(hra, hdec, unit="deg").separation(SkyCoord(ra, dec, unit="deg")).arcsec
            row = ccds[ccds["ccd"] == ccd][0]
            axis_off = np.hypot(row["offset_east"], row["offset_north"])
            lever = np.radians(abs(row["offset_rotation"])) * sim.focal_plane(cfg).r_max * p["pixel_scale"]
            assert np.all(off <= axis_off + lever + 0.01) and np.all(off >= axis_off - lever - 0.01)
            assert off.max() <= p["pointing_error"] + lever + 0.01
    # distortion: SIP displacement at 0.25 deg from the optical axis is the configured one
    h = sim.wcs_header(cfg, (1.0, 1.0), 150.0, 2.0, 0.0)
    r_pix = 900.0 / p["pixel_scale"]
    with_sip = WCS(h).all_pix2world([[r_pix, 0.0]], 0)
    for key in ("A_3_0", "A_1_2", "B_2_1", "B_0_3"):
        h[key] = 0.0
    no_sip = WCS(h).all_pix2world([[r_pix, 0.0]], 0)
    d = SkyCoord(*with_sip[0], unit="deg").separation(SkyCoord(*no_sip[0], unit="deg")).arcsec
    assert d == pytest.approx(p["distortion"], rel=0.02)


def test_sources_transients_variables(cfg):
    cat = sim.gaia_catalog(cfg)
    _, ref = sim.simulate_exposure(cfg, "dc_f00_r_000")   # reference epoch: no transients
    _, new = sim.simulate_exposure(cfg, "dc_f00_r_002")
    assert not np.any(ref["kind"] == "transient")
    tr = new[(new["kind"] == "transient") & new["inside"]]
    assert len(tr) >= 5
    lo, hi = cfg["DemoCam"]["transient_snr"]
    assert np.all((tr["snr"] > lo * 0.99) & (tr["snr"] < hi * 1.01))
    assert tr["snr"].max() / tr["snr"].min() > 5  # spans the range
    catc = SkyCoord(cat["ra"], cat["dec"], unit="deg")
    _, sep, _ = SkyCoord(tr["ra"], tr["dec"], unit="deg").match_to_catalog_sky(catc)
    assert sep.arcsec.min() > 1.0 or np.sum(sep.arcsec < 1.0) <= 1  # not catalog stars
    assert not np.isin(tr["source_id"], cat["source_id"]).any()
    stars = new[(new["kind"] != "transient") & new["inside"]]
    assert np.isin(stars["source_id"], cat["source_id"]).all()
    per_ccd = np.array([np.sum(stars["ccd"] == c) for c in ("C01", "C02")])
    assert np.all(per_ccd > 50), per_ccd  # density (8 per arcmin^2 on these 2x4 arcmin CCDs)
    # variable stars change between epochs, constant stars do not
    common = np.intersect1d(ref["source_id"][ref["kind"] == "variable"], new["source_id"])
    assert len(common) > 0
    m0 = ref["mag"][np.isin(ref["source_id"], common)]
    m1 = new["mag"][np.isin(new["source_id"], common)]
    assert np.max(np.abs(np.sort(m0) - np.sort(m1))) > 0.01 or np.any(np.abs(m0 - m1) > 0.01)
    const = np.intersect1d(ref["source_id"][ref["kind"] == "star"], new["source_id"][new["kind"] == "star"])[:50]
    f0 = {s: m for s, m in zip(ref["source_id"], ref["mag"])}
    f1 = {s: m for s, m in zip(new["source_id"], new["mag"])}
    assert all(f0[s] == f1[s] for s in const)
    # proper motions: positions move between epochs by pm * dt
    s = const[0]
    i0, i1 = np.flatnonzero(ref["source_id"] == s)[0], np.flatnonzero(new["source_id"] == s)[0]
    c = cat[cat["source_id"] == s][0]
    dt = (new.meta["mjd"] - ref.meta["mjd"]) / 365.25
    assert (new["dec"][i1] - ref["dec"][i0]) * 3.6e6 == pytest.approx(c["pmdec"] * dt, rel=1e-3, abs=1e-6)


def test_overscan_gain_read_noise(cfg, written):
    raw_path, truth_path = written
    truth = sim.read_truth(truth_path)
    inst = get_instrument("DemoCam", cfg)
    for row in truth.meta["ccds"]:
        sec = inst.read_section(raw_path, row["ccd"])
        assert len(sec.overscans) == 2
        for (_, (oy, ox)), level, gain, rn in zip(sec.overscans, (row["bias_a"], row["bias_b"]),
                                                   sec.gain, (row["read_noise_a"], row["read_noise_b"])):
            ovs = sec.data[oy, ox].astype(np.float64)
            assert np.median(ovs) == pytest.approx(level, abs=1.0)
            resid = ovs - ovs.mean(axis=1, keepdims=True)
            n = ovs.shape[1]
            noise_e = resid.std() * np.sqrt(n / (n - 1)) * gain
            assert noise_e == pytest.approx(rn, rel=0.03)
        assert sec.gain == pytest.approx([row["gain_a"], row["gain_b"]], rel=1e-4)
        assert sec.saturation == cfg["DemoCam"]["saturation"]
        # sky level of the data region in e- (flat removed) is the true sky
        _, e = overscan_corrected_electrons(inst, raw_path, row["ccd"])
        sky = np.median(e / sim.flat_pattern(cfg, row["ccd"], "r"))
        assert sky == pytest.approx(row["sky"], rel=0.01)


def test_saturation_bad_columns_cosmics(cfg, written):
    raw_path, truth_path = written
    truth = sim.read_truth(truth_path)
    inst = get_instrument("DemoCam", cfg)
    sat = cfg["DemoCam"]["saturation"]
    for ccd in inst.section_names():
        sec = inst.read_section(raw_path, ccd)
        data = sec.data[sec.datasec]
        t = truth[(truth["ccd"] == ccd) & truth["saturated"]]
        for row in t:
            col = data[:, int(round(row["x"]))]
            run = np.sum(col >= sat)
            assert run >= 1
        # bad columns: in the mask; dead ones read the bias level only
        bad = plan.bad_columns(cfg, ccd)
        assert sec.bad_pixel_mask is not None and sec.bad_pixel_mask.shape == data.shape
        assert sec.bad_pixel_mask.sum() == sum(data.shape[0] - r["y0"] for r in bad)
        for r in bad:
            col = data[r["y0"]:, r["x"]] - np.median(data)
            if r["kind"] == "dead":
                assert np.median(col) < -0.9 * np.median(data - 1000)
            else:
                assert np.median(col) > 0.5 * cfg["DemoCam"]["hot_column_level"] / max(sec.gain)
        # cosmic-ray pixels stand out above the local sky
        cr = truth.meta["cosmics"]
        cr = cr[(cr["ccd"] == ccd) & (cr["electrons"] > 500)]
        assert len(cr) > 0
        assert np.median(data[cr["y"], cr["x"]]) > np.median(data) + 100


def test_bleed_conserves_charge():
    """Charge above the full well runs up and down the column; none is created or lost
    (as long as the trail stays on the chip)."""
    e = np.full((200, 5), 100.0, dtype=np.float32)
    e[95:105, 2] = [1e3, 5e4, 2e5, 6e5, 9e5, 9e5, 6e5, 2e5, 5e4, 1e3]
    total = e[:, 2].sum()
    fw = np.full(5, 1e5, dtype=np.float32)
    sat = sim.bleed(e, fw)
    assert e[:, 2].sum() == pytest.approx(total, rel=1e-5)
    assert e.max() <= 1e5
    run = np.flatnonzero(sat[:, 2])
    assert len(run) == int(total // 1e5) - 1 or len(run) == int(total // 1e5)  # contiguous trail
    assert np.all(np.diff(run) == 1) and run[0] < 97 and run[-1] > 103
    assert not sat[:, [0, 1, 3, 4]].any()


def test_calibration_frames(cfg, tmp_path):
    inst = get_instrument("DemoCam", cfg)
    bias_path = sim.write_calibration(cfg, "dc_bias_000", tmp_path / "dc_bias_000.fits")
    flat_path = sim.write_calibration(cfg, "dc_flat_r_000", tmp_path / "dc_flat_r_000.fits")
    assert inst.read_exposure_header(bias_path)["kind"] == "bias"
    info = inst.read_exposure_header(flat_path)
    assert info["kind"] == "flat" and info["filter"] == "r"
    _, b = overscan_corrected_electrons(inst, bias_path, "C01")
    assert abs(np.median(b)) < 5.0  # bias minus overscan: only the small fixed slope (e-)
    _, f = overscan_corrected_electrons(inst, flat_path, "C01")
    flat = sim.flat_pattern(cfg, "C01", "r")
    ratio = (f - b) / (cfg["DemoCam"]["flat_level"] * flat)
    good = ~sim.bad_pixel_mask(cfg, "C01")
    assert np.median(ratio[good]) == pytest.approx(1.0, abs=0.005)
    # the pixel-to-pixel pattern is in the frame
    assert np.corrcoef(f[good], flat[good])[0, 1] > 0.5
    with pytest.raises(ValueError, match="dc_flat_z_000"):
        sim.simulate_calibration(cfg, "dc_flat_z_000")


def test_compressed_round_trip(cfg, written, tmp_path):
    raw_path, _ = written
    packed = tmp_path / "dc_f00_r_001.fits.fz"
    with fits.open(raw_path) as hdul:
        fits.HDUList([fits.PrimaryHDU(header=hdul[0].header)]
                     + [fits.CompImageHDU(h.data, header=h.header) for h in hdul[1:]]).writeto(packed)
    with fits.open(packed) as hdul:
        assert isinstance(hdul[1], fits.CompImageHDU)
    inst = get_instrument("DemoCam", cfg)
    for ccd in inst.section_names():
        a, b = inst.read_section(raw_path, ccd), inst.read_section(packed, ccd)
        np.testing.assert_array_equal(a.data, b.data)
        assert a.datasec == b.datasec and a.overscans == b.overscans and a.gain == b.gain
        assert WCS(a.header).wcs.crval[0] == WCS(b.header).wcs.crval[0]
    assert inst.read_exposure_header(packed)["exposure"] == "dc_f00_r_001"
    # the writer's own compression and DemoCam.compress
    cfg_fz = vconfig.deep_merge(cfg, {"DemoCam": {"compress": True}})
    inst_fz = get_instrument("DemoCam", cfg_fz)
    path = inst_fz.raw_path(Paths(cfg_fz), "dc_f00_r_000")
    assert path.name.endswith(".fits.fz")
    written_fz, _ = sim.write_exposure(cfg_fz, "dc_f00_r_000", raw_path=tmp_path / path.name,
                                       truth_path=tmp_path / "t.fits")
    ref, _ = sim.simulate_exposure(cfg, "dc_f00_r_000")
    np.testing.assert_array_equal(inst_fz.read_section(written_fz, "C02").data, ref["C02"].data)
