# ToonLab workflow. Rules live in workflow/rules/*.smk; each is one `toonlab` call.
# Config is params.yaml (validated by toonlab's typed schema at load time);
# override values with e.g. `snakemake -c2 all --config demo='{anime_count: 8}'`.
from pathlib import Path

from toonlab.snake import prepare


configfile: "params.yaml"


TL = prepare(config)
RAW = TL.params.data.raw_dir
INTERIM = TL.params.ingest.out_dir


include: "workflow/rules/common.smk"
include: "workflow/rules/raw.smk"
include: "workflow/rules/ingest.smk"
include: "workflow/rules/preprocess.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"


rule all:
    default_target: True
    input:
        rules.preprocess.input,
        rules.train_cyclegan.output,
        rules.generate_dcgan.output,
        rules.train_ugatit.output,
        rules.train_whitebox.output,
        rules.report.output,
