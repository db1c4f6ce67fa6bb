"""The workflow on a real single-node SLURM cluster through ``profiles/slurm``.

A small demo (light curves of a few DEMO targets; two DemoCam exposures of one 512x512 CCD,
the first the reference for the second, through alerts) runs once locally and once through
the SLURM executor plugin on a cluster that ``tests/slurm_cluster.py`` brings up:

* with accounting (MariaDB + slurmdbd; the plugin checks job states with ``sacct``, its
  default), with the profile's ``slurm_partition``/``slurm_account`` set as a site would set
  them.  While it runs, one per-CCD group job is killed (SIGTERM to every process of the job):
  SLURM marks it FAILED and Snakemake resubmits it with the resources of attempt 2.  The run
  must write the same files (same checksums; for the raw photometry store, the download
  manifest and AVRO alerts, which hold a download time, the data root and a random sync
  marker, the same content) and the same database rows as the local run;
  ``sacct`` must show one job per CCD image for the per-CCD steps and sbatch requests equal to
  the rules' ``mem_mb``/``runtime``/threads;
* without accounting (``slurm-status-command: squeue``): a dry run submits nothing; a master
  bias is made on the cluster (two jobs, one after the other) and matches the local run.

The local run goes on while the accounting cluster runs the demo (the cluster run mostly
waits: job start-up and status checks).

The daemons need root and the Debian packages (``.ci/install-slurm.sh``).  Without them the
tests are skipped, except on CI (``CI`` set), where they fail.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import fastavro
import h5py
import pytest
import sqlalchemy as sa
import yaml

from slurm_cluster import ACCOUNT, PARTITION, ClusterError, missing_programs, slurm_cluster
from workflow_helpers import REPO, SNAKEMAKE

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]   # a module fixture runs the demo

N_CCDS, N_EXPOSURES = 1, 2
SMALL = {
    "project": {"name": "SLTEST", "obs_names": ["DEMO"]},
    "catalog": {"max_targets": 10},
    "DEMO": {"n_seasons": 1, "epochs_per_season": 30},
    "images": {"enabled": True},
    "DemoCam": {"n_ccds": N_CCDS, "n_exposures": N_EXPOSURES, "reference_epochs": 1,
                "ccd_shape": [512, 512], "n_bias": 1, "n_flats": 1},
    "references": {"min_images": 1, "first": 1},   # the first exposure is the reference of the second
}
#: rules of the ``ccd`` group (workflow/rules/images.smk): one SLURM job per CCD image
CCD_GROUP = {"preprocess", "extract", "astrometry", "zero_point", "ingest_images",
             "subtraction", "detection", "cutouts", "measurements"}
#: the plugin's status checks start this many seconds after a submission (default 40):
#: short, so that the small demo does not spend its time waiting
FAST_STATUS = ["--slurm-init-seconds-before-status-checks", "2"]
#: folders of a data root that differ between runs by nature
NOT_PRODUCTS = {"logs", "benchmarks", "slurm_logs"}


def _unavailable(reason: str):
    if os.environ.get("CI"):
        pytest.fail(f"SLURM tests cannot run on CI: {reason}", pytrace=False)
    pytest.skip(reason)


def _cluster(accounting: bool):
    missing = missing_programs(accounting)
    if missing:
        _unavailable("not installed: " + ", ".join(missing) + " (bash .ci/install-slurm.sh)")
    if os.geteuid() != 0:
        _unavailable("the test cluster's daemons run as root (SlurmUser=root)")
    try:
        with slurm_cluster(accounting=accounting) as cluster:
            yield cluster
    except ClusterError as exc:
        pytest.fail(f"the SLURM test cluster did not come up: {exc}", pytrace=False)


class Snakemake:
    """The workflow running in the background with ``VO_DATA``/``VO_DB_URL`` in ``data_root``;
    ``output()`` waits for it and returns what it printed (failing the test if it failed)."""

    def __init__(self, args: list[str], data_root: Path, env: dict | None = None, db_url: str | None = None):
        env = dict(env or os.environ, VO_DATA=str(data_root),
                   VO_DB_URL=db_url or f"sqlite:///{data_root / 'vo.sqlite'}")
        self.args, self.logfile = args, open(data_root.parent / f"{data_root.name}.snakemake.log", "w+")
        self.proc = subprocess.Popen(SNAKEMAKE + args, stdout=self.logfile, stderr=subprocess.STDOUT,
                                     text=True, env=env, cwd=REPO)

    def stop(self) -> None:
        """Kill it if it still runs."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def output(self, timeout: float = 1500) -> str:
        try:
            self.proc.wait(timeout=timeout)
        finally:
            self.stop()
        self.logfile.seek(0)
        text = self.logfile.read()
        self.logfile.close()
        if self.proc.returncode != 0:
            raise AssertionError(f"snakemake {' '.join(self.args)} failed ({self.proc.returncode}):"
                                 f"\n{text[-8000:]}")
        return text


