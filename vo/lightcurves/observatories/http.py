"""HTTP for the survey services: retries with backoff, a shared rate limit, secrets kept out of
every message and log line.

:class:`ServiceClient` is the part every service client shares (IRSA's light-curve service,
ZTF's forced-photometry service): one ``requests.Session`` per thread, retries on connection
errors, timeouts, HTTP 5xx and 429 (honouring ``Retry-After``), an immediate error on other 4xx
(401/403 as :class:`ZTFCredentialsError`), and :meth:`ServiceClient.scrub` replacing each
secret (passwords, and parameters such as the forced-photometry ``userpass`` that travel in
the query) with ``***`` in any text that leaves the client.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
import urllib.parse
from pathlib import Path

import requests
import yaml

from vo.lightcurves.observatories.ztf_bulk import ZTFError

log = logging.getLogger(__name__)


class ZTFCredentialsError(ZTFError):
    """The service refused the credentials (HTTP 401/403) or the credentials file is unusable."""


class RateLimiter:
    """At most ``rate`` calls of :meth:`wait` per second, shared by all threads.

    Each call reserves the next free slot (``1/rate`` s after the previous one) under a
    lock, then sleeps outside the lock until its slot.  ``rate <= 0`` disables the limit.
    """

    def __init__(self, rate: float):
        self.interval = 1.0 / rate if rate and rate > 0 else 0.0
        self._lock = threading.Lock()
        self._next = -math.inf

    def wait(self) -> None:
        if self.interval == 0.0:
            return
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next)
            self._next = slot + self.interval
        if slot > now:
            time.sleep(slot - now)


def load_pair(env: tuple[str, str], keys: tuple[str, str], given: dict | None, credentials_file,
              what: str) -> tuple[str, str] | None:
    """A service's two secrets (user and password): from the environment variables ``env``
    when both are set, else from ``given`` (a mapping with ``keys``), else from the YAML file
    ``credentials_file`` (a mapping with ``keys``); None when none is given. Errors name
    ``what`` and the file, never its content."""
    a, b = (os.environ.get(v) for v in env)
    if a and b:
        return a, b
    if given:
        missing = [k for k in keys if not given.get(k)]
        if missing:
            raise ZTFCredentialsError(f"{what} credentials lack {', '.join(missing)}")
        return str(given[keys[0]]), str(given[keys[1]])
    if not credentials_file:
        return None
    path = Path(credentials_file).expanduser()
    if not path.is_file():
        raise ZTFCredentialsError(f"{what} credentials_file {path} not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ZTFCredentialsError(f"{what} credentials_file {path} is not valid YAML{where}") from None
    if not isinstance(data, dict):
        raise ZTFCredentialsError(f"{what} credentials_file {path} must be a mapping with {' and '.join(keys)}")
    missing = [k for k in keys if not data.get(k)]
    if missing:
        raise ZTFCredentialsError(f"{what} credentials_file {path} lacks {', '.join(missing)}")
    return str(data[keys[0]]), str(data[keys[1]])


def public_url(url: str, params: dict | None = None) -> str:
    """The full query URL with any ``user:password@`` removed (safe to log and store)."""
    full = requests.Request("GET", url, params=params).prepare().url
    parts = urllib.parse.urlsplit(full)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def snippet(text: str, n: int = 200) -> str:
    """``text`` on one line, cut to ``n`` characters."""
    text = " ".join(text.split())
    return text[:n] + ("..." if len(text) > n else "")


def retry_after_seconds(value: str | None) -> float:
    try:
        return max(0.0, float(value)) if value is not None else 0.0
    except ValueError:
        return 0.0  # an HTTP date: fall back on the backoff


class _SecretFilter(logging.Filter):
    """Scrubs the registered secrets from urllib3's log records: at DEBUG level it logs every
    request line, query string included (where the forced-photometry ``userpass`` travels)."""

    secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            text = record.getMessage()
            clean = _scrub(text, self.secrets)
            if clean != text:
                record.msg, record.args = clean, ()
        return True


_SECRET_FILTER = _SecretFilter()
for _name in ("urllib3.connectionpool", "urllib3.util.retry"):
    logging.getLogger(_name).addFilter(_SECRET_FILTER)


def _scrub(text: str, secrets) -> str:
    for secret in secrets:
        text = text.replace(secret, "***").replace(urllib.parse.quote_plus(secret), "***")
        text = text.replace(urllib.parse.quote(secret, safe=""), "***")
    return text


class ServiceClient:
    """Retrying HTTP client of one service (see the module doc).

    Parameters
    ----------
    name : the service's name in messages ("ZTF query", "ZTF forced photometry").
    timeout : timeout of one request (s).
    retries : retries after the first attempt on connection errors, timeouts, HTTP 5xx and 429.
    backoff : wait before the first retry (s), doubled at each further retry.
    rate_limit : most requests per second, shared by the threads using this client.
    auth : (username, password) sent as HTTP basic auth, or None.
    secrets : further strings never to show (replaced by ``***`` in messages).
    credentials_hint : what to set when the service answers 401/403.
    """

    def __init__(self, name: str, timeout: float = 60.0, retries: int = 3, backoff: float = 2.0,
                 rate_limit: float = 1.0, auth: tuple[str, str] | None = None, secrets=(),
                 credentials_hint: str = ""):
        self.name = name
        self.timeout = float(timeout)
        self.retries = int(retries)
        self.backoff = float(backoff)
        self.limiter = RateLimiter(rate_limit)
        self._auth = auth
        self._secrets = [s for s in ([auth[1]] if auth else []) + list(secrets) if s]
        _SecretFilter.secrets.update(self._secrets)
        self._hint = credentials_hint
        self._local = threading.local()  # one requests.Session per thread

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.auth = self._auth
            self._local.session = session
        return session

    def scrub(self, text: str) -> str:
        """``text`` with every secret (should a server echo one) replaced by ``***``."""
        return _scrub(text, self._secrets)

    def request(self, method: str, url: str, where: str, params: dict | None = None,
                data: dict | None = None) -> requests.Response:
        """A successful response (HTTP < 400) to ``method`` ``url``; ``where`` (a URL without
        secrets) names it in messages. Raises :class:`ZTFError` after the retries."""
        attempts = self.retries + 1
        for attempt in range(attempts):
            self.limiter.wait()
            resp, problem, retry_after = self._attempt(method, url, where, params, data)
            if problem is None:
                return resp
            if attempt + 1 < attempts:
                wait = max(self.backoff * 2.0 ** attempt, retry_after)
                log.warning("%s %s failed (%s); retry %d of %d in %.2f s",
                            self.name, where, problem, attempt + 1, self.retries, wait)
                time.sleep(wait)
        raise ZTFError(f"{self.name} {where} failed after {attempts} attempt(s): {problem}")

    def _attempt(self, method, url, where, params, data):
        """One request: (response, None, 0) on success, else (None, problem, Retry-After in s)."""
        try:
            resp = self._session().request(method, url, params=params, data=data, timeout=self.timeout)
        except requests.Timeout:
            return None, f"timed out after {self.timeout:g} s", 0.0
        except requests.ConnectionError as exc:
            return None, f"connection error ({type(exc).__name__})", 0.0
        code = resp.status_code
        if code in (401, 403):
            who = "no credentials were given" if self._auth is None else "the credentials were refused"
            raise ZTFCredentialsError(f"{self.name} {where}: HTTP {code} ({who}); {self._hint}".rstrip("; "))
        if code == 429 or code >= 500:
            return None, f"HTTP {code} {resp.reason}", retry_after_seconds(resp.headers.get("Retry-After"))
        if code >= 400:
            raise ZTFError(f"{self.name} {where}: HTTP {code} {resp.reason}: {self.scrub(snippet(resp.text))}")
        return resp, None, 0.0
