"""ZTF observatory: IRSA client against a real local HTTP server, bulk parquet mode, reduction.

The local server answers IRSA's ``nph_light_curves`` query in IRSA's CSV format, built
(independently of the code under test) from real ZTF DR5 light curves in
``tests/data/ztf_dr5_sample`` (see ``tests/data/README.md``).
"""

from __future__ import annotations

import base64
import io
import json
import logging
import socket
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pandas as pd
import pytest
from astropy.stats import sigma_clip

from vo import config as vconfig
from vo.config import load_config
from vo.lightcurves.segments import IQR_TO_SIGMA
from vo.lightcurves.observatories import get_observatory
from vo.lightcurves.observatories.ztf import (
    ZTF_EPOCH_RANGE, BulkIndex, IRSAClient, VirtualZTF, ZTFCredentialsError, ZTFError,
    cone_radius_arcsec, load_credentials, read_irsa_file)
from testdata import DATA as TEST_DATA

DATA = TEST_DATA / "ztf_dr5_sample"
PARQUET = DATA / "ztf_000250_zg_c01_q1_dr5.parquet"
TARGET_OID = 250101100001160     # 105 epochs, 13 with catflags != 0
NEIGHBOUR_OID = 250101100004154  # 4.95 arcsec from the target
PASSWORD = "s3cr3t-Pa55word"
IRSA_HEADER = ("oid,expid,hjd,mjd,mag,magerr,catflags,filtercode,ra,dec,chi,sharp,filefracday,"
               "field,ccdid,qid,limitmag,magzp,magzprms,clrcoeff,clrcounc,exptime,airmass,programid")


# -- the real ZTF objects, read directly with pandas (independent of vo) -------------------
@pytest.fixture(scope="module")
def objects() -> pd.DataFrame:
    return pd.read_parquet(PARQUET)


def target_row(objects, **extra) -> dict:
    obj = objects.loc[objects["objectid"] == TARGET_OID].iloc[0]
    return {"name": "ZTF_target", "ra": float(obj["objra"]), "dec": float(obj["objdec"]),
            "mag": float(np.median(obj["mag"])), "pmra": 0.0, "pmdec": 0.0, **extra}


def sep_arcsec(ra1, dec1, ra2, dec2):
    """Haversine separation (arcsec)."""
    ra1, dec1, ra2, dec2 = map(np.radians, (ra1, dec1, ra2, dec2))
    h = np.sin((dec2 - dec1) / 2) ** 2 + np.cos(dec1) * np.cos(dec2) * np.sin((ra2 - ra1) / 2) ** 2
    return np.degrees(2 * np.arcsin(np.sqrt(h))) * 3600


def irsa_csv(objects: pd.DataFrame, ra: float, dec: float, radius_deg: float, mask: int | None) -> str:
    """IRSA CSV rows of the objects within the cone (what the real service answers).

    The bulk files have no per-epoch mjd/position: mjd is written as the file's hmjd,
    ra/dec as the object's position; columns the files lack are left empty, as IRSA does
    for nulls.
    """
    sel = objects.loc[sep_arcsec(objects["objra"], objects["objdec"], ra, dec) <= radius_deg * 3600]
    lines = [IRSA_HEADER]
    for _, obj in sel.iterrows():
        ccdid, qid = obj["rcid"] // 4 + 1, obj["rcid"] % 4 + 1
        for k, (t, m, e, c, cc) in enumerate(zip(obj["hmjd"], obj["mag"], obj["magerr"],
                                                 obj["catflags"], obj["clrcoeff"])):
            if mask is not None and int(c) & mask:
                continue
            t, m, e, cc = (float(x) for x in (t, m, e, cc))
            lines.append(f"{obj['objectid']},{int(t * 1e5)},{t + 2400000.5!r},{t!r},{m!r},{e!r},{int(c)},"
                         f"zg,{float(obj['objra'])!r},{float(obj['objdec'])!r},,,,{obj['fieldid']},"
                         f"{ccdid},{qid},,,,{cc!r},,30.0,,1")
    return "\n".join(lines) + "\n"


