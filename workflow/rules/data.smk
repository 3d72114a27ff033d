# Raw data: the embedded demo crawl (data.source: demo). With data.source: folder the
# raw folder is yours (copied or crawled) and tracked with `dvc add`.


rule demo_data:
    output:
        f"{RAW}/demo.json",
    params:
        demo=config["demo"],
        out=lambda wildcards, output: os.path.dirname(output[0]),
        params_file=TL.params_file,
    log:
        "logs/demo_data.log",
    threads: 1
    conda:
        "../envs/toonlab.yaml"
    shell:
        "toonlab --params {params.params_file} demo-data --out {params.out} 2>&1 | tee {log}"
