"""Image-pipeline ingest on SQLite and PostgreSQL: rows from real FITS files, idempotency,
transactions, concurrent jobs, badness propagation, cone search, catalog tiles, populate.

The products are small FITS files written here with the contract's header keywords and
provenance cards (the image modules that make them are written in parallel), each with
its truth: pointing, WCS centres (CRPIX at the image centre, so the centre is CRVAL),
FWHM, sky level and zero point.
"""

from __future__ import annotations

import multiprocessing as mp
import traceback
import zlib
from dataclasses import dataclass
from pathlib import Path

import astropy.units as u
import numpy as np
import pytest
import sqlalchemy as sa
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS
from astropy_healpix import HEALPix

from vo import provenance as vprov
from vo.db import Session, get_engine
from vo.ingest import lightcurves as ing
from vo.ingest.populate import populate
from vo.ingest import images as ii
from vo.ingest import tiles as tiles_ingest
from vo.db import models as m
from vo.db.engine import has_q3c
from vo.db.spatial import cone_search
from vo.io.atomic import checksum
from vo.io.fits import write_fits

INST = "DemoCam"
PROJECT = "IMGTEST"
NX, NY = 48, 96
SCALE = 0.263  # arcsec / pixel
RAW_HDR = {"dc_e0": ("08:12:00.0", "+12:30:00"), "dc_e1": (200.5, -30.25), "dc_e2": (359.99, 0.01)}


def provenances(astrometry_pars=None):
    cal = vprov.Provenance("calibration", INST, "1", {"calibration.n": 5}, {})
    pre = vprov.Provenance("preprocessing", INST, "1", {"preprocessing.flat": True}, {cal.key: cal.hash})
    ext = vprov.Provenance("extraction", INST, "1", {"extraction.threshold": 3.0}, {pre.key: pre.hash})
    ast = vprov.Provenance("astrometry", INST, "1", astrometry_pars or {"astrometry.sip_order": 3},
                           {ext.key: ext.hash})
    zp = vprov.Provenance("zero_point", INST, "1", {"zero_point.sigma_clip": 3.0}, {ast.key: ast.hash})
    return {"image": pre, "sources": ext, "psf": ext, "background": ext, "wcs": ast, "zp": zp}


def attrs(p: vprov.Provenance) -> dict:
    return {"step": p.step, "obs": p.obs, "provenance_hash": p.hash, "code_version": p.code_version,
            "parameters": p.parameters, "upstreams": p.upstreams, "project": PROJECT}


def tan_header(ra, dec, rot_deg=0.0) -> fits.Header:
    """TAN WCS of an NX x NY image centred on (ra, dec) (deg), rotated by ``rot_deg``."""
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [ra, dec]
    w.wcs.crpix = [(NX + 1) / 2, (NY + 1) / 2]
    c, s = np.cos(np.radians(rot_deg)), np.sin(np.radians(rot_deg))
    w.wcs.cd = SCALE / 3600 * np.array([[-c, s], [s, c]])
    return w.to_header()


@dataclass
class CCD:
    """Files of one CCD and their truth."""

    exposure: str
    ccd: str
    files: dict
    centre: tuple  # header WCS centre (deg)
    solved_centre: tuple  # fitted WCS centre (deg)
    fwhm_pix: float
    sky: float
    sky_rms: float
    zp: float
    wcs_ok: bool
    provs: dict


