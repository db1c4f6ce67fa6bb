"""Reference-catalog excerpts (Gaia DR3) for an image footprint, cached per HEALPix sky tile.

The sky is cut into HEALPix tiles (nested ordering, ``nside`` from the config).  A tile is
identified by its NUNIQ number ``4 * nside**2 + ipix``, unique across ``nside`` values, so
caches made with different ``nside`` never collide.  Each tile is one FITS table at
``Paths.excerpt_tile(catalog, uniq)`` (shared by all projects, never hashed).  A missing tile
is fetched once: the fetch runs under a per-tile file lock and the file is written
atomically, so concurrent jobs asking for the same tile wait for the first one and then read
its file.

Fetchers (``fetch(tile) -> Table`` plus a ``mag_limit`` attribute):

* :class:`GaiaArchiveFetcher`: ADQL on the ESA Gaia archive through ``astroquery.gaia``.
  Gaia ``source_id`` encodes the HEALPix level-12 nested index of the source
  (``source_id // 2**35``), so one tile is the exact range query
  ``source_id BETWEEN a AND b`` (fast on the archive, no duplicates across tiles).
* :class:`DemoCamFetcher`: tiles cut from :func:`vo.images.instruments.democam.simulate.gaia_catalog`.

Column names and units are Gaia DR3's (ra, dec in deg; *_error, parallax in mas; pmra, pmdec
in mas/yr; ref_epoch in Julian years; magnitudes in mag).
"""

from __future__ import annotations

import http.client
import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.io import fits
from astropy.table import MaskedColumn, Table, vstack
from astropy_healpix import HEALPix

from vo.io.fits import FitsError, open_fits, write_fits
from vo.sky import gnomonic, unit_vectors

#: Columns fetched from the archive (and kept from other sources when present).
COLUMNS = ("source_id", "ra", "dec", "ra_error", "dec_error", "pmra", "pmdec", "pmra_error",
           "pmdec_error", "parallax", "parallax_error", "ref_epoch", "ruwe",
           "phot_g_mean_mag", "phot_bp_mean_mag", "phot_rp_mean_mag",
           "phot_g_mean_flux_over_error", "phot_bp_mean_flux_over_error",
           "phot_rp_mean_flux_over_error")
#: Columns every excerpt must have.
REQUIRED = ("source_id", "ra", "dec", "phot_g_mean_mag")
#: HEALPix level of the index encoded in Gaia source_id.
SOURCE_ID_LEVEL = 12
SOURCE_ID_SHIFT = 2 ** 35


class ExcerptError(ValueError):
    """An excerpt that cannot be made; the message names the tile/file/footprint."""


class CatalogOfflineError(ExcerptError):
    """The catalog server could not be reached (or failed) for a tile."""


@dataclass(frozen=True)
class Tile:
    """One HEALPix sky tile (nested ordering) and its cache file."""

    catalog: str
    nside: int
    ipix: int
    path: Path

    @property
    def uniq(self) -> int:
        """NUNIQ number ``4 * nside**2 + ipix`` (unique across nside)."""
        return 4 * self.nside ** 2 + self.ipix


def tile_uniq(nside: int, ipix) -> np.ndarray:
    """NUNIQ numbers of nested pixels ``ipix`` at ``nside``."""
    return 4 * int(nside) ** 2 + np.asarray(ipix, dtype=np.int64)


def _check_nside(nside: int) -> int:
    nside = int(nside)
    if nside < 1 or nside > 2 ** SOURCE_ID_LEVEL or nside & (nside - 1):
        raise ExcerptError(f"catalog_excerpts.nside={nside}: must be a power of 2 <= 4096")
    return nside


# -- geometry ------------------------------------------------------------------------------
def _footprint(footprint_radec) -> tuple[np.ndarray, float, float]:
    fp = np.asarray(footprint_radec, dtype=float)
    if fp.ndim != 2 or fp.shape[1] != 2 or len(fp) < 3 or not np.all(np.isfinite(fp)):
        raise ExcerptError(f"footprint must be an (N>=3, 2) array of finite (ra, dec) corners "
                           f"in deg; got {fp.tolist()!r}")
    center = unit_vectors(fp[:, 0], fp[:, 1]).sum(axis=0)
    ra0 = float(np.degrees(np.arctan2(center[1], center[0])) % 360.0)
    dec0 = float(np.degrees(np.arcsin(center[2] / np.linalg.norm(center))))
    return fp, ra0, dec0


