"""The DVC -> Snakemake hand-off outside the workspace that made the outputs
(toonlab.drivers): Snakemake's records, the command of each DVC stage, and adopting
DVC's view in a workspace Snakemake has no records of. The whole flow (remote, fresh
clone, queued experiments) runs in tests/test_drivers.py."""

import base64
import os
from pathlib import Path

import pytest
import yaml

from conftest import REPO, run
from toonlab import drivers
from toonlab.errors import UsageError
from toonlab.params import load_params


def test_recorded_outputs_reads_what_snakemake_really_writes(tmp_path):
    long_dir = "d" * 200  # a path whose base64 is longer than a file name may be
    (tmp_path / "Snakefile").write_text(
        "rule a:\n    output: 'out/a b.txt'\n    shell: 'echo a > \"{output}\"'\n"
        f"rule b:\n    input: 'out/a b.txt'\n    output: '{long_dir}/b.txt'\n    shell: 'cp \"{{input}}\" {{output}}'\n")
    run(["snakemake", "-c1", f"{long_dir}/b.txt"], tmp_path)
    assert drivers.recorded_outputs(tmp_path) == {"out/a b.txt", f"{long_dir}/b.txt"}
    assert drivers.has_records(["out"], drivers.recorded_outputs(tmp_path))
    assert not drivers.has_records(["ou", "models"], drivers.recorded_outputs(tmp_path))


def _record(root: Path, path: str) -> None:
    name = base64.urlsafe_b64encode(path.encode()).decode()
    (root / drivers.METADATA_DIR).mkdir(parents=True, exist_ok=True)
    (root / drivers.METADATA_DIR / name).write_text("{}")


def test_a_stage_command_runs_only_its_rules_and_forces_them_without_records(tmp_path):
    params = load_params()
    (tmp_path / "profiles/local").mkdir(parents=True)
    run_ = drivers.stage_run("train_dcgan", params, root=tmp_path, env={})
    assert run_.forced and run_.argv == ["snakemake", "train_dcgan", "--profile", "profiles/local",
                                         "--allowed-rules", "train_dcgan", "--forceall"]
    _record(tmp_path, "models/dcgan/summary.json")
    run_ = drivers.stage_run("train_dcgan", params, root=tmp_path, env={})
    assert not run_.forced and "--forceall" not in run_.argv
    # The evaluate stage is DVC's foreach: one run; the profile may come from Snakemake's own variable.
    run_ = drivers.stage_run("evaluate", params, item="ugatit", root=tmp_path, env={"SNAKEMAKE_PROFILE": "x"})
    assert run_.argv[:4] == ["snakemake", "metrics/ugatit.json", "--allowed-rules", "evaluate_run"]
    assert run_.forced  # nothing recorded under metrics/ugatit.json or its output folder
    run_ = drivers.stage_run("ablations", params, root=tmp_path, env={}, extra=["--profile", "profiles/slurm"])
    assert run_.argv[2:6] == ["--allowed-rules", "train_variant", "evaluate_run", "ablations"]
    assert run_.argv[-2:] == ["--profile", "profiles/slurm"] and run_.argv.count("--profile") == 1
    with pytest.raises(UsageError, match="evaluate@cyclegan"):
        drivers.stage_run("evaluate", params, root=tmp_path, env={})
    with pytest.raises(UsageError, match="no stage 'nope'"):
        drivers.stage_run("nope", params, root=tmp_path, env={})


def test_toonlab_snakemake_prints_the_command_and_rejects_unknown_stages(tmp_path):
    res = run(["toonlab", "snakemake", "evaluate@cyclegan", "--dry-run", "--", "--cores", "1"], REPO)
    assert "snakemake metrics/cyclegan.json --profile profiles/local --allowed-rules evaluate_run" in res.stderr
    assert res.stderr.rstrip().endswith("DVC found it stale)") or "records decide" in res.stderr
    bad = run(["toonlab", "snakemake", "nope"], REPO, check=False)
    assert bad.returncode == 2 and "no stage 'nope'" in bad.stderr and "Traceback" not in bad.stderr
    other = run(["toonlab", "params", "--", "x"], REPO, check=False)
    assert other.returncode == 2 and "unrecognized arguments: -- x" in other.stderr


def _workspace(root: Path) -> dict[str, Path]:
    """Three stages a -> b -> c as DVC records them, with outputs written in the wrong order
    (as `dvc pull` may): c's output older than b's, b's older than its input."""
    files = {"code": root / "src/code.py", "a": root / "data/a/x.txt", "b": root / "data/b/y.txt",
             "b2": root / "data/b/sub/z.txt", "c": root / "data/c.txt"}
    for name, f in files.items():
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(name)
    stage = lambda deps, outs: {"cmd": "x", "deps": [{"path": d} for d in deps], "outs": [{"path": o} for o in outs]}
    lock = {"schema": "2.0", "stages": {"c": stage(["data/b", "src/code.py"], ["data/c.txt"]),
                                        "b": stage(["data/a", "src/code.py"], ["data/b"]),
                                        "a": stage(["src/code.py"], ["data/a"])}}
    (root / "dvc.lock").write_text(yaml.safe_dump(lock))
    (root / "params.yaml").write_text("x: 1\n")
    t0 = 1_700_000_000 * 10**9
    for name, offset in {"code": 5, "a": 10, "b": 1, "b2": 30, "c": 2}.items():
        os.utime(files[name], ns=(t0 + offset * 10**9,) * 2)
    return files


