"""The Zwicky Transient Facility (ZTF): IRSA light-curve service or data-release parquet files.

Two ways to get the raw photometry of a target, both giving the same table (IRSA's
column names, one row per epoch), so one reducer serves both:

* ``mode: api`` queries IRSA's ZTF light-curve service (``nph_light_curves``) with a cone
  ``POS=CIRCLE ra dec radius`` and ``FORMAT=CSV``; ``data_release`` becomes IRSA's
  ``COLLECTION`` parameter (e.g. ``ztf_dr22``; null lets IRSA use its latest release).
* ``mode: bulk`` reads ZTF data-release light-curve parquet files (one file per field,
  filter, CCD and quadrant; columns ``objectid, filterid, fieldid, rcid, objra, objdec``
  and per-epoch lists ``hmjd, mag, magerr, clrcoeff, catflags``) from ``bulk_dir``.

Units: positions in degrees, radii in arcsec (IRSA wants degrees), times in days (MJD),
magnitudes in mag (AB, ZTF photometric system), exposure time in seconds.
"""

from __future__ import annotations

import logging
import math
import threading
from datetime import datetime, timezone
from io import StringIO
from pathlib import Path

import numpy as np
import pandas as pd

from vo.lightcurves.observatories.base import VirtualObservatory
from vo.lightcurves.observatories.http import (ServiceClient, ZTFCredentialsError, load_pair,  # noqa: F401
                                              public_url, snippet)
from vo.lightcurves.observatories.ztf_bulk import ZTF_EXPTIME, BulkIndex, ZTFError
from vo.lightcurves.reduce import STANDARD_COLUMNS

log = logging.getLogger(__name__)

#: Columns the reducer needs; an IRSA answer without one of them is an error.
REQUIRED_COLUMNS = ["oid", "mjd", "mag", "magerr", "catflags", "filtercode", "ra", "dec"]
#: Span of ZTF observations (Julian years): survey start (2018 March) to about the end of
#: the releases current in 2025.  Used to widen the cone for proper motion.
ZTF_EPOCH_RANGE = (2018.2, 2025.0)
#: Epoch (Julian year) assumed for target positions without an ``epoch`` (ZTF mid-survey).
ZTF_MID_EPOCH = 2020.0



# -- geometry ----------------------------------------------------------------------------
def cone_radius_arcsec(radius: float, cat_row: dict) -> float:
    """Search radius (arcsec) that holds the target at every ZTF epoch despite proper motion.

    ``radius + |pm| * max(|epoch - start|, |end - epoch|)`` where ``|pm|`` (mas/yr) is
    ``hypot(pmra, pmdec)`` of the catalog row (``pmra`` includes cos(dec), as in Gaia),
    ``epoch`` is the epoch of the row's ``ra``/``dec`` (``cat_row["epoch"]``, Julian year;
    the catalog step propagates positions to the observation epoch, default
    :data:`ZTF_MID_EPOCH`) and start/end are :data:`ZTF_EPOCH_RANGE`.  Missing or NaN
    proper motions count as zero.
    """
    pm = math.hypot(_finite_or_zero(cat_row.get("pmra")), _finite_or_zero(cat_row.get("pmdec")))
    epoch = cat_row.get("epoch")
    epoch = ZTF_MID_EPOCH if epoch is None or not np.isfinite(epoch) else float(epoch)
    years = max(abs(epoch - ZTF_EPOCH_RANGE[0]), abs(ZTF_EPOCH_RANGE[1] - epoch))
    return float(radius) + pm * 1e-3 * years


def _finite_or_zero(value) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return 0.0
    return value if np.isfinite(value) else 0.0


# -- credentials and URLs ----------------------------------------------------------------
def load_credentials(credentials_file: str | None = None, credentials: dict | None = None
                     ) -> tuple[str, str] | None:
    """(username, password) from env ``ZTF_USERNAME``/``ZTF_PASSWORD``, the config's
    ``credentials`` mapping (virtualobserver's ``ZTF={"credentials": {...}}``) or a YAML file.

    The environment wins when both variables are set, then ``credentials``, then
    ``credentials_file`` (a YAML mapping with ``username`` and ``password``); with none,
    ``None`` (anonymous access to public data).  Error messages never contain the secrets.
    """
    return load_pair(("ZTF_USERNAME", "ZTF_PASSWORD"), ("username", "password"), credentials,
                     credentials_file, "ZTF")


def irsa_params(ra: float, dec: float, radius_arcsec: float, bad_catflags_mask: int | None = None,
                data_release: str | None = None) -> dict:
    """Query parameters of IRSA's ZTF light-curve service for a cone (radius in arcsec)."""
    params = {"POS": f"CIRCLE {ra:.8f} {dec:.8f} {radius_arcsec / 3600.0:.10g}", "FORMAT": "CSV"}
    if bad_catflags_mask is not None:
        params["BAD_CATFLAGS_MASK"] = str(int(bad_catflags_mask))
    if data_release:
        params["COLLECTION"] = str(data_release)
    return params


