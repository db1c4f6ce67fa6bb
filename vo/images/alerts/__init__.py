"""AVRO alerts: the published schema, per-exposure alert files, the ZTF packet reader, Kafka.

The schema lives in the repository (``vo/images/alert_schema/vo.alert.avsc`` and the named
types it uses, one ``.avsc`` JSON file each, resolved by :func:`fastavro.schema.load_schema`).
An alert holds the candidate (detection, measurements, score), its object, the object's
previous detections (``prv_candidates``), its forced photometry history (``fp_hists``) and
three cutouts as gzipped FITS bytes, as ZTF does, so the same code decodes ZTF stamps.

The alert file of an exposure is the source of truth.  :func:`send_alerts` sends its
alerts to Kafka (confluent-kafka; one single-record AVRO container per message, key =
``alertId``), retrying with exponential backoff; whatever is not confirmed delivered stays
listed as unsent in a sidecar state file ``{file}.state.json`` and :func:`resend_alerts`
sends it later (delivery is at least once: consumers deduplicate on ``alertId``).
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import io
import json
import logging
import math
import tarfile
import time
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterable

import fastavro
import numpy as np
from astropy.io import fits
from fastavro.validation import ValidationError, validate

from vo.io.atomic import atomic_path, write_text

#: Version of the alerts code (enters the provenance hash of the alerts step).

SCHEMA_DIR = Path(__file__).parent / "alert_schema"
SCHEMA_FILE = SCHEMA_DIR / "vo.alert.avsc"
SCHEMA_VERSION = "0.1"
PUBLISHER = "vo"
CUTOUT_FIELDS = {"science": "cutoutScience", "template": "cutoutTemplate", "difference": "cutoutDifference"}
ZTF_FILTERS = {1: "g", 2: "r", 3: "i"}
JD_MJD = 2400000.5
STATE_SUFFIX = ".state.json"

log = logging.getLogger("vo.images.alerts")


class AlertError(ValueError):
    """Alerts that cannot be written or read; the message names the file, alert or field."""


# -- schema ---------------------------------------------------------------------------------
@lru_cache(maxsize=1)
def alert_schema() -> dict:
    """The parsed alert schema (named types resolved from :data:`SCHEMA_DIR`)."""
    return fastavro.schema.load_schema(str(SCHEMA_FILE))


def _record_fields(name: str) -> list[dict]:
    raw = json.loads((SCHEMA_DIR / f"vo.{name}.avsc").read_text())
    return raw["fields"]


# -- cutouts --------------------------------------------------------------------------------
def cutout_bytes(array: np.ndarray, name: str) -> dict:
    """A cutout record: the stamp (float32, NaN allowed) as gzipped FITS bytes."""
    array = np.asarray(array, np.float32)
    if array.ndim != 2:
        raise AlertError(f"cutout {name}: must be a 2-D stamp, got shape {array.shape}")
    buf = io.BytesIO()
    fits.PrimaryHDU(array).writeto(buf)
    return {"fileName": name, "stampData": gzip.compress(buf.getvalue(), compresslevel=6, mtime=0)}


def cutout_array(cutout: dict | None) -> np.ndarray | None:
    """The stamp of a cutout record (ours or ZTF's: gzipped or plain FITS bytes)."""
    if cutout is None:
        return None
    data = cutout["stampData"]
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", fits.verify.VerifyWarning)  # ZTF's SIMPLE card
            with fits.open(io.BytesIO(data)) as hdul:
                for hdu in hdul:
                    if hdu.data is not None:
                        return np.array(hdu.data)
    except OSError as exc:
        raise AlertError(f"cutout {cutout.get('fileName')!r}: not a FITS stamp ({exc})") from exc
    raise AlertError(f"cutout {cutout.get('fileName')!r}: no image data")


# -- building and checking alerts -----------------------------------------------------------
def _clean(value):
    """Numpy scalars -> Python; NaN/inf -> None (AVRO nulls)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _record(name: str, values: dict) -> dict:
    """A record of the schema type ``vo.{name}`` from a mapping with possibly extra keys."""
    out = {}
    for f in _record_fields(name):
        if f["name"] in values:
            out[f["name"]] = _clean(values[f["name"]])
        elif "default" in f:
            out[f["name"]] = f["default"]
        else:
            raise AlertError(f"{name}: required field {f['name']!r} missing")
    return out


def candid_for(instrument: str, exposure: str, ccd: str, index: int) -> int:
    """A deterministic 63-bit candidate id of row ``index`` of a CCD's measurements."""
    h = hashlib.sha256(f"{instrument}/{exposure}/{ccd}/{int(index)}".encode()).digest()
    return int.from_bytes(h[:8], "big") >> 1


def make_alert(candidate: dict, obj: dict, prv_candidates: Iterable[dict] = (),
               forced: Iterable[dict] = (), cutouts: dict | None = None,
               features: dict | None = None) -> dict:
    """One alert record.

    Parameters
    ----------
    candidate : mapping with the fields of ``vo.candidate`` (extra keys ignored).
    obj : mapping with the fields of ``vo.object``.
    prv_candidates, forced : mappings with the fields of ``vo.prv_candidate`` /
        ``vo.forced_photometry``.
    cutouts : ``{"science"|"template"|"difference": 2-D array or cutout record}``.
    features : other numeric measurement columns (name -> number), stored in
        ``candidate.features``.
    """
    cand = _record("candidate", candidate)
    if features:
        cand["features"] = {str(k): _clean(float(v)) for k, v in features.items()}
    prv = [_record("prv_candidate", p) for p in prv_candidates]
    fp = [_record("forced_photometry", f) for f in forced]
    alert = {"schemavsn": SCHEMA_VERSION, "publisher": PUBLISHER, "alertId": cand["candid"],
             "objectId": str(obj["name"]), "candidate": cand, "object": _record("object", obj),
             "prv_candidates": prv or None, "fp_hists": fp or None}
    for key, field in CUTOUT_FIELDS.items():
        c = (cutouts or {}).get(key)
        if c is not None and not isinstance(c, dict):
            c = cutout_bytes(c, f"{cand['candid']}_{key}.fits.gz")
        alert[field] = c
    return alert


def validate_alert(alert: dict, where: str = "alert") -> None:
    """Raise :class:`AlertError` naming the alert and the offending field if invalid."""
    try:
        validate(alert, alert_schema(), raise_errors=True)
    except ValidationError as exc:
        raise AlertError(f"{where} (alertId {alert.get('alertId')!r}) does not match the schema "
                         f"{SCHEMA_FILE.name}: {exc}") from None


# -- files ------------------------------------------------------------------------------------
def write_alerts(path, alerts: list[dict], attrs: dict | None = None) -> None:
    """Write the alerts of one exposure (possibly none) to an AVRO file, atomically.

    Every alert is validated first (nothing is written if one is invalid); the provenance
    ``attrs`` go into the file metadata as ``vo.provenance`` (JSON).
    """
    for i, a in enumerate(alerts):
        validate_alert(a, f"{path}: alert {i}")
    meta = {"vo.schemavsn": SCHEMA_VERSION}
    if attrs:
        meta["vo.provenance"] = json.dumps(attrs, sort_keys=True, default=str)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        fastavro.writer(f, alert_schema(), alerts, codec="deflate", metadata=meta)


def read_alerts(path) -> list[dict]:
    """All alerts of an AVRO file (ours or any AVRO alert file), as dicts."""
    path = Path(path)
    if not path.is_file():
        raise AlertError(f"{path}: alert file not found")
    try:
        with open(path, "rb") as f:
            return list(fastavro.reader(f))
    except (ValueError, EOFError, OSError, StopIteration) as exc:
        raise AlertError(f"{path}: not a readable AVRO file ({type(exc).__name__}: {exc})") from exc


def read_alert_metadata(path) -> dict:
    """The file metadata: ``vo.schemavsn`` and the provenance (``vo.provenance``, parsed)."""
    with open(path, "rb") as f:
        meta = dict(fastavro.reader(f).metadata)
    if "vo.provenance" in meta:
        meta["vo.provenance"] = json.loads(meta["vo.provenance"])
    return meta


def alert_message(alert: dict) -> bytes:
    """One alert as a single-record AVRO container (schema included), as ZTF sends them."""
    buf = io.BytesIO()
    fastavro.writer(buf, alert_schema(), [alert])
    return buf.getvalue()


# -- ZTF packets ------------------------------------------------------------------------------
def read_ztf_alerts(path) -> list[dict]:
    """Raw ZTF alert packets from a ``.avro`` file, a directory of them, or a tar(.gz) of them
    (the public ZTF alert archive format), ordered by file name."""
    path = Path(path)
    records = []
    if path.is_dir():
        for p in sorted(path.glob("*.avro")):
            records += read_alerts(p)
        return records
    if path.suffix == ".avro":
        return read_alerts(path)
    try:
        with tarfile.open(path) as tar:
            members = sorted((m for m in tar.getmembers() if m.isfile() and m.name.endswith(".avro")),
                             key=lambda m: m.name)
            for m in members:
                try:
                    records += list(fastavro.reader(io.BytesIO(tar.extractfile(m).read())))
                except (ValueError, EOFError) as exc:
                    raise AlertError(f"{path}: member {m.name} is not AVRO ({exc})") from exc
    except (tarfile.TarError, OSError) as exc:
        raise AlertError(f"{path}: not a tar archive of AVRO alerts ({exc})") from exc
    return records


def _ztf_negative(isdiffpos) -> bool:
    return str(isdiffpos).lower() in ("f", "0", "false")


def _ztf_flux(mag, zp, negative: bool):
    if mag is None or zp is None:
        return None
    return (-1.0 if negative else 1.0) * 10 ** (-0.4 * (mag - zp))


def ztf_to_alert(packet: dict) -> dict:
    """Map a ZTF alert packet (schema 3.x) to our alert structure.

    ``mjd = jd - 2400000.5``; ``flux`` (counts of the ZTF zero point ``magzpsci``) from
    ``magpsf``, negative when ``isdiffpos`` is false; ``score`` is ``drb`` when present, else
    ``rb``; ZTF's earlier detections become ``prv_candidates`` and its non-detections
    (no ``candid``) become ``fp_hists`` entries with only the limit ``diffmaglim``; every other
    numeric candidate field goes to ``features``.  Cutouts are passed through.
    """
    c = packet["candidate"]
    neg = _ztf_negative(c.get("isdiffpos"))
    zp = c.get("magzpsci")
    use_drb = c.get("drb") is not None
    flux = _ztf_flux(c.get("magpsf"), zp, neg)
    flux_err = None if flux is None or c.get("sigmapsf") is None else abs(flux) * c["sigmapsf"] * math.log(10) / 2.5
    cand = {"candid": c["candid"], "mjd": c["jd"] - JD_MJD, "instrument": "ZTF", "exposure": str(c.get("pid")),
            "ccd": str(c.get("rcid")), "filter": ZTF_FILTERS.get(c.get("fid"), str(c.get("fid"))),
            "ra": c["ra"], "dec": c["dec"], "x": c.get("xpos"), "y": c.get("ypos"), "flux": flux,
            "flux_err": flux_err, "mag": c.get("magpsf"), "mag_err": c.get("sigmapsf"),
            "snr": None if not flux_err else flux / flux_err, "zp": zp, "limmag": c.get("diffmaglim"),
            "is_negative": neg, "score": c.get("drb") if use_drb else c.get("rb"),
            "score_algorithm": ("drb " + str(c.get("drbversion"))) if use_drb else ("rb " + str(c.get("rbversion")))}
    mapped = set(cand) | {"jd", "magpsf", "sigmapsf", "drb", "rb", "magzpsci", "diffmaglim", "xpos", "ypos",
                          "isdiffpos", "fid", "pid", "rcid"}
    features = {k: v for k, v in c.items() if k not in mapped and isinstance(v, (int, float))
                and not isinstance(v, bool)}
    obj = {"name": packet["objectId"], "ra": c["ra"], "dec": c["dec"],
           "mjd_first": c["jdstarthist"] - JD_MJD if c.get("jdstarthist") else None,
           "n_detections": c.get("ndethist")}
    prv, fp = [], []
    for p in packet.get("prv_candidates") or []:
        mjd = p["jd"] - JD_MJD
        band = ZTF_FILTERS.get(p.get("fid"), str(p.get("fid")))
        if p.get("candid") is None or p.get("magpsf") is None:  # a non-detection: an upper limit
            fp.append({"mjd": mjd, "filter": band, "exposure": str(p.get("pid")), "limmag": p.get("diffmaglim")})
            continue
        pneg = _ztf_negative(p.get("isdiffpos"))
        pflux = _ztf_flux(p["magpsf"], zp, pneg)
        prv.append({"candid": p["candid"], "mjd": mjd, "filter": band, "ra": p.get("ra"), "dec": p.get("dec"),
                    "flux": pflux, "flux_err": abs(pflux) * p["sigmapsf"] * math.log(10) / 2.5
                    if p.get("sigmapsf") is not None else None, "mag": p["magpsf"],
                    "mag_err": p.get("sigmapsf"), "score": p.get("rb"), "is_negative": pneg})
    cutouts = {k: packet.get(f) for k, f in CUTOUT_FIELDS.items()}
    return make_alert(cand, obj, prv, fp, cutouts, features)


# -- Kafka ------------------------------------------------------------------------------------
def state_path(path) -> Path:
    """The sidecar state file of an alert file: ``{file}.state.json``."""
    return Path(str(path) + STATE_SUFFIX)


def read_state(path) -> dict | None:
    """The send state of an alert file (None if never sent)."""
    sp = state_path(path)
    if not sp.exists():
        return None
    try:
        return json.loads(sp.read_text())
    except json.JSONDecodeError as exc:
        raise AlertError(f"{sp}: corrupt alert state file ({exc})") from exc


def make_producer(servers: str, delivery_timeout_s: float = 30.0, options: dict | None = None):
    """A confluent-kafka producer (idempotent, acks=all) for ``servers``."""
    try:
        from confluent_kafka import Producer
    except ImportError as exc:
        raise AlertError("sending alerts to Kafka needs confluent-kafka: pip install 'vo[kafka]'") from exc
    conf = {"bootstrap.servers": servers, "client.id": "vo-alerts", "enable.idempotence": True,
            "acks": "all", "message.timeout.ms": int(delivery_timeout_s * 1000)}
    conf.update(options or {})
    return Producer(conf)


def _send_once(producer, topic: str, alerts: list[dict], delivery_timeout_s: float) -> tuple[set, dict]:
    """Produce every alert once and wait for the delivery reports.

    Returns the ids delivered and ``{alertId: error}`` for the others.
    """
    delivered, errors = set(), {}

    def on_delivery(alert_id):
        def cb(err, _msg):
            if err is None:
                delivered.add(alert_id)
            else:
                errors[alert_id] = str(err)
        return cb

    for a in alerts:
        aid = a["alertId"]
        try:
            producer.produce(topic, value=alert_message(a), key=str(aid).encode(), on_delivery=on_delivery(aid))
        except BufferError:  # local queue full: serve delivery reports, then try once more
            producer.poll(1.0)
            try:
                producer.produce(topic, value=alert_message(a), key=str(aid).encode(),
                                 on_delivery=on_delivery(aid))
            except Exception as exc:  # noqa: BLE001 - any client error leaves the alert unsent
                errors[aid] = f"{type(exc).__name__}: {exc}"
        except Exception as exc:  # noqa: BLE001 - KafkaException and friends: retried later
            errors[aid] = f"{type(exc).__name__}: {exc}"
    remaining = producer.flush(delivery_timeout_s)
    for a in alerts:
        aid = a["alertId"]
        if aid not in delivered and aid not in errors:
            errors[aid] = f"no delivery report within {delivery_timeout_s} s ({remaining} still queued)"
    return delivered, {k: v for k, v in errors.items() if k not in delivered}


def send_file(path, topic: str, producer, retries: int = 5, backoff_s: float = 1.0,
              delivery_timeout_s: float = 30.0, sleep: Callable[[float], None] = time.sleep) -> dict:
    """Send the alerts of one file not yet delivered; retry failures with exponential backoff
    (``backoff_s * 2**attempt``); write and return the sidecar state (never raises for a
    broker failure: the state says ``unsent`` and lists what is missing)."""
    path = Path(path)
    alerts = read_alerts(path)
    previous = read_state(path) or {}
    done = set(previous.get("delivered", []))
    pending = [a for a in alerts if a["alertId"] not in done]
    errors: dict = {}
    attempts = 0
    for attempt in range(retries + 1):
        if not pending:
            break
        attempts += 1
        delivered, errors = _send_once(producer, topic, pending, delivery_timeout_s)
        done |= delivered
        pending = [a for a in pending if a["alertId"] not in done]
        if pending:
            first = next(iter(errors.values()), "unknown error")
            log.warning("%s: %d of %d alerts not delivered to %s (attempt %d of %d): %s", path, len(pending),
                        len(alerts), topic, attempt + 1, retries + 1, first)
            if attempt < retries:
                sleep(backoff_s * 2 ** attempt)
    state = {"file": path.name, "topic": topic, "status": "sent" if not pending else "unsent",
             "n_alerts": len(alerts), "delivered": sorted(done & {a["alertId"] for a in alerts}),
             "unsent": sorted(a["alertId"] for a in pending),
             "attempts": int(previous.get("attempts", 0)) + attempts,
             "last_error": next(iter(errors.values()), None) if pending else None,
             "updated": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    write_text(state_path(path), json.dumps(state, indent=1) + "\n")
    if pending:
        log.error("%s: %d alerts left unsent (state in %s); resend them with resend_alerts", path,
                  len(pending), state_path(path))
    else:
        log.info("%s: %d alerts delivered to %s", path, len(alerts), topic)
    return state


def send_alerts(files: Iterable, servers: str | None, topic: str, producer=None, retries: int = 5,
                backoff_s: float = 1.0, delivery_timeout_s: float = 30.0,
                sleep: Callable[[float], None] = time.sleep) -> dict[str, dict]:
    """Send alert files to Kafka; returns ``{file: state}``.

    ``producer`` is anything with confluent-kafka's ``produce(topic, value, key, on_delivery)``,
    ``poll(timeout)`` and ``flush(timeout) -> int`` methods; by default a real
    :func:`make_producer` for ``servers`` (``servers`` None and no producer: nothing is sent,
    an empty dict is returned, the files remain the source of truth).
    """
    files = [Path(f) for f in files]
    if producer is None:
        if not servers:
            log.info("no Kafka servers configured: %d alert files written, none sent", len(files))
            return {}
        producer = make_producer(servers, delivery_timeout_s)
    return {str(f): send_file(f, topic, producer, retries, backoff_s, delivery_timeout_s, sleep) for f in files}


def unsent_files(paths: Iterable) -> list[Path]:
    """Alert files (given, or ``*.avro`` under given directories) not fully delivered."""
    out = []
    for p in map(Path, paths):
        candidates = sorted(p.rglob("*.avro")) if p.is_dir() else [p]
        for f in candidates:
            state = read_state(f)
            if state is None or state.get("status") != "sent":
                out.append(f)
    return out


def resend_alerts(paths: Iterable, servers: str | None, topic: str, producer=None, **kw) -> dict[str, dict]:
    """Send again every alert file under ``paths`` whose state is missing or ``unsent``
    (only the alerts not yet delivered); the ``vo resend-alerts`` command."""
    return send_alerts(unsent_files(paths), servers, topic, producer=producer, **kw)


def alerts_config(cfg: dict) -> dict:
    """Keyword arguments of :func:`send_alerts` from the ``alerts`` config section."""
    a = cfg.get("alerts", {})
    return {"servers": a.get("kafka_servers"), "topic": a.get("topic", "vo_alerts"),
            "retries": int(a.get("retries", 5)), "backoff_s": float(a.get("backoff", 1.0)),
            "delivery_timeout_s": float(a.get("delivery_timeout", 30.0))}


__all__ = ["AlertError", "alert_schema", "alerts_config", "candid_for", "cutout_array", "cutout_bytes",
           "make_alert", "make_producer", "read_alert_metadata", "read_alerts", "read_state",
           "read_ztf_alerts", "resend_alerts", "send_alerts", "send_file", "state_path", "unsent_files",
           "validate_alert", "write_alerts", "ztf_to_alert"]
