# Evaluation, ablations and the HTML report. `evaluate` measures every run listed in
# evaluate.runs; `ablations` trains and evaluates the named variants of params.yaml
# (ablations.variants, those in ablations.run); `report` gathers all of it into
# reports/index.html.

METRICS = TL.params.evaluate.metrics_dir
ABL = TL.params.ablations.runs_subdir


wildcard_constraints:
    run=r"[A-Za-z0-9_-]{1,64}(/[A-Za-z0-9_-]{1,64})?",
    variant=r"[A-Za-z0-9_-]{1,64}",


rule evaluate_run:
    input:
        f"{MODELS}/{{run}}/summary.json",
        _eval_domains,
        TL.code("evaluate"),
    output:
        f"{METRICS}/{{run}}.json",
    params:
        evaluate=config["evaluate"],
        detect=config["detect"],
        params_file=TL.params_file,
    log:
        "logs/evaluate/{run}.log",
    threads: 1
    conda:
        "../envs/toonlab.yaml"
    shell:
        "toonlab --params {params.params_file} evaluate {wildcards.run} 2>&1 | tee {log}"


rule evaluate:
    input:
        expand(f"{METRICS}/{{run}}.json", run=TL.params.evaluate.runs),


rule ablation_train:
    input:
        _variant_inputs,
    output:
        f"{MODELS}/{ABL}/{{variant}}/summary.json",
    params:
        family=lambda wildcards: TL.params.ablations.variants[wildcards.variant].family,
        ablations=config["ablations"],
        train=config["train"],
        params_file=TL.params_file,
    log:
        "logs/ablations/{variant}.log",
    threads: TL.params.runtime.workers
    conda:
        "../envs/toonlab.yaml"
    shell:
        "toonlab --params {params.params_file} train {params.family} --variant {wildcards.variant} "
        "2>&1 | tee {log}"


rule report:
    input:
        _report_inputs,
        f"{TL.params.curate.report_dir}/index.html",
        TL.code("report"),
    output:
        TL.params.report.out,
    params:
        report=config["report"],
        params_file=TL.params_file,
    log:
        "logs/report.log",
    threads: 1
    conda:
        "../envs/toonlab.yaml"
    shell:
        "toonlab --params {params.params_file} report 2>&1 | tee {log}"


rule ablations:
    input:
        expand(f"{METRICS}/{ABL}/{{variant}}.json", variant=TL.params.ablations.selected()),
