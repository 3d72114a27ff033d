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


rule train_dcgan:
    input:
        f"{PACKED}/{TL.params.dcgan.data.domain}/index.json",
        TL.code("train_dcgan"),
    output:
        f"{MODELS}/dcgan/summary.json",
    params:
        dcgan=config["dcgan"],
        train=config["train"],
        params_file=TL.params_file,
    log:
        "logs/train_dcgan.log",
    threads: TL.params.runtime.workers
    conda:
        "../envs/toonlab.yaml"
    shell:
        "toonlab --params {params.params_file} train dcgan 2>&1 | tee {log}"


rule generate_dcgan:
    input:
        f"{MODELS}/dcgan/summary.json",
        TL.code("generate_dcgan"),
    output:
        f"{MODELS}/dcgan/generated/scores.json",
    params:
        sample=config["dcgan"]["sample"],
        params_file=TL.params_file,
    log:
        "logs/generate_dcgan.log",
    threads: 1
    conda:
        "../envs/toonlab.yaml"
    shell:
        "toonlab --params {params.params_file} generate dcgan 2>&1 | tee {log}"