def snakemake(args: list[str], data_root: Path, env: dict | None = None, db_url: str | None = None) -> str:
    """Run the workflow (see ``Snakemake``) and return its output."""
    return Snakemake(args, data_root, env, db_url).output()


def site_profile(folder: Path, **resources) -> Path:
    """``profiles/slurm`` with ``default-resources`` completed as a site would complete it."""
    profile = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
    profile["default-resources"].update(resources)
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(profile))
    return folder


def raw_store_content(path: Path) -> dict:
    """A raw photometry store without the time each source was downloaded at."""
    out = {}

    def visit(name, obj):
        attrs = {k: str(v) for k, v in obj.attrs.items() if k != "downloaded_at"}
        data = obj[()].tobytes() if isinstance(obj, h5py.Dataset) else None
        out[name] = (attrs, data)

    with h5py.File(path, "r") as f:
        f.visititems(visit)
    return out


def manifest_content(path: Path, root: Path) -> dict:
    """A download manifest with the data root taken out of the raw store's path."""
    return json.loads(path.read_text().replace(str(root), "<root>"))


def avro_records(path: Path) -> list:
    """The records of an AVRO file (its sync marker is random)."""
    with open(path, "rb") as f:
        return list(fastavro.reader(f))


#: products that differ between any two runs, with how to compare them instead
VOLATILE = {
    "*_photometry_RA*.h5": lambda f, root: raw_store_content(f),        # download time
    "*_manifest.json": manifest_content,                                # absolute path
    "*.avro": lambda f, root: avro_records(f),                          # random sync marker
}


def differing_products(a: Path, b: Path) -> list[str]:
    """Products of data root ``a`` whose content differs in ``b`` (sha256, or the content
    that matters for ``VOLATILE`` files)."""
    pa, pb = products(a), products(b)
    out = []
    for rel in sorted(set(pa) & set(pb)):
        if pa[rel] == pb[rel]:
            continue
        how = next((v for k, v in VOLATILE.items() if Path(rel).match(k)), None)
        if how is None or how(a / rel, a) != how(b / rel, b):
            out.append(rel)
    return out


def products(root: Path) -> dict[str, str]:
    """sha256 of every product file under a data root (not logs, benchmarks, the database, nor
    hidden files: the run's cached plan, or the ``.snakemake_timestamp`` Snakemake puts in a
    ``directory()`` output of a per-exposure job)."""
    out = {}
    for f in sorted(root.rglob("*")):
        rel = f.relative_to(root)
        if (f.is_file() and not NOT_PRODUCTS & set(rel.parts[:2]) and f.name != "vo.sqlite"
                and not any(part.startswith(".") for part in rel.parts)):
            out[str(rel)] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


def database_rows(db: Path | str) -> dict[str, Counter]:
    """Every table's rows (a SQLite file, or a database URL) with surrogate keys replaced by
    the rows they point to.

    Primary keys and timestamps differ between runs whose jobs finished in another order;
    a foreign key (and ``provenance_id``, which has none in the bulk tables) is replaced,
    recursively, by the content of the row it references.  The checksum of a ``VOLATILE``
    file is left out (its content is compared by the file test).  JSON values are compared
    as JSON, so SQLite and PostgreSQL (JSONB) rows compare equal.
    """
    engine = sa.create_engine(db if isinstance(db, str) else f"sqlite:///{db}")
    meta = sa.MetaData()
    meta.reflect(engine)
    with engine.connect() as con:
        rows = {t.name: {r._mapping[next(iter(t.primary_key)).name]: dict(r._mapping)
                         for r in con.execute(t.select())} for t in meta.sorted_tables}
    engine.dispose()
    memo: dict[tuple[str, object], str] = {}

    def canon(table: str, key) -> str:
        if (table, key) not in memo:
            memo[(table, key)] = "<cycle>"
            t, row, parts = meta.tables[table], rows[table][key], []
            volatile = any(Path(str(row.get("filename"))).match(k) for k in VOLATILE)
            for col in t.columns:
                if col.primary_key or isinstance(col.type, (sa.DateTime, sa.Date)):
                    continue
                value = "<volatile>" if volatile and col.name == "checksum" else row[col.name]
                fk = next(iter(col.foreign_keys), None)
                if fk is not None and value is not None:
                    value = canon(fk.column.table.name, value)
                elif col.name == "provenance_id" and value is not None:
                    value = canon("provenances", value)
                parts.append([col.name, value])
            memo[(table, key)] = json.dumps(parts, sort_keys=True, default=str)
        return memo[(table, key)]

    return {t: Counter(canon(t, k) for k in rows[t]) for t in rows}


