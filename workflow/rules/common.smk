# Paths and input functions shared by the rule files (Snakemake's recommended place for
# them). Every rule is one `toonlab` call; its code inputs are TL.code(<stage>), the
# import closure of the stage's modules plus its rule file (toonlab.pipeline), the same
# list DVC has in dvc.yaml, so a code change re-runs the same stages under both drivers.

RAW = TL.params.data.raw_dir
INTERIM = TL.params.ingest.out_dir
DOMAINS = TL.params.data.domains
FACES = TL.params.preprocess.work_dir
PROCESSED = TL.params.align.out_dir
CURATED = TL.params.curate.out_dir
REPORT = TL.params.curate.report_dir
REVIEW = TL.params.curate.review_dir
PACKED = TL.params.pack.out_dir
MODELS = TL.params.train.out_dir
METRICS = TL.params.evaluate.metrics_dir
ABL = TL.params.ablations.runs_subdir


wildcard_constraints:
    domain="|".join(DOMAINS),
    run=r"[A-Za-z0-9_-]{1,64}(/[A-Za-z0-9_-]{1,64})?",
    variant=r"[A-Za-z0-9_-]{1,64}",


def packed(domains):
    """The packed datasets (their index.json) of these domains."""
    return expand(f"{PACKED}/{{domain}}/index.json", domain=list(dict.fromkeys(domains)))


def _eval_domains(wildcards):
    """The packed datasets every evaluation reads."""
    return packed(DOMAINS)


def _eval_code(wildcards):
    """An ablation variant is evaluated as part of the `ablations` stage, a main run as
    part of `evaluate`."""
    return TL.code("ablations" if wildcards.run.startswith(f"{ABL}/") else "evaluate")


def _variant_inputs(wildcards):
    """What an ablation variant trains on: its family's packed data and the runs the
    family reads first (White-box: the pretrain run, and the landmarker when its loss is
    on), plus the `ablations` stage's code."""
    variant = TL.params.ablations.variants[wildcards.variant]
    family = TL.family(variant.family)
    return [*TL.family_inputs(family), *TL.code("ablations")]


def _variant_section(wildcards):
    """The settings of a variant's family (a variant is its family's section plus its own
    overrides): a change there re-runs the variant, as it re-runs the ablations stage."""
    variant = TL.params.ablations.variants[wildcards.variant]
    return TL.family_config(TL.family(variant.family))


def _review_files(wildcards):
    """The human review decisions (`toonlab review`) that exist: a missing file is no decision."""
    files = expand(f"{REVIEW}/{{domain}}.csv", domain=DOMAINS)
    return [f for f in files if os.path.exists(f)]
