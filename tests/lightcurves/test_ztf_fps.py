"""The ZTF forced-photometry client against a local server on 127.0.0.1 that answers as the
service does (batch submit, HTML status table, light-curve files behind basic auth)."""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from vo.lightcurves.observatories.http import ZTFCredentialsError
from vo.lightcurves.observatories.ztf_bulk import ZTFError
from vo.lightcurves.observatories.ztf_forced import read_forced_photometry
from vo.lightcurves.observatories.ztf_fps import (SERVICE_AUTH, ForcedPhotometryClient, load_fps_credentials,
                                                  parse_status)

DATA = Path(__file__).resolve().parents[1] / "data" / "ztf_forced_photometry"
FILES = sorted(DATA.glob("forcedphotometry_*.txt"))
EMAIL, USERPASS = "astronomer@example.org", "s3cret-Pass+word"
COLUMNS = ["reqId", "ra", "dec", "startJD", "endJD", "created", "started", "ended", "exitcode", "lightcurve"]


class Service:
    """State of the fake service: submitted positions, polls until done, scripted failures."""

    def __init__(self):
        self.jobs = []                 # dicts with ra, dec, polls_left, exitcode, file
        self.script = []               # behaviours of the next requests: "500", "slow"
        self.calls = []                # (method, path) of every request
        self.polls_to_finish = 2
        self.files = {}                # lightcurve path -> text
        self.lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    service: Service

    def log_message(self, *args):
        pass

    def _send(self, code: int, body: str, ctype: str = "text/html"):
        data = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _gate(self) -> bool:
        """Scripted behaviour and the service's basic auth; False when answered already."""
        svc = self.service
        with svc.lock:
            svc.calls.append((self.command, self.path.split("?")[0]))
            behaviour = svc.script.pop(0) if svc.script else None
        if behaviour == "500":
            self._send(500, "Internal Server Error")
            return False
        if behaviour == "slow":
            time.sleep(1.5)
        expect = "Basic " + base64.b64encode(":".join(SERVICE_AUTH).encode()).decode()
        if self.headers.get("Authorization") != expect:
            self._send(401, "Authorization Required")
            return False
        return True

    def _user_ok(self, form: dict) -> bool:
        if form.get("email", [""])[0] != EMAIL or form.get("userpass", [""])[0] != USERPASS:
            self._send(200, "<html><body>Error: invalid email or userpass</body></html>")
            return False
        return True

    def do_POST(self):
        if not self._gate():
            return
        form = urllib.parse.parse_qs(self.rfile.read(int(self.headers["Content-Length"])).decode())
        if self.path != "/cgi-bin/batchfp.py/submit":
            return self._send(404, "Not Found")
        if not self._user_ok(form):
            return
        ra, dec = json.loads(form["ra"][0]), json.loads(form["dec"][0])
        svc = self.service
        with svc.lock:
            for r, d in zip(ra, dec):
                n = len(svc.jobs)
                text = FILES[n % len(FILES)].read_text() if r >= 0 else None
                path = f"/ztf/ops/forcedphot/lc/{n}/batchfp_req{n:010d}_lc.txt"
                if text:
                    svc.files[path] = text
                svc.jobs.append({"ra": r, "dec": d, "polls_left": svc.polls_to_finish,
                                 "exitcode": 0 if text else 63, "file": path if text else "",
                                 "jd": (form.get("jdstart", ["null"])[0], form.get("jdend", ["null"])[0])})
        self._send(200, f"<html><body>Submitted {len(ra)} position(s) for {EMAIL}</body></html>")

    def do_GET(self):
        if not self._gate():
            return
        url = urllib.parse.urlsplit(self.path)
        svc = self.service
        if url.path == "/cgi-bin/getBatchForcedPhotometryRequests.cgi":
            form = urllib.parse.parse_qs(url.query)
            if not self._user_ok(form):
                return
            cells = ["".join(f"<th>{c}</th>" for c in COLUMNS)]
            with svc.lock:
                for i, job in enumerate(svc.jobs):
                    done = job["polls_left"] <= 0
                    job["polls_left"] -= 1
                    row = [str(i), f"{job['ra']:.7f}", f"{job['dec']:.7f}", job["jd"][0], job["jd"][1],
                           "2026-12-08 01:00:00", "2026-12-08 01:01:00", "2026-12-08 01:02:00" if done else "",
                           str(job["exitcode"]) if done else "", job["file"] if done else ""]
                    cells.append("".join(f"<td>{c}</td>" for c in row))
            rows = "".join(f"<tr>{c}</tr>" for c in cells)
            return self._send(200, f"<html><body><h3>Jobs</h3><table border=1>{rows}</table></body></html>")
        if url.path in svc.files:
            return self._send(200, svc.files[url.path], "text/plain")
        self._send(404, "Not Found")


