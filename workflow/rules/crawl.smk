# Stage `crawl`: the raw crawl, from one of three sources (params: data.source):
#   demo    the embedded demo crawl, written by `toonlab demo-data`
#   crawl   URL lists fetched by `toonlab crawl` (crawl.url_lists)
#   folder  your own files, copied into data.raw_dir by hand
# Target `crawl` brings the raw folder up to date whatever the source.


rule demo_data:
    input:
        TL.code("crawl"),
    output:
        f"{RAW}/demo.json",
    params:
        demo=config["demo"],
        out=lambda wildcards, output: os.path.dirname(output[0]),
    log:
        "logs/demo_data.log",
    threads: 1
    resources:
        **TL.resources("crawl"),
    shell:
        "toonlab --params \"$TOONLAB_PARAMS_FILE\" --workers {threads} demo-data --out {params.out} 2>&1 | tee {log}"


rule fetch_urls:
    input:
        TL.url_list_files(),
        TL.code("crawl"),
    output:
        f"{RAW}/crawl_log.jsonl",
    params:
        crawl=config["crawl"],
        decode=config["decode"],
        out=lambda wildcards, output: os.path.dirname(output[0]),
    log:
        "logs/crawl.log",
    threads: 1
    resources:
        **TL.resources("crawl"),
    shell:
        "toonlab --params \"$TOONLAB_PARAMS_FILE\" --workers {threads} crawl --out {params.out} --log {output} 2>&1 | tee {log}"


rule crawl:
    input:
        TL.raw_inputs(),
