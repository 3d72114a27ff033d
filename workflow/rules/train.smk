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


rule train_ugatit:
    input:
        expand(
            f"{PACKED}/{{domain}}/index.json",
            domain=[TL.params.ugatit.data.domain_a, TL.params.ugatit.data.domain_b],
        ),
        TL.code("train_ugatit"),
    output:
        f"{MODELS}/ugatit/summary.json",
    params:
        ugatit=config["ugatit"],
        train=config["train"],
        params_file=TL.params_file,
    log:
        "logs/train_ugatit.log",
    threads: TL.params.runtime.workers
    conda:
        "../envs/toonlab.yaml"
    shell:
        "toonlab --params {params.params_file} train ugatit 2>&1 | tee {log}"


# White-box: the landmark heatmap network (used by the landmark loss), the
# reconstruction pretrain, then the adversarial stage, in that order.
rule train_landmarker:
    input:
        expand(
            f"{PACKED}/{{domain}}/index.json",
            domain=[TL.params.landmarker.data.domain_photo, TL.params.landmarker.data.domain_anime],
        ),
        TL.code("train_landmarker"),
    output:
        f"{MODELS}/landmarker/summary.json",
    params:
        landmarker=config["landmarker"],
        train=config["train"],
        params_file=TL.params_file,
    log:
        "logs/train_landmarker.log",
    threads: TL.params.runtime.workers
    conda:
        "../envs/toonlab.yaml"
    shell:
        "toonlab --params {params.params_file} train landmarker 2>&1 | tee {log}"


rule pretrain_whitebox:
    input:
        f"{PACKED}/{TL.params.whitebox.data.domain_photo}/index.json",
        TL.code("pretrain_whitebox"),
    output:
        f"{TL.params.whitebox.pretrain.run_dir}/summary.json",
    params:
        pretrain=config["whitebox"]["pretrain"],
        model=config["whitebox"]["model"],
        train=config["train"],
        run_dir=lambda wildcards, output: Path(output[0]).parent,
        params_file=TL.params_file,
    log:
        "logs/pretrain_whitebox.log",
    threads: TL.params.runtime.workers
    conda:
        "../envs/toonlab.yaml"
    shell:
        "toonlab --params {params.params_file} train whitebox_pretrain "
        "--run-dir {params.run_dir} 2>&1 | tee {log}"


rule train_whitebox:
    input:
        expand(
            f"{PACKED}/{{domain}}/index.json",
            domain=[TL.params.whitebox.data.domain_photo, TL.params.whitebox.data.domain_cartoon],
        ),
        rules.pretrain_whitebox.output,
        (
            f"{TL.params.whitebox.loss.landmarker_run}/summary.json"
            if TL.params.whitebox.loss.landmark > 0
            else []
        ),
        TL.code("train_whitebox"),
    output:
        f"{MODELS}/whitebox/summary.json",
    params:
        whitebox=config["whitebox"],
        train=config["train"],
        params_file=TL.params_file,
    log:
        "logs/train_whitebox.log",
    threads: TL.params.runtime.workers
    conda:
        "../envs/toonlab.yaml"
    shell:
        "toonlab --params {params.params_file} train whitebox 2>&1 | tee {log}"