def job_blocks(log: str) -> dict[tuple[str, str], dict]:
    """The jobs a Snakemake log announces, keyed by ``(rule, wildcard values joined by _)``
    (the slurm plugin's job comment): their ``mem_mb``, ``runtime`` and ``threads`` as
    Snakemake computed them for the attempt, and their ``input``/``output`` files."""
    out = {}
    for block in re.split(r"\n(?=\[\w{3} \w{3} .*\d{4}\]\n)", log):
        rule = re.search(r"^(?:local)?rule (\w+):", block, re.M)
        res = re.search(r"^\s+resources: (.*)$", block, re.M)
        if not (rule and res and "mem_mb=" in res.group(1)):
            continue
        field = {k: re.search(rf"^\s+{k}: (.*)$", block, re.M) for k in ("wildcards", "threads", "input", "output")}
        wildcards = [kv.split("=", 1)[1] for kv in field["wildcards"].group(1).split(", ")] if field["wildcards"] else []
        r = dict(kv.split("=", 1) for kv in res.group(1).split(", "))
        out[(rule.group(1), "_".join(wildcards))] = {
            "mem_mb": int(r["mem_mb"]), "runtime": int(r["runtime"]),
            "threads": int(field["threads"].group(1)) if field["threads"] else 1,
            "input": set(field["input"].group(1).split(", ")) if field["input"] else set(),
            "output": set(field["output"].group(1).split(", "))}
    return out


def group_request(members: list[dict]) -> dict[str, int]:
    """What Snakemake asks SLURM for a group job: its members in dependency levels (a member
    comes after those whose outputs it reads); per level the sum of mem_mb and threads and
    the longest runtime; over the levels the largest mem_mb and threads and the summed runtime."""
    level = {}

    def depth(i: int) -> int:
        if i not in level:
            before = [j for j, m in enumerate(members) if m["output"] & members[i]["input"]]
            level[i] = 1 + max((depth(j) for j in before), default=-1)
        return level[i]

    levels: dict[int, list[dict]] = {}
    for i, m in enumerate(members):
        levels.setdefault(depth(i), []).append(m)
    return {"mem_mb": max(sum(m["mem_mb"] for m in ms) for ms in levels.values()),
            "threads": max(sum(m["threads"] for m in ms) for ms in levels.values()),
            "runtime": sum(max(m["runtime"] for m in ms) for ms in levels.values())}


def minutes(timelimit: str) -> int:
    """SLURM time limit ``[D-]HH:MM:SS`` or ``MM:SS`` in minutes."""
    days, _, hms = timelimit.rpartition("-")
    parts = [int(p) for p in hms.split(":")]
    while len(parts) < 3:
        parts.insert(0, 0)
    return int(days or 0) * 1440 + parts[0] * 60 + parts[1] + round(parts[2] / 60)


class KillFirstGroupJob(threading.Thread):
    """Kills the first running per-CCD group job: SIGTERM to all its processes
    (``scancel --signal=TERM --full``), which SLURM records as FAILED (a plain ``scancel``
    would record CANCELLED)."""

    def __init__(self, cluster):
        super().__init__(daemon=True)
        self.cluster, self.killed, self.done = cluster, None, threading.Event()

    def run(self):
        while not self.done.is_set() and self.killed is None:
            out = self.cluster.cmd("squeue", "-h", "-o", "%i|%k|%T", check=False).stdout
            for line in out.splitlines():
                jobid, comment, state = line.split("|")
                if comment.startswith("rule_ccd_") and state == "RUNNING":
                    time.sleep(1)   # let the job get going
                    if self.cluster.cmd("scancel", "--signal=TERM", "--full", jobid,
                                        check=False).returncode == 0:
                        self.killed = jobid
                        break
            time.sleep(0.3)


