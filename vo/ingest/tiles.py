"""Ingest of the cached reference-catalog tiles (``catalog_excerpts`` rows), from their headers."""

from __future__ import annotations

import re
from pathlib import Path

import astropy.units as u
from astropy_healpix import HEALPix

from vo.db import models as m
from vo.db.bulk import IngestError, upsert
from vo.db.migrate import init_db
from vo.db.rows import in_transaction
from vo.ingest.images import file_row, header_value, read_headers

#: Tile header keywords (first found wins): the contract's and :mod:`vo.images.astrometry.excerpts`'s.
TILE_KEYS = {"tile": ("TILE", "HPXPIX"), "n_stars": ("N_STARS", "NROWS"),
             "ordering": ("HPXORDER", "ORDERING", "ORDER")}

_TILE_NAME = re.compile(r"_tile(\d+)\.fits$")


def excerpt_tile_row(path, root) -> dict:
    """Row of a cached catalog tile from its primary header: CATALOG, NSIDE, the HEALPix
    pixel (TILE or HPXPIX), the number of stars (N_STARS or NROWS) and the ordering
    (HPXORDER, ``nested`` by default); ra/dec are the tile centre (deg).  The number in
    the file name (``..._tile{n}.fits``) must be the pixel or its NUNIQ ``4 nside^2 + pixel``."""
    path = Path(path)
    heads = read_headers(path)[:1]
    cat = header_value(heads, "CATALOG", path, True, str).strip()
    nside = header_value(heads, "NSIDE", path, True, int)
    tile = header_value(heads, TILE_KEYS["tile"], path, True, int)
    ordering = (header_value(heads, TILE_KEYS["ordering"], path, kind=str) or "nested").strip().lower()
    if ordering not in ("nested", "ring"):
        raise IngestError(f"{path}: HEALPix ORDER {ordering!r} is neither nested nor ring")
    try:
        hp = HEALPix(nside=nside, order=ordering)
    except ValueError as exc:
        raise IngestError(f"{path}: NSIDE {nside}: {exc}") from None
    if not 0 <= tile < hp.npix:
        raise IngestError(f"{path}: HEALPix pixel {tile} outside 0..{hp.npix - 1} for NSIDE {nside}")
    match = _TILE_NAME.search(path.name)
    if match and int(match[1]) not in (tile, 4 * nside ** 2 + tile):
        raise IngestError(f"{path}: file name says tile {int(match[1])}, header pixel {tile} "
                          f"(NUNIQ {4 * nside ** 2 + tile})")
    lon, lat = hp.healpix_to_lonlat(tile)
    ra, dec = float(lon.to_value(u.deg)) % 360.0, float(lat.to_value(u.deg))
    return {"catalog": cat, "nside": nside, "tile": tile, "ordering": ordering,
            "n_stars": header_value(heads, TILE_KEYS["n_stars"], path, True, int), "ra": ra, "dec": dec,
            "healpix": int(m.healpix_index(ra, dec)), **file_row(path, root)}


def _write_tiles(session, rows: list[dict]) -> int:
    return upsert(session, m.CatalogExcerpt, rows,
                  update=("ordering", "n_stars", "ra", "dec", "healpix", "filename", "filekey", "checksum"))


def ingest_excerpt_tiles(engine, cfg: dict, tile_files: list, init: bool = True) -> int:
    """Add or update the ``catalog_excerpts`` rows of cached tile files, in one transaction.

    Returns the number of rows written.
    """
    from vo import config as vconfig

    root = vconfig.data_root(cfg)
    rows = [excerpt_tile_row(p, root) for p in tile_files]
    if not rows:
        return 0
    if init:
        init_db(engine)
    return in_transaction(engine, _write_tiles, rows)