# -- a real HTTP server on 127.0.0.1 ---------------------------------------------------------
class State:
    def __init__(self, objects):
        self.objects = objects
        self.lock = threading.Lock()
        self.script: list = ["csv"]  # behaviours of successive requests, the last one repeats
        self.requests: list[dict] = []

    def next_behaviour(self):
        with self.lock:
            return self.script.pop(0) if len(self.script) > 1 else self.script[0]


class IRSAHandler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass

    def _send(self, code: int, body: str, ctype: str = "text/plain", headers: dict | None = None):
        data = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        try:
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def do_GET(self):
        state: State = self.server.state
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query)
        with state.lock:
            state.requests.append({"t": time.monotonic(), "path": url.path, "query": query,
                                   "auth": self.headers.get("Authorization")})
        action = state.next_behaviour()
        if isinstance(action, int):
            self._send(action, f"error {action}", headers={"Retry-After": "0"} if action == 429 else None)
        elif action == "sleep":
            time.sleep(1.5)
            self._send(200, IRSA_HEADER + "\n")
        elif action == "html":
            self._send(200, "<html><body><h1>Service temporarily unavailable</h1></body></html>", "text/html")
        elif action == "missing":
            self._send(200, "oid,mjd,magerr,catflags,filtercode,ra,dec\n1,58000.1,0.01,0,zg,1.0,2.0\n")
        else:  # "csv": the real answer
            shape, ra, dec, radius = query["POS"][0].split()
            assert shape == "CIRCLE" and query["FORMAT"] == ["CSV"]
            mask = int(query["BAD_CATFLAGS_MASK"][0]) if "BAD_CATFLAGS_MASK" in query else None
            self._send(200, irsa_csv(state.objects, float(ra), float(dec), float(radius), mask))


@pytest.fixture(scope="module")
def server(objects):
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), IRSAHandler)
    httpd.daemon_threads = True
    httpd.state = State(objects)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def irsa(server, objects, monkeypatch):
    """Fresh server state and the service URL; no credentials in the environment."""
    server.state = State(objects)
    monkeypatch.delenv("ZTF_USERNAME", raising=False)
    monkeypatch.delenv("ZTF_PASSWORD", raising=False)
    host, port = server.server_address
    return server.state, f"http://{host}:{port}/cgi-bin/ZTF/nph_light_curves"


def ztf(url: str | None = None, **pars) -> VirtualZTF:
    ztf_pars = {"url": url, "timeout": 5.0, "retries": 0, "backoff": 0.05, "rate_limit": 1000.0, **pars}
    cfg = load_config(overrides={"ZTF": {k: v for k, v in ztf_pars.items() if v is not None}})
    return VirtualZTF.from_config(cfg)


def client(url: str, **kw) -> IRSAClient:
    opts = {"timeout": 5.0, "retries": 0, "backoff": 0.05, "rate_limit": 1000.0, **kw}
    return IRSAClient(url, **opts)


