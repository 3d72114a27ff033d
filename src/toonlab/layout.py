"""The layers of ToonLab's code, and the check that every import points down them.

Bottom to top (a module may import its own layer and the ones below it, never one above):

    shells    cli, drivers, snake, pipeline, layout        (the CLI, Snakemake and DVC shells)
    tasks     eval/*, apps/*                                (evaluation; cartoonize, serve, review, export)
    models    models/<family>/model.py and what it uses     (networks, losses, recipes, importers)
    runs      runs/*                                        (a trained run: find, load, infer, generate)
    train     train/*                                       (the generic loop and its pieces)
    data      data/*, faces/*                               (crawl ... pack)
    spec      registry, ablations, params, presets,         (what there is and how it is set:
              */params.py, models/<family>/{params,presets,figures}.py   no torch, no work)
    base      errors, log, extras, schema, weights, util/*

A model family's folder spans two layers: its description (params, presets, measured
figures: `spec`) and its implementation (`models`). The registry names the implementation as
a string and imports it only when asked (`Family.module()`): the one arrow that points up,
on purpose, at run time, as a plug-in (the trainer builds a family it never imports).

`python -m toonlab.layout` prints the layers, the arrows between them (module counts) and any
upward import or import cycle; tests/test_startup.py fails on either.
"""

from __future__ import annotations

import fnmatch
import sys
from collections import Counter
from pathlib import Path

from toonlab import pipeline

LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("base", ("toonlab", "toonlab.errors", "toonlab.log", "toonlab.extras", "toonlab.schema", "toonlab.weights",
              "toonlab.util", "toonlab.util.*")),
    ("spec", ("toonlab.registry", "toonlab.ablations", "toonlab.params", "toonlab.presets", "toonlab.*.params",
              "toonlab.models", "toonlab.models.data_params", "toonlab.models.*.params", "toonlab.models.*.presets",
              "toonlab.models.*.figures")),
    ("data", ("toonlab.data", "toonlab.data.*", "toonlab.faces", "toonlab.faces.*")),
    ("train", ("toonlab.train", "toonlab.train.*")),
    ("runs", ("toonlab.runs", "toonlab.runs.*")),
    ("models", ("toonlab.models.*",)),
    ("tasks", ("toonlab.eval", "toonlab.eval.*", "toonlab.apps", "toonlab.apps.*")),
    ("shells", ("toonlab.cli", "toonlab.__main__", "toonlab.drivers", "toonlab.snake", "toonlab.pipeline",
                "toonlab.layout")),
)
NAMES = [name for name, _ in LAYERS]


def layer_of(module: str) -> str:
    """The layer of a dotted module name: the first layer (bottom up) with a matching pattern."""
    for name, patterns in LAYERS:
        if any(fnmatch.fnmatchcase(module, p) for p in patterns):
            return name
    raise LookupError(f"{module} is in no layer: add it to toonlab.layout.LAYERS")


def modules(package_dir: Path = pipeline.PACKAGE_DIR) -> dict[str, tuple[str, ...]]:
    """Every module of the package under `package_dir` -> the toonlab modules it imports."""
    out = {}
    for path in sorted(package_dir.rglob("*.py")):
        rel = path.relative_to(package_dir.parent).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        out[name] = tuple(m for m in pipeline.imports_of(path, name) if m != name)
    return out


def arrows(graph: dict[str, tuple[str, ...]]) -> Counter:
    """(from layer, to layer) -> how many module imports go that way (within a layer too)."""
    return Counter((layer_of(m), layer_of(dep)) for m, deps in graph.items() for dep in deps)


def upward(graph: dict[str, tuple[str, ...]]) -> list[str]:
    """Every import that points to a higher layer, as `module (layer) -> module (layer)`."""
    rank = {name: i for i, name in enumerate(NAMES)}
    found = []
    for m, deps in sorted(graph.items()):
        for dep in deps:
            a, b = layer_of(m), layer_of(dep)
            if rank[b] > rank[a]:
                found.append(f"{m} ({a}) -> {dep} ({b})")
    return found


def cycle(graph: dict[str, tuple[str, ...]]) -> list[str]:
    """An import cycle (modules, the first repeated at the end), or [] where there is none."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str]:
        state[m] = 1
        stack.append(m)
        for dep in sorted(graph.get(m, ())):
            if state.get(dep) == 1:
                return stack[stack.index(dep):] + [dep]
            if dep not in state:
                found = visit(dep)
                if found:
                    return found
        stack.pop()
        state[m] = 2
        return []

    for m in sorted(graph):
        if m not in state:
            found = visit(m)
            if found:
                return found
    return []


def describe(graph: dict[str, tuple[str, ...]]) -> str:
    per_layer = Counter(layer_of(m) for m in graph)
    counted = arrows(graph)
    lines = []
    for name in reversed(NAMES):
        down = ", ".join(f"{b} {n}" for (a, b), n in sorted(counted.items(), key=lambda kv: NAMES.index(kv[0][1]),
                                                               reverse=True) if a == name and b != name)
        lines.append(f"{name:7} {per_layer[name]:3} modules" + (f"  -> {down}" if down else ""))
    bad = upward(graph)
    lines.append("upward imports: " + ("none" if not bad else str(len(bad))))
    lines.extend(f"  {line}" for line in bad)
    loop = cycle(graph)
    lines.append("import cycle: " + (" -> ".join(loop) if loop else "none"))
    return "\n".join(lines)


def main() -> int:
    graph = modules()
    print(describe(graph))
    return 1 if upward(graph) or cycle(graph) else 0


if __name__ == "__main__":
    sys.exit(main())