def test_adopt_orders_current_outputs_after_their_inputs_and_makes_changed_ones_rerun(tmp_path):
    files = _workspace(tmp_path)
    before = {k: f.read_bytes() for k, f in files.items()}
    asked = []
    done = drivers.adopt("params.yaml", tmp_path, status=lambda root: asked.append(root) or {})
    assert asked and done.changed == []
    assert set(done.current) == {"b", "c"} and done.untouched == ["a"]  # a's output already after the code
    m = {k: f.stat().st_mtime_ns for k, f in files.items()}
    assert m["b"] == m["b2"] > max(m["a"], m["code"]) and m["c"] > m["b"]
    assert {k: f.read_bytes() for k, f in files.items()} == before  # times only, never content
    # Remembered until dvc.lock, the params file or a code file changes.
    again = drivers.adopt("params.yaml", tmp_path, status=lambda root: pytest.fail("asked DVC again"))
    assert again.skipped == "remembered"
    (tmp_path / "params.yaml").write_text("x: 2\n")
    done = drivers.adopt("params.yaml", tmp_path, status=lambda root: {"b": [{"changed params": {}}]})
    assert done.changed == ["b"] and files["b"].stat().st_mtime_ns == drivers.OLD_TIME_NS
    assert files["c"].stat().st_mtime_ns > files["code"].stat().st_mtime_ns


def test_adopt_leaves_stages_snakemake_has_records_of_to_snakemake(tmp_path):
    files = _workspace(tmp_path)
    for out in ("data/a/x.txt", "data/b/y.txt", "data/c.txt"):
        _record(tmp_path, out)
    before = {k: f.stat().st_mtime_ns for k, f in files.items()}
    done = drivers.adopt("params.yaml", tmp_path, status=lambda root: pytest.fail("asked DVC"))
    assert done.skipped.startswith("Snakemake has records")
    assert {k: f.stat().st_mtime_ns for k, f in files.items()} == before


def test_readme_lists_each_rules_resources_as_the_rules_ask_for_them():
    from toonlab.snake import RESOURCES

    readme = (REPO / "README.md").read_text()
    table = readme.split("<!-- rule-resources -->", 1)[1].split("\n\n", 1)[0]
    first_rule = {"crawl": "`demo_data`", "ingest": "`ingest_domain`", "detect": "`detect_domain`",
                  "matte": "`matte_domain`", "align": "`align_domain`", "curate": "`curate`", "pack": "`pack`",
                  "train": "`train_<family>`", "generate": "`generate_<family>`", "evaluate": "`evaluate_run`",
                  "report": "`report`"}
    assert set(first_rule) == set(RESOURCES)
    for kind, (mem_mb, runtime) in RESOURCES.items():
        row = next(line for line in table.splitlines() if line.startswith(f"| {first_rule[kind]}"))
        assert f"| {mem_mb} | {runtime} |" in row, (kind, row)
    # and every rule file asks for its kind's resources
    for kind in RESOURCES:
        rules = (REPO / "workflow/rules" / f"{'ablations' if kind == 'train' else kind}.smk").read_text()
        assert f'**TL.resources("{kind}")' in rules and "--workers {threads}" in rules, kind


def test_rules_ask_for_gpus_and_nodes_from_the_training_settings():
    from toonlab.params import load_params, validate_params
    from toonlab.snake import Workflow

    def resources(kind, device="auto", **train):
        data = load_params().model_dump(mode="json")
        data["train"].update(train)
        data["runtime"]["device"] = device
        return Workflow(validate_params(data, source="test"), "params.yaml").resources(kind)

    assert resources("train") == {"mem_mb": 16000, "runtime": 1440, "gpu": 1}
    assert resources("train", gpus=4) == {"mem_mb": 16000, "runtime": 1440, "gpu": 4}
    assert resources("train", gpus=4, nodes=2) == {"mem_mb": 16000, "runtime": 1440, "nodes": 2, "gres": "gpu:4"}
    assert resources("train", gpus=2, device="cpu") == {"mem_mb": 16000, "runtime": 1440}
    assert resources("evaluate") == {"mem_mb": 16000, "runtime": 240, "gpu": 1}
    assert resources("detect") == {"mem_mb": 8000, "runtime": 120}