# -- API mode --------------------------------------------------------------------------------
def test_api_query_parses_irsa_csv(irsa, objects):
    state, url = irsa
    obs = get_observatory("ZTF", load_config(overrides={"ZTF": {"url": url, "rate_limit": 1000.0,
                                                                 "data_release": "ztf_dr5"}}))
    assert isinstance(obs, VirtualZTF)
    raw, alt = obs.fetch_data_from_observatory(target_row(objects))
    obj = objects.loc[objects["objectid"] == TARGET_OID].iloc[0]
    assert set(raw["oid"]) == {TARGET_OID}  # the neighbour at 4.95" is outside 3"
    assert len(raw) == obj["nepochs"] == 105
    np.testing.assert_array_equal(raw["mjd"].to_numpy(), np.asarray(obj["hmjd"], dtype=float))
    np.testing.assert_array_equal(raw["mag"].to_numpy(), np.asarray(obj["mag"], dtype=float))
    np.testing.assert_array_equal(raw["catflags"].to_numpy(), np.asarray(obj["catflags"]))
    assert (raw["filtercode"] == "zg").all()
    q = state.requests[-1]["query"]
    assert q["COLLECTION"] == ["ztf_dr5"] and "BAD_CATFLAGS_MASK" not in q
    assert float(q["POS"][0].split()[3]) == pytest.approx(3.0 / 3600, rel=1e-5)
    assert state.requests[-1]["auth"] is None
    assert alt["nrows"] == 105 and alt["mode"] == "api" and alt["url"].startswith(url + "?")
    assert alt["params"]["FORMAT"] == "CSV"


def test_bad_catflags_mask_is_sent(irsa, objects):
    _, url = irsa
    raw, alt = ztf(url, bad_catflags_mask=32768).fetch_data_from_observatory(target_row(objects))
    obj = objects.loc[objects["objectid"] == TARGET_OID].iloc[0]
    assert len(raw) == int((np.asarray(obj["catflags"]) & 32768 == 0).sum()) == 92
    assert alt["params"]["BAD_CATFLAGS_MASK"] == "32768"


def test_proper_motion_widens_the_cone(irsa, objects):
    state, url = irsa
    row = target_row(objects, pmra=600.0, pmdec=-800.0, epoch=2020.0)  # |pm| = 1 arcsec/yr
    expected = 3.0 + 1.0 * max(2020.0 - ZTF_EPOCH_RANGE[0], ZTF_EPOCH_RANGE[1] - 2020.0)
    assert cone_radius_arcsec(3.0, row) == pytest.approx(expected)
    raw, _ = ztf(url).fetch_data_from_observatory(row)
    assert float(state.requests[-1]["query"]["POS"][0].split()[3]) * 3600 == pytest.approx(expected, rel=1e-5)
    assert set(raw["oid"]) == {TARGET_OID, NEIGHBOUR_OID}
    assert cone_radius_arcsec(3.0, {"pmra": np.nan, "pmdec": None}) == 3.0


def test_basic_auth_from_env_and_file(irsa, objects, monkeypatch, tmp_path, caplog):
    state, url = irsa
    monkeypatch.setenv("ZTF_USERNAME", "alice")
    monkeypatch.setenv("ZTF_PASSWORD", PASSWORD)
    caplog.set_level(logging.DEBUG)
    raw, alt = ztf(url).fetch_data_from_observatory(target_row(objects))
    assert len(raw) == 105
    sent = base64.b64decode(state.requests[-1]["auth"].split()[1]).decode()
    assert sent == f"alice:{PASSWORD}"
    assert PASSWORD not in json.dumps(alt) and PASSWORD not in caplog.text

    monkeypatch.delenv("ZTF_USERNAME")
    monkeypatch.delenv("ZTF_PASSWORD")
    creds = tmp_path / "irsa.yaml"
    creds.write_text(f"username: bob\npassword: {PASSWORD}\n")
    ztf(url, credentials_file=str(creds)).fetch_data_from_observatory(target_row(objects))
    assert base64.b64decode(state.requests[-1]["auth"].split()[1]).decode() == f"bob:{PASSWORD}"
    assert PASSWORD not in caplog.text

    # virtualobserver's constructor: credentials in the parameters (masked in written configs)
    obs = VirtualZTF(name="ZTF", credentials={"username": "carol", "password": PASSWORD}, reducer={"gap": 60},
                     url=url, timeout=5.0, retries=0, rate_limit=1000.0)
    assert obs.pars.reducer.gap == 60 and obs.pars["reducer"]["radius"] == 3.0
    obs.fetch_data_from_observatory(target_row(objects))
    assert base64.b64decode(state.requests[-1]["auth"].split()[1]).decode() == f"carol:{PASSWORD}"
    assert PASSWORD not in json.dumps(vconfig.mask_secrets(obs.cfg)) and PASSWORD not in caplog.text
    assert "password" not in obs.download_params() and "credentials" not in obs.download_params()
    with pytest.raises(ValueError, match="name 'DEMO' is not 'ZTF'"):
        VirtualZTF(name="DEMO")

    creds.write_text(f"username: bob\npasswd: {PASSWORD}\n")
    with pytest.raises(ZTFCredentialsError, match="lacks password") as err:
        load_credentials(str(creds))
    assert PASSWORD not in str(err.value)
    creds.write_text(f"username: bob\npassword: [{PASSWORD}\n")  # broken YAML
    with pytest.raises(ZTFCredentialsError, match="not valid YAML") as err:
        load_credentials(str(creds))
    assert PASSWORD not in str(err.value)


