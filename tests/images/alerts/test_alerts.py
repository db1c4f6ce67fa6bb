"""AVRO alerts: our schema and files, the real ZTF packets, and sending to Kafka.

No Kafka broker is available on the test machine (none can run here), so the broker is the
one thing not real in these tests: the retry / backoff / no-loss / unsent-state / resend
logic is tested through the producer interface with a stand-in producer that fails N times
and then delivers, and the REAL confluent-kafka producer is tested against a closed local
port (a broker outage): its delivery reports fail and the file is left marked unsent.
"""

from __future__ import annotations

import io
import json
import socket

import fastavro
import numpy as np
import pytest

from vo.images import alerts as A
from testdata import DATA as TEST_DATA

ZTF = TEST_DATA / "ztf_alerts" / "ztf_public_20180819_mod1000.tar.gz"


@pytest.fixture(scope="module")
def ztf_packets():
    return A.read_ztf_alerts(ZTF)


def test_real_ztf_packets(ztf_packets):
    assert len(ztf_packets) == 30
    shapes = []
    for p in ztf_packets:
        c = p["candidate"]
        assert p["objectId"].startswith("ZTF18") and c["candid"] == int(c["candid"]) > 0
        assert 12 < c["magpsf"] < 23 and 0 < c["sigmapsf"] < 0.5 and 0 <= c["rb"] <= 1
        assert 2458349 < c["jd"] < 2458350  # 2018-08-19
        for prv in p["prv_candidates"] or []:
            assert prv["jd"] <= c["jd"]
        for field in A.CUTOUT_FIELDS.values():
            stamp = A.cutout_array(p[field])
            shapes.append(stamp.shape)
            assert np.isfinite(stamp).mean() > 0.5
    # 63x63 stamps, except those cut by a CCD edge
    assert sum(s == (63, 63) for s in shapes) >= len(shapes) - 3
    assert all(s[0] <= 63 and s[1] <= 63 and min(s) >= 40 for s in shapes)
    # the candid is unique, and our reader keeps the packets' order (by file name)
    assert len({p["candidate"]["candid"] for p in ztf_packets}) == 30


def test_ztf_packets_map_to_our_schema_and_round_trip(ztf_packets, tmp_path):
    alerts = [A.ztf_to_alert(p) for p in ztf_packets]
    path = tmp_path / "ztf_as_vo.avro"
    A.write_alerts(path, alerts)
    back = A.read_alerts(path)
    assert back == alerts
    for p, a in zip(ztf_packets, back):
        c = p["candidate"]
        cand = a["candidate"]
        assert a["objectId"] == p["objectId"] and a["alertId"] == c["candid"]
        assert cand["mag"] == c["magpsf"] and cand["score"] == c["rb"]
        assert cand["mjd"] == pytest.approx(c["jd"] - 2400000.5)
        assert cand["is_negative"] == (c["isdiffpos"] in ("f", "0"))
        # flux from the zero point reproduces magpsf, S/N from sigmapsf
        assert -2.5 * np.log10(abs(cand["flux"])) + c["magzpsci"] == pytest.approx(c["magpsf"], abs=1e-9)
        assert abs(cand["snr"]) == pytest.approx(2.5 / np.log(10) / c["sigmapsf"], rel=1e-9)
        n_det = sum(x["candid"] is not None for x in p["prv_candidates"] or [])
        assert len(a["prv_candidates"] or []) == n_det
        assert len(a["fp_hists"] or []) == len(p["prv_candidates"] or []) - n_det
        for field in A.CUTOUT_FIELDS.values():
            assert np.array_equal(A.cutout_array(a[field]), A.cutout_array(p[field]), equal_nan=True)


