"""Named ablation variants: a model family plus overrides of its params section.

A variant trains into `<train.out_dir>/<ablations.runs_subdir>/<name>` and is evaluated
like any run (`toonlab evaluate ablations/<name>`); `toonlab report` puts the variants
of a family in one table. `snakemake -c2 ablations` runs them all (or those listed in
`ablations.run`, or the named set `ablations.set` of `ablations.sets`, e.g.
`snakemake -c2 ablations --config ablations='{set: ugatit_paper}'`); with DVC the same
variants are experiments over the main stages,
`dvc exp run --queue -S <key>=<value> ...` then `dvc queue start` (see README).
Overrides are validated at load time against the family's params class, so a typo in a
key fails before anything trains.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from toonlab import registry
from toonlab.errors import UsageError
from toonlab.schema import Section, validate
from toonlab.util import keys

Scalar = bool | int | float | str
# The families a variant can be of: those whose runs can be evaluated.
FamilyName = Literal[tuple(registry.with_inference())]  # type: ignore[valid-type]


class AblationVariant(Section):
    family: FamilyName  # type: ignore[valid-type]
    # Dotted keys inside the family's section -> value, e.g. {loss.perceptual_weight: 1.0}.
    overrides: dict[str, Scalar] = {}
    steps: Annotated[int, Field(ge=0)] = 0     # 0: the family's own step count
    note: str = ""                              # what the variant tests (shown in the report)

    def describe(self) -> str:
        body = ", ".join(f"{k}={json.dumps(v)}" for k, v in self.overrides.items()) or "the family's settings"
        return (self.note + ": " if self.note else "") + body

    def dvc_set_args(self) -> list[str]:
        """The `dvc exp run -S` arguments of this variant."""
        section = registry.get(self.family).params_section
        return [f"{section}.{k}={json.dumps(v) if isinstance(v, str) else v}" for k, v in self.overrides.items()]


class AblationsParams(Section):
    runs_subdir: Annotated[str, Field(min_length=1)] = "ablations"
    run: list[str] = []        # variants `snakemake ablations` runs; empty: all
    # A named set of `sets` to run instead of `run` ("": `run`), e.g. ugatit_paper.
    set: str = ""
    sets: dict[str, list[str]] = {}   # name -> variants (a paper's table, a comparison)
    variants: dict[str, AblationVariant] = {}

    @model_validator(mode="after")
    def _check(self) -> AblationsParams:
        unknown = [v for v in self.run if v not in self.variants]
        if unknown:
            raise ValueError(f"run lists unknown variants {unknown}; defined: {sorted(self.variants)}")
        for name in self.variants:
            if not name.replace("_", "").replace("-", "").isalnum():
                raise ValueError(f"variant name {name!r}: use letters, digits, _ and - only")
        for name, members in self.sets.items():
            unknown = [v for v in members if v not in self.variants]
            if unknown:
                raise ValueError(f"sets.{name} lists unknown variants {unknown}; defined: {sorted(self.variants)}")
            if not members:
                raise ValueError(f"sets.{name} is empty")
        if self.set and self.set not in self.sets:
            raise ValueError(f"set {self.set!r} is not in sets ({', '.join(sorted(self.sets)) or 'none defined'})")
        return self

    def selected(self) -> list[str]:
        """The variants the `ablations` stage runs: the set `set`, else `run`, else all."""
        if self.set:
            return list(dict.fromkeys(self.sets[self.set]))
        return list(self.run or self.variants)


def apply_overrides(section: Any, overrides: dict[str, Scalar], where: str) -> Any:
    """`section` (a params Section) with dotted-key overrides, validated; errors name the key."""
    data = section.model_dump(mode="json")
    for key, value in overrides.items():
        try:
            keys.replace(data, key, value)
        except KeyError:
            raise ValueError(f"{where}.{key}: no such key") from None
    return validate(json.loads(json.dumps(data)), type(section), source=where, strict=False)


def variant_params(params: Any, name: str) -> tuple[AblationVariant, Any]:
    """(variant, the family's params section with the variant's overrides)."""
    variants = params.ablations.variants
    if name not in variants:
        raise UsageError(f"no ablation variant {name!r} in params.yaml (ablations.variants: "
                         f"{', '.join(sorted(variants)) or 'none'})")
    v = variants[name]
    section = registry.get(v.family).section_of(params)
    return v, apply_overrides(section, v.overrides, f"ablations.variants.{name}.overrides")


def variant_run(params: Any, name: str, variant: str, steps: int | None) -> tuple[Any, str, int | None]:
    """(the family section's settings, run folder, steps) of `toonlab train NAME --variant
    VARIANT`: the variant's overrides applied, `<train.out_dir>/<ablations.runs_subdir>/<variant>`,
    `steps` or the variant's own."""
    spec, fparams = variant_params(params, variant)
    if spec.family != name:
        raise UsageError(f"ablation variant {variant} is a {spec.family} variant, not {name}")
    run_dir = str(Path(params.train.out_dir) / params.ablations.runs_subdir / variant)
    return fparams, run_dir, steps if steps is not None else (spec.steps or None)