def footprint_mask(ra, dec, footprint_radec, margin_arcsec: float = 0.0) -> np.ndarray:
    """True for positions (deg) inside the convex footprint polygon grown by ``margin_arcsec``."""
    fp, ra0, dec0 = _footprint(footprint_radec)
    cx, cy = gnomonic(fp[:, 0], fp[:, 1], ra0, dec0)
    order = np.argsort(np.arctan2(cy, cx))  # counter-clockwise around the centre
    cx, cy = cx[order], cy[order]
    x, y = gnomonic(ra, dec, ra0, dec0)
    inside = np.isfinite(x)
    margin = margin_arcsec / 3600.0
    for k in range(len(cx)):  # one half-plane per edge (a handful of edges)
        ex, ey = cx[(k + 1) % len(cx)] - cx[k], cy[(k + 1) % len(cy)] - cy[k]
        norm = np.hypot(ex, ey)
        with np.errstate(invalid="ignore"):
            inside &= (ex * (y - cy[k]) - ey * (x - cx[k])) / norm >= -margin
    return inside


def tiles_for_footprint(footprint_radec, nside: int, margin_arcsec: float = 0.0) -> np.ndarray:
    """Nested HEALPix pixels (``nside``) overlapping the footprint grown by ``margin_arcsec``."""
    fp, ra0, dec0 = _footprint(footprint_radec)
    c = unit_vectors(ra0, dec0)
    corners = unit_vectors(fp[:, 0], fp[:, 1])
    radius = np.degrees(np.arccos(np.clip(corners @ c, -1, 1))).max() + margin_arcsec / 3600.0
    hp = HEALPix(nside=_check_nside(nside), order="nested")
    pix = hp.cone_search_lonlat(ra0 * u.deg, dec0 * u.deg, radius=radius * u.deg)
    return np.unique(np.asarray(pix, dtype=np.int64))


def healpix_of(ra, dec, nside: int) -> np.ndarray:
    """Nested HEALPix pixel (``nside``) of positions in deg."""
    hp = HEALPix(nside=_check_nside(nside), order="nested")
    return np.asarray(hp.lonlat_to_healpix(np.asarray(ra, float) * u.deg,
                                           np.asarray(dec, float) * u.deg), dtype=np.int64)


# -- tile files ----------------------------------------------------------------------------
def _clean(table: Table) -> Table:
    """Keep plain numeric/string columns (FITS-writable), Gaia column order first."""
    names = [c for c in COLUMNS if c in table.colnames]
    names += [c for c in table.colnames if c not in names and table[c].dtype.kind in "biufU"]
    return Table(table[names], masked=table.has_masked_columns, copy=False)


def write_tile(tile: Tile, table: Table, mag_limit: float, source: str) -> None:
    """Write a tile FITS file atomically (header: catalog, nside, pixel, G limit, source)."""
    missing = [c for c in REQUIRED if c not in table.colnames]
    if missing:
        raise ExcerptError(f"tile {tile.uniq} from {source}: missing column(s) {missing}")
    hdu = fits.BinTableHDU(_clean(table), name="CATALOG")
    primary = fits.PrimaryHDU()
    for key, value, comment in [
            ("CATALOG", tile.catalog, "reference catalog"),
            ("HPXORDER", "NESTED", "HEALPix ordering"), ("NSIDE", tile.nside, "HEALPix nside"),
            ("HPXPIX", tile.ipix, "HEALPix pixel (nested)"), ("NUNIQ", tile.uniq, "4 nside^2 + pix"),
            ("MAGLIM", float(mag_limit) if np.isfinite(mag_limit) else 99.0,
             "rows with phot_g_mean_mag < MAGLIM (99: all)"),
            ("SOURCE", source[:60], "where the rows came from"), ("NROWS", len(table), "rows")]:
        primary.header[key] = (value, comment)
    write_fits(tile.path, fits.HDUList([primary, hdu]))


def read_tile(path: str | os.PathLike) -> tuple[Table, fits.Header]:
    """Read a tile file: the table (Gaia columns) and the primary header.

    A FITS table placed there by hand (e.g. saved from the archive web interface) works too
    when it has the :data:`REQUIRED` columns in its first table HDU.
    """
    with open_fits(path) as hdul:
        tab_hdus = [h for h in hdul if isinstance(h, (fits.BinTableHDU, fits.TableHDU))]
        if not tab_hdus:
            raise FitsError(f"{path}: no table HDU")
        table = Table.read(tab_hdus[0])
        header = hdul[0].header.copy()
    missing = [c for c in REQUIRED if c not in table.colnames]
    if missing:
        raise FitsError(f"{path}: missing catalog column(s) {missing}")
    return table, header


