# Stage `report`: reports/index.html over the evaluated runs and the ablation variants.


rule report:
    input:
        rules.evaluate.input,
        rules.ablations.input,
        f"{REPORT}/index.html",
        "src/toonlab/eval/paper_tables.yaml",
        TL.code("report"),
    output:
        TL.params.report.out,
    params:
        report=config["report"],
    log:
        "logs/report.log",
    threads: 1
    resources:
        **TL.resources("report"),
    shell:
        "toonlab --params \"$TOONLAB_PARAMS_FILE\" --workers {threads} report 2>&1 | tee {log}"