def test_401_is_a_credentials_error_without_the_password(irsa, caplog):
    state, url = irsa
    state.script = [401]
    caplog.set_level(logging.DEBUG)
    c = client(url, retries=3, auth=("alice", PASSWORD))
    with pytest.raises(ZTFCredentialsError, match="HTTP 401") as err:
        c.query(41.4, -26.5, 3.0)
    assert len(state.requests) == 1  # no retry on 401
    assert "127.0.0.1" in str(err.value)
    assert PASSWORD not in str(err.value) and PASSWORD not in repr(err.value)
    assert PASSWORD not in repr(c) and PASSWORD not in caplog.text
    assert all(PASSWORD not in r.getMessage() for r in caplog.records)


def test_500_is_retried_with_backoff(irsa, objects):
    state, url = irsa
    state.script = [500, 500, "csv"]
    row = target_row(objects)
    table, meta = client(url, retries=3, backoff=0.1).query(row["ra"], row["dec"], 3.0)
    assert len(table) == 105 and meta["nrows"] == 105
    t = [r["t"] for r in state.requests]
    assert len(t) == 3
    assert t[1] - t[0] >= 0.1 and t[2] - t[1] >= 0.2  # exponential backoff: 0.1 s, then 0.2 s


def test_429_is_retried_other_4xx_are_not(irsa, objects):
    state, url = irsa
    state.script = [429, "csv"]
    row = target_row(objects)
    table, _ = client(url, retries=1).query(row["ra"], row["dec"], 3.0)
    assert len(table) == 105 and len(state.requests) == 2
    state.requests.clear()
    state.script = [404]
    with pytest.raises(ZTFError, match="HTTP 404"):
        client(url, retries=3).query(row["ra"], row["dec"], 3.0)
    assert len(state.requests) == 1


def test_permanent_500_fails_after_retries(irsa):
    state, url = irsa
    state.script = [500]
    with pytest.raises(ZTFError, match=r"failed after 3 attempt\(s\): HTTP 500") as err:
        client(url, retries=2, backoff=0.02).query(41.4, -26.5, 3.0)
    assert len(state.requests) == 3
    assert "nph_light_curves?POS=CIRCLE" in str(err.value)


def test_refused_connection_is_retried_then_fails():
    with socket.socket() as sock:  # a port on 127.0.0.1 where nothing listens
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(ZTFError, match=r"failed after 2 attempt\(s\): connection error"):
        client(f"http://127.0.0.1:{port}/cgi-bin/ZTF/nph_light_curves", retries=1, backoff=0.01
               ).query(41.4, -26.5, 3.0)


def test_slow_server_times_out(irsa):
    state, url = irsa
    state.script = ["sleep"]
    start = time.monotonic()
    with pytest.raises(ZTFError, match="timed out after 0.3 s"):
        client(url, timeout=0.3, retries=0).query(41.4, -26.5, 3.0)
    assert time.monotonic() - start < 1.2


