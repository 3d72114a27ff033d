"""A real one-node Slurm cluster on localhost, for tests (`from slurm import slurm_cluster`).

Needs the Debian packages `munge` and `slurm-wlm` (`make system-deps`) and root: munged,
slurmctld and slurmd run as root, each started here in the foreground (so this process owns
them), with their own munge key and socket, free TCP ports, config, state, spool and logs.
Two clusters (two xdist workers) can therefore run side by side.

    with slurm_cluster(tmp_path) as cluster:
        run(["snakemake", "--profile", "profiles/slurm", ...], cwd, env=cluster.env)

Anything missing or broken raises `SlurmError` (from `start_cluster`) or fails the test via
`pytest.fail` (from `slurm_cluster`), with the reason and the tail of the daemons' logs: it
never skips.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")
# Client commands the tests and the Snakemake SLURM executor call.
CLIENTS = ("sinfo", "squeue", "sbatch", "scancel", "scontrol", "srun", "sacct")
# Unix sockets (munge's, slurmstepd's in the spool folder) must fit in sun_path (108 bytes).
_MAX_SOCKET_DIR = 60


class SlurmError(RuntimeError):
    """The local Slurm cluster could not be started (or died); the message says why."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError as e:
        return f"(no log: {e})"
    return "\n".join(text[-lines:]) or "(empty log)"


def _node_hardware() -> tuple[str, int]:
    """The node line `slurmd -C` detects (CPUs, sockets, cores, threads) and its RealMemory (MB)."""
    out = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, timeout=30, check=False)
    line = next((l for l in out.stdout.splitlines() if l.startswith("NodeName=")), None)
    if out.returncode != 0 or line is None:
        raise SlurmError(f"`slurmd -C` failed (exit {out.returncode}):\n{out.stdout}{out.stderr}")
    fields = dict(f.split("=", 1) for f in line.split())
    mem = int(fields.pop("RealMemory", "1000"))
    fields.pop("NodeName", None)
    fields.pop("UpTime", None)
    return " ".join(f"{k}={v}" for k, v in fields.items()), mem


