"""DVC and Snakemake drive the same stages from the same params.yaml, and agree.

These run the real `snakemake` and `dvc` on a fresh copy of the project with a tiny
demo configuration.
"""

import json
import re
import time
from pathlib import Path

import pytest
import yaml

from conftest import REPO, run

pytestmark = pytest.mark.slow

TINY_DEMO = {"variants_per_photo": 2, "anime_count": 4, "anime_px": 256, "photo_max_px": 256}
# Every face in the train split, and a CycleGAN of a few steps: the drivers are under test here.
TINY_REST = {"curate": {"split": {"train": 1.0, "val": 0.0, "test": 0.0}},
             "cyclegan": {"model": {"ngf": 8, "ndf": 8, "n_blocks": 1, "n_layers_d": 2},
                          "data": {"crop_px": 32, "load_px": 36},
                          "optim": {"steps_constant": 2, "steps_decay": 2}},
             "dcgan": {"model": {"nz": 8, "ngf": 8, "ndf": 8}, "optim": {"steps": 3},
                       "data": {"batch_size": 2}},
             "ugatit": {"model": {"ch": 4, "n_res": 1, "n_dis_global": 3, "n_dis_local": 3},
                        "data": {"crop_px": 32, "load_px": 36}, "optim": {"steps": 2}},
             "landmarker": {"model": {"ch": 4, "n_blocks": 0}, "data": {"crop_px": 32, "batch_size": 2},
                            "optim": {"steps": 2}},
             "whitebox": {"model": {"ch": 4, "n_res": 1, "d_ch": 4}, "data": {"crop_px": 32, "batch_size": 2},
                          "pretrain": {"steps": 2}, "optim": {"steps": 2},
                          "structure": {"segments": 10, "workers": 0}},
             # Every face is in the train split: evaluate on it (the drivers are under test, not the model).
             "evaluate": {"split": "train", "max_images": 2, "generated": 4, "fixed_inputs": 2, "kid_subsets": 2},
             "ablations": {"run": ["cyclegan_base", "dcgan_d1_g1"]},
             "train": {"log_every": 2, "sample_every": 0, "ckpt_every": 2, "loader_workers": 0}}


def shrink(project: Path, **demo) -> None:
    p = project / "params.yaml"
    params = yaml.safe_load(p.read_text())
    params["demo"].update(TINY_DEMO, **demo)
    params["runtime"]["workers"] = 1  # tiny data: no worker processes to start
    for section, values in TINY_REST.items():
        for key, value in values.items():
            if isinstance(value, dict):
                params[section][key].update(value)
            else:
                params[section][key] = value
    p.write_text(yaml.safe_dump(params, sort_keys=False))


def snapshot(root: Path) -> dict[str, tuple[int, bytes]]:
    """Every output file with its modification time and content."""
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted((root / "data").rglob("*")) if p.is_file()}


def assert_in_sync(project: Path, target: str = "all") -> None:
    dry = run(["snakemake", "-n", target], project)
    assert "Nothing to be done" in dry.stdout + dry.stderr
    status = run(["dvc", "status"] + ([] if target == "all" else ["--with-deps", target]), project)
    assert "Data and pipelines are up to date" in status.stdout


def test_snakemake_lint_is_clean(project):
    """Snakemake's lint finds nothing but the one thing left on purpose: no rule names a
    conda environment or container. The rules' software is the project's own virtualenv
    (`make install`; on a cluster, on the shared file system), which the Slurm test uses."""
    lint = run(["snakemake", "--lint"], project, check=False)  # exit 1: there are lints
    text = lint.stdout + lint.stderr
    titles = set(re.findall(r"^\s+\* (.+?):$", text, re.M))
    assert titles == {"Specify a conda environment or container for each rule."}, text
    assert "Lints for snakefile" not in text, text


