"""DVC and Snakemake drive the same stages from the same params.yaml, and agree.

These run the real `snakemake` and `dvc` on copies of the project with a tiny demo
configuration. The whole pipeline is built once for the run (the `built` fixture,
tests/tiny_project.py): Snakemake first for the data stages and CycleGAN, then `dvc repro`
for the rest. Tests that change the project take a copy of that build (`built_copy`).
"""

import json
import re
import time
from pathlib import Path

import pytest
import yaml

from conftest import REPO, run
from tiny_project import SNAKEMAKE_FIRST_STAGES, rules_run, shrink, snapshot, stage_sections, unchanged
from toonlab import registry

pytestmark = pytest.mark.slow


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


def test_snakemake_first_then_dvc_does_no_work(built):
    """The data stages and CycleGAN made by `snakemake -c2 preprocess train_cyclegan`: the
    `dvc repro` after it runs each of their stage commands, in which Snakemake finds
    everything up to date and runs no rule, and not a byte or a timestamp changes."""
    # Training through Snakemake logs to a file (`| tee logs/train_<family>.log`): progress
    # lines every train.log_every steps, and the run's heartbeat.
    log = (built.root / "logs/train_cyclegan.log").read_text()
    assert "train cyclegan: step 2/4 (50%)" in log and "train cyclegan: step 4/4 (100%)" in log, log
    assert '"status": "finished"' in (built.root / "models/cyclegan/heartbeat.json").read_text()
    assert "data/raw/demo.json" in built.before and "models/cyclegan/summary.json" in built.before
    sections = stage_sections(built.repro)
    assert SNAKEMAKE_FIRST_STAGES <= set(sections), sorted(sections)
    for stage in SNAKEMAKE_FIRST_STAGES:
        # DVC ran its stage command, Snakemake found everything up to date and ran no rule.
        assert "Nothing to be done" in sections[stage] and not rules_run(sections[stage]), (stage, sections[stage])
    assert unchanged(built.before, built.after)  # not a byte, nor a timestamp of the data
    assert (built.root / "dvc.lock").is_file()
    assert "Nothing to be done" in built.dry_all and "Data and pipelines are up to date" in built.status


def test_dvc_first_then_snakemake_has_nothing_to_do(built):
    """Every other stage run by `dvc repro` (each asking Snakemake for its own rules): then
    `snakemake -n all` has nothing to do, a second `dvc repro` skips everything, every
    family trained, every run evaluated, the ablations tabled, one report."""
    sections = stage_sections(built.repro)
    by_dvc = set(sections) - SNAKEMAKE_FIRST_STAGES
    expected = ({f"train_{name}" for name in registry.names()} - SNAKEMAKE_FIRST_STAGES
                | {f"generate_{name}" for name in registry.names("unconditional")} | {"ablations", "report"})
    assert expected <= by_dvc, sorted(sections)
    for stage in by_dvc:
        assert rules_run(sections[stage]), (stage, sections[stage])
    assert "Nothing to be done" in built.dry_all and "Data and pipelines are up to date" in built.status
    assert "didn't change, skipping" in built.again and "Running stage" not in built.again, built.again
    for run_name in registry.names():
        summary = yaml.safe_load((built.root / "models" / run_name / "summary.json").read_text())
        assert summary["family"] == run_name, (run_name, summary["family"])
    metrics = {m: yaml.safe_load((built.root / "metrics" / f"{m}.json").read_text())
               for m in registry.with_inference()}
    assert metrics["cyclegan"]["n_images"] == 2 and "cycle_ssim" in metrics["cyclegan"]
    assert "fid" in metrics["whitebox"]["unavailable"] and "cycle" in metrics["whitebox"]["unavailable"]
    assert "metrics/ugatit.json" in built.metrics_shown and "detection_rate" in built.metrics_shown
    report = (built.root / "reports/index.html").read_text()
    assert all(f">{m}<" in report for m in metrics)

    # Ablations (a DVC stage too): the named variants trained into models/ablations/,
    # evaluated, and tabled by the report.
    for variant in ("cyclegan_base", "dcgan_d1_g1"):
        assert (built.root / "metrics/ablations" / f"{variant}.json").is_file()
    dcgan_variant = yaml.safe_load((built.root / "models/ablations/dcgan_d1_g1/summary.json").read_text())
    assert dcgan_variant["family"] == "dcgan"
    assert "<h2>Ablations</h2>" in report and "D and G every batch" in report


def test_a_review_decision_under_both_drivers(built_copy):
    check_review_under_both_drivers(built_copy)


def test_code_dependencies_under_both_drivers(built_copy):
    """Editing a file re-runs exactly the stages whose code holds it."""
    check_code_deps_under_both_drivers(built_copy)


def test_remote_fresh_clone_and_experiments(built_copy, tmp_path):
    """Beyond this workspace: a DVC remote, a fresh clone, one changed model, experiments."""
    clone = check_remote_and_fresh_clone(built_copy, tmp_path)
    check_experiments(clone)


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
