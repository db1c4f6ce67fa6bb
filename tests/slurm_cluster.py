"""A private single-node SLURM cluster for the tests, built from the Debian packages.

``slurm_cluster(accounting=True)`` is a context manager that writes ``slurm.conf`` (and
``slurmdbd.conf``) into a fresh temporary folder, starts ``munged`` with its own key and
socket, then (with accounting) a MariaDB server with its own data folder, socket and port and
``slurmdbd`` on it, then ``slurmctld`` and ``slurmd`` for one node on 127.0.0.1, and waits
until ``sinfo`` reports the node idle.  It yields a :class:`SlurmCluster` whose ``env`` holds
``SLURM_CONF`` and a ``PATH`` that starts with wrappers of the client commands pinned to that
file: pass it to Snakemake (jobs inherit it, since ``sbatch`` exports the environment).  On
exit, however the body ended, the jobs are cancelled and every daemon is stopped by its PID
(SIGTERM, then SIGKILL), in reverse order.  Nothing is written under ``/etc``.

Every daemon runs in the foreground as a child of the test process (``-D``/``-F``), as root
(``SlurmUser=root``), with ``ProctrackType=proctrack/linuxproc`` and ``TaskPlugin=task/none``
so that no cgroup set-up is needed.  The node offers at least ``MIN_CPUS`` CPUs and
``MIN_MEMORY_MB`` of memory whatever the machine has (memory is neither scheduled nor enforced).
Without accounting the controller keeps finished jobs for ``MinJobAge`` seconds, which is what
``squeue``-based status checks need.

``.ci/install-slurm.sh`` installs the packages (``slurmctld slurmd slurm-client munge
slurmdbd mariadb-server``).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

#: programs the cluster needs, with the Debian package that provides each
PROGRAMS = {
    "munged": "munge", "slurmctld": "slurmctld", "slurmd": "slurmd", "sbatch": "slurm-client",
    "srun": "slurm-client", "sinfo": "slurm-client", "squeue": "slurm-client",
    "scontrol": "slurm-client", "scancel": "slurm-client", "sshare": "slurm-client",
    "sacct": "slurm-client", "sacctmgr": "slurm-client", "slurmdbd": "slurmdbd",
    "mariadbd": "mariadb-server", "mariadb-install-db": "mariadb-server", "mariadb": "mariadb-client",
}
SBIN = ("/usr/sbin", "/usr/bin", "/sbin", "/bin")
#: client commands that jobs and the executor plugin call
CLIENTS = ("sbatch", "srun", "squeue", "sacct", "scancel", "scontrol", "sinfo", "sacctmgr", "sshare")

CLUSTER = "vo"
PARTITION = "vo"
ACCOUNT = "vo_test"
NODE = "vonode"
#: the node offers at least this many CPUs, over-subscribing a small test machine: a job
#: spends most of its time starting Snakemake, and a group job may ask for two ...
MIN_CPUS = 4
#: ... and this much memory (MB): the per-CCD job asks for 7 GB, 14 GB on its second attempt
MIN_MEMORY_MB = 32000


class ClusterError(RuntimeError):
    """The cluster could not be brought up (the message holds the daemons' log tails)."""


def which(program: str) -> str | None:
    """Full path of ``program`` on ``PATH`` or in the system ``sbin``/``bin`` folders."""
    return shutil.which(program) or shutil.which(program, path=os.pathsep.join(SBIN))


def missing_programs(accounting: bool = True) -> list[str]:
    """``program (package)`` for each program the cluster needs that is not installed."""
    skip = set() if accounting else {"slurmdbd", "mariadbd", "mariadb-install-db", "mariadb"}
    return [f"{p} ({pkg})" for p, pkg in PROGRAMS.items() if p not in skip and which(p) is None]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def node_hardware() -> dict[str, int]:
    """CPUs and memory (MiB) of this machine as ``slurmd -C`` reports them."""
    out = subprocess.run([which("slurmd"), "-C"], capture_output=True, text=True, timeout=30).stdout
    values = dict(kv.split("=", 1) for kv in out.split() if "=" in kv)
    return {k: int(values[k]) for k in ("CPUs", "RealMemory")}


@dataclass
class SlurmCluster:
    """A running cluster: its folder, ``env`` for client commands, and the daemons."""

    root: Path
    accounting: bool
    hardware: dict[str, int]
    env: dict[str, str] = field(default_factory=dict)
    procs: list[tuple[str, subprocess.Popen]] = field(default_factory=list)

    @property
    def conf(self) -> Path:
        return self.root / "etc" / "slurm.conf"

    def log(self, name: str) -> Path:
        return self.root / "log" / f"{name}.log"

    def cmd(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        """Run a SLURM client command (``sinfo``, ``sacct``, ...) against this cluster."""
        out = subprocess.run([which(args[0]), *args[1:]], capture_output=True, text=True,
                             env=self.env, timeout=timeout)
        if check and out.returncode != 0:
            raise ClusterError(f"{' '.join(args)} failed ({out.returncode}): {out.stderr.strip()}"
                               f"\n{self.log_tails()}")
        return out

    def jobs(self, fields: str = "JobID,JobName%60,Comment%400,State,ReqMem,Timelimit,ReqCPUS,"
                                 "Partition,Account") -> list[dict[str, str]]:
        """Every job of the cluster as ``sacct`` reports it (allocations only, no steps)."""
        out = self.cmd("sacct", "-a", "-X", "-P", "-n", "-S", "now-1days", "-o", fields).stdout
        names = [f.split("%")[0] for f in fields.split(",")]
        return [dict(zip(names, line.split("|"))) for line in out.splitlines() if line.strip()]

    # -- starting ---------------------------------------------------------------------------

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen:
        logfile = open(self.log(name + ".out"), "ab")
        proc = subprocess.Popen(argv, stdout=logfile, stderr=subprocess.STDOUT, env=self.env,
                                cwd=self.root, start_new_session=True)
        logfile.close()
        self.procs.append((name, proc))
        return proc

    def _wait(self, what: str, ready, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in self.procs:
                if proc.poll() is not None:
                    raise ClusterError(f"{name} exited ({proc.returncode}) while waiting for "
                                       f"{what}\n{self.log_tails()}")
            try:
                if ready():
                    return
            except (OSError, subprocess.SubprocessError, ClusterError):
                pass
            time.sleep(0.3)
        raise ClusterError(f"timed out after {timeout:.0f} s waiting for {what}\n{self.log_tails()}")

    def log_tails(self, n: int = 15) -> str:
        parts = []
        for f in sorted((self.root / "log").glob("*.log")):
            lines = f.read_text(errors="replace").splitlines()[-n:]
            parts.append(f"--- {f.name}\n" + "\n".join(lines))
        return "\n".join(parts)

    def start(self) -> None:
        for d in ("etc", "log", "state", "spool", "munge", "run"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)
        ports = {k: free_port() for k in ("ctld", "slurmd", "dbd", "mysql")}
        self.env = dict(os.environ, SLURM_CONF=str(self.conf))
        self._write_client_wrappers()
        for k in list(self.env):   # a test run inside a SLURM job must not leak into ours
            if k.startswith(("SLURM_", "SBATCH_", "SRUN_", "SACCT_", "SQUEUE_")) and k != "SLURM_CONF":
                del self.env[k]
        self._start_munge()
        if self.accounting:
            self._start_mariadb(ports["mysql"])
            self._start_slurmdbd(ports)
        self._write_slurm_conf(ports)
        if self.accounting:
            self.cmd("sacctmgr", "-i", "add", "cluster", CLUSTER)
            self.cmd("sacctmgr", "-i", "add", "account", ACCOUNT, f"cluster={CLUSTER}")
            self.cmd("sacctmgr", "-i", "add", "user", "root", f"account={ACCOUNT}",
                     f"cluster={CLUSTER}")
        self._spawn("slurmctld", [which("slurmctld"), "-D", "-i", "-f", str(self.conf)])
        self._wait("slurmctld", lambda: "UP" in self.cmd("scontrol", "ping").stdout)
        self._spawn("slurmd", [which("slurmd"), "-D", "-f", str(self.conf), "-N", NODE])
        self._wait("the node to be idle",
                   lambda: self.cmd("sinfo", "-h", "-n", NODE, "-o", "%t").stdout.strip() == "idle",
                   timeout=90)

    def _write_client_wrappers(self) -> None:
        """``bin/`` with the client commands pinned to this cluster's ``slurm.conf``, first on
        ``PATH``: the jobstep plugin drops every ``SLURM_*`` variable, ``SLURM_CONF`` included,
        before it calls ``srun`` inside a job, and srun then looks in ``/etc/slurm``."""
        bindir = self.root / "bin"
        bindir.mkdir(exist_ok=True)
        for program in CLIENTS:
            wrapper = bindir / program
            wrapper.write_text(f'#!/bin/sh\nSLURM_CONF="{self.conf}" exec "{which(program)}" "$@"\n')
            wrapper.chmod(0o755)
        self.env["PATH"] = f"{bindir}{os.pathsep}{self.env.get('PATH', '')}"

    def _start_munge(self) -> None:
        key = self.root / "munge" / "munge.key"
        key.write_bytes(secrets.token_bytes(1024))
        key.chmod(0o400)
        self.munge_socket = self.root / "munge" / "munge.socket"
        self._spawn("munged", [which("munged"), "-F", "--force", f"--key-file={key}",
                               f"--socket={self.munge_socket}",
                               f"--pid-file={self.root / 'run' / 'munged.pid'}",
                               f"--seed-file={self.root / 'munge' / 'munged.seed'}",
                               f"--log-file={self.log('munged')}"])
        self._wait("munged", self.munge_socket.exists)

    def _start_mariadb(self, port: int) -> None:
        data = self.root / "mysql"
        self.mysql_socket = self.root / "run" / "mysqld.sock"
        self.mysql_port = port
        out = subprocess.run(
            [which("mariadb-install-db"), "--no-defaults", f"--datadir={data}", "--user=root",
             "--auth-root-authentication-method=socket", "--skip-test-db"],
            capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            raise ClusterError(f"mariadb-install-db failed: {out.stdout[-2000:]}{out.stderr[-2000:]}")
        self._spawn("mariadbd", [
            which("mariadbd"), "--no-defaults", f"--datadir={data}", "--user=root",
            f"--socket={self.mysql_socket}", f"--port={port}", "--bind-address=127.0.0.1",
            "--skip-name-resolve", f"--pid-file={self.root / 'run' / 'mysqld.pid'}",
            f"--log-error={self.log('mariadbd')}", "--innodb-buffer-pool-size=64M",
            "--innodb-lock-wait-timeout=900", "--skip-log-bin"])

        def sql(statement: str) -> bool:
            return subprocess.run([which("mariadb"), "--no-defaults", f"--socket={self.mysql_socket}",
                                   "-u", "root", "-e", statement], capture_output=True,
                                  timeout=30).returncode == 0

        self._wait("mariadbd", lambda: sql("SELECT 1"))
        self.mysql_password = secrets.token_hex(12)
        if not sql(f"CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY '{self.mysql_password}'; "
                   "GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"):
            raise ClusterError(f"cannot create the slurm database user\n{self.log_tails()}")

    def _start_slurmdbd(self, ports: dict[str, int]) -> None:
        conf = self.root / "etc" / "slurmdbd.conf"   # slurmdbd reads it next to SLURM_CONF
        conf.write_text("\n".join([
            "AuthType=auth/munge", f"AuthInfo=socket={self.munge_socket}",
            f"DbdHost={socket.gethostname().split('.')[0]}", "DbdAddr=127.0.0.1",
            f"DbdPort={ports['dbd']}", "SlurmUser=root",
            f"PidFile={self.root / 'run' / 'slurmdbd.pid'}", f"LogFile={self.log('slurmdbd')}",
            "StorageType=accounting_storage/mysql", "StorageHost=127.0.0.1",
            f"StoragePort={ports['mysql']}", "StorageUser=slurm",
            f"StoragePass={self.mysql_password}", "StorageLoc=slurm_acct_db", ""]))
        conf.chmod(0o600)
        self._write_slurm_conf(ports)   # sacctmgr needs slurm.conf to find slurmdbd
        self._spawn("slurmdbd", [which("slurmdbd"), "-D"])
        self._wait("slurmdbd", lambda: self.cmd("sacctmgr", "-n", "list", "cluster").returncode == 0)

    def _write_slurm_conf(self, ports: dict[str, int]) -> None:
        hw = self.hardware
        host = socket.gethostname().split(".")[0]
        lines = [
            f"ClusterName={CLUSTER}", f"SlurmctldHost={host}(127.0.0.1)",
            "SlurmUser=root", "SlurmdUser=root",
            f"SlurmctldPort={ports['ctld']}", f"SlurmdPort={ports['slurmd']}",
            "AuthType=auth/munge", f"AuthInfo=socket={self.munge_socket}", "CredType=cred/munge",
            f"StateSaveLocation={self.root / 'state'}", f"SlurmdSpoolDir={self.root / 'spool'}",
            f"SlurmctldPidFile={self.root / 'run' / 'slurmctld.pid'}",
            f"SlurmdPidFile={self.root / 'run' / 'slurmd.pid'}",
            f"SlurmctldLogFile={self.log('slurmctld')}", f"SlurmdLogFile={self.log('slurmd')}",
            "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
            "SelectType=select/cons_tres", "SelectTypeParameters=CR_CPU",
            "SchedulerType=sched/backfill", "MpiDefault=none", "ReturnToService=2",
            "JobAcctGatherType=jobacct_gather/linux", "JobAcctGatherFrequency=5",
            "MinJobAge=300", "KillWait=5", "InactiveLimit=0", "SlurmdTimeout=60",
        ]
        if self.accounting:
            lines += ["AccountingStorageType=accounting_storage/slurmdbd",
                      "AccountingStorageHost=127.0.0.1", f"AccountingStoragePort={ports['dbd']}",
                      # the munge socket for connections to slurmdbd (AuthInfo is not used there)
                      f"AccountingStoragePass={self.munge_socket}",
                      "AccountingStoreFlags=job_comment", "JobCompType=jobcomp/none"]
        else:
            lines += ["AccountingStorageType=accounting_storage/none", "JobCompType=jobcomp/none"]
        # Memory is neither scheduled (CR_CPU) nor enforced here; the node declares at least
        # MIN_MEMORY_MB so that the rules' real-workload requests, doubled on a retry, are
        # accepted on a small test machine (config_overrides: slurmd trusts this line).
        lines += [
            "SlurmdParameters=config_overrides",
            f"NodeName={NODE} NodeHostname={host} NodeAddr=127.0.0.1 "
            f"CPUs={max(hw['CPUs'], MIN_CPUS)} RealMemory={max(hw['RealMemory'], MIN_MEMORY_MB)} "
            "State=UNKNOWN",
            f"PartitionName={PARTITION} Nodes={NODE} Default=YES MaxTime=INFINITE State=UP", ""]
        self.conf.write_text("\n".join(lines))

    # -- stopping ---------------------------------------------------------------------------

    def stop(self) -> None:
        """Cancel the jobs, then stop every daemon by PID, newest first."""
        if any(name == "slurmctld" and p.poll() is None for name, p in self.procs):
            try:
                self.cmd("scancel", "--full", "--user=root", check=False, timeout=20)
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline and self.cmd(
                        "squeue", "-h", "-o", "%i", check=False, timeout=20).stdout.strip():
                    time.sleep(0.5)
            except (OSError, subprocess.SubprocessError):
                pass
        for _, proc in reversed(self.procs):
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=20)
        self.procs.clear()


@contextmanager
def slurm_cluster(accounting: bool = True, keep: bool = False):
    """Bring up a single-node cluster in a new temporary folder; stop it on exit.

    Parameters
    ----------
    accounting : bool
        Run MariaDB and ``slurmdbd`` so that ``sacct`` works; without it the controller is
        the only source of job states (``squeue``).
    keep : bool
        Keep the folder (configuration and logs) after the cluster stopped.
    """
    missing = missing_programs(accounting)
    if missing:
        raise ClusterError("not installed: " + ", ".join(missing)
                           + " (run bash .ci/install-slurm.sh as root)")
    root = Path(tempfile.mkdtemp(prefix="vo-slurm-"))   # short: unix socket paths are limited
    cluster = SlurmCluster(root, accounting, node_hardware())
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
