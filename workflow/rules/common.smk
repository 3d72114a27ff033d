# Input functions shared by the rules files (Snakemake's recommended place for them).


def _eval_domains(wildcards):
    """The packed datasets every evaluation reads."""
    return expand(f"{PACKED}/{{domain}}/index.json", domain=TL.params.data.domains)


def _variant_inputs(wildcards):
    """What an ablation variant trains on: the packed data, its family's code, and for
    White-box the pretrain run and the landmarker."""
    variant = TL.params.ablations.variants[wildcards.variant]
    deps = [*_eval_domains(wildcards), *TL.code(f"train_{variant.family}")]
    if variant.family == "whitebox":
        deps += [*rules.pretrain_whitebox.output, *rules.train_landmarker.output]
    return deps


def _report_inputs(wildcards):
    """The main runs' metrics and those of the ablation variants in ablations.run."""
    return [*rules.evaluate.input, *rules.ablations.input]