def test_snakemake_first_then_dvc_does_no_work(project):
    shrink(project)
    run(["snakemake", "-c2", "all"], project)
    # Training through Snakemake logs to a file (`| tee logs/train_<family>.log`): progress
    # lines every train.log_every steps, and the run's heartbeat.
    log = (project / "logs/train_cyclegan.log").read_text()
    assert "train cyclegan: step 2/4 (50%)" in log and "train cyclegan: step 4/4 (100%)" in log, log
    assert '"status": "finished"' in (project / "models/cyclegan/heartbeat.json").read_text()
    before = snapshot(project)
    assert "data/raw/demo.json" in before
    repro = run(["dvc", "repro"], project)
    # DVC ran its stage command, Snakemake found everything up to date and ran no rule.
    assert "Nothing to be done" in repro.stdout + repro.stderr
    assert "localrule" not in repro.stdout + repro.stderr
    assert snapshot(project) == before  # not a byte or a timestamp changed
    assert (project / "dvc.lock").is_file()
    assert_in_sync(project)
    check_review_under_both_drivers(project)


def kept_faces(project: Path, domain: str = "photo") -> set[tuple[str, int]]:
    import pyarrow.parquet as pq

    rows = pq.read_table(project / f"data/curated/{domain}.parquet").to_pylist()
    return {(r["sha256"], r["face_index"]) for r in rows}


def check_review_under_both_drivers(project: Path) -> None:
    """A human decision in data/review/photo.csv is applied by `dvc repro curate` (and by
    nothing else: curate is the only stage run), then its removal by `snakemake -c2
    curate`; after each, both drivers agree that nothing is left to do."""
    review = project / "data/review/photo.csv"
    header = review.read_text().splitlines()[0]
    kept = kept_faces(project)
    sha, face = sorted(kept)[0]
    review.write_text(f"{header}\n{sha},{face},reject,wrong_character,,tester,\n")
    repro = run(["dvc", "repro", "curate"], project)
    assert stages_run(repro.stdout) == {"curate"} and rules_run(repro.stdout + repro.stderr) == {"curate"}, repro.stdout
    assert kept_faces(project) == kept - {(sha, face)}
    summary = json.loads((project / "reports/curation/summary.json").read_text())
    assert summary["domains"]["photo"]["review"]["rejected"] == 1
    assert "human_reject" in (project / "reports/curation/index.html").read_text()
    assert_in_sync(project, "curate")
    review.write_text(f"{header}\n")  # the decision taken back, through Snakemake this time
    smk = run(["snakemake", "-c2", "curate"], project)
    assert rules_run(smk.stdout + smk.stderr) == {"curate"}, smk.stderr
    assert kept_faces(project) == kept
    repro = run(["dvc", "repro", "curate"], project)
    assert "localrule" not in repro.stdout + repro.stderr  # Snakemake had done it
    assert_in_sync(project, "curate")


def test_dvc_first_then_snakemake_has_nothing_to_do(project, tmp_path):
    shrink(project)
    run(["dvc", "repro"], project)
    assert_in_sync(project)
    again = run(["dvc", "repro"], project)
    assert "didn't change, skipping" in again.stdout
    # Every family trained, every run evaluated, one report.
    for run_name in ("cyclegan", "dcgan", "ugatit", "landmarker", "whitebox_pretrain", "whitebox"):
        summary = yaml.safe_load((project / "models" / run_name / "summary.json").read_text())
        assert summary["family"] == run_name, (run_name, summary["family"])
    metrics = {m: yaml.safe_load((project / "metrics" / f"{m}.json").read_text())
               for m in ("cyclegan", "ugatit", "whitebox", "dcgan")}
    assert metrics["cyclegan"]["n_images"] == 2 and "cycle_ssim" in metrics["cyclegan"]
    assert "fid" in metrics["whitebox"]["unavailable"] and "cycle" in metrics["whitebox"]["unavailable"]
    shown = run(["dvc", "metrics", "show"], project).stdout
    assert "metrics/ugatit.json" in shown and "detection_rate" in shown
    report = (project / "reports/index.html").read_text()
    assert all(f">{m}<" in report for m in metrics)

    # Ablations (a DVC stage too): the named variants trained into models/ablations/,
    # evaluated, and tabled by the report.
    for variant in ("cyclegan_base", "dcgan_d1_g1"):
        assert (project / "metrics/ablations" / f"{variant}.json").is_file()
    dcgan_variant = yaml.safe_load((project / "models/ablations/dcgan_d1_g1/summary.json").read_text())
    assert dcgan_variant["family"] == "dcgan"
    report = (project / "reports/index.html").read_text()
    assert "<h2>Ablations</h2>" in report and "D and G every batch" in report

    # Code dependencies: editing a file re-runs exactly the stages whose code holds it.
    check_code_deps_under_both_drivers(project)

    # Beyond this workspace: a DVC remote, a fresh clone, one changed model, experiments.
    clone = check_remote_and_fresh_clone(project, tmp_path)
    check_experiments(clone)