# -- HTTP client -------------------------------------------------------------------------
class IRSAClient(ServiceClient):
    """Client of IRSA's ZTF light-curve service: retries, backoff, rate limit, basic auth
    (:class:`~vo.lightcurves.observatories.http.ServiceClient`).

    Parameters
    ----------
    url : service URL (``.../cgi-bin/ZTF/nph_light_curves``).
    timeout, retries, backoff, rate_limit : see :class:`ServiceClient`.
    auth : (username, password) sent as HTTP basic auth, or None.
    """

    def __init__(self, url: str, timeout: float = 60.0, retries: int = 3, backoff: float = 2.0,
                 rate_limit: float = 1.0, auth: tuple[str, str] | None = None):
        super().__init__("ZTF query", timeout, retries, backoff, rate_limit, auth,
                         credentials_hint="set ZTF_USERNAME/ZTF_PASSWORD or ZTF.credentials_file")
        self.url = url

    def __repr__(self) -> str:
        return f"IRSAClient({self.url!r}, auth={'yes' if self._auth else 'no'})"

    def get(self, params: dict) -> str:
        """Body of a successful GET of ``params``; raises :class:`ZTFError` otherwise."""
        return self.request("GET", self.url, public_url(self.url, params), params=params).text

    def query(self, ra: float, dec: float, radius_arcsec: float, bad_catflags_mask: int | None = None,
              data_release: str | None = None) -> tuple[pd.DataFrame, dict]:
        """Light-curve rows within ``radius_arcsec`` of (ra, dec) and the query's metadata."""
        params = irsa_params(ra, dec, radius_arcsec, bad_catflags_mask, data_release)
        where = public_url(self.url, params)
        log.info("ZTF query %s", where)
        text = self.get(params)
        try:
            table = parse_irsa_csv(text, where)
        except ZTFError as exc:  # the message quotes the answer: never let it show the password
            raise ZTFError(self.scrub(str(exc))) from None
        meta = {"mode": "api", "url": where, "params": params,
                "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "nrows": int(len(table)), "radius_arcsec": float(radius_arcsec)}
        return table, meta


def parse_irsa_csv(text: str, where: str) -> pd.DataFrame:
    """IRSA's ZTF light-curve CSV as a DataFrame; a clear :class:`ZTFError` if it is not one.

    ``where`` (the public query URL) goes into error messages.  A header without rows is
    a valid answer (no ZTF object in the cone).
    """
    body = text.lstrip()
    if not body:
        raise ZTFError(f"ZTF query {where}: empty answer (expected CSV)")
    if body.startswith("<"):
        raise ZTFError(f"ZTF query {where}: answer is HTML/XML, not CSV: {snippet(body)}")
    try:
        table = pd.read_csv(StringIO(text))
    except (pd.errors.ParserError, ValueError) as exc:
        raise ZTFError(f"ZTF query {where}: garbled CSV ({exc})") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise ZTFError(f"ZTF query {where}: CSV lacks columns {missing} "
                       f"(has {list(table.columns)[:12]})")
    for col in REQUIRED_COLUMNS:
        if col == "filtercode" or pd.api.types.is_numeric_dtype(table[col]):
            continue
        try:
            table[col] = pd.to_numeric(table[col])
        except (ValueError, TypeError):
            raise ZTFError(f"ZTF query {where}: column {col!r} is not numeric") from None
    table["filtercode"] = table["filtercode"].astype(str)
    return table


def read_irsa_file(path) -> pd.DataFrame:
    """An IRSA ZTF light-curve file on disk (the service's answer saved by a browser, ``curl``
    or astroquery): CSV (``FORMAT=CSV``) or IPAC table (``FORMAT=ipac_table``, the service's
    default), as :func:`parse_irsa_csv` gives it; errors name the file."""
    path = Path(path)
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        raise ZTFError(f"ZTF light-curve file {path}: cannot read ({exc.strerror})") from None
    first = next((ln.lstrip() for ln in text.splitlines() if ln.strip()), "")
    if not first.startswith(("\\", "|")):
        return parse_irsa_csv(text, str(path))
    from astropy.table import Table
    try:
        table = Table.read(str(path), format="ascii.ipac").to_pandas()
    except Exception as exc:  # astropy raises many kinds for a damaged table
        raise ZTFError(f"ZTF light-curve file {path}: not a readable IPAC table ({exc})") from None
    return parse_irsa_csv(table.to_csv(index=False), str(path))


# -- reduction ---------------------------------------------------------------------------
def irsa_to_standard(raw: pd.DataFrame) -> pd.DataFrame:
    """Map a ZTF raw table (IRSA columns) to :data:`vo.lightcurves.reduce.STANDARD_COLUMNS`.

    ``flag`` is ``catflags`` (0 = good; a missing value becomes -1, i.e. flagged),
    ``filter`` the IRSA ``filtercode`` (zg, zr, zi), ``mjd`` the ``mjd`` column (days),
    ``exptime`` (s) the ``exptime`` column or 30 s where absent.
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in raw.columns]
    if missing:
        raise KeyError(f"ZTF raw photometry lacks columns {missing}")
    if "exptime" in raw:
        exptime = raw["exptime"].to_numpy(dtype=float)
        exptime = np.where(np.isfinite(exptime), exptime, ZTF_EXPTIME)
    else:
        exptime = np.full(len(raw), ZTF_EXPTIME)
    return pd.DataFrame({
        "mjd": raw["mjd"].to_numpy(dtype=float),
        "mag": raw["mag"].to_numpy(dtype=float),
        "magerr": raw["magerr"].to_numpy(dtype=float),
        "filter": raw["filtercode"].astype(str).to_numpy(dtype=object),
        "flag": raw["catflags"].fillna(-1).to_numpy().astype(np.int64),
        "ra": raw["ra"].to_numpy(dtype=float),
        "dec": raw["dec"].to_numpy(dtype=float),
        "exptime": exptime,
        "oid": raw["oid"].to_numpy().astype(np.int64),
    }, columns=STANDARD_COLUMNS)


# -- the observatory ---------------------------------------------------------------------
class VirtualZTF(VirtualObservatory):
    """ZTF through IRSA's light-curve service (``mode: api``) or local data-release files
    (``mode: bulk``); see the module docstring and ``ZTF`` in ``config/schema.yaml``."""

    name = "ZTF"

    def __init__(self, pars: dict | None = None, data_root=None, **kwargs):
        super().__init__(pars, data_root, **kwargs)
        self._client: IRSAClient | None = None
        self._bulk: BulkIndex | None = None
        self._hats = None
        self._prefetched: dict = {}
        self._init_lock = threading.Lock()

    def download_params(self) -> dict:
        """The parameters that determine a source's raw data (timeouts, URL etc. do not)."""
        keys = ["mode", "data_release", "radius", "bad_catflags_mask"]
        if self.pars.get("mode") == "bulk":
            keys.append("bulk_dir")
        if self.pars.get("mode") == "hats":
            keys.append("hats_dir")
        return {k: self.pars.get(k) for k in keys}

    @property
    def hats(self):
        """The HATS catalog of ``mode: hats`` (opened on first use)."""
        from vo.lightcurves.observatories.ztf_hats import HatsIndex, hats_path

        with self._init_lock:
            if self._hats is None:
                self._hats = HatsIndex(hats_path(self.pars), self.pars.get("data_release"))
            return self._hats

    def prefetch(self, cat_rows: list[dict]) -> None:
        """``mode: hats``: the batch's cones in one read of the overlapping partitions."""
        if self.pars.get("mode") != "hats":
            return
        rows = [r for r in cat_rows if np.isfinite(float(r["ra"])) and np.isfinite(float(r["dec"]))]
        radii = [cone_radius_arcsec(self.pars["radius"], r) for r in rows]
        self._prefetched = {str(r["name"]): res for r, res in zip(rows, self.hats.query_many(rows, radii))}

    @property
    def client(self) -> IRSAClient:
        with self._init_lock:
            if self._client is None:
                p = self.pars
                self._client = IRSAClient(p["url"], p["timeout"], p["retries"], p["backoff"], p["rate_limit"],
                                          load_credentials(p.get("credentials_file"), p.get("credentials")))
            return self._client

    @property
    def bulk(self) -> BulkIndex:
        with self._init_lock:
            if self._bulk is None:
                self._bulk = BulkIndex(self.pars.get("bulk_dir"), self.pars.get("data_release"))
            return self._bulk

    def fetch_data_from_observatory(self, cat_row: dict) -> tuple[pd.DataFrame, dict]:
        """Raw ZTF epochs (IRSA columns) within the proper-motion-aware cone of the target."""
        ra, dec = float(cat_row["ra"]), float(cat_row["dec"])
        if not (np.isfinite(ra) and np.isfinite(dec)):
            raise ValueError(f"target {cat_row.get('name')!r} has no finite ra/dec ({ra}, {dec})")
        radius = cone_radius_arcsec(self.pars["radius"], cat_row)
        if self.pars.get("mode", "api") == "hats":
            cached = self._prefetched.pop(str(cat_row.get("name")), None)
            table, meta = cached if cached is not None else self.hats.query(ra, dec, radius)
        elif self.pars.get("mode", "api") == "bulk":
            table, meta = self.bulk.query(ra, dec, radius)
        else:
            table, meta = self.client.query(ra, dec, radius, self.pars.get("bad_catflags_mask"),
                                            self.pars.get("data_release"))
        meta["data_release"] = self.pars.get("data_release")
        return table, meta

    def to_standard(self, raw: pd.DataFrame) -> pd.DataFrame:
        return irsa_to_standard(raw)
