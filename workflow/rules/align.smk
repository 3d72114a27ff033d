# Stage `align`: faces aligned to the template, 256 and 128 px RGBA crops, per domain.


rule align_domain:
    input:
        f"{FACES}/detect/{{domain}}.parquet",
        f"{FACES}/matte/{{domain}}.parquet",
        TL.code("align"),
    output:
        f"{PROCESSED}/{{domain}}/manifest.parquet",
    params:
        align=config["align"],
        preprocess=config["preprocess"],
        decode=config["decode"],
    log:
        "logs/align_{domain}.log",
    threads: TL.params.runtime.workers
    resources:
        **TL.resources("align"),
    shell:
        "toonlab --params \"$TOONLAB_PARAMS_FILE\" --workers {threads} align --domain {wildcards.domain} 2>&1 | tee {log}"


rule align:
    input:
        expand(f"{PROCESSED}/{{domain}}/manifest.parquet", domain=DOMAINS),
