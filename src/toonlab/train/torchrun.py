"""`toonlab train` on several processes: with `train.gpus` x `train.nodes` > 1 the command
re-runs itself under torchrun, so the CLI, Snakemake and DVC all start DDP the same way.
Light: no torch import (the parent process only launches and waits).

- One node: `<venv>/bin/torchrun --standalone --nproc-per-node G -m toonlab <argv>`.
- Several nodes, inside a Slurm allocation only: `srun --nodes N --ntasks-per-node 1
  --kill-on-bad-exit=1 --overlap <venv>/bin/torchrun --nnodes N --nproc-per-node G --rdzv-backend c10d
  --rdzv-endpoint <first host of the allocation>:<rdzv_port> --rdzv-id <SLURM_JOB_ID> -m toonlab <argv>`.
- The parent forwards SIGTERM/SIGINT to the launcher (torchrun passes them on to the
  workers), waits, and exits as a single-process run would: 0 finished, 75 stopped with a
  checkpoint (the run's heartbeat says "stopped"; torchrun itself exits 1 then), else
  the launcher's status.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from toonlab.errors import UsageError
from toonlab.util.procs import pid_alive

EXIT_RESUMABLE = 75          # the trainer's status after a stop signal's checkpoint (trainer.EXIT_RESUMABLE)
WORKER_ENV = ("LOCAL_RANK", "TORCHELASTIC_RUN_ID")   # set by torchrun in its workers
ORPHAN_WAIT_S = 120          # after the launcher ends: how long a still-running rank 0 is waited for


@dataclass(frozen=True)
class Rendezvous:
    """Where the nodes of a multi-node run meet: the c10d store on `host:port`."""

    job_id: str
    host: str
    port: int


def in_worker(env: Mapping[str, str] | None = None) -> bool:
    """True inside a torchrun worker (then `toonlab train` trains, never launches)."""
    env = os.environ if env is None else env
    return any(k in env for k in WORKER_ENV)


def torchrun_exe() -> str:
    """The torchrun next to this Python (the venv's), else the one on PATH."""
    here = Path(sys.executable).parent / "torchrun"
    return str(here) if here.is_file() else "torchrun"


def torchrun_argv(argv: Sequence[str], *, gpus: int, nodes: int = 1, rendezvous: Rendezvous | None = None,
                  torchrun: str = "torchrun") -> list[str]:
    """The command that runs `toonlab <argv>` on `gpus` processes per node on `nodes`
    nodes (several nodes need the Slurm `rendezvous`). Pure: builds, runs nothing."""
    if gpus < 1 or nodes < 1:
        raise ValueError(f"gpus and nodes must be >= 1, not {gpus}, {nodes}")
    tail = ["-m", "toonlab", *argv]
    if nodes == 1:
        return [torchrun, "--standalone", "--nproc-per-node", str(gpus), *tail]
    if rendezvous is None:
        raise ValueError("a multi-node run needs a rendezvous (see slurm_rendezvous)")
    return ["srun", "--nodes", str(nodes), "--ntasks-per-node", "1", "--kill-on-bad-exit=1", "--overlap",
            torchrun, "--nnodes", str(nodes), "--nproc-per-node", str(gpus), "--rdzv-backend", "c10d",
            "--rdzv-endpoint", f"{rendezvous.host}:{rendezvous.port}", "--rdzv-id", rendezvous.job_id, *tail]


def slurm_rendezvous(nodes: int, port: int, env: Mapping[str, str] | None = None,
                     scontrol: str = "scontrol") -> Rendezvous:
    """The rendezvous of a multi-node run: the Slurm job id and the allocation's first
    host (`scontrol show hostnames $SLURM_JOB_NODELIST`). UsageError outside Slurm."""
    env = os.environ if env is None else env
    job, nodelist = env.get("SLURM_JOB_ID", ""), env.get("SLURM_JOB_NODELIST", "")
    if not job or not nodelist:
        raise UsageError(
            f"train.nodes is {nodes}: a multi-node run starts only inside a Slurm allocation (SLURM_JOB_ID and "
            "SLURM_JOB_NODELIST are not set here); submit it with sbatch/salloc --nodes "
            f"{nodes}, or set train.nodes: 1 (train.gpus processes on this machine)")
    try:
        out = subprocess.run([scontrol, "show", "hostnames", nodelist], capture_output=True, text=True,
                             check=True, timeout=60).stdout.split()
    except (OSError, subprocess.SubprocessError) as exc:
        raise UsageError(f"train.nodes is {nodes}: could not read the hosts of SLURM_JOB_NODELIST={nodelist} "
                         f"with `{scontrol} show hostnames`: {exc}") from None
    if not out:
        raise UsageError(f"train.nodes is {nodes}: `{scontrol} show hostnames {nodelist}` named no host")
    count = env.get("SLURM_JOB_NUM_NODES") or env.get("SLURM_NNODES")
    if count and count.isdigit() and int(count) < nodes:
        raise UsageError(f"train.nodes is {nodes} but this Slurm allocation has {count} node(s)")
    return Rendezvous(job_id=job, host=out[0], port=port)


def _die_with_parent() -> None:   # in the child, before exec: SIGTERM when the parent dies (Linux)
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)   # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - best effort, e.g. not Linux
        pass


def run_launcher(cmd: Sequence[str], run_dir: Path, env: Mapping[str, str] | None = None) -> int:
    """Run `cmd` (torchrun or srun) to its end, forwarding SIGTERM/SIGINT to it; the
    exit status a single-process `toonlab train` would have had (see `exit_status`)."""
    print("toonlab: launching: " + shlex.join(cmd), file=sys.stderr, flush=True)
    started = time.time()
    # Its own session: a signal to our process group (Ctrl-C, a job killer) reaches it
    # once, from us, not twice (a second signal cuts torchrun's shutdown short).
    proc = subprocess.Popen(list(cmd), env=dict(os.environ if env is None else env), start_new_session=True,
                            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)

    def forward(signum, frame):
        if proc.poll() is None:
            proc.send_signal(signum)

    handlers = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        while True:
            try:
                rc = proc.wait()
                break
            except InterruptedError:  # pragma: no cover - PEP 475 retries; kept for safety
                continue
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)
    return exit_status(rc, run_dir, started)


def _heartbeat(run_dir: Path) -> dict:
    import json

    try:
        data = json.loads((Path(run_dir) / "heartbeat.json").read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def exit_status(rc: int, run_dir: Path, started: float, wait_s: float = ORPHAN_WAIT_S) -> int:
    """0 when the launcher succeeded; 75 when the run (its heartbeat, written since
    `started`) stopped with a checkpoint; else the launcher's code. A rank 0 still
    running on this host after the launcher ended (it was cut short) is waited for."""
    if rc == 0:
        return 0
    import socket

    beat = _heartbeat(run_dir)
    deadline = time.time() + wait_s
    while (beat.get("status") == "running" and beat.get("host") == socket.gethostname()
           and pid_alive(int(beat.get("pid", -1))) and time.time() < deadline):
        time.sleep(0.2)
        beat = _heartbeat(run_dir)
    fresh = float(beat.get("unix_time", 0)) >= started - 1
    if fresh and beat.get("status") == "stopped":
        return EXIT_RESUMABLE
    return rc if rc > 0 else 128 - rc    # killed by a signal: the shell's convention