def test_rate_limit_spaces_requests_across_threads(irsa, objects):
    state, url = irsa
    row = target_row(objects)
    c = client(url, rate_limit=5.0)  # at most one request every 0.2 s
    with ThreadPoolExecutor(4) as pool:
        sizes = list(pool.map(lambda _: len(c.query(row["ra"], row["dec"], 3.0)[0]), range(4)))
    assert sizes == [105] * 4
    t = np.sort([r["t"] for r in state.requests])
    assert len(t) == 4 and np.all(np.diff(t) >= 0.18)


@pytest.mark.parametrize("script, message", [("html", "HTML/XML, not CSV"),
                                             ("missing", r"lacks columns \['mag'\]")])
def test_bad_answers_give_clear_errors(irsa, script, message):
    state, url = irsa
    state.script = [script]
    with pytest.raises(ZTFError, match=message) as err:
        client(url).query(41.4, -26.5, 3.0)
    assert f"{url}?POS=" in str(err.value)


# -- bulk mode ---------------------------------------------------------------------------------
def test_bulk_finds_the_target_not_the_neighbour(objects):
    obs = ztf(mode="bulk", bulk_dir=str(DATA), data_release="ztf_dr5")
    raw, alt = obs.fetch_data_from_observatory(target_row(objects))
    assert set(raw["oid"]) == {TARGET_OID}
    obj = objects.loc[objects["objectid"] == TARGET_OID].iloc[0]
    np.testing.assert_array_equal(raw["mjd"].to_numpy(), np.sort(np.asarray(obj["hmjd"], dtype=float)))
    assert (raw["ccdid"] == 1).all() and (raw["qid"] == 1).all() and (raw["field"] == 250).all()
    assert (raw["filtercode"] == "zg").all() and (raw["exptime"] == 30.0).all()
    assert alt["files"] == [PARQUET.name] and alt["nrows"] == 105

    wide, _ = BulkIndex(DATA).query(float(obj["objra"]), float(obj["objdec"]), 6.0)
    assert set(wide["oid"]) == {TARGET_OID, NEIGHBOUR_OID}
    empty, meta = BulkIndex(DATA).query(10.0, 10.0, 3.0)
    assert len(empty) == 0 and meta["files"] == []


def test_bulk_and_api_give_the_same_rows(irsa, objects):
    _, url = irsa
    row = target_row(objects, pmra=600.0, pmdec=-800.0)
    api, _ = ztf(url).fetch_data_from_observatory(row)
    bulk, _ = ztf(mode="bulk", bulk_dir=str(DATA)).fetch_data_from_observatory(row)
    api = api.sort_values(["oid", "mjd"], kind="stable").reset_index(drop=True)
    for col in ["oid", "mjd", "mag", "magerr", "catflags", "ra", "dec", "clrcoeff", "ccdid", "qid"]:
        np.testing.assert_array_equal(api[col].to_numpy(), bulk[col].to_numpy(), err_msg=col)
    pd.testing.assert_frame_equal(ztf(url).to_standard(api), ztf(url).to_standard(bulk))


def test_bulk_errors_name_the_folder(tmp_path):
    with pytest.raises(ZTFError, match=str(tmp_path)):
        BulkIndex(tmp_path)
    with pytest.raises(ZTFError, match="data release ztf_dr6"):
        BulkIndex(DATA, "ztf_dr6")
    bad = tmp_path / "ztf_000001_zg_c01_q1_dr5.parquet"
    pd.DataFrame({"objectid": [1], "objra": [1.0], "objdec": [2.0]}).to_parquet(bad)
    with pytest.raises(ZTFError, match=r"lacks columns \['filterid'"):
        BulkIndex(tmp_path).query(1.0, 2.0, 3.0)


# -- reduction of a real light curve ---------------------------------------------------------
@pytest.mark.parametrize("oid, n_seasons", [(TARGET_OID, 3), (NEIGHBOUR_OID, 4),
                                             (250101100000728, 3), (250101100000742, 3)])