@pytest.fixture(scope="module")
def config_file(tmp_path_factory) -> Path:
    f = tmp_path_factory.mktemp("slurmcfg") / "small.yaml"
    f.write_text(yaml.safe_dump(SMALL))
    return f


@pytest.fixture(scope="module")
def local_process(config_file, tmp_path_factory):
    """The small demo started locally (2 cores), in the background."""
    root = tmp_path_factory.mktemp("local")
    run = Snakemake(["--cores", "2", "--configfile", str(config_file)], root)
    yield SimpleNamespace(root=root, run=run)
    run.stop()


@pytest.fixture(scope="module")
def local_run(local_process):
    """The local run once finished: ``root`` (data root), ``log`` (Snakemake's output)."""
    return SimpleNamespace(root=local_process.root, log=local_process.run.output())


@pytest.fixture(scope="module")
def accounting_cluster():
    yield from _cluster(accounting=True)


@pytest.fixture(scope="module")
def squeue_cluster():
    yield from _cluster(accounting=False)


@pytest.fixture(scope="module")
def accounting_run(accounting_cluster, local_process, config_file, tmp_path_factory):
    """The small demo through the profile (partition and account set) with sacct status
    checks, one group job killed, while the local run goes on beside it: ``root``, ``log``,
    ``jobs`` (sacct rows), ``killed`` (the killed SLURM job id)."""
    root = tmp_path_factory.mktemp("slurm")
    profile = site_profile(root.parent / f"{root.name}_profile",
                           slurm_partition=PARTITION, slurm_account=ACCOUNT)
    killer = KillFirstGroupJob(accounting_cluster)
    killer.start()
    try:
        log = snakemake(["--profile", str(profile), "--configfile", str(config_file),
                         "--slurm-logdir", str(root / "slurm_logs"), "--slurm-keep-successful-logs",
                         "--verbose", *FAST_STATUS], root, accounting_cluster.env)
    finally:
        killer.done.set()
        killer.join()
    return SimpleNamespace(root=root, log=log, jobs=accounting_cluster.jobs(), killed=killer.killed)


def group_log(run, jobid: str) -> str:
    """The SLURM log of a group job of a run (kept with ``--slurm-keep-successful-logs``)."""
    return next((run.root / "slurm_logs").glob(f"group_*/**/{jobid}.log")).read_text()


def test_slurm_run_writes_the_same_files_as_a_local_run(accounting_run, local_run):
    local, slurm = products(local_run.root), products(accounting_run.root)
    assert sorted(slurm) == sorted(local)
    assert len(local) > 40
    differ = differing_products(local_run.root, accounting_run.root)
    assert not differ, f"contents differ: {differ}"
    assert sum(local[f] == slurm[f] for f in local) >= len(local) - len(VOLATILE)


def test_slurm_run_writes_the_same_database_rows_as_a_local_run(accounting_run, local_run):
    local = database_rows(local_run.root / "vo.sqlite")
    slurm = database_rows(accounting_run.root / "vo.sqlite")
    assert set(slurm) == set(local)
    for table in ("sources", "lightcurves", "images", "zero_points", "subtractions", "measurements"):
        assert sum(local[table].values()) > 0, table
    differ = {t: (sum(local[t].values()), sum(slurm[t].values())) for t in local if local[t] != slurm[t]}
    assert not differ, f"tables differ (local rows, slurm rows): {differ}"


def test_job_states_came_from_sacct(accounting_run):
    assert "command=sacct" in accounting_run.log and "command=squeue" not in accounting_run.log
    jobs = accounting_run.jobs
    assert jobs and all(j["State"] in ("COMPLETED", "FAILED") for j in jobs), jobs


def test_per_ccd_steps_run_as_one_slurm_job_per_ccd(accounting_run):
    jobs = accounting_run.jobs
    group_jobs = [j for j in jobs if j["Comment"].startswith("rule_ccd_")]
    alone = {j["Comment"].removeprefix("rule_").split("_wildcards_")[0] for j in jobs}
    assert not CCD_GROUP & alone, f"per-CCD rules submitted on their own: {CCD_GROUP & alone}"
    images = Counter()
    for j in group_jobs:
        if j["State"] != "COMPLETED":
            continue
        members = job_blocks(group_log(accounting_run, j["JobID"]))
        rules = {rule for rule, _ in members}
        where = {re.search(r"dc_f\d\d_\w+_\d{3}_C\d\d$", wc).group() for _, wc in members}  # not a hash's "..dc_"
        assert len(where) == 1 and {"preprocess", "ingest_images"} <= rules <= CCD_GROUP, (rules, where)
        images[where.pop()] += 1
    assert len(images) == N_CCDS * N_EXPOSURES and set(images.values()) == {1}, images
    new = [k for k in images if f"_{N_EXPOSURES - 1:03d}_" in k]
    assert len(new) == N_CCDS


