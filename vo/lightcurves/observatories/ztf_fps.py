"""Client of the ZTF forced-photometry service (ZFPS, batch interface): submit, poll, download.

The service (Masci et al. 2023) runs at IPAC behind HTTP basic auth with a *public* account
(:data:`SERVICE_AUTH`, printed in the service's guide for every user); a user is identified by
the e-mail address they subscribed with and the ``userpass`` IPAC issued them, sent as request
parameters. Three calls:

* submit: ``POST {url}/cgi-bin/batchfp.py/submit`` with JSON lists ``ra``, ``dec`` (deg; at
  most 1500 positions per request), ``jdstart``, ``jdend`` (JD), ``email``, ``userpass``;
* status: ``GET {url}/cgi-bin/getBatchForcedPhotometryRequests.cgi?email=..&userpass=..&
  option=All recent jobs&action=Query Database``: an HTML table, one row per position
  (``reqId, ra, dec, startJD, endJD, created, started, ended, exitcode, lightcurve``); a
  position is done when ``ended`` is set, and then ``lightcurve`` is the path of its file
  (exit code 63: no epochs, no file);
* download: ``GET {url}{lightcurve}``.

Credentials come from the environment (``ZTF_FPS_EMAIL``, ``ZTF_FPS_USERPASS``) or a YAML file
(``email``, ``userpass``); the ``userpass`` never appears in a log line, an error or a
stored URL.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from html.parser import HTMLParser
from pathlib import Path


from vo.io.atomic import write_text
from vo.lightcurves.observatories.http import ServiceClient, ZTFCredentialsError, load_pair, snippet
from vo.lightcurves.observatories.ztf_bulk import ZTFError

log = logging.getLogger(__name__)

#: The service's public HTTP account (from the ZFPS guide; the same for every user).
SERVICE_AUTH = ("ztffps", "dontgocrazy!")
SUBMIT_PATH = "/cgi-bin/batchfp.py/submit"
STATUS_PATH = "/cgi-bin/getBatchForcedPhotometryRequests.cgi"
MAX_POSITIONS = 1500               # per submission (the service's limit)
NO_EPOCHS = 63                     # exit code: the position has no ZTF epoch in the JD range
FAILED = frozenset({64, 65, 255})  # exit codes of failed requests


def load_fps_credentials(credentials_file: str | None = None) -> tuple[str, str]:
    """(email, userpass) from ``ZTF_FPS_EMAIL``/``ZTF_FPS_USERPASS`` or the YAML file; a
    :class:`ZTFCredentialsError` (never quoting the file) when neither gives both."""
    pair = load_pair(("ZTF_FPS_EMAIL", "ZTF_FPS_USERPASS"), ("email", "userpass"), None, credentials_file,
                     "ZTF forced-photometry")
    if pair is None:
        raise ZTFCredentialsError("ZTF forced photometry needs credentials: set ZTF_FPS_EMAIL and "
                                  "ZTF_FPS_USERPASS or give a credentials file (email, userpass)")
    return pair


class _Table(HTMLParser):
    """Rows of the first HTML table of a page (cells' text)."""

    def __init__(self):
        super().__init__()
        self.rows, self._row, self._cell, self._tables = [], None, None, 0

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self._tables += 1
        elif tag == "tr" and self._tables == 1:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.rows.append(self._row)
            self._row = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def parse_status(html: str, where: str) -> list[dict]:
    """The status page's table as one dict per row (column name -> text)."""
    parser = _Table()
    parser.feed(html)
    if not parser.rows:
        if "error" in html.lower():  # the service's answer to bad credentials or parameters
            raise ZTFError(f"ZTF forced photometry {where}: the service answered with an error: "
                           f"{snippet(re.sub('<[^>]+>', ' ', html))}")
        return []
    names, rows = parser.rows[0], parser.rows[1:]
    for col in ("ra", "dec", "ended", "exitcode", "lightcurve"):
        if col not in names:
            raise ZTFError(f"ZTF forced photometry {where}: status table lacks column {col!r} (has {names})")
    return [dict(zip(names, r)) for r in rows if len(r) == len(names)]


def _key(ra, dec) -> tuple[float, float]:
    """A position as the service lists it (7 decimals)."""
    return round(float(ra), 7), round(float(dec), 7)


class ForcedPhotometryClient(ServiceClient):
    """Submit positions to the ZTF forced-photometry service, wait for them, fetch the files.

    Parameters
    ----------
    url : the service's base URL (``https://ztfweb.ipac.caltech.edu``).
    email, userpass : the user's credentials (:func:`load_fps_credentials`).
    poll_interval : seconds between status queries while waiting.
    max_wait : seconds to wait for all positions before :class:`ZTFError`.
    timeout, retries, backoff, rate_limit : per request (see :class:`ServiceClient`).
    """

    def __init__(self, url: str, email: str, userpass: str, poll_interval: float = 60.0,
                 max_wait: float = 86400.0, timeout: float = 60.0, retries: int = 3, backoff: float = 2.0,
                 rate_limit: float = 1.0, service_auth: tuple[str, str] = SERVICE_AUTH):
        super().__init__("ZTF forced photometry", timeout, retries, backoff, rate_limit, service_auth,
                         secrets=[userpass], credentials_hint="check ZTF_FPS_EMAIL/ZTF_FPS_USERPASS or the credentials file")
        self.url = url.rstrip("/")
        self._email, self._userpass = email, userpass
        self.poll_interval, self.max_wait = float(poll_interval), float(max_wait)

    def __repr__(self) -> str:
        return f"ForcedPhotometryClient({self.url!r}, email={self._email!r})"

    def submit(self, ra, dec, jd_start: float | None = None, jd_end: float | None = None) -> int:
        """Submit positions (deg), in chunks of :data:`MAX_POSITIONS`; returns the number of
        submissions. ``jd_start``/``jd_end`` (JD) default to the whole survey."""
        ra, dec = [float(v) for v in ra], [float(v) for v in dec]
        if len(ra) != len(dec) or not ra:
            raise ValueError(f"ZTF forced photometry: {len(ra)} RAs for {len(dec)} Decs")
        n = 0
        for i in range(0, len(ra), MAX_POSITIONS):
            data = {"ra": json.dumps([_key(r, 0)[0] for r in ra[i:i + MAX_POSITIONS]]),
                    "dec": json.dumps([_key(0, d)[1] for d in dec[i:i + MAX_POSITIONS]]),
                    "email": self._email, "userpass": self._userpass}
            if jd_start is not None:
                data["jdstart"] = json.dumps(float(jd_start))
            if jd_end is not None:
                data["jdend"] = json.dumps(float(jd_end))
            resp = self.request("POST", self.url + SUBMIT_PATH, self.url + SUBMIT_PATH, data=data)
            log.info("ZTF forced photometry: submitted %d position(s): %s", len(ra[i:i + MAX_POSITIONS]),
                     self.scrub(" ".join(resp.text.split())[:200]))
            n += 1
        return n

    def status(self) -> list[dict]:
        """The service's table of this user's recent requests (:func:`parse_status`)."""
        params = {"email": self._email, "userpass": self._userpass, "option": "All recent jobs",
                  "action": "Query Database"}
        where = self.url + STATUS_PATH
        try:
            return parse_status(self.request("GET", where, where, params=params).text, where)
        except ZTFError as exc:  # the message quotes the page: never let it show the userpass
            raise type(exc)(self.scrub(str(exc))) from None

    def wait(self, ra, dec, sleep=time.sleep) -> dict[tuple[float, float], dict]:
        """Poll until every position has ended; {(ra, dec): its status row}. Raises
        :class:`ZTFError` after ``max_wait`` seconds, naming how many are still pending."""
        want = {_key(r, d) for r, d in zip(ra, dec)}
        t0 = time.monotonic()
        while True:
            done = {}
            for row in self.status():
                try:
                    key = _key(row["ra"], row["dec"])
                except ValueError:
                    continue
                if key in want and row.get("ended"):
                    done[key] = row  # the latest row of a position wins
            if len(done) == len(want):
                return done
            waited = time.monotonic() - t0
            if waited + self.poll_interval > self.max_wait:
                raise ZTFError(f"ZTF forced photometry: {len(want) - len(done)} of {len(want)} position(s) "
                               f"still pending after {waited:.0f} s (max_wait {self.max_wait:g} s)")
            log.info("ZTF forced photometry: %d of %d position(s) done; next poll in %g s",
                     len(done), len(want), self.poll_interval)
            sleep(self.poll_interval)

    def download(self, lightcurve: str, dest: str | os.PathLike) -> Path:
        """Fetch one light-curve file (the status table's ``lightcurve`` path) to ``dest``,
        written atomically."""
        url = self.url + "/" + lightcurve.lstrip("/")
        text = self.request("GET", url, url).text
        if "forcediffimflux" not in text:
            raise ZTFError(f"ZTF forced photometry {url}: not a light-curve file: {self.scrub(text[:200])!r}")
        write_text(dest, text)
        return Path(dest)

    def fetch(self, ra, dec, folder: str | os.PathLike, jd_start: float | None = None,
              jd_end: float | None = None, sleep=time.sleep) -> dict[tuple[float, float], Path | None]:
        """Submit, wait for and download the light curves of positions into ``folder``;
        {(ra, dec): file, or None where the service found no epoch}. Failed requests raise
        :class:`ZTFError` naming the positions and exit codes."""
        self.submit(ra, dec, jd_start, jd_end)
        rows = self.wait(ra, dec, sleep)
        failed = {k: r["exitcode"] for k, r in rows.items() if _exit_code(r) in FAILED}
        if failed:
            raise ZTFError(f"ZTF forced photometry failed for {len(failed)} position(s): "
                           + ", ".join(f"{k} (exit code {c})" for k, c in sorted(failed.items())))
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        out = {}
        for key, row in rows.items():
            if _exit_code(row) == NO_EPOCHS or not row.get("lightcurve"):
                out[key] = None
                continue
            out[key] = self.download(row["lightcurve"], folder / Path(row["lightcurve"]).name)
        return out


def _exit_code(row: dict) -> int | None:
    try:
        return int(float(row.get("exitcode", "")))
    except ValueError:
        return None