@dataclass
class SlurmCluster:
    """A running cluster. `env` is the environment for subprocesses (os.environ + SLURM_CONF)."""

    root: Path                      # the temp dir given to start_cluster
    conf: Path                      # slurm.conf
    node: str                       # NodeName (== `hostname -s`)
    partition: str                  # the one (default) partition
    cpus: int
    real_memory_mb: int
    ctld_port: int
    slurmd_port: int
    munge_socket: Path
    logs: dict[str, Path]           # daemon name -> log file
    bin: Path | None = None         # wrappers of the client commands that pin SLURM_CONF
    env: dict[str, str] = field(default_factory=dict)
    _procs: dict[str, subprocess.Popen] = field(default_factory=dict, repr=False)
    _runtime: Path | None = field(default=None, repr=False)  # short dir: munge socket, spool

    # -------------------------------------------------------------------------------- helpers

    def run(self, *cmd: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
        """Run a Slurm client command (e.g. "sinfo", "-N") against this cluster."""
        proc = subprocess.run(list(cmd), capture_output=True, text=True, env=self.env, timeout=timeout,
                              check=False)
        if check and proc.returncode != 0:
            raise SlurmError(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}"
                             f"\n{self.log_tails()}")
        return proc

    def log_tails(self, lines: int = 30) -> str:
        out = []
        for name, path in self.logs.items():
            out.append(f"--- {name} log ({path}), last {lines} lines:\n{_tail(path, lines)}")
            err = path.with_suffix(".stderr")
            logged = path.exists() and path.stat().st_size
            if not logged and err.exists() and err.stat().st_size:  # said before opening its log
                out.append(f"--- {name} stderr ({err}), last {lines} lines:\n{_tail(err, lines)}")
        return "\n".join(out)

    def node_state(self) -> str:
        proc = self.run("sinfo", "-h", "-N", "-n", self.node, "-o", "%T", check=False, timeout=15)
        return proc.stdout.strip() if proc.returncode == 0 else f"(sinfo exited {proc.returncode}: {proc.stderr.strip()})"

    def check_alive(self) -> None:
        for name, p in self._procs.items():
            if p.poll() is not None:
                raise SlurmError(f"{name} died (exit {p.returncode})\n{self.log_tails()}")

    def jobs(self, finished: bool = False) -> list[str]:
        """Ids of the jobs still pending or running (finished=True: also those that ended in
        the last MinJobAge seconds, i.e. every job of a test)."""
        states = ["-t", "all"] if finished else []
        return self.run("squeue", "-h", *states, "-o", "%i").stdout.split()

    # ------------------------------------------------------------------------------ lifecycle

    def _spawn(self, cmd: list[str], name: str, stderr: Path | None = None) -> None:
        """Start a daemon in the foreground; its stderr goes to logs/<name>.stderr."""
        with (stderr or self.logs[name].with_suffix(".stderr")).open("w") as err:
            self._procs[name] = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                                 stderr=err, env=self.env)

    def wait_idle(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            self.check_alive()
            state = self.node_state()
            if state in ("idle", "mixed", "allocated"):
                return
            time.sleep(0.5)
        raise SlurmError(f"node {self.node} not idle after {timeout:.0f}s (state: {state})\n{self.log_tails()}")

    def stop(self) -> None:
        """Cancel every job, then stop slurmd, slurmctld and munged (the ones started here)."""
        if self._procs.get("slurmctld") and self._procs["slurmctld"].poll() is None:
            with contextlib.suppress(Exception):
                subprocess.run(["scancel", "--full", "--user", str(os.getuid())], env=self.env,
                               capture_output=True, timeout=15, check=False)
                deadline = time.monotonic() + 10  # let slurmd kill the job steps
                while time.monotonic() < deadline and self.run(
                        "squeue", "-h", "-t", "running,completing", "-o", "%i",
                        check=False, timeout=10).stdout.strip():
                    time.sleep(0.5)
        for name in ("slurmd", "slurmctld", "munged"):
            p = self._procs.pop(name, None)
            if p is None or p.poll() is not None:
                continue
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)
        if self._runtime is not None:
            shutil.rmtree(self._runtime, ignore_errors=True)
            self._runtime = None

    def __enter__(self) -> "SlurmCluster":  # noqa: PYI034, UP037
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _write_conf(c: SlurmCluster, hardware: str, state: Path, spool: Path) -> None:
    c.conf.write_text(f"""\
# One-node test cluster written by tests/slurm.py.
ClusterName=toonlab-test
SlurmctldHost={c.node}(127.0.0.1)
SlurmctldPort={c.ctld_port}
SlurmdPort={c.slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={c.munge_socket}
CredType=cred/munge
StateSaveLocation={state}
SlurmdSpoolDir={spool}
SlurmctldPidFile={c.root}/slurmctld.pid
SlurmdPidFile={c.root}/slurmd.pid
SlurmctldLogFile={c.logs['slurmctld']}
SlurmdLogFile={c.logs['slurmd']}
SlurmctldDebug=info
SlurmdDebug=info
# No cgroups, no accounting daemon (so `sacct` has nothing: status via squeue).
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
MailProg=/bin/true
# CPUs and memory are both consumable; a job without --mem gets DefMemPerCPU per CPU.
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
SchedulerType=sched/backfill
ReturnToService=2
# Finished jobs stay visible to squeue for 10 minutes (the executor's status command).
MinJobAge=600
KillWait=5
InactiveLimit=0
SlurmdTimeout=300
NodeName={c.node} NodeAddr=127.0.0.1 NodeHostname={c.node} {hardware} RealMemory={c.real_memory_mb} State=UNKNOWN
PartitionName={c.partition} Nodes={c.node} Default=YES MaxTime=INFINITE State=UP
""")


