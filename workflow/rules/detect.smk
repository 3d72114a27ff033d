# Stage `detect`: faces, landmarks and quality checks per image, per domain.


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
    log:
        "logs/detect_{domain}.log",
    threads: TL.params.runtime.workers
    resources:
        **TL.resources("detect"),
    shell:
        "toonlab --params \"$TOONLAB_PARAMS_FILE\" --workers {threads} detect --domain {wildcards.domain} 2>&1 | tee {log}"


rule detect:
    input:
        expand(f"{FACES}/detect/{{domain}}.parquet", domain=DOMAINS),
