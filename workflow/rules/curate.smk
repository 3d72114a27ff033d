# Stage `curate`: the curated manifests with their split, and the curation report.


rule curate:
    input:
        expand(f"{PROCESSED}/{{domain}}/manifest.parquet", domain=DOMAINS),
        _review_files,
        TL.code("curate"),
    output:
        expand(f"{CURATED}/{{domain}}.parquet", domain=DOMAINS),
        f"{REPORT}/index.html",
    params:
        curate=config["curate"],
    log:
        "logs/curate.log",
    threads: 1
    resources:
        **TL.resources("curate"),
    shell:
        "toonlab --params \"$TOONLAB_PARAMS_FILE\" --workers {threads} curate 2>&1 | tee {log}"