def _start_once(root: Path, timeout: float) -> SlurmCluster:
    node = socket.gethostname().split(".")[0]
    hardware, mem = _node_hardware()
    cpus = int(dict(f.split("=", 1) for f in hardware.split())["CPUs"])
    base = root if len(str(root)) <= _MAX_SOCKET_DIR else Path(tempfile.gettempdir())
    runtime = Path(tempfile.mkdtemp(prefix="slurm-", dir=base))  # fresh per attempt
    os.chmod(runtime, 0o700)
    for d in ("munge", "spool", "state"):
        (runtime / d).mkdir(mode=0o700)
    logdir = root / "logs"
    logdir.mkdir(parents=True, exist_ok=True)
    c = SlurmCluster(
        root=root, conf=root / "slurm.conf", node=node, partition="debug", cpus=cpus,
        real_memory_mb=mem, ctld_port=_free_port(), slurmd_port=_free_port(),
        munge_socket=runtime / "munge" / "munge.socket",
        logs={name: logdir / f"{name}.log" for name in DAEMONS}, _runtime=runtime)
    while c.slurmd_port == c.ctld_port:
        c.slurmd_port = _free_port()
    for log in c.logs.values():
        log.unlink(missing_ok=True)
        log.with_suffix(".stderr").unlink(missing_ok=True)
    _write_conf(c, hardware, runtime / "state", runtime / "spool")
    # The executor's job step (snakemake-executor-plugin-slurm-jobstep) drops every SLURM_*
    # variable, SLURM_CONF included, before its `srun`: wrappers first on PATH pin the config.
    c.bin = root / "bin"
    c.bin.mkdir(exist_ok=True)
    for tool in CLIENTS:
        real = shutil.which(tool)
        wrapper = c.bin / tool
        wrapper.write_text(f'#!/bin/sh\nSLURM_CONF={shlex.quote(str(c.conf))} exec {shlex.quote(real)} "$@"\n')
        wrapper.chmod(0o755)
    c.env = {**os.environ, "SLURM_CONF": str(c.conf),
             "PATH": f"{c.bin}{os.pathsep}{os.environ.get('PATH', '')}"}
    for var in [v for v in c.env if v.startswith(("SLURM_", "SBATCH_", "SALLOC_", "SRUN_")) and v != "SLURM_CONF"]:
        del c.env[var]  # not inside some outer allocation

    key = runtime / "munge" / "munge.key"
    key.write_bytes(os.urandom(1024))
    os.chmod(key, 0o400)
    try:
        c._spawn(
            ["munged", "--foreground", "--force", f"--socket={c.munge_socket}", f"--key-file={key}",
             f"--pid-file={runtime}/munge/munged.pid", f"--seed-file={runtime}/munge/munged.seed"],
            "munged", stderr=c.logs["munged"])  # in the foreground munged logs to stderr
        deadline = time.monotonic() + 15
        while not c.munge_socket.exists():
            c.check_alive()
            if time.monotonic() > deadline:
                raise SlurmError(f"munged did not create {c.munge_socket} in 15 s\n{c.log_tails()}")
            time.sleep(0.1)
        # -D: foreground, so these are our children; they log to the files named in slurm.conf.
        c._spawn(["slurmctld", "-D", "-i", "-f", str(c.conf)], "slurmctld")
        c._spawn(["slurmd", "-D", "-f", str(c.conf)], "slurmd")
        c.wait_idle(timeout)
    except BaseException:
        c.stop()
        raise
    return c


def start_cluster(root: Path | str, timeout: float = 60) -> SlurmCluster:
    """Start munged, slurmctld and slurmd under `root`; return once the node is idle.

    Call `.stop()` (or use it as a context manager) to cancel the jobs and stop the daemons.
    """
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        raise SlurmError("the local Slurm cluster runs its daemons as root; run the tests as root")
    missing = [t for t in (*DAEMONS, *CLIENTS) if shutil.which(t, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin") is None]
    if missing:
        raise SlurmError(f"not installed: {', '.join(missing)} "
                         "(Debian packages munge and slurm-wlm: run `make system-deps`)")
    if "/usr/sbin" not in os.environ.get("PATH", "").split(":"):
        os.environ["PATH"] = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    for attempt in range(3):  # a free port may be taken between picking it and binding it
        try:
            return _start_once(root, timeout)
        except SlurmError as e:
            if "Address already in use" not in str(e) or attempt == 2:
                raise


@contextlib.contextmanager
def slurm_cluster(root: Path | str, timeout: float = 60) -> Iterator[SlurmCluster]:
    """`with slurm_cluster(tmp_path) as cluster:` for tests: a start failure fails the test."""
    import pytest

    try:
        cluster = start_cluster(root, timeout)
    except SlurmError as e:
        pytest.fail(f"could not start the local Slurm cluster: {e}", pytrace=False)
    try:
        yield cluster
    finally:
        cluster.stop()
