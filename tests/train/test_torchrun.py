"""`toonlab train` with train.gpus x train.nodes > 1 re-runs itself under torchrun: the
commands it builds (one node, several under Slurm), real gloo runs on CPU started by the
plain command, a SIGTERM to that command ending in a resumable checkpoint (exit 75), and
a multi-node run outside Slurm refused with a clear message."""

import json
import os
import re
import signal
import stat
import sys
import time
from pathlib import Path

import pytest
from train_helpers import finish, toonlab, write_params

from toonlab.errors import UsageError
from toonlab.params import load_params
from toonlab.train import checkpoint as ckpt
from toonlab.train import torchrun
from toonlab.train.launch import train_under_torchrun

pytestmark = pytest.mark.slow  # torchrun with gloo processes: not in `make test-fast`

ENV = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "TORCHELASTIC_"))
       and k not in ("LOCAL_RANK", "RANK", "WORLD_SIZE")}
ENV.update({"OMP_NUM_THREADS": "1", "TOONLAB_PROGRESS": "0"})
ARGV = ["train", "cyclegan", "--device", "cpu", "--steps", "3"]


# ----------------------------------------------------------------------------- the commands


def test_one_node_command_is_standalone_torchrun():
    cmd = torchrun.torchrun_argv(ARGV, gpus=4, torchrun="/venv/bin/torchrun")
    assert cmd == ["/venv/bin/torchrun", "--standalone", "--nproc-per-node", "4", "-m", "toonlab", *ARGV]


def test_several_nodes_command_is_srun_torchrun_with_c10d_rendezvous(tmp_path):
    # A fake `scontrol show hostnames` expanding the Slurm node list.
    scontrol = tmp_path / "scontrol"
    scontrol.write_text("#!/bin/sh\n[ \"$1 $2 $3\" = 'show hostnames gpu[07-09]' ] && printf 'gpu07\\ngpu08\\ngpu09\\n'\n")
    scontrol.chmod(scontrol.stat().st_mode | stat.S_IEXEC)
    env = {"SLURM_JOB_ID": "4242", "SLURM_JOB_NODELIST": "gpu[07-09]", "SLURM_JOB_NUM_NODES": "3"}
    rdzv = torchrun.slurm_rendezvous(3, 29511, env=env, scontrol=str(scontrol))
    assert rdzv == torchrun.Rendezvous(job_id="4242", host="gpu07", port=29511)
    cmd = torchrun.torchrun_argv(ARGV, gpus=8, nodes=3, rendezvous=rdzv, torchrun="/venv/bin/torchrun")
    assert cmd == ["srun", "--nodes", "3", "--ntasks-per-node", "1", "--kill-on-bad-exit=1", "--overlap",
                   "/venv/bin/torchrun", "--nnodes", "3", "--nproc-per-node", "8", "--rdzv-backend", "c10d",
                   "--rdzv-endpoint", "gpu07:29511", "--rdzv-id", "4242", "-m", "toonlab", *ARGV]
    with pytest.raises(UsageError, match="train.nodes is 4 but this Slurm allocation has 3 node"):
        torchrun.slurm_rendezvous(4, 29511, env=env, scontrol=str(scontrol))
    with pytest.raises(UsageError, match="train.nodes is 3: a multi-node run starts only inside a Slurm"):
        torchrun.slurm_rendezvous(3, 29511, env={"SLURM_JOB_ID": "4242"})
    assert torchrun.in_worker({"LOCAL_RANK": "0"}) and not torchrun.in_worker({"SLURM_JOB_ID": "1"})


def test_cuda_with_too_few_gpus_fails_before_launching(tmp_path, monkeypatch):
    write_params(tmp_path, train={"gpus": 2}, runtime={"device": "cuda"})
    params = load_params(tmp_path / "params.yaml")
    monkeypatch.setattr(torchrun, "run_launcher", lambda *a, **k: pytest.fail("launched"))
    import torch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(UsageError, match="train.gpus is 2 .* only 1 CUDA device"):
        train_under_torchrun(params, "cyclegan", ["train", "cyclegan"])
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    with pytest.raises(UsageError, match="no CUDA device"):
        train_under_torchrun(params, "cyclegan", ["train", "cyclegan"])


# ----------------------------------------------------------------------------- real runs