def get_tile(tile: Tile, fetcher, lock_timeout: float = 600.0) -> Table:
    """The rows of one tile: read from the cache, or fetched (once, under a file lock)."""
    from filelock import FileLock, Timeout

    if not tile.path.exists():
        tile.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with FileLock(str(tile.path) + ".lock", timeout=lock_timeout):
                if not tile.path.exists():  # another job may have written it meanwhile
                    table = fetcher.fetch(tile)
                    write_tile(tile, table, getattr(fetcher, "mag_limit", np.inf),
                               getattr(fetcher, "name", type(fetcher).__name__))
        except Timeout as exc:
            raise ExcerptError(f"tile {tile.uniq}: waited {lock_timeout} s for the lock "
                               f"{tile.path}.lock held by another job") from exc
    table, header = read_tile(tile.path)
    table.meta["MAGLIM"] = float(header.get("MAGLIM", 99.0))
    return table


def get_excerpt(paths, cfg: dict, footprint_radec, fetcher) -> Table:
    """Reference-catalog rows covering an image footprint.

    Parameters
    ----------
    paths : vo.paths.Paths
    cfg : dict
        Merged config (section ``catalog_excerpts``).
    footprint_radec : (N, 2) array
        Corners (ra, dec in deg) of the image; the excerpt covers this convex polygon grown
        by ``catalog_excerpts.margin`` (arcsec).
    fetcher : object with ``fetch(tile) -> Table`` and ``mag_limit``.

    Returns
    -------
    astropy Table with Gaia DR3 columns, ``phot_g_mean_mag < mag_limit``; ``meta`` holds
    ``tiles`` (NUNIQ numbers), ``tile_files`` (paths) and ``catalog``.

    Raises
    ------
    ExcerptError
        No catalog row in the footprint, a cached tile with a brighter magnitude limit than
        asked for, or (:class:`CatalogOfflineError`) a tile that could not be fetched.
    """
    pars = cfg["catalog_excerpts"]
    catalog, nside = pars["catalog"], _check_nside(pars["nside"])
    margin, mag_limit = float(pars["margin"]), float(pars["mag_limit"])
    pix = tiles_for_footprint(footprint_radec, nside, margin)
    cache = getattr(fetcher, "cache_name", None) or catalog  # an offline file set has its own cache
    tiles = [Tile(catalog, nside, int(p), paths.excerpt_tile(cache, int(tile_uniq(nside, p))))
             for p in pix]
    tables = []
    for tile in tiles:
        table = get_tile(tile, fetcher, float(pars["lock_timeout"]))
        if table.meta["MAGLIM"] < mag_limit:
            raise ExcerptError(f"{tile.path}: cached with phot_g_mean_mag < {table.meta['MAGLIM']}"
                               f" but catalog_excerpts.mag_limit is {mag_limit}; delete the file "
                               f"to fetch it again")
        table.meta.clear()
        tables.append(table)
    table = vstack(tables, metadata_conflicts="silent") if len(tables) > 1 else tables[0]
    keep = footprint_mask(table["ra"], table["dec"], footprint_radec, margin)
    gmag = np.ma.filled(np.ma.asarray(table["phot_g_mean_mag"], dtype=float), np.nan)
    with np.errstate(invalid="ignore"):
        keep &= gmag < mag_limit
    table = table[keep]
    if len(table) == 0:
        fp = np.round(np.asarray(footprint_radec, float), 5).tolist()
        raise ExcerptError(f"no {catalog} star overlaps the footprint {fp} (tiles "
                           f"{[t.uniq for t in tiles]} under {paths.catalog_cache() / catalog})")
    table.meta.update(catalog=catalog, tiles=[t.uniq for t in tiles],
                      tile_files=[str(t.path) for t in tiles])
    return table


# -- fetchers ------------------------------------------------------------------------------
class _TimeoutConnectionHandler:
    """astroquery TAP connection handler whose HTTP(S) connections have a timeout.

    astroquery's own handler opens ``http.client`` connections without a timeout, so a dead
    server would hang a job forever; this is the hook GaiaClass offers to change that.
    """

    def __init__(self, host: str, port: int, sslport: int, timeout: float):
        self.host, self.port, self.sslport, self.timeout = host, port, sslport, timeout

    def get_connection(self, *, ishttps=False, cookie=None, verbose=False):
        if ishttps or cookie is not None:
            return self.get_connection_secure(verbose)
        return http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)

    def get_connection_secure(self, verbose=False):
        return http.client.HTTPSConnection(self.host, self.sslport, timeout=self.timeout)


