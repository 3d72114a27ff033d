# Stage `ingest`: raw crawl -> clean, deduplicated manifest per domain.


rule ingest_domain:
    input:
        TL.raw_inputs(),
        TL.code("ingest"),
    output:
        manifest=f"{INTERIM}/{{domain}}/manifest.parquet",
        table=f"{INTERIM}/{{domain}}/manifest.csv",
        summary=f"{INTERIM}/{{domain}}/summary.json",
    params:
        decode=config["decode"],
        ingest=config["ingest"],
    log:
        "logs/ingest_{domain}.log",
    threads: TL.params.runtime.workers
    resources:
        **TL.resources("ingest"),
    shell:
        "toonlab --params \"$TOONLAB_PARAMS_FILE\" --workers {threads} ingest --domain {wildcards.domain} 2>&1 | tee {log}"


rule ingest:
    input:
        expand(f"{INTERIM}/{{domain}}/manifest.parquet", domain=DOMAINS),
