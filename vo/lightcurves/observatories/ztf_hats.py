"""ZTF data-release light curves as a HATS catalog: HEALPix-partitioned parquet read with lsdb.

The bulk mode (:mod:`vo.lightcurves.observatories.ztf_bulk`) indexes every parquet file of a
data release, which cannot scale to the billions of rows of a release. A HATS catalog
(Hierarchical Adaptive Tiling Scheme, the LINCC Frameworks format of Gaia DR3 and Rubin)
partitions the objects by HEALPix pixel, adaptively (``pixel_threshold`` objects at most per
partition): a cone or a set of targets reads only the partitions that overlap it.

* :func:`convert_to_hats` turns DR parquet files (one row per object and filter, per-epoch
  lists) into a HATS catalog with ``hats-import``, on a local dask scheduler or, for a whole
  release, the dask cluster at ``scheduler_address`` (e.g. ``dask-jobqueue`` on SLURM).
* :class:`HatsIndex` answers the queries the ZTF observatory asks: one cone
  (:meth:`HatsIndex.query`) or every target of an RA bin at once (:meth:`HatsIndex.query_many`:
  the union of the partitions that overlap any target's cone is read once). Rows come out as
  the bulk mode gives them (:data:`~vo.lightcurves.observatories.ztf_bulk.BULK_COLUMNS`, IRSA's
  names, one row per epoch).

Units: positions in degrees, radii in arcsec.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from vo.lightcurves.observatories.ztf_bulk import ZTFError, _empty_bulk_table, explode_objects
from vo.sky import chord, unit_vectors

#: Columns read from the catalog (the rest of a DR file is not needed for light curves).
COLUMNS = ["objectid", "filterid", "fieldid", "rcid", "objra", "objdec", "hmjd", "mag", "magerr", "catflags",
           "clrcoeff"]


def convert_to_hats(inputs, output_dir, name: str = "ztf_lightcurves", pixel_threshold: int = 1_000_000,
                    highest_order: int = 9, n_workers: int = 1, scheduler_address: str | None = None,
                    tmp_dir=None) -> Path:
    """Import ZTF DR light-curve parquet files (a folder, or a list of files) into the HATS
    catalog ``output_dir/name``; returns its path. Partitions hold at most ``pixel_threshold``
    objects, down to HEALPix order ``highest_order`` (9: 6.9 arcmin pixels, finer than any ZTF
    quadrant's crowding needs; the importer histograms the sky at this order, 12 x 4^order
    counters, so order 12 costs 1.6 GB and minutes). Runs on a local dask scheduler with
    ``n_workers`` processes, or on the cluster at ``scheduler_address``."""
    from dask.distributed import Client
    from hats_import.catalog.arguments import ImportArguments
    from hats_import.pipeline import pipeline_with_client

    files = sorted(Path(inputs).glob("*.parquet")) if Path(str(inputs)).is_dir() else [Path(f) for f in inputs]
    if not files:
        raise ZTFError(f"ZTF HATS import: no parquet files in {inputs}")
    args = ImportArguments(
        output_artifact_name=name, output_path=str(output_dir), input_file_list=[str(f) for f in files],
        file_reader="parquet", ra_column="objra", dec_column="objdec", sort_columns="objectid",
        catalog_type="object", pixel_threshold=int(pixel_threshold), highest_healpix_order=int(highest_order),
        tmp_dir=str(tmp_dir) if tmp_dir else None, progress_bar=False, resume=False)
    if scheduler_address:
        with Client(scheduler_address) as client:
            pipeline_with_client(args, client)
    else:
        with Client(n_workers=int(n_workers), threads_per_worker=1, processes=int(n_workers) > 1,
                    dashboard_address=None) as client:
            pipeline_with_client(args, client)
    return Path(output_dir) / name


class HatsIndex:
    """Cone searches of ZTF DR light curves in a HATS catalog (see the module doc)."""

    def __init__(self, path, data_release: str | None = None):
        import lsdb

        self.path = Path(path)
        if not (self.path / "properties").exists() and not (self.path / "hats.properties").exists():
            raise ZTFError(f"ZTF HATS catalog {self.path}: not a HATS catalog (no properties file); "
                           "make one with vo.lightcurves.observatories.ztf_hats.convert_to_hats")
        self.catalog = lsdb.open_catalog(str(self.path), columns=COLUMNS)
        self.data_release = data_release

    @property
    def n_partitions(self) -> int:
        return len(self.catalog.get_healpix_pixels())

    def _read(self, pixels) -> pd.DataFrame:
        if not pixels:
            return pd.DataFrame(columns=COLUMNS)
        found = self.catalog.pixel_search(sorted(pixels)).compute(progress_bar=False)
        return pd.DataFrame(found).reset_index(drop=True)

    def _pixels(self, ra: float, dec: float, radius_arcsec: float) -> set:
        """The catalog's partitions that overlap a cone (metadata only, nothing read)."""
        try:
            cone = self.catalog.cone_search(float(ra), float(dec), float(radius_arcsec))
        except ValueError:                 # lsdb: no partition overlaps the cone
            return set()
        return {(p.order, p.pixel) for p in cone.get_healpix_pixels()}

    def query(self, ra: float, dec: float, radius_arcsec: float) -> tuple[pd.DataFrame, dict]:
        """Per-epoch rows of the objects within ``radius_arcsec`` of (ra, dec)."""
        return self.query_many([{"ra": ra, "dec": dec}], radius_arcsec)[0]

    def query_many(self, cat_rows, radius_arcsec) -> list[tuple[pd.DataFrame, dict]]:
        """Per-epoch rows of every target's cone (``radius_arcsec``: one value or one per
        target), reading each overlapping partition once."""
        rows = list(cat_rows)
        radii = np.broadcast_to(np.asarray(radius_arcsec, float), (len(rows),))
        pixels = set()
        for r, rad in zip(rows, radii):
            pixels |= self._pixels(r["ra"], r["dec"], rad)
        objects = self._read(pixels)
        when = datetime.now(timezone.utc).isoformat(timespec="seconds")
        out = []
        if len(objects):
            xyz = unit_vectors(objects["objra"].to_numpy(float), objects["objdec"].to_numpy(float))
        for r, rad in zip(rows, radii):
            meta = {"mode": "hats", "catalog": str(self.path), "partitions_read": len(pixels), "time": when,
                    "radius_arcsec": float(rad)}
            if not len(objects):
                out.append((_empty_bulk_table(), {**meta, "nrows": 0}))
                continue
            target = unit_vectors(float(r["ra"]), float(r["dec"]))
            near = np.flatnonzero(np.sum((xyz - target) ** 2, axis=1) <= chord(rad) ** 2)
            table = explode_objects(pa.Table.from_pandas(objects.iloc[near], preserve_index=False), self.path) \
                if near.size else _empty_bulk_table()
            table = table.sort_values(["oid", "mjd"], kind="stable").reset_index(drop=True)
            out.append((table, {**meta, "nrows": int(len(table))}))
        return out


def hats_path(pars: dict) -> str:
    """The HATS catalog of the ZTF config (``hats_dir``), with a clear error when unset."""
    path = pars.get("hats_dir")
    if not path:
        raise ZTFError("ZTF mode hats needs ZTF.hats_dir (a HATS catalog made by convert_to_hats)")
    return os.path.expanduser(str(path))