def test_real_light_curve_reduced(objects, oid, n_seasons):
    obs = ztf(mode="bulk", bulk_dir=str(DATA))
    pars = obs.pars["reducer"]
    obj = objects.loc[objects["objectid"] == oid].iloc[0]
    row = {"name": f"ZTF_{oid}", "ra": float(obj["objra"]), "dec": float(obj["objdec"]),
           "mag": float(np.median(obj["mag"]))}
    raw, _ = obs.fetch_data_from_observatory(row)
    lcs = obs.reduce_source(raw, row)

    # independent computation from the raw arrays of the parquet file
    t = np.asarray(obj["hmjd"], dtype=float)
    mag = np.asarray(obj["mag"], dtype=float)
    good = (np.asarray(obj["catflags"]) == 0) & np.isfinite(mag)
    order = np.argsort(t[good], kind="stable")
    t, mag = t[good][order], mag[good][order]
    breaks = np.flatnonzero(np.diff(t) > pars["gap"]) + 1
    seasons = [s for s in np.split(np.arange(t.size), breaks) if s.size >= pars["min_epochs"]]
    assert len(seasons) == n_seasons and good.sum() < len(good)  # every object has flagged epochs
    if oid == TARGET_OID:
        assert good.sum() == 92

    assert [lc.attrs["n_epochs"] for lc in lcs] == [s.size for s in seasons]
    assert sum(len(lc.data) for lc in lcs) == good.sum()
    for lc, idx in zip(lcs, seasons):
        d = lc.data
        assert (d["flag"] == 0).all() and (d["filter"] == "zg").all() and (d["oid"] == oid).all()
        np.testing.assert_array_equal(d["mjd"].to_numpy(), t[idx])
        flux = 10 ** (-0.4 * (mag[idx] - 23.9))
        np.testing.assert_allclose(d["flux"].to_numpy(), flux, rtol=1e-12)
        # the generic reducer clips around the median at sigma_clip robust sigmas, the
        # robust sigma being the interquartile range times IQR_TO_SIGMA (1 / 1.349)
        clipped = sigma_clip(flux, sigma=pars["sigma_clip"], maxiters=5, cenfunc="median",
                             stdfunc=lambda x, axis=None: IQR_TO_SIGMA * np.subtract(
                                 *np.nanpercentile(x, [75, 25], axis=axis)))
        assert lc.attrs["flux_mean"] == pytest.approx(float(np.mean(clipped.compressed())), rel=1e-9)
        assert lc.attrs["n_clipped"] == int(clipped.mask.sum())
        assert lc.attrs["mjd_start"] == t[idx][0] and lc.attrs["mjd_end"] == t[idx][-1]


def test_download_into_raw_store_and_reduce(irsa, objects, monkeypatch, tmp_path, caplog):
    """The whole ZTF path: API download into the HDF5 raw store, read back, reduce."""
    _, url = irsa
    monkeypatch.setenv("ZTF_USERNAME", "alice")
    monkeypatch.setenv("ZTF_PASSWORD", PASSWORD)
    caplog.set_level(logging.DEBUG)
    obs = ztf(url, download={"num_threads_download": 2})
    rows = [target_row(objects)]
    for oid in (250101100000728, 250101100000742):
        obj = objects.loc[objects["objectid"] == oid].iloc[0]
        rows.append({"name": f"ZTF_{oid}", "ra": float(obj["objra"]), "dec": float(obj["objdec"]),
                     "mag": float(np.median(obj["mag"])), "pmra": 0.0, "pmdec": 0.0})
    store = tmp_path / "ZTF" / "ZTF_photometry_RA041.h5"
    manifest = obs.download_all_sources(pd.DataFrame(rows), store)
    assert [s["status"] for s in manifest["sources"]] == ["downloaded"] * 3
    assert [s["n_rows"] for s in manifest["sources"]] == [105, 103, 105]
    assert PASSWORD.encode() not in store.read_bytes()
    assert PASSWORD not in json.dumps(manifest, default=str) and PASSWORD not in caplog.text

    again = obs.download_all_sources(pd.DataFrame(rows), store)  # same parameters: nothing to do
    assert [s["status"] for s in again["sources"]] == ["skipped"] * 3

    lcs = obs.reduce_store(store, pd.DataFrame(rows))
    by_source = {}
    for lc in lcs:
        by_source.setdefault(lc.attrs["source_name"], []).append(lc.attrs["n_epochs"])
    assert by_source["ZTF_target"] == [34, 25, 33]
    assert sum(by_source[f"ZTF_{250101100000728}"]) == 103 - 11  # 11 flagged epochs


