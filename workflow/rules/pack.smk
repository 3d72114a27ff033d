# Stage `pack`: each split as memory-mapped arrays for the trainers.


rule pack:
    input:
        expand(f"{CURATED}/{{domain}}.parquet", domain=DOMAINS),
        TL.code("pack"),
    output:
        packed(DOMAINS),
    params:
        pack=config["pack"],
    log:
        "logs/pack.log",
    threads: 1
    resources:
        **TL.resources("pack"),
    shell:
        "toonlab --params \"$TOONLAB_PARAMS_FILE\" --workers {threads} pack 2>&1 | tee {log}"
