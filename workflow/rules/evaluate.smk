# Stage `evaluate` (DVC: `evaluate@<run>`, one per run in evaluate.runs): metrics and
# fixed-input translations of a trained run.


rule evaluate_run:
    input:
        f"{MODELS}/{{run}}/summary.json",
        _eval_domains,
        _eval_code,
    output:
        f"{METRICS}/{{run}}.json",
    params:
        evaluate=config["evaluate"],
        detect=config["detect"],
    log:
        "logs/evaluate/{run}.log",
    threads: 1
    resources:
        **TL.resources("evaluate"),
    shell:
        "toonlab --params \"$TOONLAB_PARAMS_FILE\" --workers {threads} evaluate {wildcards.run} 2>&1 | tee {log}"


rule evaluate:
    input:
        expand(f"{METRICS}/{{run}}.json", run=TL.params.evaluate.runs),
