"""Runs that last days: settings changes never delete a checkpoint, the world size may
change between resumes, progress shows in logs written to files, stops sent by clusters
(SIGTERM to the process group, to one DDP rank) end in a resumable checkpoint, a damaged
checkpoint is not the end of a run, and one trainer holds a run folder at a time."""

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from train_helpers import TINY, finish, toonlab, write_params

from conftest import blobs, invert, write_folder
from toonlab.train import checkpoint as ckpt
from toonlab.train import runfolder

pytestmark = pytest.mark.slow  # training runs in subprocesses (signals, resumes, world sizes): not in `make test-fast`

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TOONLAB_PROGRESS": "0"}
TORCHRUN = str(Path(sys.executable).parent / "torchrun")


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def nets_equal(a: dict, b: dict, atol: float = 0.0) -> bool:
    return all(torch.allclose(t, b["nets"][n][k], rtol=0, atol=atol) if atol else torch.equal(t, b["nets"][n][k])
               for n in a["nets"] for k, t in a["nets"][n].items())


def wait_for(cond, proc, seconds=120, what="condition"):
    deadline = time.time() + seconds
    while not cond():
        assert proc.poll() is None, f"exited {proc.returncode} before {what}: {proc.communicate()[0]}"
        assert time.time() < deadline, f"no {what} after {seconds} s"
        time.sleep(0.05)


# ----------------------------------------------------------------------------- settings changes


def test_settings_changes_continue_refuse_or_move_aside_never_delete(workdir):
    short = {"optim": {"steps_constant": 4, "steps_decay": 4}}
    write_params(workdir, cyclegan=short, train={"ckpt_every": 4, "keep_last": 5})
    rc, out = finish(toonlab(workdir, "train", "cyclegan"))
    assert rc == 0, out
    run = workdir / "models/cyclegan"
    assert [s for s, _ in ckpt.list_checkpoints(run / "checkpoints")] == [4, 8]

    # Longer (the decay end moved): continues from step 8, schedule recomputed for 12 steps,
    # with new cadence and workers; nothing of the first run is lost.
    first = files(run / "checkpoints")
    write_params(workdir, cyclegan={"optim": {"steps_constant": 4, "steps_decay": 8}},
                 train={"ckpt_every": 2, "keep_last": 5, "log_every": 3, "loader_workers": 0, "compile": False})
    rc, out = finish(toonlab(workdir, "train", "cyclegan"))
    assert rc == 0, out
    assert "length of training changed (cyclegan.optim.steps_decay (4 -> 8))" in out
    assert "resumed from" in out and "step-00000008.pt at step 8" in out
    after = files(run / "checkpoints")
    assert all(after[name] == data for name, data in first.items() if name != "best.json" and name != "best.pt")
    assert [s for s, _ in ckpt.list_checkpoints(run / "checkpoints")] == [4, 8, 10, 12]
    state = ckpt.load(run / "checkpoints/step-00000010.pt")
    # linear decay over 8 steps after 4 constant ones: factor at step index 10 = 1 - (10 + 1 - 4) / 9
    assert state["optimizers"]["G"]["param_groups"][0]["lr"] == pytest.approx(2e-4 * (1 - 7 / 9))
    assert json.loads((run / "summary.json").read_text())["steps"] == 12

    # A longer run by --steps alone continues as well.
    rc, out = finish(toonlab(workdir, "train", "cyclegan", "--steps", "14"))
    assert rc == 0 and "steps 12 -> 14" in out, out

    # Any other change refuses (exit 2) naming keys and folder; not a byte changes.
    before = files(run)
    write_params(workdir, cyclegan={"optim": {"steps_constant": 4, "steps_decay": 8, "lr": 0.001}},
                 train={"keep_last": 5, "seed": 3})
    rc, out = finish(toonlab(workdir, "train", "cyclegan"))
    assert rc == 2, out
    assert "cyclegan.optim.lr (0.0002 -> 0.001)" in out and "train.seed (0 -> 3)" in out
    assert str(run) in out and "--restart" in out and "--run-dir" in out and "Traceback" not in out
    assert files(run) == before

    # --restart moves the run aside (byte for byte) and starts a new one.
    rc, out = finish(toonlab(workdir, "train", "cyclegan", "--steps", "2"))
    assert rc == 2
    rc, out = finish(toonlab(workdir, "train", "cyclegan", "--restart", "--steps", "2"))
    assert rc == 0, out
    aside = [p for p in (workdir / "models").iterdir() if p.name.startswith("cyclegan.replaced-")]
    assert len(aside) == 1 and files(aside[0]) == before
    assert [s for s, _ in ckpt.list_checkpoints(run / "checkpoints")] == [2]

    # Changed training images are a change too; train.on_change: restart moves aside by itself.
    write_folder(workdir / "B", blobs(np.random.default_rng(5), 3, 40, invert))
    rc, out = finish(toonlab(workdir, "train", "cyclegan", "--steps", "2"))
    assert rc == 2 and "training images of B" in out and "training images of A" not in out, out
    write_params(workdir, cyclegan={"optim": {"steps_constant": 4, "steps_decay": 8, "lr": 0.001}},
                 train={"keep_last": 5, "seed": 3, "on_change": "restart"})
    rc, out = finish(toonlab(workdir, "train", "cyclegan", "--steps", "2"))
    assert rc == 0 and "train.on_change: restart" in out, out
    assert len([p for p in (workdir / "models").iterdir() if p.name.startswith("cyclegan.replaced-")]) == 2

    # --resume none never overwrites checkpoints.
    rc, out = finish(toonlab(workdir, "train", "cyclegan", "--resume", "none", "--steps", "2"))
    assert rc == 2 and "--restart" in out