class Server(ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        pass  # a client that timed out closed the connection: nothing to report


@pytest.fixture
def service():
    svc = Service()
    handler = type("H", (Handler,), {"service": svc})
    server = Server(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    svc.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield svc
    server.shutdown()
    server.server_close()


def client(svc, **kw) -> ForcedPhotometryClient:
    opts = {"poll_interval": 0.01, "max_wait": 5.0, "timeout": 5.0, "retries": 2, "backoff": 0.01, "rate_limit": 0}
    opts.update(kw)
    return ForcedPhotometryClient(svc.url, EMAIL, USERPASS, **opts)


def test_submit_poll_download(service, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    naps = []
    got = client(service).fetch([106.88522654, 245.3167016], [48.90021893, 14.55266508], tmp_path / "lc",
                                jd_start=2459000.5, jd_end=2459300.5, sleep=naps.append)
    assert len(naps) == 2                                 # two polls found the jobs running
    assert set(got) == {(106.8852265, 48.9002189), (245.3167016, 14.5526651)}
    for path in got.values():
        t = read_forced_photometry(path)                  # the real file, downloaded whole
        assert len(t) in (92, 55) and path.parent == tmp_path / "lc"
    assert service.jobs[0]["jd"] == ("2459000.5", "2459300.5")
    methods = [m for m, _ in service.calls]
    assert methods.count("POST") == 1 and methods.count("GET") == 3 + 2
    assert not list((tmp_path / "lc").glob(".*tmp*"))   # no temporary file left
    logged = caplog.text + "".join(str(r.args) for r in caplog.records)
    assert "submitted 2 position(s)" in logged and "1 of 2" not in logged
    assert USERPASS not in logged and urllib.parse.quote_plus(USERPASS) not in logged


def test_position_without_epochs_gives_none(service, tmp_path):
    got = client(service).fetch([-1.0], [10.0], tmp_path, sleep=lambda s: None)   # the server has no epochs there
    assert got == {(-1.0, 10.0): None}


def test_500_is_retried(service, tmp_path):
    service.script = ["500", "500"]                       # submit fails twice, the third try works
    got = client(service).fetch([106.88522654], [48.90021893], tmp_path, sleep=lambda s: None)
    assert list(got.values())[0].is_file()
    assert [m for m, _ in service.calls[:3]] == ["POST"] * 3


def test_persistent_500_fails_after_retries(service, tmp_path):
    service.script = ["500"] * 3
    with pytest.raises(ZTFError, match=r"batchfp.py/submit failed after 3 attempt\(s\): HTTP 500") as err:
        client(service).fetch([106.88522654], [48.90021893], tmp_path, sleep=lambda s: None)
    assert USERPASS not in str(err.value)


def test_timeout_is_retried_then_fails(service, tmp_path):
    service.script = ["slow"] * 3
    c = client(service, timeout=0.3)
    t0 = time.monotonic()
    with pytest.raises(ZTFError, match=r"failed after 3 attempt\(s\): timed out after 0.3 s"):
        c.fetch([106.88522654], [48.90021893], tmp_path, sleep=lambda s: None)
    assert time.monotonic() - t0 < 5


def test_never_finishing_jobs_stop_at_max_wait(service, tmp_path):
    service.polls_to_finish = 10 ** 6
    c = client(service, max_wait=0.2, poll_interval=0.05)
    with pytest.raises(ZTFError, match=r"1 of 1 position\(s\) still pending"):
        c.fetch([106.88522654], [48.90021893], tmp_path, sleep=time.sleep)


def test_credentials_from_env_or_file_and_never_shown(service, tmp_path, monkeypatch, caplog):
    monkeypatch.delenv("ZTF_FPS_EMAIL", raising=False)
    monkeypatch.delenv("ZTF_FPS_USERPASS", raising=False)
    with pytest.raises(ZTFCredentialsError, match="ZTF_FPS_EMAIL"):
        load_fps_credentials(None)
    f = tmp_path / "fps.yaml"
    f.write_text(f"email: {EMAIL}\nuserpass: {USERPASS}\n")
    assert load_fps_credentials(f) == (EMAIL, USERPASS)
    f.write_text(f"email: {EMAIL}\n")
    with pytest.raises(ZTFCredentialsError, match="lacks userpass"):
        load_fps_credentials(f)
    monkeypatch.setenv("ZTF_FPS_EMAIL", EMAIL)
    monkeypatch.setenv("ZTF_FPS_USERPASS", "wrong+" + USERPASS)
    email, userpass = load_fps_credentials(f)
    # the service answers a wrong userpass with a page, not a light curve: an error without it
    bad = ForcedPhotometryClient(service.url, email, userpass, poll_interval=0.01, max_wait=0.1, rate_limit=0)
    with pytest.raises(ZTFError) as err:
        bad.fetch([1.0], [2.0], tmp_path, sleep=lambda s: None)
    assert userpass not in str(err.value) and USERPASS not in caplog.text
    # a wrong service account is a credentials error
    wrong = ForcedPhotometryClient(service.url, EMAIL, USERPASS, service_auth=("ztffps", "nope"), rate_limit=0)
    with pytest.raises(ZTFCredentialsError, match="HTTP 401"):
        wrong.status()
    assert repr(wrong).count(USERPASS) == 0


def test_status_table_parsing():
    html = ("<html><table><tr><th>reqId</th><th>ra</th><th>dec</th><th>ended</th><th>exitcode</th>"
            "<th>lightcurve</th></tr><tr><td>7</td><td>1.0000000</td><td>2.0000000</td><td>2026-01-01</td>"
            "<td>0</td><td>/x/lc.txt</td></tr></table></html>")
    assert parse_status(html, "here") == [{"reqId": "7", "ra": "1.0000000", "dec": "2.0000000",
                                           "ended": "2026-01-01", "exitcode": "0", "lightcurve": "/x/lc.txt"}]
    assert parse_status("<html>no jobs</html>", "here") == []
    with pytest.raises(ZTFError, match="lacks column 'lightcurve'"):
        parse_status("<table><tr><th>ra</th><th>dec</th><th>ended</th><th>exitcode</th></tr></table>", "here")