def test_train_gpus_2_runs_two_gloo_processes_from_the_plain_command(workdir):
    write_params(workdir, train={"gpus": 2, "loader_workers": 0, "log_every": 1, "ckpt_every": 100},
                 runtime={"device": "cuda"})   # --device cpu overrides it: gloo
    rc, out = finish(toonlab(workdir, "train", "cyclegan", "--device", "cpu", "--steps", "3", env=ENV), timeout=240)
    assert rc == 0, out
    assert re.search(r"toonlab: launching: \S*torchrun --standalone --nproc-per-node 2 -m toonlab train cyclegan "
                     r"--device cpu --steps 3\n", out), out
    run = workdir / "models/cyclegan"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 3
    state = ckpt.load(run / "checkpoints/step-00000003.pt")
    assert state["data"]["world"] == 2 and state["data"]["global_batch"] == 4   # 2 per process x 2
    assert json.loads((run / "heartbeat.json").read_text())["status"] == "finished"
    for step in (1, 2, 3):   # progress lines from rank 0 only
        assert len(re.findall(rf"train cyclegan: step {step}/3 ", out)) == 1, out
    assert "weights identical on all 2 ranks" in out


def test_sigterm_to_the_command_stops_every_rank_with_a_checkpoint_exit_75(workdir):
    write_params(workdir, cyclegan={"optim": {"steps_constant": 2000, "steps_decay": 2000}},
                 train={"gpus": 2, "loader_workers": 0, "log_every": 1, "ckpt_every": 100000})
    proc = toonlab(workdir, "train", "cyclegan", "--device", "cpu", "--run-dir", "ddp", env=ENV)
    beat = workdir / "ddp/heartbeat.json"
    deadline = time.time() + 180
    while not (beat.exists() and json.loads(beat.read_text() or "{}").get("step", 0) >= 2):
        assert proc.poll() is None, proc.communicate()[0]
        assert time.time() < deadline, "training did not start"
        time.sleep(0.1)
    t0 = time.time()
    proc.send_signal(signal.SIGTERM)     # the `toonlab train` process only
    rc, out = finish(proc, timeout=120)
    assert rc == 75, out
    assert time.time() - t0 < 60, out
    assert "toonlab: stopped: cyclegan: the run in ddp (1 node(s) x 2 process(es)) stopped" in out, out
    steps = set(re.findall(r"SIGTERM at step (\d+): checkpoint", out))
    assert len(steps) == 1, out                       # every rank stopped at one step
    found = ckpt.list_checkpoints(workdir / "ddp/checkpoints")
    assert [s for s, _ in found] == [int(steps.pop())]
    assert ckpt.load(found[-1][1])["data"]["world"] == 2
    status = json.loads(beat.read_text())
    assert status["status"] == "stopped" and status["world_size"] == 2
    assert not (workdir / "ddp/summary.json").exists()
    with pytest.raises(ProcessLookupError):          # rank 0 is gone too
        os.kill(status["pid"], 0)


def test_several_nodes_outside_slurm_is_a_clear_usage_error(workdir):
    write_params(workdir, train={"nodes": 2})
    rc, out = finish(toonlab(workdir, "train", "cyclegan", "--device", "cpu", "--steps", "2", env=ENV), timeout=120)
    assert rc == 2, out
    assert "toonlab: error: train.nodes is 2: a multi-node run starts only inside a Slurm allocation" in out
    assert "Traceback" not in out and "launching" not in out
    assert not (workdir / "models").exists()


def test_workers_do_not_launch_again():
    assert Path(sys.executable).parent.joinpath("torchrun").is_file()   # the launcher the command uses
    assert torchrun.in_worker({"TORCHELASTIC_RUN_ID": "x"})


def test_workers_run_the_same_command_line():
    from toonlab.cli import build_parser
    from toonlab.train.launch import cli_argv

    argv = ["--params", "p.yaml", "-q", "--debug", "train", "ugatit", "--device", "cpu", "--steps", "7",
            "--resume", "none", "--restart", "--run-dir", "r", "--variant", "v"]
    if any("--workers" in a.option_strings for a in build_parser()._actions if a.option_strings):
        argv = ["--workers", "3", *argv]
    back = cli_argv(build_parser().parse_args(argv))
    assert build_parser().parse_args(back) == build_parser().parse_args(argv)
