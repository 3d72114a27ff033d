"""The model families: the one place that lists them.

Everything else derives from `FAMILIES`: the `toonlab train` choices, the params.yaml
sections of the families (`toonlab.params`), the ablation family type, the default
evaluation runs, the Snakemake training rules (`workflow/rules/train.smk` loops over
them) and the DVC training stages (`toonlab pipeline --write` generates dvc.yaml).

Adding a family means: its package (`models/<name>/params.py` with its params section,
pydantic only, and `models/<name>/model.py` with `build(params, ctx) -> Recipe` and, for
a family with inference, `inference(params, nets) -> Inference`), one entry below, and
its section in params.yaml. tests/models/test_registry.py adds a minimal family that way and
trains, evaluates and exports it through the normal command line.

This module is light: it names the params classes and model modules as strings and
imports them only when asked, so `toonlab --help`, `toonlab params` and the Snakefile
never load torch, and the code dependencies of one family's stages do not hold the
others' files (see `toonlab.pipeline`).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Callable, Literal

from toonlab.errors import UsageError
from toonlab.util import keys

Kind = Literal["translation", "unconditional", "auxiliary"]


def resolve(ref: str | Any) -> Any:
    """`"package.module:Name"` -> the object, `"package.module"` -> the module; anything
    else (a class or module object, as tests pass) is returned as it is."""
    if not isinstance(ref, str):
        return ref
    module, _, name = ref.partition(":")
    obj = importlib.import_module(module)
    return getattr(obj, name) if name else obj


@dataclass(frozen=True)
class CompileGain:
    """What torch.compile (inductor) did to a family's training step on one kind of CPU,
    measured with `benchmarks/train_step.py --compile` and kept in the family's
    `figures.py` (read by `toonlab.train.compiling` for `train.compile: auto`): points
    (precision "fp32" | "bf16", image px, eager / compiled step time, seconds of a cold
    compilation); `measured` says where. Measured with `python benchmarks/train_step.py --paths
    bf16|fp32 --compile` (cold inductor cache; ratios within one run are reliable, absolute
    times of a shared VM drift 20-80%). A family's `figures.py` holds `CPU_COMPILE`: family
    name -> CPU kind (`toonlab.util.cpu.kind()`) -> CompileGain; a kind not listed was not
    measured, and `auto` stays eager there."""

    points: tuple[tuple[str, int, float, float], ...]
    measured: str = ""

    def at(self, precision: str, px: int) -> tuple[float, float] | None:
        """(speed-up, compile seconds) of the measured point of `precision` nearest `px`."""
        same = [p for p in self.points if p[0] == precision]
        if not same:
            return None
        _, _, speedup, compile_s = min(same, key=lambda p: (abs(p[1] - px), -p[1]))
        return speedup, compile_s


@dataclass(frozen=True)
class Family:
    """One model family. `kind`: translation (source -> target images; evaluated,
    cartoonized, exported, served), unconditional (noise -> images; evaluated, exported,
    `toonlab generate`) or auxiliary (trained for another family's sake, no inference)."""

    name: str                      # `toonlab train <name>`, rule and DVC stage train_<name>, run folder
    params: str | type             # its params section class, "module:Class" (a light module)
    model: str | Any               # module with build(params, ctx) [and inference(params, nets)]
    steps: Callable[[Any], int]    # total training steps, from the family's params section
    domains: Callable[[Any], list[str]]   # the packed data domains it trains on
    kind: Kind = "translation"
    best_metric: str = "G_total"   # the loss that picks best.pt (lower is better)
    section: str = ""              # its params.yaml section when that is not `name`
    builder: str = "build"         # the model module's function that builds the recipe
    # DVC params of the training stage (default: the whole section, and `train`).
    dvc_params: tuple[str, ...] = ()
    # Params key (dotted, from the top) of its run folder; "": <train.out_dir>/<name>.
    run_dir_key: str = ""
    # Runs it reads before training: params key (inside its section) of each run folder ->
    # whether the current settings need it (DVC always lists it; Snakemake only when True).
    needs: Callable[[Any], dict[str, bool]] | None = None
    # Keys of its section (dotted) that only set how long it trains: changing them
    # continues a run with the schedule recomputed for the new end (keys it lacks are ignored).
    length_keys: tuple[str, ...] = ("optim.steps", "optim.steps_constant", "optim.steps_decay",
                                    "optim.decay_from", "pretrain.steps")

    # -- facts
    @property
    def params_section(self) -> str:
        return self.section or self.name

    @property
    def translates(self) -> bool:
        return self.kind == "translation"

    @property
    def has_inference(self) -> bool:
        return self.kind != "auxiliary"

    @property
    def model_module(self) -> str:
        """The dotted name of the model module (for the code dependencies)."""
        return self.model if isinstance(self.model, str) else getattr(self.model, "__name__", "")

    @property
    def params_module(self) -> str:
        return self.params.partition(":")[0] if isinstance(self.params, str) else self.params.__module__

    @property
    def cpu_compile(self) -> CompileGain | None:
        """torch.compile's measured effect on its CPU training step on this kind of CPU
        (`toonlab.util.cpu.kind()`), from the optional `figures.py` of its folder
        (`CPU_COMPILE`: family name -> CPU kind -> CompileGain); None where not measured."""
        from toonlab.util import cpu

        figures = self.part("figures")
        measured = getattr(figures, "CPU_COMPILE", {}).get(self.name, {}) if figures is not None else {}
        return measured.get(cpu.kind())

    @property
    def package(self) -> str:
        """The family's folder as a dotted package (`toonlab.models.<name>`): where its
        optional parts are found by name (`part`)."""
        return self.params_module.rpartition(".")[0]

    # -- lazily loaded pieces
    def part(self, name: str) -> ModuleType | None:
        """The family's optional module `<package>.<name>` (`presets`, `importer`,
        `figures`), or None when its folder has none."""
        import importlib.util

        module = f"{self.package}.{name}"
        try:
            if not self.package or importlib.util.find_spec(module) is None:
                return None
        except ModuleNotFoundError:
            return None
        return importlib.import_module(module)

    @property
    def params_cls(self) -> type:
        return resolve(self.params)

    def module(self) -> ModuleType:
        return resolve(self.model)

    def build(self, fparams: Any, ctx: Any) -> Any:
        return getattr(self.module(), self.builder)(fparams, ctx)

    def inference(self, fparams: Any, nets: dict[str, Any]) -> Any:
        if not self.has_inference:
            raise UsageError(f"a {self.name} run translates nothing: it has no inference")
        return self.module().inference(fparams, nets)

    def total_steps(self, fparams: Any) -> int:
        return int(self.steps(fparams))

    # -- where its runs live
    def section_of(self, params: Any) -> Any:
        return getattr(params, self.params_section)

    def run_dir(self, params: Any) -> str:
        if self.run_dir_key:
            value = keys.attr(params, self.run_dir_key)
            if value:
                return str(value)
        return f"{params.train.out_dir}/{self.name}"

    def needed_runs(self, params: Any, all_of_them: bool = False) -> list[str]:
        """Run folders this family reads before training (those the settings need, or all)."""
        if self.needs is None:
            return []
        fp = self.section_of(params)
        return [str(keys.attr(fp, key)) for key, needed in self.needs(fp).items()
                if (needed or all_of_them) and keys.attr(fp, key)]


def _constant_plus_decay(name: str) -> Callable[[Any], int]:
    """Total steps of a schedule `optim.steps_constant + optim.steps_decay` (CycleGAN)."""

    def total(p: Any) -> int:
        steps = p.optim.steps_constant + p.optim.steps_decay
        if steps <= 0:
            raise UsageError(f"{name}.optim.steps_constant + steps_decay is 0: set them in params.yaml "
                             "or pass --steps")
        return steps

    return total


def _optim_steps(p: Any) -> int:
    return p.optim.steps


def _unpaired(p: Any) -> list[str]:
    return [p.data.domain_a, p.data.domain_b]


FAMILIES: tuple[Family, ...] = (
    Family("cyclegan", params="toonlab.models.cyclegan.params:CycleGANParams",
           model="toonlab.models.cyclegan.model", steps=_constant_plus_decay("cyclegan"), domains=_unpaired),
    Family("dcgan", params="toonlab.models.dcgan.params:DCGANParams", model="toonlab.models.dcgan.model",
           steps=_optim_steps, domains=lambda p: [p.data.domain], kind="unconditional", best_metric="G"),
    Family("ugatit", params="toonlab.models.ugatit.params:UGATITParams", model="toonlab.models.ugatit.model",
           steps=_optim_steps, domains=_unpaired),
    Family("landmarker", params="toonlab.models.landmarker.params:LandmarkerParams",
           model="toonlab.models.landmarker.model", steps=_optim_steps,
           domains=lambda p: [p.data.domain_photo, p.data.domain_anime], kind="auxiliary", best_metric="loss"),
    Family("whitebox_pretrain", params="toonlab.models.whitebox.params:WhiteboxParams",
           model="toonlab.models.whitebox.model", builder="build_pretrain", section="whitebox",
           steps=lambda p: p.pretrain.steps, domains=lambda p: [p.data.domain_photo], kind="auxiliary",
           best_metric="recon", dvc_params=("whitebox.pretrain", "whitebox.model", "whitebox.data"),
           run_dir_key="whitebox.pretrain.run_dir"),
    Family("whitebox", params="toonlab.models.whitebox.params:WhiteboxParams",
           model="toonlab.models.whitebox.model", steps=_optim_steps,
           domains=lambda p: [p.data.domain_photo, p.data.domain_cartoon],
           needs=lambda p: {"pretrain.run_dir": True, "loss.landmarker_run": p.loss.landmark > 0}),
)


def families() -> dict[str, Family]:
    """Every registered family by name, in registry order."""
    return {f.name: f for f in FAMILIES}


def get(name: str) -> Family:
    found = families()
    if name not in found:
        raise UsageError(f"no model family {name!r}; registered: {', '.join(found)}")
    return found[name]


def names(*kinds: Kind) -> list[str]:
    """Family names, of the given kinds (default: all)."""
    return [f.name for f in FAMILIES if not kinds or f.kind in kinds]


def with_inference() -> list[str]:
    """Families whose runs can be evaluated (translation and unconditional ones)."""
    return [f.name for f in FAMILIES if f.has_inference]


def sections() -> dict[str, type]:
    """params.yaml section name -> its params class, for every family (a section shared by
    two families, as White-box's pretrain and adversarial stages share `whitebox`, once)."""
    out: dict[str, type] = {}
    for f in FAMILIES:
        out.setdefault(f.params_section, f.params_cls)
    return out
