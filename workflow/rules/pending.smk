# Targets of stages that are not built yet. Each runs the stage's `toonlab` command,
# which says that it is not built yet and exits 1: the target names are fixed now,
# and nothing pretends to work. Each issue that builds a stage replaces its rule here
# with a real one in its own rules file (and adds the DVC stage).


rule train_ugatit:
    log:
        "logs/train_ugatit.log",
    threads: TL.params.runtime.workers
    conda:
        "../envs/toonlab.yaml"
    shell:
        "toonlab train ugatit 2>&1 | tee {log}"


rule train_whitebox:
    log:
        "logs/train_whitebox.log",
    threads: TL.params.runtime.workers
    conda:
        "../envs/toonlab.yaml"
    shell:
        "toonlab train whitebox 2>&1 | tee {log}"


rule evaluate:
    log:
        "logs/evaluate.log",
    threads: 1
    conda:
        "../envs/toonlab.yaml"
    shell:
        "toonlab evaluate 2>&1 | tee {log}"


rule report:
    log:
        "logs/report.log",
    threads: 1
    conda:
        "../envs/toonlab.yaml"
    shell:
        "toonlab report 2>&1 | tee {log}"
