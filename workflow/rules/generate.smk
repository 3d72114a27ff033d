# Stages `generate_<family>`: for each unconditional family (DCGAN), the images its
# discriminator scores highest, `toonlab generate --run <family>`.

for _family in TL.families_of("unconditional"):

    rule:
        name:
            f"generate_{_family.name}"
        input:
            f"{TL.run_dir(_family)}/summary.json",
            TL.code(f"generate_{_family.name}"),
        output:
            f"{TL.run_dir(_family)}/generated/scores.json",
        params:
            section=TL.family_config(_family),
            run_dir=lambda wildcards, input: os.path.dirname(input[0]),
        log:
            f"logs/generate_{_family.name}.log",
        threads: 1
        resources:
            **TL.resources("generate"),
        shell:
            "toonlab --params \"$TOONLAB_PARAMS_FILE\" --workers {threads} generate --run {params.run_dir} 2>&1 | tee {log}"
