# Stage `matte`: background removal of the images with a kept face, per domain.


rule matte_domain:
    input:
        f"{FACES}/detect/{{domain}}.parquet",
        TL.code("matte"),
    output:
        f"{FACES}/matte/{{domain}}.parquet",
    params:
        matte=config["matte"],
        decode=config["decode"],
    log:
        "logs/matte_{domain}.log",
    threads: TL.params.runtime.workers
    resources:
        **TL.resources("matte"),
    shell:
        "toonlab --params \"$TOONLAB_PARAMS_FILE\" --workers {threads} matte --domain {wildcards.domain} 2>&1 | tee {log}"


rule matte:
    input:
        expand(f"{FACES}/matte/{{domain}}.parquet", domain=DOMAINS),