# ----------------------------------------------------------------------------- code dependencies


def edited_files() -> dict[str, set[str]]:
    """Files to edit, so that every stage holds one of them: for each stage not yet covered,
    the file of its code the fewest stages hold (a module rather than a package marker or
    rule file where that ties); plus one file every stage holds -> the DVC stages whose
    code holds each."""
    from toonlab import pipeline
    from toonlab.params import load_params

    runs = load_params(REPO / "params.yaml").evaluate.runs
    holders: dict[str, set[str]] = {}
    for s in pipeline.stages():
        for f in pipeline.code_deps(s.name):
            holders.setdefault(f, set()).add(s.name)
    chosen: dict[str, set[str]] = {}
    for s in pipeline.stages():
        if any(s.name in held for held in chosen.values()):
            continue
        f = min(pipeline.code_deps(s.name),
                key=lambda f: (len(holders[f]), f.endswith("__init__.py"), f.endswith(".smk"), f))
        chosen[f] = holders[f]
    assert set().union(*chosen.values()) == {s.name for s in pipeline.stages()}
    everywhere = [f for f, held in holders.items() if len(held) == len(pipeline.stages())]
    assert "src/toonlab/errors.py" in everywhere
    chosen["src/toonlab/errors.py"] = holders["src/toonlab/errors.py"]
    expand = lambda names: {n2 for n in names for n2 in ([f"evaluate@{r}" for r in runs] if n == "evaluate" else [n])}  # noqa: E731
    return {f: expand(names) for f, names in chosen.items()}


def stage_of(rule: str, wildcards: dict[str, str]) -> str | None:
    from toonlab import pipeline

    if rule == "evaluate_run":
        return "ablations" if wildcards["run"].startswith("ablations/") else f"evaluate@{wildcards['run']}"
    return next((s.name for s in pipeline.stages() if rule in s.snakemake_rules), None)


def snakemake_summary(project: Path) -> list[tuple[str, set[str], str]]:
    """(stage, input files, plan) of every output `snakemake --detailed-summary` lists
    (plan: "update pending" when a run would remake it)."""
    out = run(["snakemake", "--detailed-summary"], project).stdout.splitlines()
    header = out[0].split("\t")
    rows = []
    for line in out[1:]:
        row = dict(zip(header, line.split("\t")))
        m = re.fullmatch(r"metrics/(.+)\.json", row["output_file"])
        stage = stage_of(row["rule"], {"run": m.group(1)} if m and row["rule"] == "evaluate_run" else {})
        rows.append((stage, set(row["input-file(s)"].split(",")), row["plan"]))
    return rows


