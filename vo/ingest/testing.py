"""Synthetic transient products for the scale tests and the ingest benchmark: provenances, the
parent rows (exposures, images, subtractions, cutouts) and one CCD's measurements and scores as
:class:`vo.ingest.transients.TransientProducts`, without running the image pipeline."""

from __future__ import annotations


def transient_provenances(instrument: str = "DemoCam") -> dict:
    """A chain of provenances, one per kind of file of :func:`vo.ingest.transients.read_transient_products`
    (plus ``association``), each made from the one before."""
    from vo import provenance as vprov

    chain, up = {}, {}
    for kind, step in (("image", "preprocessing"), ("zp", "zero_point"), ("reference_image", "references"),
                       ("difference", "subtraction"), ("candidates", "detection"), ("cutouts", "cutouts"),
                       ("measurements", "measurements"), ("scores", "scoring"), ("association", "association")):
        chain[kind] = vprov.Provenance(step, instrument, "1", {"synthetic": True}, dict(up))
        up = {chain[kind].key: chain[kind].hash}
    return chain


def insert_transient_parents(engine, provs: dict, exposures: dict[str, float]) -> None:
    """The rows a CCD's transient products hang from: for each exposure (name: MJD) an
    exposure, image (CCD ``"1"``), source list and zero point; one reference.  Files are
    named ``{kind}/{exposure}.fits``."""
    import sqlalchemy as sa

    from vo.db import models as m
    from vo.ingest.lightcurves import in_transaction, ingest_provenances

    in_transaction(engine, ingest_provenances, provs.values())
    inst = provs["image"].obs
    file = {"filekey": "", "checksum": "0" * 64}
    with engine.begin() as conn:
        pid = {k: conn.scalar(sa.select(m.Provenance.id).where(m.Provenance.hash == p.hash))
               for k, p in provs.items()}
        for name, mjd in exposures.items():
            exp = conn.execute(sa.insert(m.Exposure).values(
                instrument=inst, name=name, filter="r", mjd=mjd, exptime=60.0, filename=f"raw/{name}.fits",
                checksum="0" * 64).returning(m.Exposure.id)).scalar_one()
            corners = {f"{a}_corner_{k}": 0.0 for a in ("ra", "dec") for k in range(1, 5)}
            img = conn.execute(sa.insert(m.Image).values(
                **file, **corners, filename=f"image/{name}.fits", exposure_id=exp, ccd="1",
                provenance_id=pid["image"], nx=2048, ny=4096, ra=150.0, dec=2.0, healpix=0)
                .returning(m.Image.id)).scalar_one()
            sl = conn.execute(sa.insert(m.SourceList).values(
                **file, filename=f"sources/{name}.fits", image_id=img, provenance_id=pid["zp"], n_sources=100)
                .returning(m.SourceList.id)).scalar_one()
            conn.execute(sa.insert(m.ZeroPoint).values(**file, filename=f"zp/{name}.fits", source_list_id=sl,
                                                       provenance_id=pid["zp"], zp=30.0))
        conn.execute(sa.insert(m.Reference).values(
            **file, filename="reference/r.fits", provenance_id=pid["reference_image"], instrument=inst,
            field="F1", filter="r", ccd="1", n_images=10))


def transient_products(provs: dict, exposure: str, ra, dec, bad, score, flux_shift: float = 0.0,
                       threshold: float = 0.5, radius: float = 1.0):
    """One CCD's :class:`vo.ingest.transients.TransientProducts` as
    :func:`~vo.ingest.transients.read_transient_products` returns them, for measurements
    at ``ra``, ``dec`` (deg) with analytic-cut verdicts ``bad`` and real/bogus ``score``
    (real: not bad and score >= ``threshold``); ``flux_shift`` (e-) changes every flux."""
    import numpy as np

    from vo.db import models as m
    from vo.ingest.transients import TransientProducts

    ra, dec = np.asarray(ra, float), np.asarray(dec, float)
    n = ra.size
    hpx = m.healpix_index(ra, dec).tolist()
    flux = (500.0 + 10.0 * np.arange(n) % 300 + flux_shift).tolist()
    idx = np.arange(n)
    bad = np.asarray(bad, bool)
    cols = {"filename": [f"measurements/{exposure}.fits"] * n, "checksum": ["1" * 64] * n,
            "filekey": idx.astype(str).tolist(), "row_index": idx.tolist(), "ra": ra.tolist(), "dec": dec.tolist(),
            "healpix": hpx, "is_negative": [False] * n, "bad": bad.tolist(),
            "bad_reason": ["analytic cuts" if b else None for b in bad.tolist()],
            "x": (idx % 2048).astype(float).tolist(), "y": (idx // 2048).astype(float).tolist(), "flux": flux,
            "flux_err": [20.0] * n, "mag": (-2.5 * np.log10(flux) + 30.0).tolist(), "mag_err": [0.04] * n,
            "snr": (np.asarray(flux) / 20.0).tolist()}
    scores = {"filename": [f"scores/{exposure}.fits"] * n, "checksum": ["2" * 64] * n,
              "filekey": idx.astype(str).tolist(), "algorithm": ["synthetic"] * n,
              "score": np.asarray(score, float).tolist()}
    sub = {"filename": f"difference/{exposure}.fits", "filekey": "", "checksum": "3" * 64, "method": "zogy",
           "fwhm": 4.0, "noise_rms": 10.0 + flux_shift, "limmag5": 23.0, "n_candidates": n, "bad": False,
           "bad_reason": None}
    cut = {"filename": f"cutouts/{exposure}.h5", "filekey": "", "checksum": "4" * 64, "n_cutouts": n, "size": 51}
    keys = {k: (p.step, p.obs, p.hash) for k, p in provs.items()}
    return TransientProducts(where=f"{provs['image'].obs} {exposure} 1", provenances=list(provs.values()),
                             prov_keys=keys, image_file=f"image/{exposure}.fits", zp_file=f"zp/{exposure}.fits",
                             reference_file="reference/r.fits", subtraction=sub, cutouts=cut, measurements=cols,
                             scores=scores, threshold=threshold, radius=radius)
