# Training: one rule per model family, each one `toonlab train <family>` call.
# Runs resume from their latest checkpoint when the settings are unchanged.

MODELS = TL.params.train.out_dir


rule train_cyclegan:
    input:
        expand(
            f"{PACKED}/{{domain}}/index.json",
            domain=[TL.params.cyclegan.data.domain_a, TL.params.cyclegan.data.domain_b],
        ),
        TL.code("train_cyclegan"),
    output:
        f"{MODELS}/cyclegan/summary.json",
    params:
        cyclegan=config["cyclegan"],
        train=config["train"],
        params_file=TL.params_file,
    log:
        "logs/train_cyclegan.log",
    threads: TL.params.runtime.workers
    conda:
        "../envs/toonlab.yaml"
    shell:
        "toonlab --params {params.params_file} train cyclegan 2>&1 | tee {log}"
