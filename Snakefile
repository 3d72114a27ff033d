# ToonLab workflow. Rules live in workflow/rules/<stage>.smk, each one `toonlab` call;
# the training rules are generated from the model registry (toonlab.registry).
# Config is params.yaml (validated by toonlab's typed schema at load time); override
# values with e.g. `snakemake -c2 all --config demo='{anime_count: 8}'`.
import os

from toonlab.snake import prepare


configfile: "params.yaml"


TL = prepare(config, main_process=workflow.is_main_process)
# The rules' commands read the effective params file from the environment (`toonlab
# --params "$TOONLAB_PARAMS_FILE"`): a --config override changes that path, and a path in
# `params:` would make every rule look changed; each rule's own settings are its params.
os.environ["TOONLAB_PARAMS_FILE"] = TL.params_file


envvars:
    "TOONLAB_PARAMS_FILE",


include: "workflow/rules/common.smk"
include: "workflow/rules/crawl.smk"
include: "workflow/rules/ingest.smk"
include: "workflow/rules/detect.smk"
include: "workflow/rules/matte.smk"
include: "workflow/rules/align.smk"
include: "workflow/rules/curate.smk"
include: "workflow/rules/pack.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/generate.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/ablations.smk"
include: "workflow/rules/report.smk"


rule preprocess:
    input:
        rules.pack.output,


rule all:
    default_target: True
    input:
        rules.preprocess.input,
        [f"{TL.run_dir(f)}/summary.json" for f in TL.families],
        [f"{TL.run_dir(f)}/generated/scores.json" for f in TL.families_of("unconditional")],
        rules.report.output,