def check_code_deps_under_both_drivers(project: Path) -> None:
    """Every chosen file edited at once: one `dvc status` names, for each file, exactly the
    stages whose code holds it; so do Snakemake's inputs of the jobs (one summary), and
    Snakemake would remake everything (one of the files is in every stage's code)."""
    import os

    expected = edited_files()
    kept = {rel: ((project / rel).read_bytes(), (project / rel).stat()) for rel in expected}
    try:
        for rel, (original, _) in kept.items():
            (project / rel).write_bytes(original + b"\n# edited by the code-dependency test\n")
        status = json.loads(run(["dvc", "status", "--json"], project).stdout)
        summary = snakemake_summary(project)
        assert {plan for _, _, plan in summary} == {"update pending"}, summary
        for rel, stages in expected.items():
            by_dvc = {name for name, changes in status.items()
                      if any(rel in c.get("changed deps", {}) for c in changes if isinstance(c, dict))}
            assert by_dvc == stages, (rel, by_dvc, stages)
            by_snakemake = {stage for stage, inputs, _ in summary if rel in inputs}
            assert by_snakemake == stages, (rel, by_snakemake, stages)
    finally:
        for rel, (original, st) in kept.items():
            (project / rel).write_bytes(original)
            os.utime(project / rel, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert_in_sync(project)


def test_train_whitebox_runs_landmarker_then_pretrain_then_train(project):
    import re

    dot = run(["snakemake", "--dag", "dot", "train_whitebox"], project).stdout
    names = dict(re.findall(r'(\d+)\[label = "([a-z_]+)', dot))
    edges = {(names[a], names[b]) for a, b in re.findall(r"(\d+) -> (\d+)", dot)}
    assert ("train_landmarker", "train_whitebox") in edges
    assert ("train_whitebox_pretrain", "train_whitebox") in edges


def test_param_change_reruns_through_both_drivers(project):
    shrink(project)
    run(["dvc", "repro", "ingest"], project)
    before = snapshot(project)
    shrink(project, seed=7)
    status = run(["dvc", "status", "--with-deps", "ingest"], project)
    assert "modified:" in status.stdout and "demo" in status.stdout
    dry = run(["snakemake", "-n", "ingest"], project)
    assert "Params have changed" in dry.stdout + dry.stderr
    run(["dvc", "repro", "ingest"], project)
    after = snapshot(project)
    assert after != before
    manifest = yaml.safe_load((project / "data/raw/demo.json").read_text())
    assert manifest["params"]["seed"] == 7
    assert_in_sync(project, "ingest")


def test_snakemake_config_override_reaches_toonlab(project):
    shrink(project)
    run(["snakemake", "-c2", "crawl", "--config", "demo={anime_count: 3, variants_per_photo: 1, "
         "anime_px: 128, photo_max_px: 192, seed: 0, messy: false}"], project)
    assert len(list((project / "data/raw/anime").glob("portrait_*"))) == 3


def test_snakemake_rejects_bad_config_naming_key(project):
    res = run(["snakemake", "-n", "all", "--config", "demo={anime_count: lots}"], project, check=False)
    assert res.returncode != 0
    assert "demo.anime_count: expected an integer" in res.stdout + res.stderr


# ----------------------------------------------------------------------------- remote, clone, experiments

# The stages (and their Snakemake rules) one changed DCGAN setting reaches: nothing upstream.
DCGAN_STAGES = {"train_dcgan", "generate_dcgan", "evaluate@dcgan", "ablations", "report"}
DCGAN_RULES = {"train_dcgan", "generate_dcgan", "evaluate_run", "train_variant", "ablations", "report"}


def git(cwd: Path, *args: str) -> None:
    run(["git", "-c", "user.email=t@t", "-c", "user.name=t", *args], cwd)


def dcgan_step(project: Path) -> int:
    return json.loads((project / "models/dcgan/dvclive/metrics.json").read_text())["step"]


def stages_run(out: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", out))


def rules_run(out: str) -> set[str]:
    return set(re.findall(r"^(?:local)?rule (\w+):", out, re.M))


def check_remote_and_fresh_clone(project: Path, tmp_path: Path) -> Path:
    """`dvc push` to a remote; a fresh `git clone` + `dvc pull` is up to date for both
    drivers; then one changed DCGAN setting retrains DCGAN and nothing upstream."""
    git(project, "add", "-A")
    git(project, "commit", "-qm", "results")
    run(["dvc", "remote", "add", "-d", "store", str(tmp_path / "remote")], project)
    git(project, "commit", "-qam", "remote")
    run(["dvc", "push"], project)
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(project), str(clone)], tmp_path)
    assert not (clone / "models").exists()
    run(["dvc", "pull"], clone)
    assert "Data and pipelines are up to date" in run(["dvc", "status"], clone).stdout
    repro = run(["dvc", "repro"], clone)
    assert not stages_run(repro.stdout) and "didn't change, skipping" in repro.stdout
    # Snakemake has no records here: the Snakefile takes DVC's view first (toonlab.drivers.adopt).
    dry = run(["snakemake", "-n", "all"], clone)
    assert "Nothing to be done" in dry.stdout + dry.stderr, dry.stdout + dry.stderr
    assert "took DVC's view" in dry.stderr

    # One changed setting of one model (an experiment in the workspace, `dvc exp run -S`):
    # DVC runs its stages, each forcing only its own rules; nothing upstream reruns.
    assert dcgan_step(clone) == 3
    repro = run(["dvc", "exp", "run", "-n", "steps5", "-S", "dcgan.optim.steps=5"], clone)
    out = repro.stdout + repro.stderr
    assert stages_run(out) == DCGAN_STAGES, out
    assert "train_dcgan" in rules_run(out) and rules_run(out) <= DCGAN_RULES, rules_run(out)
    assert dcgan_step(clone) == 5 and exp_metrics(clone)["steps5"] == 5
    assert yaml.safe_load((clone / "params.yaml").read_text())["dcgan"]["optim"]["steps"] == 5
    assert_in_sync(clone)

    # The loss curves are tracked outputs: the old run's (HEAD) beside the new one's.
    plots = json.loads(run(["dvc", "plots", "diff", "HEAD", "--json"], clone).stdout)
    g = plots["data"]["models/dcgan/dvclive/plots/metrics/train/G.tsv"][0]["content"]["data"]["values"]
    last = {rev: max(int(v["step"]) for v in g if v["rev"] == rev) for rev in ("workspace", "HEAD")}
    assert last == {"workspace": 5, "HEAD": 3}
    git(clone, "commit", "-qam", "dcgan: 5 steps")
    return clone