def test_sbatch_requests_carry_the_rule_resources(accounting_run, local_run):
    """Each completed first-attempt job asked SLURM for its rule's mem_mb (MB), runtime
    (minutes) and threads as the local run computed them (a group job: Snakemake's combination
    of its members', see ``group_request``), in the partition and account of the profile."""
    expected = job_blocks(local_run.log)
    checked = Counter()
    for j in accounting_run.jobs:
        if j["State"] != "COMPLETED":
            continue
        assert (j["Partition"], j["Account"]) == (PARTITION, ACCOUNT), j
        name, _, wildcards = j["Comment"].removeprefix("rule_").partition("_wildcards_")
        if name.startswith("ccd_"):
            members = job_blocks(group_log(accounting_run, j["JobID"]))
            if any(m["mem_mb"] != expected[k]["mem_mb"] for k, m in members.items()):
                continue   # the resubmitted job (attempt 2): see the next test
            want = group_request([dict(expected[k], input=m["input"], output=m["output"])
                                  for k, m in members.items()])
            name = "ccd"
        else:
            assert (name, wildcards) in expected, f"{j} was not in the local run"
            want = {k: expected[(name, wildcards)][k] for k in ("mem_mb", "runtime", "threads")}
        got = {"mem_mb": int(j["ReqMem"].removesuffix("M")), "runtime": minutes(j["Timelimit"]),
               "threads": int(j["ReqCPUS"])}
        assert got == want, (j, want)
        checked[name] += 1
    assert checked["ccd"] >= 1 and len(checked) > 15, checked


def test_a_failed_job_is_resubmitted_with_the_resources_of_attempt_two(accounting_run):
    jobs, killed = accounting_run.jobs, accounting_run.killed
    assert killed is not None, "no group job was seen running"
    first = next(j for j in jobs if j["JobID"] == killed)
    assert first["State"] == "FAILED"
    again = [j for j in jobs if j["Comment"] == first["Comment"] and int(j["JobID"]) > int(killed)
             and j["ReqMem"] == f"{2 * int(first['ReqMem'].removesuffix('M'))}M"]
    assert len(again) == 1 and again[0]["State"] == "COMPLETED", (first, again)
    assert minutes(again[0]["Timelimit"]) == 2 * minutes(first["Timelimit"])
    assert "--attempt 2" in group_log(accounting_run, again[0]["JobID"])


@pytest.fixture(scope="module")
def squeue_run(squeue_cluster, local_run, config_file, tmp_path_factory):
    """A master bias of the small demo (its raw bias frame, then the master: two jobs, one
    after the other) through the unchanged profile with ``--slurm-status-command squeue``,
    after a dry run: ``root``,
    ``targets``, ``dry`` (the dry run's output), ``queued_by_dry_run``, ``log``, ``queue``
    (squeue rows: job id, comment, state), ``sacct`` (what sacct says on this cluster)."""
    root = tmp_path_factory.mktemp("squeue")
    targets = [next(local_run.root.glob("SLTEST/calibration-*/DEMOCAM_bias_C01.fits")).relative_to(local_run.root)]
    args = ["--profile", str(REPO / "profiles" / "slurm"), "--configfile", str(config_file),
            "--slurm-status-command", "squeue", "--slurm-logdir", str(root / "slurm_logs"),
            "--slurm-keep-successful-logs", "--verbose", *FAST_STATUS, *[str(root / t) for t in targets]]
    run = SimpleNamespace(root=root, targets=targets)
    run.dry = snakemake(["-n", *args], root, squeue_cluster.env)
    run.queued_by_dry_run = squeue_cluster.cmd("squeue", "-h", "-t", "all", "-o", "%i").stdout.split()
    run.log = snakemake(args, root, squeue_cluster.env)
    queue = squeue_cluster.cmd("squeue", "-h", "-t", "all", "-o", "%i|%k|%T").stdout.splitlines()
    run.queue = [q.split("|") for q in queue]
    run.sacct = squeue_cluster.cmd("sacct", check=False).stderr
    return run