def test_prune_keeps_best_and_the_newest(tmp_path):
    for step in (1, 2, 3):
        ckpt.save(tmp_path / f"step-{step:08d}.pt", {"step": step})
    ckpt.write_best(tmp_path, {"step": 1}, "G_total", 0.5)
    ckpt.prune(tmp_path, 1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.json", "best.pt", "step-00000003.pt"]
    ckpt.prune(tmp_path, 0)   # never below the newest
    assert (tmp_path / "step-00000003.pt").is_file()


# ----------------------------------------------------------------------------- world size


def _torchrun(root: Path, n: int, *args: str, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([TORCHRUN, "--standalone", f"--nproc_per_node={n}", "-m", "toonlab", "train", "cyclegan",
                           *args], cwd=root, env=ENV, capture_output=True, text=True, timeout=timeout)


def outputs(state: dict) -> dict[str, torch.Tensor]:
    """Each network of a CycleGAN checkpoint on one fixed input."""
    from toonlab.registry import families
    from toonlab.train.recipe import Context

    fam = families()["cyclegan"]
    recipe = fam.build(fam.params_cls.model_validate(state["config"]["params"]),
                       Context(device=torch.device("cpu"), amp_dtype=None, channels_last=False, total_steps=1))
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        for k, net in recipe.nets.items():
            net.load_state_dict(state["nets"][k])
        return {k: net.eval()(x) for k, net in recipe.nets.items()}


def max_diff(a: dict, b: dict) -> float:
    return max((a[k] - b[k]).abs().max().item() for k in a)


@pytest.mark.parametrize("first,then", [(2, 1), (1, 2)])
def test_world_size_change_keeps_global_batch_and_data_position(workdir, first, then):
    """Global batch 2: 2 processes x 1 or 1 x 2. Four steps on `first` processes, four more on
    `then`, against an uninterrupted 8-step run on one: exactly the same samples at every step
    (global data position at each checkpoint) and the same global batch; the networks agree up
    to float summation order. Bit equality is not to be had: a batch of 2 and two averaged
    batches of 1 sum in another order, and Adam's normalised steps turn that noise in
    near-zero gradients into full-size updates (about a fifth of 4 steps' change after 8 steps
    at this tiny size on one thread; a lost optimiser state or data position is far more)."""
    no_pool = {"optim": {**TINY["optim"], "pool_size": 0}}
    write_params(workdir, cyclegan={**no_pool, "data": {**TINY["data"], "batch_size": 2}},
                 train={"loader_workers": 0, "ckpt_every": 4})
    rc, out = finish(toonlab(workdir, "train", "cyclegan", "--steps", "8", "--run-dir", "straight"))
    assert rc == 0, out
    write_params(workdir, cyclegan={**no_pool, "data": {**TINY["data"], "batch_size": 2 // first}},
                 train={"loader_workers": 0, "ckpt_every": 4})

    def train(n: int, steps: int):
        if n == 1:
            return finish(toonlab(workdir, "train", "cyclegan", "--steps", str(steps), "--run-dir", "moved"))
        proc = _torchrun(workdir, n, "--steps", str(steps), "--run-dir", "moved")
        return proc.returncode, proc.stdout + proc.stderr

    rc, out = train(first, 4)
    assert rc == 0, out
    rc, out = train(then, 8)
    assert rc == 0, out
    assert f"resuming a run of {first} process(es) on {then}: global batch 2, {2 // then} per process" in out
    for step in (4, 8):
        a = ckpt.load(workdir / f"straight/checkpoints/step-{step:08d}.pt")
        b = ckpt.load(workdir / f"moved/checkpoints/step-{step:08d}.pt")
        assert (a["data"]["epoch"], a["data"]["position"] * a["data"]["world"]) == \
            (b["data"]["epoch"], b["data"]["position"] * b["data"]["world"]), step
        assert b["data"]["global_batch"] == 2
    start = outputs(ckpt.load(workdir / "moved/checkpoints/step-00000004.pt"))
    a, b = outputs(a), outputs(b)
    progress = max_diff(a, start)
    assert max_diff(a, b) < 0.4 * progress, (max_diff(a, b), progress)


def test_world_size_that_cannot_share_the_global_batch_is_refused(workdir):
    write_params(workdir, cyclegan={"data": {**TINY["data"], "batch_size": 1}}, train={"loader_workers": 0})
    rc, out = finish(toonlab(workdir, "train", "cyclegan", "--steps", "2"))
    assert rc == 0, out
    proc = _torchrun(workdir, 2, "--steps", "4")
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "global batch of 1 images per step" in out and "2 processes cannot share evenly" in out
    assert [s for s, _ in ckpt.list_checkpoints(workdir / "models/cyclegan/checkpoints")] == [2]


# ----------------------------------------------------------------------------- progress


def test_progress_lines_and_heartbeat_in_a_log_file(workdir):
    write_params(workdir, train={"log_every": 5, "ckpt_every": 100})
    log = workdir / "train.log"
    with open(log, "w") as fh:   # no terminal: a file, as under Snakemake's tee or a cluster job
        proc = subprocess.run([sys.executable, "-m", "toonlab", "train", "cyclegan", "--steps", "50"], cwd=workdir,
                              env={k: v for k, v in ENV.items() if k != "TOONLAB_PROGRESS"}, stdout=fh,
                              stderr=subprocess.STDOUT, timeout=300)
    text = log.read_text()
    assert proc.returncode == 0, text
    lines = [ln for ln in text.splitlines() if "train cyclegan: step " in ln]
    assert len(lines) >= 50 // 5, text
    assert "step 25/50 (50%)" in text and "img/s" in lines[0] and "ETA" in lines[0] and "G_total" in lines[0]
    assert "peak RSS" in lines[0]
    beat = json.loads((workdir / "models/cyclegan/heartbeat.json").read_text())
    assert beat["status"] == "finished" and beat["step"] == 50 and beat["total"] == 50
    assert not (workdir / "models/cyclegan/train.lock").exists()


def test_per_image_stages_log_progress_without_a_terminal(monkeypatch, caplog):
    from toonlab.log import progress

    monkeypatch.delenv("TOONLAB_PROGRESS", raising=False)
    logging.getLogger("toonlab").propagate = True
    caplog.set_level(logging.INFO)
    assert list(progress(range(40), "align photo", unit="img", every=10)) == list(range(40))
    # (distinct lines: a logger another test configured may hand caplog each record twice)
    shown = list(dict.fromkeys(r.getMessage() for r in caplog.records if "align photo" in r.getMessage()))
    assert len(shown) == 4 and shown[-1].startswith("align photo: 40/40 img (100%)"), shown
    caplog.clear()
    monkeypatch.setenv("TOONLAB_PROGRESS_SECONDS", "0")   # or every M seconds
    list(progress(iter(range(3)), "detect anime", unit="img", every=1000))
    assert len({r.getMessage() for r in caplog.records if "detect anime" in r.getMessage()}) == 3


# ----------------------------------------------------------------------------- stops


def test_sigterm_to_the_process_group_checkpoints_and_resumes_exactly(workdir):
    write_params(workdir, cyclegan={"optim": {"steps_constant": 30, "steps_decay": 30}},
                 train={"ckpt_every": 1000, "log_every": 1000})
    rc, out = finish(toonlab(workdir, "train", "cyclegan", "--run-dir", "straight"))
    assert rc == 0, out
    proc = toonlab(workdir, "train", "cyclegan", "--run-dir", "termed", start_new_session=True)
    wait_for(lambda: (workdir / "termed/heartbeat.json").exists(), proc, what="training start")
    time.sleep(1.5)
    os.killpg(proc.pid, signal.SIGTERM)   # what Slurm / scancel do: the whole group, loader workers too
    rc, out = finish(proc, timeout=60)
    assert rc == 75, out
    assert "DataLoader worker" not in out and "Traceback" not in out and "internal error" not in out
    assert "toonlab: stopped: cyclegan: SIGTERM at step" in out and "run the same command to continue" in out
    found = ckpt.list_checkpoints(workdir / "termed/checkpoints")
    assert found and 0 < found[-1][0] < 60, out
    assert not (workdir / "termed/summary.json").exists()
    assert json.loads((workdir / "termed/heartbeat.json").read_text())["status"] == "stopped"
    rc, out = finish(toonlab(workdir, "train", "cyclegan", "--run-dir", "termed"))
    assert rc == 0 and "resumed from" in out, out
    a = ckpt.load(workdir / "straight/checkpoints/step-00000060.pt")
    b = ckpt.load(workdir / "termed/checkpoints/step-00000060.pt")
    assert nets_equal(a, b)


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [int(p) for p in out]


def test_sigterm_to_one_ddp_rank_stops_all_ranks_at_one_step(workdir):
    write_params(workdir, cyclegan={"optim": {"steps_constant": 2000, "steps_decay": 2000}},
                 train={"loader_workers": 0, "ckpt_every": 100000, "log_every": 100000})
    proc = subprocess.Popen([TORCHRUN, "--standalone", "--nproc_per_node=2", "-m", "toonlab", "train", "cyclegan",
                             "--run-dir", "ddp"], cwd=workdir, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    beat = workdir / "ddp/heartbeat.json"
    wait_for(beat.exists, proc, what="training start")
    time.sleep(2.0)
    rank0 = json.loads(beat.read_text())["pid"]
    others = [p for p in _children(proc.pid) if p != rank0]
    assert len(others) == 1, (rank0, _children(proc.pid))
    t0 = time.time()
    os.kill(others[0], signal.SIGTERM)    # rank 1 only
    out, _ = proc.communicate(timeout=90)
    assert time.time() - t0 < 60, out
    assert "Traceback" not in out.split("ChildFailedError")[0] or "exitcode  : 75" in out, out
    stopped = sorted(set(int(s) for s in __import__("re").findall(r"at step (\d+): checkpoint", out)))
    assert len(stopped) == 1, out                     # both ranks name the same step
    step = stopped[0]
    assert "another rank" in out and "SIGTERM" in out, out
    assert [s for s, _ in ckpt.list_checkpoints(workdir / "ddp/checkpoints")] == [step]
    # Resume to a few steps later equals an uninterrupted run to the same step.
    res = _torchrun(workdir, 2, "--run-dir", "ddp", "--steps", str(step + 3))
    assert res.returncode == 0, res.stdout + res.stderr
    res = _torchrun(workdir, 2, "--run-dir", "straight", "--steps", str(step + 3))
    assert res.returncode == 0, res.stdout + res.stderr
    a = ckpt.load(workdir / f"straight/checkpoints/step-{step + 3:08d}.pt")
    b = ckpt.load(workdir / f"ddp/checkpoints/step-{step + 3:08d}.pt")
    assert nets_equal(a, b)


# ----------------------------------------------------------------------------- damage and locks


def test_truncated_latest_checkpoint_falls_back_and_is_named(workdir):
    write_params(workdir, cyclegan={"optim": {"steps_constant": 5, "steps_decay": 5}})
    rc, out = finish(toonlab(workdir, "train", "cyclegan"))
    assert rc == 0, out
    bad = workdir / "models/cyclegan/checkpoints/step-00000010.pt"
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    # The inference commands name the file in one line.
    for cmd in (["export", "--run", "cyclegan", "--out", "onnx"], ["cartoonize", "--run", "cyclegan", "A", "--out", "o"]):
        rc, out = finish(toonlab(workdir, *cmd))
        assert rc != 0 and str(bad) in out and "internal error" not in out and "Traceback" not in out, (cmd, out)
    # Training falls back to the newest readable checkpoint, with a warning naming the bad one.
    rc, out = finish(toonlab(workdir, "train", "cyclegan", "--steps", "12"))
    assert rc == 0, out
    assert "step-00000010.pt" in out and "falling back to step-00000005.pt" in out
    assert "resumed from" in out and "at step 5" in out
    assert ckpt.load(workdir / "models/cyclegan/checkpoints/step-00000012.pt")["step"] == 12


def test_one_trainer_per_run_folder_with_a_stale_lock_rule(workdir):
    write_params(workdir, cyclegan={"optim": {"steps_constant": 5000, "steps_decay": 5000}},
                 train={"ckpt_every": 100000, "log_every": 100000})
    first = toonlab(workdir, "train", "cyclegan")
    wait_for((workdir / "models/cyclegan/heartbeat.json").exists, first, what="training start")
    rc, out = finish(toonlab(workdir, "train", "cyclegan", "--steps", "3"))
    assert rc == 2 and f"being trained by process {first.pid}" in out, out
    assert first.poll() is None
    first.send_signal(signal.SIGINT)
    rc, out = finish(first)
    assert rc == 75, out
    assert not (workdir / "models/cyclegan/train.lock").exists()

    # A lock left by a dead process on this host is stale.
    dead = subprocess.Popen(["true"])
    dead.wait()
    lock = workdir / "models/cyclegan/train.lock"
    lock.write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "started": "x"}))
    stopped_at = ckpt.list_checkpoints(workdir / "models/cyclegan/checkpoints")[-1][0]
    rc, out = finish(toonlab(workdir, "train", "cyclegan", "--steps", str(stopped_at + 1)))
    assert rc == 0 and "taking over the stale lock" in out and f"process {dead.pid} is not running" in out, out


def test_lock_from_another_host_is_stale_only_without_a_recent_heartbeat(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / runfolder.LOCK).write_text(json.dumps({"pid": 1, "host": "node-17", "started": "t"}))
    runfolder.heartbeat(run, "running", 5, 10)
    with pytest.raises(runfolder.RunBusyError, match="node-17"):
        runfolder.RunLock(run).acquire()
    old = time.time() - 3600
    os.utime(run / runfolder.HEARTBEAT, (old, old))
    lock = runfolder.RunLock(run)
    lock.acquire()
    assert json.loads((run / runfolder.LOCK).read_text())["pid"] == os.getpid()
    lock.release()
    assert not (run / runfolder.LOCK).exists()


def test_run_config_ignores_cadence_world_and_length(workdir):
    from toonlab.params import validate_params
    from toonlab.registry import families
    from toonlab.train.resume import compare
    from toonlab.train.trainer import Trainer

    def config(train=None, optim=None):
        params = validate_params({"train": {"source": "folders", "folders": {"A": "A", "B": "B"}, **(train or {})},
                                  "cyclegan": {**TINY, "optim": {**TINY["optim"], **(optim or {})}}})
        fam = families()["cyclegan"]
        return Trainer(fam, params.cyclegan, params.train, device=torch.device("cpu"), packed_dir="x").config()

    base = config()
    same = config({"log_every": 7, "sample_every": 3, "ckpt_every": 9, "keep_last": 1, "loader_workers": 0,
                   "compile": True, "amp": False, "channels_last": False, "grid_images": 2, "out_dir": "elsewhere"})
    assert compare(base, same, families()["cyclegan"].length_keys).other == {}
    longer = compare(base, config(optim={"steps_decay": 99}), families()["cyclegan"].length_keys)
    assert list(longer.length) == ["params.optim.steps_decay"] and longer.other == {}
    other = compare(base, config(optim={"beta1": 0.9}), families()["cyclegan"].length_keys)
    assert list(other.other) == ["params.optim.beta1"]
    assert yaml.safe_dump(base)  # plain data, as stored in checkpoints
    # A key added to ToonLab after the checkpoint was written is no change at its default.
    older = {**base, "params": {**base["params"], "optim": {k: v for k, v in base["params"]["optim"].items()
                                                            if k != "pool_size"}}}
    defaults = families()["cyclegan"].params_cls().model_dump(mode="json")
    assert compare(older, base, (), defaults).other == {}
    changed = config(optim={"pool_size": 7})
    assert list(compare(older, changed, (), defaults).other) == ["params.optim.pool_size"]