def exp_metrics(clone: Path) -> dict[str, int]:
    """The DCGAN step of every experiment `dvc exp show` lists, by name."""
    shown = json.loads(run(["dvc", "exp", "show", "--json"], clone).stdout)
    found = {}
    for base in shown:
        for exp in base.get("experiments") or []:
            for rev in exp.get("revs") or []:
                metrics = ((rev.get("data") or {}).get("metrics") or {})
                step = metrics.get("models/dcgan/dvclive/metrics.json", {}).get("data", {}).get("step")
                found[rev.get("name")] = step
    return found


def check_experiments(clone: Path) -> None:
    """A queued experiment (run in a temporary clone, where Snakemake has no records),
    `dvc exp show`, plots between the experiment and the commit, and `dvc exp apply`."""
    run(["dvc", "exp", "run", "--queue", "-n", "q7", "-S", "dcgan.optim.steps=7"], clone)
    run(["dvc", "queue", "start", "-j", "1"], clone)
    deadline = time.monotonic() + 600
    while True:
        status = run(["dvc", "queue", "status"], clone).stdout
        rows = {line.split()[1]: line.split()[-1] for line in status.splitlines()[1:]
                if len(line.split()) >= 4 and line.split()[1] == "q7"}
        if rows.get("q7") in ("Success", "Failed"):
            break
        assert time.monotonic() < deadline, status
        time.sleep(3)
    log = run(["dvc", "queue", "logs", "q7"], clone).stdout
    assert rows == {"q7": "Success"}, (status, log)
    # The temporary clone has no Snakemake records: only the DCGAN stages ran.
    assert stages_run(log) == DCGAN_STAGES and rules_run(log) <= DCGAN_RULES, log
    assert exp_metrics(clone)["q7"] == 7
    plots = json.loads(run(["dvc", "plots", "diff", "HEAD", "q7", "--json"], clone).stdout)
    g = plots["data"]["models/dcgan/dvclive/plots/metrics/train/G.tsv"][0]["content"]["data"]["values"]
    last = {rev: max(int(v["step"]) for v in g if v["rev"] == rev) for rev in ("HEAD", "q7")}
    assert last == {"HEAD": 5, "q7": 7}
    run(["dvc", "exp", "apply", "q7"], clone)
    assert yaml.safe_load((clone / "params.yaml").read_text())["dcgan"]["optim"]["steps"] == 7
    assert dcgan_step(clone) == 7
