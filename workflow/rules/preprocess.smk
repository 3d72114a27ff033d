# Face pipeline: detect -> matte -> align -> curate -> pack. Target `preprocess` runs all.

DOMAINS = TL.params.data.domains
FACES = TL.params.preprocess.work_dir
PROCESSED = TL.params.align.out_dir
CURATED = TL.params.curate.out_dir
REPORT = TL.params.curate.report_dir
PACKED = TL.params.pack.out_dir


rule detect_domain:
    input:
        f"{INTERIM}/{{domain}}/manifest.parquet",
        TL.code("detect"),
    output:
        f"{FACES}/detect/{{domain}}.parquet",
    params:
        detect=config["detect"],
        preprocess=config["preprocess"],
        decode=config["decode"],
        params_file=TL.params_file,
    wildcard_constraints:
        domain="photo|anime",
    log:
        "logs/detect_{domain}.log",
    threads: TL.params.runtime.workers
    conda:
        "../envs/toonlab.yaml"
    shell:
        "toonlab --params {params.params_file} detect --domain {wildcards.domain} 2>&1 | tee {log}"


rule matte_domain:
    input:
        f"{FACES}/detect/{{domain}}.parquet",
        TL.code("matte"),
    output:
        f"{FACES}/matte/{{domain}}.parquet",
    params:
        matte=config["matte"],
        decode=config["decode"],
        params_file=TL.params_file,
    wildcard_constraints:
        domain="photo|anime",
    log:
        "logs/matte_{domain}.log",
    threads: TL.params.runtime.workers
    conda:
        "../envs/toonlab.yaml"
    shell:
        "toonlab --params {params.params_file} matte --domain {wildcards.domain} 2>&1 | tee {log}"


rule align_domain:
    input:
        f"{FACES}/detect/{{domain}}.parquet",
        f"{FACES}/matte/{{domain}}.parquet",
        TL.code("align"),
    output:
        f"{PROCESSED}/{{domain}}/manifest.parquet",
    params:
        align=config["align"],
        decode=config["decode"],
        params_file=TL.params_file,
    wildcard_constraints:
        domain="photo|anime",
    log:
        "logs/align_{domain}.log",
    threads: TL.params.runtime.workers
    conda:
        "../envs/toonlab.yaml"
    shell:
        "toonlab --params {params.params_file} align --domain {wildcards.domain} 2>&1 | tee {log}"


rule detect:
    input:
        expand(f"{FACES}/detect/{{domain}}.parquet", domain=DOMAINS),


rule matte:
    input:
        expand(f"{FACES}/matte/{{domain}}.parquet", domain=DOMAINS),


rule align:
    input:
        expand(f"{PROCESSED}/{{domain}}/manifest.parquet", domain=DOMAINS),


rule curate:
    input:
        expand(f"{PROCESSED}/{{domain}}/manifest.parquet", domain=DOMAINS),
        TL.code("curate"),
    output:
        expand(f"{CURATED}/{{domain}}.parquet", domain=DOMAINS),
        f"{REPORT}/index.html",
    params:
        curate=config["curate"],
        params_file=TL.params_file,
    log:
        "logs/curate.log",
    threads: 1
    conda:
        "../envs/toonlab.yaml"
    shell:
        "toonlab --params {params.params_file} curate 2>&1 | tee {log}"


rule pack:
    input:
        expand(f"{CURATED}/{{domain}}.parquet", domain=DOMAINS),
        TL.code("pack"),
    output:
        expand(f"{PACKED}/{{domain}}/index.json", domain=DOMAINS),
    params:
        pack=config["pack"],
        params_file=TL.params_file,
    log:
        "logs/pack.log",
    threads: 1
    conda:
        "../envs/toonlab.yaml"
    shell:
        "toonlab --params {params.params_file} pack 2>&1 | tee {log}"


rule preprocess:
    input:
        rules.pack.output,
