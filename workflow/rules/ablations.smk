# Stage `ablations`: train and evaluate the named variants of params.yaml
# (ablations.variants, those in ablations.run) into <train.out_dir>/<runs_subdir>/.


rule train_variant:
    input:
        _variant_inputs,
    output:
        f"{MODELS}/{ABL}/{{variant}}/summary.json",
    params:
        family=lambda wildcards: TL.params.ablations.variants[wildcards.variant].family,
        section=_variant_section,
        ablations=config["ablations"],
        train=config["train"],
    log:
        "logs/ablations/{variant}.log",
    threads: TL.params.runtime.workers
    resources:
        **TL.resources("train"),
    shell:
        "toonlab --params \"$TOONLAB_PARAMS_FILE\" --workers {threads} train {params.family} --variant {wildcards.variant} "
        "2>&1 | tee {log}"


rule ablations:
    input:
        expand(f"{METRICS}/{ABL}/{{variant}}.json", variant=TL.params.ablations.selected()),