# -- IRSA files on disk, reduction without a catalog row, plots, the magnitude-range warning ---
@pytest.mark.parametrize("fmt", ["csv", "ipac"])
def test_irsa_file_on_disk_reduces_without_a_catalog_row(objects, tmp_path, fmt):
    """A saved IRSA answer (CSV or IPAC table, with the 4.95 arcsec neighbour in the cone) is
    read, plotted and reduced with no catalog row: the target is the object with the most
    epochs, its neighbour is left out."""
    import matplotlib
    matplotlib.use("Agg")
    from astropy.table import Table
    from vo.lightcurves.datasets import RawPhotometry

    row = target_row(objects)
    text = irsa_csv(objects, row["ra"], row["dec"], 6.0 / 3600, None)
    path = tmp_path / f"lc.{fmt}"
    if fmt == "csv":
        path.write_text(text)
    else:
        Table.from_pandas(pd.read_csv(io.StringIO(text))).write(path, format="ascii.ipac")
        assert path.read_text().lstrip().startswith(("\\", "|"))
    raw = read_irsa_file(path)
    assert set(raw["oid"]) == {TARGET_OID, NEIGHBOUR_OID} and raw["filtercode"].eq("zg").all()
    data = RawPhotometry(data=raw, attrs={"cat_row": {"name": "from_file"}})
    ax = data.plot()                                    # IRSA's filtercode, not 'filter'
    assert len(ax.lines) + len(ax.collections) > 0
    obs = ztf(mode="bulk", bulk_dir=str(DATA))
    lcs = obs.reduce(raw, to="lcs")                     # no catalog row
    assert lcs and all((lc.data["oid"] == TARGET_OID).all() for lc in lcs)
    assert lcs[0].attrs["source_name"] == f"ZTF_{TARGET_OID}"
    assert sum(len(lc.data) for lc in lcs) == 92        # the target's good epochs


def test_bad_irsa_files_name_the_file(tmp_path):
    bad = tmp_path / "lc.tbl"
    bad.write_text("\\fixlen = T\n| oid | mjd |\n| long | double |\n 1 2.0 3.0\n")
    with pytest.raises(ZTFError, match=str(bad)):
        read_irsa_file(bad)
    csv = tmp_path / "lc.csv"
    csv.write_text("oid,mjd\n1,2.0\n")
    with pytest.raises(ZTFError, match=rf"{csv}.*lacks columns"):
        read_irsa_file(csv)
    with pytest.raises(ZTFError, match="cannot read"):
        read_irsa_file(tmp_path / "missing.csv")


def test_catalog_magnitude_far_off_warns_instead_of_silently_dropping(objects):
    obs = ztf(mode="bulk", bulk_dir=str(DATA))
    row = target_row(objects)
    raw, _ = obs.fetch_data_from_observatory(row)
    assert obs.reduce(raw, cat_row=row)
    with pytest.warns(UserWarning, match=r"1 target\(s\) lost every epoch.*'ZTF_target': catalog .*mag_range"):
        assert obs.reduce(raw, cat_row={**row, "mag": row["mag"] - 2.0}) == []