def test_dry_run_submits_nothing(squeue_run):
    assert "Job stats" in squeue_run.dry and not squeue_run.queued_by_dry_run


def test_squeue_status_without_accounting(local_run, squeue_run):
    """Without slurmdbd the jobs' states come from squeue; the products match the local run."""
    run = squeue_run
    assert "accounting storage is disabled" in run.sacct
    assert "command=squeue" in run.log and "command=sacct" not in run.log
    rules = sorted(comment.split("_wildcards_")[0] for _, comment, state in run.queue if state == "COMPLETED")
    assert rules == ["rule_master_bias", "rule_simulate_calibration"], run.queue
    local, made = products(local_run.root), products(run.root)
    for t in run.targets:
        assert made[str(t)] == local[str(t)], t
    assert len(made) == 2 and set(made) <= set(local)   # the raw bias frame and the master
    assert not differing_products(local_run.root, run.root)


# -- PostgreSQL, one job per exposure ----------------------------------------------------------
@pytest.fixture(scope="module")
def postgres_run(accounting_cluster, local_run, tmp_path_factory, postgres_server):
    """The small demo through the unchanged profile with ``images.jobs: exposure`` (the
    per-CCD steps as one SLURM job per exposure) into a PostgreSQL database, as a cluster
    with a shared server runs it: ``root``, ``url``, ``log``."""
    root = tmp_path_factory.mktemp("slurm_pg")
    cfg = root.parent / f"{root.name}.yaml"
    url = postgres_server.url(postgres_server.create_database())
    # a password planted in the URL, in the config file and the environment (the test server
    # trusts local connections, so it is sent and ignored): it must appear in no file of the run
    with_password = url.replace("@", f":{PLANTED_PASSWORD}@", 1)
    cfg.write_text(yaml.safe_dump({**SMALL, "images": {"enabled": True, "jobs": "exposure"},
                                   "database": {"url": with_password}}))
    started = time.time()
    log = snakemake(["--profile", str(REPO / "profiles" / "slurm"), "--configfile", str(cfg),
                     "--slurm-logdir", str(root / "slurm_logs"), *FAST_STATUS], root, accounting_cluster.env,
                    db_url=with_password)
    return SimpleNamespace(root=root, url=url, log=log, started=started)


PLANTED_PASSWORD = "Pl4nted-s3cret-9f3k"


def test_a_planted_database_password_is_written_nowhere(postgres_run):
    """Every file of the run (products, merged config, rule logs, benchmarks, SLURM job logs,
    receipts), Snakemake's own logs of this run and its output: no trace of the password given
    in the config file and in VO_DB_URL (issue 15)."""
    files = [p for p in postgres_run.root.rglob("*") if p.is_file()]
    files += [p for p in (REPO / ".snakemake").rglob("*.log") if p.stat().st_mtime >= postgres_run.started - 1]
    files.append(postgres_run.root.parent / f"{postgres_run.root.name}.snakemake.log")
    assert len(files) > 50
    leaked = [str(p) for p in files if PLANTED_PASSWORD.encode() in p.read_bytes()]
    assert not leaked, f"the password is written in {leaked}"
    assert PLANTED_PASSWORD not in postgres_run.log
    assert "***" in next(postgres_run.root.rglob("00_config_*.yaml")).read_text()  # masked, not dropped


def test_exposure_jobs_into_postgresql_give_the_local_files_and_rows(postgres_run, local_run):
    """Per-exposure jobs on SLURM writing to PostgreSQL: the local run's products (an exposure
    job keeps its aligned references; the merged config records ``images.jobs``) and database
    rows."""
    local, made = products(local_run.root), products(postgres_run.root)
    assert set(local) <= set(made) and len(local) > 40
    assert all(f.endswith(".refaligned.fits") for f in set(made) - set(local))
    differ = differing_products(local_run.root, postgres_run.root)
    config = [f for f in differ if Path(f).name.startswith("00_config_")]
    assert len(config) == 1 and "jobs: exposure" in (postgres_run.root / config[0]).read_text()
    assert not set(differ) - set(config), f"contents differ: {differ}"
    want, got = database_rows(local_run.root / "vo.sqlite"), database_rows(postgres_run.url)
    assert set(got) == set(want) and sum(got["measurements"].values()) > 0
    differ = {t: (sum(want[t].values()), sum(got[t].values())) for t in want if want[t] != got[t]}
    assert not differ, f"tables differ (local rows, PostgreSQL rows): {differ}"
