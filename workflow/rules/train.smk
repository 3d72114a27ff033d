# Stages `train_<family>`: one rule per registered model family (toonlab.registry),
# each one `toonlab train <family>` call into the family's run folder. Runs resume from
# their latest checkpoint when the settings are unchanged. A family that reads other runs
# first (White-box: its pretrain run, and the landmarker when loss.landmark > 0) takes
# their summary.json as inputs, so `snakemake train_whitebox` trains them first.
# Nothing in `shell:` may name the loop variable: Snakemake formats the command when the
# job runs, after the loop has moved on, so the family travels in `params:`.

for _family in TL.families:

    rule:
        name:
            f"train_{_family.name}"
        input:
            TL.family_inputs(_family),
            TL.code(f"train_{_family.name}"),
        output:
            f"{TL.run_dir(_family)}/summary.json",
        params:
            family=_family.name,
            section=TL.family_config(_family),
            train=config["train"],
            run_dir=lambda wildcards, output: os.path.dirname(output[0]),
        log:
            f"logs/train_{_family.name}.log",
        threads: TL.params.runtime.workers
        resources:
            **TL.resources("train"),
        shell:
            "toonlab --params \"$TOONLAB_PARAMS_FILE\" --workers {threads} train {params.family} --run-dir {params.run_dir} 2>&1 | tee {log}"