def ccd_offset(ccd: str) -> tuple[float, float]:
    k = int(ccd[1:])
    return (k % 2) * 0.02, (k // 2) * 0.03  # deg


def make_ccd(root: Path, exposure: str, ccd: str, *, wcs_ok=True, with_wcs=True, with_zp=True,
             zp_n=40, provs=None, sky_in_header=False) -> CCD:
    """Write the raw exposure (once) and one CCD's products under the data root."""
    provs = provs or provenances()
    e = int(exposure.split("e")[-1])
    ra_p, dec_p = [(123.0, 12.5), (200.5, -30.25), (359.99, 0.01)][e]
    dra, ddec = ccd_offset(ccd)
    ra0, dec0 = (ra_p + dra / np.cos(np.radians(dec_p))) % 360, dec_p + ddec
    solved = ((ra0 + 3 / 3600 / np.cos(np.radians(dec0))) % 360, dec0 - 2 / 3600)  # header WCS 3"/2" off
    rng = np.random.default_rng(zlib.crc32(f"{exposure}/{ccd}".encode()))
    fwhm, sky, rms, zp = 3.1 + e / 10, 150.0 + 10 * e, 12.0 + e, 28.5 - e / 10

    raw = root / INST.upper() / "raw" / f"{exposure}.fits"
    if not raw.exists():
        ph = fits.Header()
        ph["RA"], ph["DEC"] = RAW_HDR[exposure]
        ph["FILTER"] = "r DemoCam"
        hdus = [fits.PrimaryHDU(header=ph)] + [fits.ImageHDU(np.zeros((4, 4), np.float32), name=f"C{k}")
                                               for k in range(4)]
        write_fits(raw, fits.HDUList(hdus))

    pdir = {k: root / PROJECT / f"{p.step}-{p.hash}" / exposure for k, p in provs.items()}
    files = {"raw": raw}
    ph = fits.Header()
    for key, val in (("INSTRUME", INST), ("EXPOSURE", exposure), ("CCD", ccd), ("FILTER", "r"),
                     ("MJD-OBS", 60000.25 + e), ("EXPTIME", 30.0 + e), ("AIRMASS", 1.1 + e / 10),
                     ("SATURATE", 90000.0), ("RDNOISE", 5.5), ("GAIN", 1.0)):
        ph[key] = val
    sci = fits.ImageHDU(rng.normal(sky, rms, (NY, NX)).astype(np.float32), header=tan_header(ra0, dec0, 0.5),
                        name="SCI")
    files["image"] = pdir["image"] / f"{ccd}.image.fits"
    write_fits(files["image"], fits.HDUList([
        fits.PrimaryHDU(header=ph), sci, fits.ImageHDU(np.ones((NY, NX), np.float32), name="WEIGHT"),
        fits.ImageHDU(np.zeros((NY, NX), np.uint16), name="FLAGS")]), attrs(provs["image"]))

    n_src = 25 + e
    tab = fits.table_to_hdu(Table({"x": rng.uniform(0, NX, n_src), "y": rng.uniform(0, NY, n_src),
                                   "flux_psf": rng.uniform(1e3, 1e5, n_src)}))
    tab.name = "SOURCES"
    tab.header["FWHM"], tab.header["N_SRC"], tab.header["APER_R"], tab.header["APER_RB"] = fwhm, n_src, 4.0, 12.0
    files["sources"] = pdir["sources"] / f"{ccd}.sources.fits"
    write_fits(files["sources"], fits.HDUList([fits.PrimaryHDU(), tab]), attrs(provs["sources"]))

    psf_h = fits.Header()
    psf_h["FWHM"], psf_h["PSF_N"] = fwhm * 1.01, 12
    files["psf"] = pdir["psf"] / f"{ccd}.psf.fits"
    write_fits(files["psf"], fits.HDUList([fits.PrimaryHDU(header=psf_h),
                                           fits.ImageHDU(np.ones((3, 25, 25), np.float32), name="PSF")]),
               attrs(provs["psf"]))

    yy = np.linspace(-1, 1, NY)[:, None] * np.ones((1, NX))
    bg_h = fits.Header()
    if sky_in_header:
        bg_h["SKY_MED"], bg_h["SKY_RMS"] = sky, rms
    files["background"] = pdir["background"] / f"{ccd}.bg.fits"
    write_fits(files["background"], fits.HDUList([
        fits.PrimaryHDU(header=bg_h),
        fits.ImageHDU((sky + 5 * yy).astype(np.float32), name="BACKGROUND"),  # symmetric: median = sky
        fits.ImageHDU(np.full((NY, NX), rms, np.float32), name="RMS")]), attrs(provs["background"]))

    if with_wcs:
        wh = tan_header(*solved, 0.52) if wcs_ok else fits.Header()
        wh["ASTR_OK"] = wcs_ok
        if wcs_ok:  # NaN is not allowed in a header: a failed fit has no rms (or a negative one)
            wh["ASTR_RMS"] = 0.021
        else:
            wh["ASTR_RMS"] = -1.0
        wh["ASTR_N"] = 31 if wcs_ok else 3
        wh["ASTR_MSG"] = "" if wcs_ok else "too few matches (3 < 6)"
        files["wcs"] = pdir["wcs"] / f"{ccd}.wcs.fits"
        write_fits(files["wcs"], fits.HDUList([fits.PrimaryHDU(header=wh)]), attrs(provs["wcs"]))
    if with_zp:
        zh = fits.Header()
        for key, val in (("ZP", zp), ("ZP_ERR", 0.004), ("APCOR", -0.03), ("LIMMAG5", 23.1),
                         ("ZP_N", zp_n), ("ZP_OK", True), ("ZP_MSG", "")):
            zh[key] = val
        files["zp"] = pdir["zp"] / f"{ccd}.zp.fits"
        write_fits(files["zp"], fits.HDUList([fits.PrimaryHDU(header=zh)]), attrs(provs["zp"]))
    return CCD(exposure, ccd, files, (ra0, dec0), solved, fwhm, sky, rms, zp, wcs_ok, provs)


def config(root: Path, url: str | None = None) -> dict:
    return {"project": {"data_root": str(root), "name": PROJECT, "version_control": True},
            "database": {"url": url}}


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.delenv("VO_DATA", raising=False)
    monkeypatch.delenv("VO_DB_URL", raising=False)
    return tmp_path / "data"


def ingest(engine, root, c: CCD, **kw):
    return ii.ingest_image_products(engine, config(root), INST, c.exposure, c.ccd, c.files, **kw)


def counts(engine, tables=("provenances",) + m.IMAGE_TABLES) -> dict:
    with engine.connect() as conn:
        return {t: conn.scalar(sa.select(sa.func.count()).select_from(m.Base.metadata.tables[t]))
                for t in tables}


def content(engine) -> dict:
    """Image-table contents by natural keys and values (no ids), comparable across databases."""
    e, i, sl, psf, w, z, p = (m.Exposure, m.Image, m.SourceList, m.PSF, m.WorldCoordinates, m.ZeroPoint,
                              m.Provenance)
    img = [e.name, i.ccd, i.filename]
    q = {
        "provenances": sa.select(p.step, p.obs, p.hash, p.code_version),
        "exposures": sa.select(e.instrument, e.name, e.filter, e.mjd, e.exptime, e.ra, e.dec, e.airmass,
                               e.filename, e.checksum),
        "images": sa.select(*img, i.checksum, i.ra, i.dec, i.healpix, i.ra_corner_3, i.dec_corner_3,
                            i.wcs_solved, i.fwhm_arcsec, i.sky_level, i.bad).join(i.exposure),
        "source_lists": sa.select(*img, sl.filename, sl.checksum, sl.n_sources, sl.background_filename,
                                  sl.bad).join(sl.image).join(i.exposure),
        "psfs": sa.select(*img, psf.filename, psf.fwhm, psf.n_stars, psf.bad)
        .join(psf.source_list).join(sl.image).join(i.exposure),
        "world_coordinates": sa.select(*img, w.filename, w.rms_arcsec, w.n_stars, w.bad, w.bad_reason)
        .join(w.source_list).join(sl.image).join(i.exposure),
        "zero_points": sa.select(*img, z.filename, z.zp, z.n_stars, z.bad, z.bad_reason,
                                 w.filename).join(z.source_list).join(sl.image).join(i.exposure)
        .outerjoin(z.world_coordinates),
        "catalog_excerpts": sa.select(m.CatalogExcerpt.catalog, m.CatalogExcerpt.tile, m.CatalogExcerpt.ra,
                                      m.CatalogExcerpt.filename, m.CatalogExcerpt.checksum),
    }
    with engine.connect() as conn:
        return {k: sorted(tuple(r) for r in conn.execute(s)) for k, s in q.items()}


# -- contents ----------------------------------------------------------------------------------
def test_ingest_one_ccd_rows_and_values(engine, root):
    c = make_ccd(root, "dc_e0", "C1")
    got = ingest(engine, root, c)
    assert got == {"provenances": 4, "exposures": 1, "images": 1, "source_lists": 1, "psfs": 1,
                   "world_coordinates": 1, "zero_points": 1}
    assert counts(engine) == {"provenances": 4, "exposures": 1, "images": 1, "source_lists": 1, "psfs": 1,
                              "world_coordinates": 1, "zero_points": 1, "catalog_excerpts": 0}
    rel = {k: Path(p).relative_to(root).as_posix() for k, p in c.files.items()}
    with Session(engine) as s:
        exp = s.scalars(sa.select(m.Exposure)).one()
        assert (exp.instrument, exp.name, exp.filter, exp.mjd, exp.exptime) == (INST, "dc_e0", "r", 60000.25,
                                                                                30.0)
        assert exp.airmass == pytest.approx(1.1)
        # raw header RA = "08:12:00.0" (hours), DEC = "+12:30:00"
        assert exp.ra == pytest.approx(123.0, abs=1e-9) and exp.dec == pytest.approx(12.5, abs=1e-9)
        assert exp.filename == rel["raw"] == "DEMOCAM/raw/dc_e0.fits"
        assert exp.checksum == checksum(c.files["raw"])

        img = s.scalars(sa.select(m.Image)).one()
        assert img.exposure is exp and img.ccd == "C1" and (img.nx, img.ny) == (NX, NY)
        assert (img.filename, img.filekey, img.checksum) == (rel["image"], "", checksum(c.files["image"]))
        assert img.provenance.step == "preprocessing" and img.provenance.hash == c.provs["image"].hash
        assert img.provenance.parameters == {"preprocessing.flat": True}
        assert img.wcs_solved
        truth = SkyCoord(*c.solved_centre, unit="deg")
        assert SkyCoord(img.ra, img.dec, unit="deg").separation(truth).arcsec < 1e-6
        assert img.healpix == m.healpix_index(img.ra, img.dec)
        # corners: gnomonic distance atan(r) from the centre, ordered around the image
        half_diag = np.radians(np.hypot(NX / 2, NY / 2) * SCALE / 3600)
        sep = SkyCoord(img.corners[:, 0], img.corners[:, 1], unit="deg").separation(truth).deg
        np.testing.assert_allclose(sep, np.degrees(np.arctan(half_diag)), rtol=1e-6)
        d12 = SkyCoord(*img.corners[0], unit="deg").separation(SkyCoord(*img.corners[1], unit="deg")).arcsec
        assert d12 == pytest.approx(NX * SCALE, rel=1e-3)  # corners 1-2 span the x axis
        assert img.pixel_scale == pytest.approx(SCALE, rel=1e-9)
        assert img.fwhm_arcsec == pytest.approx(c.fwhm_pix * SCALE, rel=1e-9)
        # median of every 8th pixel of a +-5 e- gradient: within 8 rows' change (0.84 e-) of the truth
        assert img.sky_level == pytest.approx(c.sky, abs=0.84) and img.sky_rms == pytest.approx(c.sky_rms)
        assert (img.saturation, img.read_noise, img.bad) == (90000.0, 5.5, False)

        sl = img.source_lists[0]
        assert (sl.filename, sl.checksum, sl.n_sources, sl.fwhm, sl.aper_radius) == (
            rel["sources"], checksum(c.files["sources"]), 25, pytest.approx(c.fwhm_pix), 4.0)
        assert (sl.background_filename, sl.background_checksum) == (rel["background"],
                                                                     checksum(c.files["background"]))
        assert sl.provenance.step == "extraction" and not sl.bad
        psf = sl.psfs[0]
        assert (psf.filename, psf.n_stars, psf.provenance_id, psf.bad) == (rel["psf"], 12, sl.provenance_id,
                                                                            False)
        assert psf.fwhm == pytest.approx(c.fwhm_pix * 1.01)
        wcs = sl.world_coordinates[0]
        assert (wcs.filename, wcs.rms_arcsec, wcs.n_stars, wcs.bad, wcs.bad_reason) == (
            rel["wcs"], 0.021, 31, False, None)
        assert wcs.provenance.upstreams == {f"extraction.{INST}": c.provs["sources"].hash}
        zp = sl.zero_points[0]
        assert zp.world_coordinates is wcs and zp.provenance.step == "zero_point"
        assert (zp.zp, zp.zp_err, zp.apcor, zp.limmag5, zp.n_stars, zp.bad) == (
            pytest.approx(c.zp), 0.004, -0.03, 23.1, 40, False)
        assert zp.checksum == checksum(c.files["zp"])


def test_instrument_name_in_any_case(engine, root):
    """The caller may spell the instrument in upper case (as the file names do): the rows
    keep the provenance's spelling, so every caller and ``populate`` give the same rows."""
    c = make_ccd(root, "dc_e0", "C0")
    ii.ingest_image_products(engine, config(root), INST.upper(), c.exposure, c.ccd, c.files)
    ingest(engine, root, c)
    with Session(engine) as s:
        assert s.scalars(sa.select(m.Exposure.instrument)).all() == [INST]
        assert set(s.scalars(sa.select(m.Provenance.obs)).all()) == {INST}
    assert counts(engine)["images"] == 1


def test_skipped_steps_sky_keywords_and_exposure_header(engine, root):
    """No wcs/zp files: no such rows, the image keeps its header WCS; SKY_MED/SKY_RMS header
    keys are used; an instrument's exposure header overrides the raw header's pointing."""
    c = make_ccd(root, "dc_e1", "C2", with_wcs=False, with_zp=False, sky_in_header=True)
    got = ingest(engine, root, c, exposure_header={"ra": np.float64(200.0), "dec": -30.0, "filter": "r",
                                                    "airmass": np.nan, "exposure": "dc_e1", "kind": "object"})
    assert got["world_coordinates"] == got["zero_points"] == 0 and got["provenances"] == 2
    with Session(engine) as s:
        img = s.scalars(sa.select(m.Image)).one()
        assert not img.wcs_solved
        assert SkyCoord(img.ra, img.dec, unit="deg").separation(SkyCoord(*c.centre, unit="deg")).arcsec < 1e-6
        assert (img.sky_level, img.sky_rms) == (c.sky, c.sky_rms)
        assert (img.exposure.ra, img.exposure.dec) == (200.0, -30.0)
        assert img.exposure.airmass == pytest.approx(1.2)  # NaN in the instrument's header: the image's
    # the raw header's decimal pointing when no instrument header is given
    c2 = make_ccd(root, "dc_e2", "C0", with_wcs=False, with_zp=False)
    ingest(engine, root, c2)
    with Session(engine) as s:
        exp = s.scalars(sa.select(m.Exposure).where(m.Exposure.name == "dc_e2")).one()
        assert (exp.ra, exp.dec) == (359.99, 0.01)


def test_ingest_twice_changes_nothing(engine, root):
    ccds = [make_ccd(root, "dc_e0", f"C{k}") for k in range(3)]
    first = [ingest(engine, root, c) for c in ccds]
    snap = content(engine)
    with engine.connect() as conn:
        ids = sorted(conn.execute(sa.select(m.Image.id, m.Image.created_at)).all())
    assert [ingest(engine, root, c) for c in ccds] == first
    assert content(engine) == snap
    with engine.connect() as conn:
        assert sorted(conn.execute(sa.select(m.Image.id, m.Image.created_at)).all()) == ids
    assert counts(engine)["images"] == 3 and counts(engine)["exposures"] == 1


def test_failed_wcs_marks_zero_point_bad_and_recovers(engine, root):
    c = make_ccd(root, "dc_e0", "C3", wcs_ok=False)
    ingest(engine, root, c)
    with Session(engine) as s:
        wcs = s.scalars(sa.select(m.WorldCoordinates)).one()
        assert wcs.bad and wcs.bad_reason == "too few matches (3 < 6)" and wcs.rms_arcsec is None
        zp = s.scalars(sa.select(m.ZeroPoint)).one()
        assert zp.bad and zp.bad_reason == "upstream world_coordinates bad: too few matches (3 < 6)"
        assert zp.world_coordinates_id == wcs.id
        img = s.scalars(sa.select(m.Image)).one()
        assert not img.bad and not img.wcs_solved  # footprint from the header WCS
        assert SkyCoord(img.ra, img.dec, unit="deg").separation(SkyCoord(*c.centre, unit="deg")).arcsec < 1e-6
        assert not img.source_lists[0].bad and not img.source_lists[0].psfs[0].bad
    # the same step re-run successfully (same provenance): re-ingest clears the flags
    fixed = make_ccd(root, "dc_e0", "C3", wcs_ok=True)
    ingest(engine, root, fixed)
    with Session(engine) as s:
        assert s.scalars(sa.select(m.ZeroPoint.bad)).all() == [False]
        assert s.scalars(sa.select(m.WorldCoordinates.bad_reason)).all() == [None]
        img = s.scalars(sa.select(m.Image)).one()
        assert img.wcs_solved and SkyCoord(img.ra, img.dec, unit="deg").separation(
            SkyCoord(*fixed.solved_centre, unit="deg")).arcsec < 1e-6
    assert counts(engine)["zero_points"] == 1


def test_propagate_badness_chain():
    img = {"bad": True, "bad_reason": "all-NaN rows"}
    sl = ii.propagate_badness({"n": 1}, img, "images")
    zp = ii.propagate_badness({"bad": True, "bad_reason": "3 stars"}, sl, "source_lists")
    assert sl == {"n": 1, "bad": True, "bad_reason": "upstream images bad: all-NaN rows"}
    assert zp["bad_reason"] == "3 stars; upstream source_lists bad: upstream images bad: all-NaN rows"
    assert ii.propagate_badness({}, {"bad": False}, "images") == {"bad": False, "bad_reason": None}


# -- transactions and errors -----------------------------------------------------------------------
def test_failure_mid_ccd_leaves_no_rows(engine, root):
    """ZP_N < 0 passes the header reader but violates a CHECK constraint of zero_points: the
    provenances, exposure, image, source list, PSF and WCS rows written before it roll back."""
    bad = make_ccd(root, "dc_e0", "C0", zp_n=-3)
    with pytest.raises(sa.exc.IntegrityError, match="n_stars"):
        ingest(engine, root, bad)
    assert set(counts(engine).values()) == {0}
    good = make_ccd(root, "dc_e0", "C1")
    ingest(engine, root, good)
    with pytest.raises(sa.exc.IntegrityError):
        ingest(engine, root, bad)
    assert counts(engine)["images"] == 1
    with Session(engine) as s:
        assert s.scalars(sa.select(m.Image.ccd)).all() == ["C1"]


def test_bad_files_raise_naming_the_file_and_write_nothing(engine, root):
    c = make_ccd(root, "dc_e0", "C0")
    cases = []
    # a missing file
    cases.append(({**c.files, "psf": c.files["psf"].with_name("nope.psf.fits")}, "nope.psf.fits: file not found"))
    # a truncated file
    trunc = c.files["image"].with_name("trunc.image.fits")
    trunc.write_bytes(c.files["image"].read_bytes()[:100])
    cases.append(({**c.files, "image": trunc}, "trunc.image.fits: not a readable FITS"))
    # a file made by the wrong step
    cases.append(({**c.files, "wcs": c.files["zp"]}, "made by step 'zero_point', expected 'astrometry'"))
    # a zero point made from another astrometry run
    other = make_ccd(root, "dc_e0", "C0", provs=provenances({"astrometry.sip_order": 2}))
    cases.append(({**c.files, "zp": other.files["zp"]}, "zp.fits: made from astrometry.DemoCam"))
    # tampered provenance cards
    tampered = c.files["psf"].with_name("tampered.psf.fits")
    with fits.open(c.files["psf"]) as hdul:
        hdul[0].header["VO_PARS"] = hdul[0].header["VO_PARS"].replace("3.0", "4.0")
        hdul.writeto(tampered)
    cases.append(({**c.files, "psf": tampered}, "tampered.psf.fits: provenance cards hash to"))
    # products of another CCD
    cases.append(({**c.files, "image": make_ccd(root, "dc_e0", "C2").files["image"]}, "CCD = 'C2'"))
    # a required keyword missing
    nozp = c.files["zp"].with_name("nozp.zp.fits")
    with fits.open(c.files["zp"]) as hdul:
        del hdul[0].header["ZP_OK"]
        hdul.writeto(nozp)
    cases.append(({**c.files, "zp": nozp}, "nozp.zp.fits: header keyword ZP_OK missing"))
    cases.append(({k: v for k, v in c.files.items() if k != "background"}, "no background file"))
    # an image of another instrument
    cases.append(({**c.files, "image": c.files["image"]}, "made for instrument 'DemoCam', expected 'DECam'"))
    for files, message in cases:
        inst = "DECam" if "DECam" in message else INST
        with pytest.raises(ing.IngestError, match=message.replace("(", r"\(").replace(")", r"\)")):
            ii.ingest_image_products(engine, config(root), inst, "dc_e0", "C0", files)
    outside = root.parent / "elsewhere.fits"
    outside.write_bytes(c.files["raw"].read_bytes())
    with pytest.raises(ing.IngestError, match="not under the data root"):
        ii.ingest_image_products(engine, config(root), INST, "dc_e0", "C0", {**c.files, "raw": outside})
    assert set(counts(engine).values()) == {0}


# -- concurrency -----------------------------------------------------------------------------------
N_PROC = 8
GRID = [(e, f"C{k}") for e in ("dc_e0", "dc_e1", "dc_e2") for k in range(4)]


def _worker(url, root, ccds, barrier, errors):
    try:
        engine = get_engine(url)
        barrier.wait(timeout=60)
        for _ in range(2):
            for c in ccds:
                ii.ingest_image_products(engine, config(root), INST, c.exposure, c.ccd, c.files)
        engine.dispose()
    except BaseException:  # noqa: BLE001 - report everything to the parent
        errors.put(traceback.format_exc())


def test_concurrent_ingest_jobs(db_url, root):
    """8 processes ingest overlapping CCD sets (each CCD by 3 jobs, twice) into a fresh
    database whose tables do not exist yet: no errors, no duplicates, nothing lost."""
    ccds = [make_ccd(root, e, k, wcs_ok=(k != "C3")) for e, k in GRID]
    ctx = mp.get_context("fork")
    barrier, errors = ctx.Barrier(N_PROC), ctx.Queue()
    shares = [[ccds[(3 * i + j) % len(ccds)] for j in range(5)] for i in range(N_PROC)]  # overlapping windows
    assert {id(c) for s in shares for c in s} == {id(c) for c in ccds}
    procs = [ctx.Process(target=_worker, args=(db_url, root, share, barrier, errors)) for share in shares]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    messages = []
    while not errors.empty():
        messages.append(errors.get())
    assert not messages, "\n".join(messages)
    assert [p.exitcode for p in procs] == [0] * N_PROC
    engine = get_engine(db_url)
    try:
        assert counts(engine) == {"provenances": 4, "exposures": 3, "images": 12, "source_lists": 12,
                                  "psfs": 12, "world_coordinates": 12, "zero_points": 12, "catalog_excerpts": 0}
        with Session(engine) as s:
            bad = s.execute(sa.select(m.Exposure.name, m.Image.ccd).join(m.ZeroPoint.source_list)
                            .join(m.SourceList.image).join(m.Image.exposure).where(m.ZeroPoint.bad)).all()
        assert sorted(bad) == [(e, "C3") for e in ("dc_e0", "dc_e1", "dc_e2")]
        # the same rows as one job ingesting everything alone
        alone = get_engine(f"sqlite:///{root.parent / 'alone.sqlite'}")
        for c in ccds:
            ingest(alone, root, c)
        assert content(engine) == content(alone)
        alone.dispose()
    finally:
        engine.dispose()


# -- cone search over image centres ---------------------------------------------------------------
@pytest.mark.parametrize("use_q3c", [False, True], ids=["healpix", "q3c"])
def test_cone_search_over_images(engine, root, use_q3c):
    ccds = [make_ccd(root, e, k, with_wcs=False, with_zp=False) for e, k in GRID]
    for c in ccds:
        ingest(engine, root, c)
    with Session(engine) as s:
        if use_q3c and not has_q3c(s):
            pytest.skip(f"q3c extension not available on {engine.dialect.name}")
        if engine.dialect.name == "postgresql":
            ix = s.execute(sa.text("SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_images_q3c'")).scalar()
            assert "q3c_ang2ipix" in ix
        centres = SkyCoord([c.centre[0] for c in ccds], [c.centre[1] for c in ccds], unit="deg")
        for ra0, dec0, radius in [(123.0, 12.5, 0.03), (200.5, -30.2, 0.05), (0.0, 0.02, 0.04),
                                  (359.99, 0.01, 0.001), (10.0, 10.0, 1.0)]:
            truth = centres.separation(SkyCoord(ra0, dec0, unit="deg")).deg
            found = cone_search(s, m.Image, ra0, dec0, radius, use_q3c=use_q3c)
            got = sorted((i.exposure.name, i.ccd) for i in found)
            assert got == sorted((c.exposure, c.ccd) for c, d in zip(ccds, truth) if d <= radius)
        assert len(cone_search(s, m.Image, 359.995, 0.02, 0.05, m.Image.ccd == "C0", use_q3c=use_q3c)) == 1


# -- catalog excerpt tiles ---------------------------------------------------------------------------
def write_tile(root, catalog, nside, tile, n, **extra) -> Path:
    path = root / "catalogs" / catalog / f"{catalog}_tile{tile:06d}.fits"
    hp = HEALPix(nside=nside, order="nested")
    pix = np.full(n, min(tile, hp.npix - 1))  # an invalid TILE keeps stars of the last pixel
    lon, lat = hp.healpix_to_lonlat(pix, dx=np.random.default_rng(tile).uniform(0, 1, n),
                                    dy=np.random.default_rng(tile + 1).uniform(0, 1, n))
    ph = fits.Header()
    for key, val in {"CATALOG": catalog, "NSIDE": nside, "TILE": tile, "N_STARS": n, **extra}.items():
        ph[key] = val
    tab = fits.table_to_hdu(Table({"source_id": np.arange(n), "ra": lon.to_value(u.deg),
                                   "dec": lat.to_value(u.deg)}))
    write_fits(path, fits.HDUList([fits.PrimaryHDU(header=ph), tab]))
    return path


def test_catalog_excerpt_tiles(engine, root):
    tiles = [write_tile(root, "gaia_dr3", 32, t, n) for t, n in ((100, 50), (101, 7), (5000, 0))]
    assert tiles_ingest.ingest_excerpt_tiles(engine, config(root), tiles) == 3
    first = content(engine)["catalog_excerpts"]
    assert tiles_ingest.ingest_excerpt_tiles(engine, config(root), tiles) == 3
    assert content(engine)["catalog_excerpts"] == first
    hp = HEALPix(nside=32, order="nested")
    with Session(engine) as s:
        rows = s.scalars(sa.select(m.CatalogExcerpt).order_by(m.CatalogExcerpt.tile)).all()
        assert [(r.catalog, r.nside, r.tile, r.n_stars, r.ordering) for r in rows] == [
            ("gaia_dr3", 32, 100, 50, "nested"), ("gaia_dr3", 32, 101, 7, "nested"),
            ("gaia_dr3", 32, 5000, 0, "nested")]
        for r, path in zip(rows, tiles):
            assert hp.lonlat_to_healpix(r.ra * u.deg, r.dec * u.deg) == r.tile  # the centre is in its tile
            data = fits.getdata(path, 1)
            if len(data):  # the tile's stars lie around its centre, within a pixel size
                sep = SkyCoord(data["ra"], data["dec"], unit="deg").separation(SkyCoord(r.ra, r.dec, unit="deg"))
                assert sep.deg.max() < 2.0
            assert (r.filename, r.checksum) == (path.relative_to(root).as_posix(), checksum(path))
        assert [r.tile for r in cone_search(s, m.CatalogExcerpt, rows[0].ra, rows[0].dec, 0.5)] == [100]
    bad = write_tile(root, "gaia_dr3", 32, 12 * 32 * 32, 1)
    with pytest.raises(ing.IngestError, match=r"tile012288.fits: HEALPix pixel 12288 outside 0..12287"):
        tiles_ingest.ingest_excerpt_tiles(engine, config(root), tiles + [bad])
    nostars = write_tile(root, "gaia_dr3", 32, 7, 3)
    with fits.open(nostars, mode="update") as hdul:
        del hdul[0].header["N_STARS"]
    with pytest.raises(ing.IngestError, match="tile000007.fits: header keyword N_STARS or NROWS missing"):
        tiles_ingest.ingest_excerpt_tiles(engine, config(root), [nostars])
    assert counts(engine)["catalog_excerpts"] == 3


# -- vo populate ------------------------------------------------------------------------------------
def test_populate_rebuilds_the_same_rows(db_url, root, tmp_path):
    """Files of two astrometry versions (old hash and new) plus tiles: populating an empty
    database gives the rows of ingesting every chain directly."""
    ccds = [make_ccd(root, e, k, wcs_ok=(k != "C1")) for e, k in GRID[:6]]
    old = [make_ccd(root, "dc_e0", "C0", provs=provenances({"astrometry.sip_order": 2}))]
    skipped = [make_ccd(root, "dc_e2", "C3", with_wcs=False, with_zp=False)]
    tiles = [write_tile(root, "gaia_dr3", 32, t, 5) for t in (1, 2)]
    (root / PROJECT / "preprocessing-0123456789" / "dc_e9").mkdir(parents=True)  # empty folder
    (root / PROJECT / "extraction-abc" / "dc_e0" / "notes.txt").parent.mkdir(parents=True)
    direct = get_engine(f"sqlite:///{tmp_path / 'direct.sqlite'}")
    for c in ccds + old + skipped:
        ingest(direct, root, c)
    tiles_ingest.ingest_excerpt_tiles(direct, config(root), tiles)
    expected = content(direct)
    direct.dispose()

    got = populate(config(root, db_url))
    assert got["images"] == 7 and got["world_coordinates"] == 7 and got["zero_points"] == 7
    assert got["exposures"] == 3 and got["catalog_excerpts"] == 2 and got["provenances"] == 6
    engine = get_engine(db_url)
    try:
        assert content(engine) == expected
        assert counts(engine)["source_lists"] == 7
    finally:
        engine.dispose()


def test_tiles_written_by_the_excerpt_module(engine, root):
    """Tiles as :mod:`vo.images.astrometry.excerpts` writes them (HPXPIX, NROWS, HPXORDER; NUNIQ file names)."""
    excerpts = pytest.importorskip("vo.images.astrometry.excerpts")
    from vo.paths import Paths

    nside, paths = 64, Paths(config(root))
    written = []
    for ipix, n in ((3000, 4), (3001, 0)):
        lon, lat = HEALPix(nside=nside, order="nested").healpix_to_lonlat(np.full(n, ipix))
        table = Table({"source_id": np.arange(n, dtype=np.int64), "ra": lon.to_value(u.deg),
                       "dec": lat.to_value(u.deg), "phot_g_mean_mag": np.full(n, 15.0)})
        path = paths.excerpt_tile("gaia_dr3", 4 * nside ** 2 + ipix)
        excerpts.write_tile(excerpts.Tile("gaia_dr3", nside, ipix, path), table, np.inf, "test")
        written.append(path)
    assert tiles_ingest.ingest_excerpt_tiles(engine, config(root), written) == 2
    with Session(engine) as s:
        rows = s.execute(sa.select(m.CatalogExcerpt.tile, m.CatalogExcerpt.nside, m.CatalogExcerpt.n_stars,
                                   m.CatalogExcerpt.ordering).order_by(m.CatalogExcerpt.tile)).all()
    assert [tuple(r) for r in rows] == [(3000, 64, 4, "nested"), (3001, 64, 0, "nested")]
