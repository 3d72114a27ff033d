"""Scale-out on a real Slurm: the README's "Run on a cluster" example, line by line, through
`snakemake --profile profiles/slurm` (snakemake-executor-plugin-slurm) against a one-node
cluster started on localhost (tests/slurm.py: munged, slurmctld, slurmd). The data stages
and a two-process training (torchrun + gloo, launched by `toonlab train` inside the Slurm
job) must give what a local run gives, and `dvc repro` afterwards must only record them.
The local run is the suite's shared build (the `built` fixture: the same tiny settings,
its data stages made by Snakemake on this machine), with DCGAN trained again there by two
local processes.

`make test` installs the Debian packages (`make system-deps`); a machine that cannot start
Slurm fails this test with the reason, it never skips.
"""

import hashlib
import json
import re
import shlex
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from conftest import REPO, run
from slurm import slurm_cluster
from tiny_project import copy_built, rules_run, shrink

pytestmark = pytest.mark.slow

# Done by the fixture (the project copy is a fresh clone with the virtualenv on the PATH).
SETUP = ("git clone ", "make install", "source .venv/bin/activate")
# The data stages' outputs, compared file by file with a local run's.
DATA_OUTPUTS = ("data/raw", "data/interim", "data/faces", "data/processed", "data/curated", "data/packed",
                "reports/curation")


def readme_cluster_commands() -> list[str]:
    """The commands of the README's cluster example, in order, without their comments."""
    text = (REPO / "README.md").read_text()
    block = text.split("<!-- cluster-example -->", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    return [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]


def digests(root: Path) -> dict[str, str]:
    out = {}
    for top in DATA_OUTPUTS:
        for p in sorted((root / top).rglob("*")):
            if p.is_file():
                out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def weights(root: Path) -> tuple[dict, dict]:
    from toonlab.train import checkpoint as ckpt

    summary = json.loads((root / "models/dcgan/summary.json").read_text())
    return summary, ckpt.load(ckpt.latest(root / "models/dcgan/checkpoints"))


def prepare(project: Path, tiny: bool = True) -> None:
    """The demo's tiny settings, on CPU (the local node has no GPU, so no rule may ask for
    one), DCGAN trained by two gloo processes under torchrun."""
    if tiny:
        shrink(project)
    p = project / "params.yaml"
    params = yaml.safe_load(p.read_text())
    params["runtime"]["device"] = "cpu"
    params["train"]["gpus"] = 2
    p.write_text(yaml.safe_dump(params, sort_keys=False))
    run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qam", "tiny, cpu, 2 processes"], project)


def test_readme_cluster_example_on_a_real_slurm_equals_a_local_run(project, tmp_path, request):
    commands = readme_cluster_commands()
    assert [c for c in commands if c.startswith(SETUP)] == commands[:len(SETUP)], commands
    assert all(c.startswith(SETUP[i]) for i, c in enumerate(commands[:len(SETUP)])), commands
    steps = commands[len(SETUP):]
    assert steps and all(c.startswith(("snakemake --profile profiles/slurm ", "dvc ")) for c in steps), steps
    prepare(project)

    with slurm_cluster(tmp_path / "slurm") as cluster:
        for command in steps:
            res = run(shlex.split(command), project, env=cluster.env, timeout=900)
            if command.startswith("dvc repro"):
                # Snakemake made every output under Slurm: DVC's stages find nothing to do.
                out = res.stdout + res.stderr
                assert "Running stage 'train_dcgan'" in out
                assert not re.search(r"^(local)?rule \w+:", out, re.M), out
        assert not cluster.jobs(), cluster.jobs()
    # The jobs really went through Slurm: one log folder per rule.
    slurm_logs = {p.name for p in (project / ".snakemake/slurm_logs").iterdir()}
    assert {"rule_demo_data", "rule_detect_domain", "rule_pack", "rule_train_dcgan"} <= slurm_logs, slurm_logs
    train_log = (project / "logs/train_dcgan.log").read_text()
    assert "torchrun --standalone --nproc-per-node 2" in train_log and "step 3/3 (100%)" in train_log, train_log
    assert "Data and pipelines are up to date" in run(["dvc", "status", "train_dcgan"], project).stdout

    # The same stages on this machine, without Slurm: the shared build's data stages (the
    # same settings; Snakemake made them locally), and DCGAN trained again there with the
    # same two processes. Only that rule reruns: the data stages' settings did not change.
    # The build is asked for only now (not as an argument): the cluster run above overlaps
    # with the build on the other worker instead of waiting for it.
    local = copy_built(request.getfixturevalue("built"), tmp_path / "local")
    shutil.rmtree(local / "models/dcgan")   # the copy's one-process run (this test's own copy)
    prepare(local, tiny=False)
    res = run(["snakemake", "--profile", "profiles/local", "train_dcgan"], local, timeout=900)
    assert rules_run(res.stdout + res.stderr) == {"train_dcgan"}, res.stdout + res.stderr
    assert digests(project) == digests(local)
    (s_summary, s_state), (l_summary, l_state) = weights(project), weights(local)
    assert s_summary["world_size"] == l_summary["world_size"] == 2 and s_summary["steps"] == 3
    assert s_state["data"]["world"] == 2 and s_state["step"] == l_state["step"] == 3
    for net in ("G", "D"):
        for key, value in s_state["nets"][net].items():
            assert torch.allclose(value, l_state["nets"][net][key], rtol=1e-4, atol=1e-6), (net, key)