class GaiaArchiveFetcher:
    """Fetch Gaia DR3 tiles from the ESA Gaia archive (TAP, ``astroquery.gaia``).

    Parameters
    ----------
    url : str
        Archive base URL (TAP service at ``{url}tap-server/tap``).
    timeout : float
        Seconds before a connection or read is abandoned.
    mag_limit : float
        Rows with ``phot_g_mean_mag < mag_limit`` are fetched.
    table : str
        Archive table.
    max_rows : int
        ``TOP`` of the query; a tile that reaches it is an error (use a larger nside).
    """

    name = "ESA Gaia archive"

    def __init__(self, url: str = "https://gea.esac.esa.int/", timeout: float = 120.0,
                 mag_limit: float = 21.0, table: str = "gaiadr3.gaia_source",
                 max_rows: int = 1_000_000):
        self.url = url if url.endswith("/") else url + "/"
        self.timeout, self.mag_limit = float(timeout), float(mag_limit)
        self.table, self.max_rows = table, int(max_rows)

    @classmethod
    def from_config(cls, cfg: dict) -> "GaiaArchiveFetcher":
        pars = cfg["catalog_excerpts"]
        return cls(url=pars["archive_url"], timeout=pars["timeout"], mag_limit=pars["mag_limit"])

    def adql(self, tile: Tile) -> str:
        """ADQL of one tile: the source_id range of its level-12 HEALPix sub-pixels."""
        nside = _check_nside(tile.nside)
        factor = (2 ** SOURCE_ID_LEVEL // nside) ** 2  # level-12 pixels per tile pixel
        lo = tile.ipix * factor * SOURCE_ID_SHIFT
        hi = (tile.ipix + 1) * factor * SOURCE_ID_SHIFT - 1
        return (f"SELECT TOP {self.max_rows} {', '.join(COLUMNS)} FROM {self.table} "
                f"WHERE source_id BETWEEN {lo} AND {hi} "
                f"AND phot_g_mean_mag < {self.mag_limit:g}")

    def _gaia(self):
        from urllib.parse import urlsplit

        from astroquery.gaia import GaiaClass
        from astroquery.utils.tap.conn.tapconn import TapConn

        parts = urlsplit(self.url)
        https = parts.scheme == "https"
        port = parts.port or (443 if https else 80)
        conn = TapConn(ishttps=https, host=parts.hostname, port=port, sslport=port,
                       server_context=f"{parts.path.strip('/')}/tap-server".lstrip("/"),
                       tap_context="tap", upload_context="Upload", table_edit_context="TableTool",
                       data_context="data", datalink_context="datalink",
                       connhandler=_TimeoutConnectionHandler(parts.hostname, port, port,
                                                             self.timeout))
        return GaiaClass(tap_plus_conn_handler=conn, gaia_tap_server=self.url,
                         gaia_data_server=self.url, show_server_messages=False)

    def fetch(self, tile: Tile) -> Table:
        """Rows of ``tile`` (Gaia DR3 columns); :class:`CatalogOfflineError` when unreachable."""
        query = self.adql(tile)
        try:
            job = self._gaia().launch_job(query, output_format="votable_gzip")
            table = job.get_results()
        except Exception as exc:  # socket, HTTP and TAP errors all mean "no tile from here"
            kind = "timed out" if isinstance(exc, (socket.timeout, TimeoutError)) else "failed"
            raise CatalogOfflineError(
                f"{self.name} at {self.url} {kind} for tile {tile.uniq} (HEALPix nside="
                f"{tile.nside} nested pixel {tile.ipix}): {type(exc).__name__}: {exc}. "
                f"Offline? Run this ADQL on the archive and save the result as a FITS table at "
                f"{tile.path} : {query}") from exc
        if len(table) >= self.max_rows:
            raise ExcerptError(f"tile {tile.uniq}: {len(table)} rows reached the row limit; "
                               f"use a larger catalog_excerpts.nside")
        return Table(table, masked=True)


class TableFetcher:
    """Tiles cut from a catalog in memory: a Table, or a function that makes it on first use (a
    simulated camera's catalog, :meth:`vo.images.instruments.Instrument.catalog_fetcher`)."""

    mag_limit = np.inf

    def __init__(self, catalog, name: str = "local catalog"):
        if catalog is None:
            raise ValueError("TableFetcher needs a catalog (a Table or a function returning one)")
        self.name, self._source, self._catalog = name, catalog, None
        self._pix: dict[int, np.ndarray] = {}

    @property
    def catalog(self) -> Table:
        if self._catalog is None:
            self._catalog = self._source if isinstance(self._source, Table) else self._source()
        return self._catalog

    def fetch(self, tile: Tile) -> Table:
        if tile.nside not in self._pix:
            self._pix[tile.nside] = healpix_of(self.catalog["ra"], self.catalog["dec"], tile.nside)
        return self.catalog[self._pix[tile.nside] == tile.ipix]


def file_fetcher(patterns: list[str], catalog: str) -> TableFetcher:
    """A :class:`TableFetcher` over FITS tables with Gaia columns matched by glob ``patterns``
    (an offline catalog, e.g. legacypipe's ``gaia/chunk-*.fits``): read on first use, ``bp_rp``
    made from the BP and RP magnitudes where absent; cached apart from the archive's tiles
    (``{catalog}_files{hash}``), since the files hold only part of the sky."""
    import glob
    import hashlib

    files = sorted({p for pattern in patterns for p in glob.glob(pattern, recursive=True)})
    if not files:
        raise ExcerptError(f"catalog_excerpts.files {patterns}: no file matches")

    def load() -> Table:
        tables = []
        for f in files:
            try:
                t = Table.read(f)
            except (OSError, ValueError) as exc:
                raise ExcerptError(f"{f}: not a readable catalog table ({exc})") from exc
            missing = [c for c in ("ra", "dec", "phot_g_mean_mag") if c not in t.colnames]
            if missing:
                raise ExcerptError(f"{f}: catalog table lacks the columns {missing}")
            if "bp_rp" not in t.colnames and {"phot_bp_mean_mag", "phot_rp_mean_mag"} <= set(t.colnames):
                t["bp_rp"] = t["phot_bp_mean_mag"] - t["phot_rp_mean_mag"]
            tables.append(t)
        return vstack(tables, metadata_conflicts="silent", join_type="inner")

    fetcher = TableFetcher(load, name=f"catalog files {patterns}")
    fetcher.cache_name = f"{catalog}_files{hashlib.sha256(json.dumps(files).encode()).hexdigest()[:8]}"
    return fetcher


# -- the archive's JSON ----------------------------------------------------------------------
_JSON_DTYPES = {"long": np.int64, "int": np.int32, "short": np.int16, "double": np.float64,
                "float": np.float32, "boolean": bool, "unsignedByte": np.uint8}


def _unit(text):
    if not text:
        return None
    text = text.strip().strip("'")
    try:
        return u.Unit(text, format="vounit")
    except ValueError:
        return u.Unit(text, parse_strict="silent")


def read_gaia_json(path: str | os.PathLike) -> Table:
    """Read a Gaia archive query result in its JSON format (``{"metadata": [...], "data":
    [[...], ...]}``) into a Table with the archive's column names, dtypes and units; nulls
    become masked entries.
    """
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
        meta, rows = doc["metadata"], doc["data"]
    except FileNotFoundError:
        raise ExcerptError(f"{path}: file not found") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise ExcerptError(f"{path}: not a Gaia archive JSON result ({type(exc).__name__}: "
                           f"{exc}); expected keys 'metadata' and 'data'") from exc
    names = [m["name"] for m in meta]
    if any(len(r) != len(names) for r in rows):
        raise ExcerptError(f"{path}: rows do not all have {len(names)} values")
    columns = list(zip(*rows)) if rows else [[] for _ in names]
    table = Table()
    for m, values in zip(meta, columns):
        null = np.array([v is None for v in values], dtype=bool)
        kind = m.get("datatype")
        if kind == "char":
            data = np.array(["" if v is None else str(v) for v in values], dtype=str)
        else:
            dtype = _JSON_DTYPES.get(kind, np.float64)
            fill = False if dtype is bool else 0
            data = np.array([fill if v is None else v for v in values], dtype=dtype)
        table[m["name"]] = MaskedColumn(data, mask=null, unit=_unit(m.get("unit")),
                                        description=m.get("description"))
    table.meta["source"] = str(path)
    return table