def _our_alerts(n=4, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        cand = {"candid": A.candid_for("DemoCam", "dc_f00_r_003", "c01", i), "mjd": 60310.25, "instrument": "DemoCam",
                "exposure": "dc_f00_r_003", "ccd": "c01", "filter": "r", "ra": 150.0 + i * 1e-3, "dec": 2.2,
                "x": 100.0 + i, "y": 200.5, "flux": np.float32(1500.0), "flux_err": 50.0, "mag": 20.1,
                "mag_err": 0.036, "snr": 30.0, "zp": 28.04, "limmag": np.nan, "is_negative": False,
                "score": 0.93, "score_algorithm": "democam_rb", "is_bad": False, "ignored_extra": 1}
        obj = {"name": f"VO24aaa{chr(97 + i)}", "ra": 150.0 + i * 1e-3, "dec": 2.2, "mjd_first": 60300.2,
               "n_detections": 3}
        prv = [{"candid": 7 + k, "mjd": 60300.2 + k, "filter": "r", "ra": 150.0, "dec": 2.2, "flux": 1000.0 + k,
                "flux_err": 40.0, "mag": 20.5, "mag_err": 0.04, "snr": 25.0, "score": 0.8} for k in range(2)]
        fp = [{"mjd": 60290.0 + k, "filter": "r", "exposure": f"dc_f00_r_00{k}", "ccd": "c01", "flux": 3.0,
               "flux_err": 45.0, "snr": 0.07, "limmag": 22.3, "zp": 28.0, "flags": 0} for k in range(3)]
        stamps = {k: rng.normal(0, 1, (41, 41)).astype(np.float32) for k in ("science", "template", "difference")}
        stamps["difference"][:, :5] = np.nan  # CCD edge
        out.append((A.make_alert(cand, obj, prv, fp, stamps, features={"elongation": 1.1, "nbad": 0}), stamps))
    return out


def test_our_alerts_validate_and_read_back_equal(tmp_path):
    made = _our_alerts()
    alerts = [a for a, _ in made]
    path = tmp_path / "dc_f00_r_003.alerts.avro"
    A.write_alerts(path, alerts, attrs={"step": "alerts", "provenance_hash": "abc123"})
    # an independent reader with our PUBLISHED schema file (plain fastavro, parsed from the repo)
    published = fastavro.schema.load_schema(str(A.SCHEMA_FILE))
    with open(path, "rb") as f:
        back = list(fastavro.reader(f, reader_schema=published))
    assert back == alerts == A.read_alerts(path)
    meta = A.read_alert_metadata(path)
    assert meta["vo.provenance"]["provenance_hash"] == "abc123" and meta["vo.schemavsn"] == A.SCHEMA_VERSION
    a = back[0]
    assert a["candidate"]["limmag"] is None and a["candidate"]["flux"] == 1500.0  # NaN -> null; float32 ok
    assert a["candidate"]["features"] == {"elongation": 1.1, "nbad": 0.0}
    assert len(a["prv_candidates"]) == 2 and len(a["fp_hists"]) == 3
    assert a["object"]["name"] == "VO24aaaa" == a["objectId"]
    for (alert, stamps) in made:
        for key, field in A.CUTOUT_FIELDS.items():
            assert np.array_equal(A.cutout_array(alert[field]), stamps[key], equal_nan=True)
    # no alerts: still a valid (empty) file, so the workflow has its output
    A.write_alerts(tmp_path / "none.avro", [])
    assert A.read_alerts(tmp_path / "none.avro") == []


def test_invalid_alerts_are_named_and_write_nothing(tmp_path):
    alerts = [a for a, _ in _our_alerts(2)]
    alerts[1]["candidate"]["ra"] = "not a number"
    path = tmp_path / "bad.avro"
    with pytest.raises(A.AlertError, match=r"alert 1 .*schema"):
        A.write_alerts(path, alerts)
    assert not path.exists() and not list(tmp_path.iterdir())
    with pytest.raises(A.AlertError, match="required field 'candid'"):
        A.make_alert({"mjd": 1.0}, {"name": "x", "ra": 0.0, "dec": 0.0})
    (tmp_path / "junk.avro").write_bytes(b"not avro at all")
    with pytest.raises(A.AlertError, match="junk.avro"):
        A.read_alerts(tmp_path / "junk.avro")


class FlakyProducer:
    """Stand-in for confluent_kafka.Producer (same methods; no broker can run here): the first
    ``fail_produce`` produce() calls raise, the next ``fail_delivery`` messages get an error
    delivery report, then every message is delivered and kept in ``delivered``."""

    def __init__(self, fail_produce=0, fail_delivery=0):
        self.fail_produce, self.fail_delivery = fail_produce, fail_delivery
        self.delivered: list[tuple[str, bytes, bytes]] = []
        self._queue = []

    def produce(self, topic, value=None, key=None, on_delivery=None):
        if self.fail_produce > 0:
            self.fail_produce -= 1
            raise RuntimeError("KafkaException: Local: All broker connections are down")
        self._queue.append((topic, value, key, on_delivery))

    def poll(self, timeout=0):
        return self.flush(timeout)

    def flush(self, timeout=None):
        queue, self._queue = self._queue, []
        for topic, value, key, cb in queue:
            if self.fail_delivery > 0:
                self.fail_delivery -= 1
                cb("KafkaError{code=_MSG_TIMED_OUT}", None)
            else:
                self.delivered.append((topic, key, value))
                cb(None, object())
        return 0


def _write_files(tmp_path, n_files=2, n=4):
    files = []
    for k in range(n_files):
        alerts = [a for a, _ in _our_alerts(n, seed=k)]
        for i, a in enumerate(alerts):
            a["alertId"] = a["candidate"]["candid"] = 1000 * k + i
        f = tmp_path / f"exp{k}.alerts.avro"
        A.write_alerts(f, alerts)
        files.append(f)
    return files


def _decoded(producer):
    return [next(fastavro.reader(io.BytesIO(v))) for _, _, v in producer.delivered]


def test_retry_with_backoff_delivers_everything(tmp_path):
    files = _write_files(tmp_path)
    sleeps = []
    prod = FlakyProducer(fail_produce=3, fail_delivery=2)
    states = A.send_alerts(files, None, "vo_test", producer=prod, retries=3, backoff_s=0.5, sleep=sleeps.append)
    assert all(s["status"] == "sent" and s["unsent"] == [] for s in states.values())
    # file 0: attempt 1 loses all 4 (3 produce errors, 1 failed delivery), attempt 2 loses 1
    # (failed delivery), attempt 3 delivers it: two sleeps, doubling; file 1 goes at once
    assert sleeps == [0.5, 1.0]
    got = _decoded(prod)
    assert sorted(a["alertId"] for a in got) == [0, 1, 2, 3, 1000, 1001, 1002, 1003]  # no loss, no duplicate
    assert {a["alertId"]: a for a in got} == {a["alertId"]: a for f in files for a in A.read_alerts(f)}
    assert {k for _, k, _ in prod.delivered} == {str(a["alertId"]).encode() for a in got}
    assert json.loads(A.state_path(files[0]).read_text())["attempts"] == 3
    assert A.unsent_files([tmp_path]) == []


def test_outage_leaves_files_unsent_and_resend_sends_only_the_rest(tmp_path, caplog):
    files = _write_files(tmp_path)
    sleeps = []
    # 10 failed produce calls: the 4 alerts of file 0 fail twice (retries=1), then 2 of file 1 once
    prod = FlakyProducer(fail_produce=10)
    states = A.send_alerts(files, None, "vo_test", producer=prod, retries=1, backoff_s=2.0, sleep=sleeps.append)
    s0, s1 = states[str(files[0])], states[str(files[1])]
    assert s0["status"] == "unsent" and s0["unsent"] == [0, 1, 2, 3] and s0["delivered"] == []
    assert "broker connections are down" in s0["last_error"]
    assert s1["status"] == "sent"  # the outage ended during its first retry
    assert sleeps == [2.0, 2.0]
    assert "left unsent" in caplog.text
    assert A.unsent_files([tmp_path]) == [files[0]]
    assert A.read_state(files[0])["status"] == "unsent"  # the sidecar file on disk
    # partial failure: one alert of file 0 delivered, then the broker goes away again
    class OneThenDown(FlakyProducer):
        def produce(self, topic, value=None, key=None, on_delivery=None):
            if self.delivered or self._queue:
                raise RuntimeError("KafkaException: broker down")
            super().produce(topic, value, key, on_delivery)

    down = OneThenDown()
    st = A.resend_alerts([tmp_path], None, "vo_test", producer=down, retries=0, sleep=sleeps.append)
    assert list(st) == [str(files[0])]
    assert st[str(files[0])]["delivered"] == [0] and st[str(files[0])]["unsent"] == [1, 2, 3]
    # resend: only what is missing goes out, nothing twice
    up = FlakyProducer()
    st = A.resend_alerts([tmp_path], None, "vo_test", producer=up, sleep=sleeps.append)
    assert st[str(files[0])]["status"] == "sent"
    assert sorted(a["alertId"] for a in _decoded(up)) == [1, 2, 3]
    assert A.unsent_files([tmp_path]) == []
    assert A.resend_alerts([tmp_path], None, "vo_test", producer=FlakyProducer()) == {}


def test_no_servers_sends_nothing(tmp_path):
    files = _write_files(tmp_path, 1)
    assert A.send_alerts(files, None, "vo_test") == {}
    assert A.read_state(files[0]) is None
    assert A.alerts_config({"alerts": {"kafka_servers": "h:9092", "retries": 2}})["retries"] == 2


def test_real_confluent_producer_broker_down(tmp_path):
    """The real confluent-kafka client against a closed local port: no delivery report
    succeeds, the file is marked unsent, nothing is lost."""
    pytest.importorskip("confluent_kafka")
    with socket.socket() as s:  # a free port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    files = _write_files(tmp_path, 1, n=2)
    states = A.send_alerts(files, f"127.0.0.1:{port}", "vo_test", retries=1, backoff_s=0.1,
                           delivery_timeout_s=1.5)
    st = states[str(files[0])]
    assert st["status"] == "unsent" and st["unsent"] == [0, 1] and st["attempts"] == 2
    assert st["last_error"]
    assert A.unsent_files([tmp_path]) == files
