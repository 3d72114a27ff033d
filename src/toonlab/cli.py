"""The `toonlab` command line: one subcommand per pipeline stage, each a thin shell
around one function of the stage's module (see `toonlab pipeline` and the README's table).
It imports only the light configuration layer at start-up; a command loads its module
(and torch, OpenCV, ...) when it runs, so `toonlab --help` and `toonlab params` stay fast.

Exit codes: 0 ok, 2 bad usage or bad parameters, 1 failure, 130 interrupted. Errors are one clear message, never a traceback
(`--debug` shows it).
"""

from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path
from typing import Any, Callable

from toonlab import __version__, registry
from toonlab.errors import ToonlabError, UsageError
from toonlab.log import get_logger, setup_logging
from toonlab.params import DEFAULT_PARAMS, load_params
from toonlab.util import fileio

log = get_logger(__name__)

RUN_HELP = ("a run: its name under train.out_dir (cyclegan, ablations/x), its folder (models/ugatit) "
            "or a checkpoint file")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # same exit code (2), plus a pointer to --help
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n(run '{self.prog} --help' for the options)\n")


def _common() -> argparse.ArgumentParser:
    """Options accepted both before and after the subcommand."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--params", metavar="FILE", default=argparse.SUPPRESS,
                   help=f"parameters file (default: {DEFAULT_PARAMS})")
    p.add_argument("-v", "--verbose", action="store_const", const="DEBUG", dest="log_level",
                   default=argparse.SUPPRESS, help="debug logging")
    p.add_argument("-q", "--quiet", action="store_const", const="WARNING", dest="log_level",
                   default=argparse.SUPPRESS, help="warnings and errors only")
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                   help="show full tracebacks on errors")
    p.add_argument("--workers", type=int, metavar="N", default=argparse.SUPPRESS,
                   help="worker processes for per-image work (overrides runtime.workers; the "
                        "Snakemake rules pass their {threads})")
    return p


def build_parser() -> argparse.ArgumentParser:
    common = _common()
    parser = _Parser(prog="toonlab", parents=[common],
                     description="Raw face-photo and anime crawls to trained portrait-to-anime GANs.")
    parser.add_argument("--version", action="version", version=f"toonlab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    def add(name: str, help_text: str, func: Callable) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], help=help_text, description=help_text)
        p.set_defaults(func=func)
        return p

    p = add("demo-data", "write the embedded demo crawl (real photos shipped in packages plus "
            "generated variants and anime portraits) as a raw crawl", _cmd_demo_data)
    p.add_argument("--out", metavar="DIR", help="output folder (default: data.raw_dir from params)")
    p.add_argument("--seed", type=int, help="override demo.seed")
    p.add_argument("--force", action="store_true",
                   help="replace an existing folder that was not written by demo-data")

    add("doctor", "show which optional pretrained models and offline backends are available, "
        "and where each was looked for", _cmd_doctor)

    p = add("weights", "fetch missing pretrained model files into their libraries' cache folders (hash-checked, "
            "resumable, through HTTP(S)_PROXY; from $TOONLAB_WEIGHTS_MIRROR when set), or list them", _cmd_weights)
    p.add_argument("action", choices=("fetch", "list"), help="fetch: download what is missing; list: the table "
                   "of `toonlab doctor` (present or missing, source, hash)")
    p.add_argument("names", nargs="*", metavar="NAME", help="fetch only these (default and `all`: every one)")

    p = add("params", "validate the parameters file and print the effective values", _cmd_params)
    p.add_argument("--section", help="print only this section")

    p = add("preset", "switch model families' params.yaml sections between presets, in place with comments "
            "kept: demo (small, fast) and reference (the paper's settings); without arguments, show which "
            "preset each section matches", _cmd_preset)
    p.add_argument("preset", nargs="?", metavar="PRESET",
                   help="demo or reference (ugatit also: reference_full, soft_adalin)")
    p.add_argument("families", nargs="*", metavar="FAMILY", help="model families to switch, or all")
    p.add_argument("--dry-run", action="store_true", help="print the changes, write nothing")
    p.add_argument("--dvc-exp", action="store_true",
                   help="print the `dvc exp run -S ...` command that runs the switch as a DVC experiment; "
                        "write nothing")

    p = add("crawl", "fetch URL lists (text or CSV with url, domain, license) into "
            "<raw_dir>/<domain>/, rate-limited, with retries and resume", _cmd_crawl)
    p.add_argument("lists", nargs="*", metavar="LIST", help="URL list files or folders (default: crawl.url_lists)")
    p.add_argument("--out", metavar="DIR", help="raw folder (default: data.raw_dir)")
    p.add_argument("--log", metavar="FILE", help="crawl log (default: <raw_dir>/crawl_log.jsonl)")

    p = add("ingest", "scan raw folders (recursively, any extension) into a clean, deduplicated "
            "manifest per domain: <out_dir>/<domain>/manifest.parquet", _cmd_ingest)
    p.add_argument("--raw-dir", metavar="DIR", help="raw crawl root (default: data.raw_dir)")
    p.add_argument("--out-dir", metavar="DIR", help="output root (default: ingest.out_dir)")
    p.add_argument("--domain", action="append", choices=("photo", "anime"),
                   help="only this domain (repeatable; default: data.domains)")

    for name, text, func in (
        ("detect", "face detection, 5-point + full landmarks and face quality checks per image", _cmd_detect),
        ("matte", "background removal (alpha matte) of images with a kept face", _cmd_matte),
        ("align", "align faces to the canonical template: 256 and 128 px RGBA crops and landmarks", _cmd_align),
        ("curate", "curation report (reports/curation/index.html) and deterministic train/val/test split",
         _cmd_curate),
        ("pack", "pack each split into memory-mapped arrays for training", _cmd_pack),
    ):
        p = add(name, text, func)
        p.add_argument("--domain", action="append", choices=("photo", "anime"),
                       help="only this domain (repeatable; default: data.domains)")

    p = add("export-dataset", "write the curated aligned crops as a dataset folder: PNGs named by sha256 and "
            "face index, manifest.csv/.jsonl with provenance (raw file, source URL, license, fetch time) "
            "and LICENSES.md (faces per license)", _cmd_export_dataset)
    p.add_argument("--out", metavar="DIR", required=True, help="output folder (new or empty, else --force)")
    p.add_argument("--domain", action="append", choices=("photo", "anime"),
                   help="only this domain (repeatable; default: data.domains)")
    p.add_argument("--split", action="append", choices=("train", "val", "test"),
                   help="only this split (repeatable; default: all)")
    p.add_argument("--px", type=int, choices=(128, 256), default=256, help="crop size (default 256)")
    p.add_argument("--force", action="store_true", help="replace a non-empty output folder")

    p = add("cartoonize", "cartoonize new photos with a trained model: every face (or the largest) "
            "aligned, translated, saved as a crop or pasted back into the photo", _cmd_cartoonize)
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders (recursive) or globs")
    p.add_argument("--run", metavar="RUN", help=RUN_HELP)
    p.add_argument("--out", metavar="DIR", required=True, help="output folder (summary.json goes there too)")
    p.add_argument("--paste-back", action="store_true",
                   help="blend the cartoon faces back into the photo: <stem>_cartoon.png "
                        "(default: aligned crops <stem>_face<k>.png)")
    p.add_argument("--faces", choices=("all", "largest"), default="all", help="faces per photo (default all)")
    p.add_argument("--matte", action="store_true",
                   help="background matte: limits the paste-back blend (or becomes the crops' alpha)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), help="override runtime.device")
    p.add_argument("--onnx", metavar="EXPORT_DIR", help="run an ONNX export (toonlab export) instead of --run")

    p = add("export", "export a trained run's generators to ONNX (dynamic batch) with a parity check "
            "against PyTorch (max abs difference < 1e-3 on random and real inputs)", _cmd_export)
    p.add_argument("--run", metavar="RUN", required=True, help=RUN_HELP)
    p.add_argument("--checkpoint", metavar="FILE", help="checkpoint (default: the run's latest)")
    p.add_argument("--out", metavar="DIR", help="output folder (default: <run>/export)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17; 11 is the lowest every family needs)")

    from toonlab.apps.import_weights import formats  # light: the families' importers, no torch

    import_formats = formats()
    p = add("import-weights", f"turn a reference implementation's checkpoint ({', '.join(import_formats)}) "
            "into a ToonLab run that evaluate, cartoonize, export and serve use like a trained one",
            _cmd_import_weights)
    p.add_argument("format", choices=list(import_formats), help="the reference implementation the files come "
                   "from: " + "; ".join(f"{name}: {f.help}" for name, f in import_formats.items()))
    p.add_argument("files", nargs="+", metavar="FILE", help="its checkpoint file(s), e.g. latest_net_G_A.pth "
                   "latest_net_G_B.pth [latest_net_D_A.pth latest_net_D_B.pth]")
    p.add_argument("--out", metavar="RUN_DIR", required=True, help="the run folder to write (new or empty)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", dest="sets",
                   help="set a params key of the family's section (e.g. model.ch=32, data.crop_px=128; "
                        "repeatable); overrides what is inferred from the tensor shapes")

    p = add("serve", "a local web page: upload a photo, pick a trained run, see the original and the "
            "cartoon side by side (FastAPI on 127.0.0.1; JSON API at /api/cartoonize)", _cmd_serve)
    p.add_argument("--run", action="append", metavar="RUN", dest="runs",
                   help=f"offer this run (repeatable; {RUN_HELP}; default: serve.runs, "
                        "else every trained run under train.out_dir that translates photos)")
    p.add_argument("--host", help="address to listen on (default: serve.host, 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default: serve.port; 0 picks a free one)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), help="override runtime.device")

    p = add("review", "a local page to overrule curate's checks face by face (keys: j/k move, r reject, a keep, "
            "u undo); decisions go to <curate.review_dir>/<domain>.csv at once, `dvc repro curate` applies them",
            _cmd_review)
    p.add_argument("--domain", action="append", choices=("photo", "anime"),
                   help="only this domain (repeatable; default: data.domains)")
    p.add_argument("--host", help="address to listen on (default: serve.host, 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default 8001; 0 picks a free one)")

    p = add("train", "train a model family (also under torchrun for DDP)", _cmd_train)
    p.add_argument("model", choices=registry.names(), help="model family (see toonlab.registry)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"),
                   help="override runtime.device (e.g. --device cpu when params ask for CUDA)")
    p.add_argument("--steps", type=int, help="train to this total step count (default: from the family's params)")
    p.add_argument("--resume", default="auto", metavar="auto|none|PATH",
                   help="auto: continue from the run's newest readable checkpoint (default); none: a new run "
                        "(in an empty folder, or with --restart); or a checkpoint file")
    p.add_argument("--restart", action="store_true",
                   help="start over: move the run folder aside to <run>.replaced-<time>/ first (nothing is deleted)")
    p.add_argument("--run-dir", metavar="DIR", help="run folder (default: <train.out_dir>/<model>, or the "
                   "family's own setting, e.g. whitebox.pretrain.run_dir)")
    p.add_argument("--variant", metavar="NAME",
                   help="an ablation variant from params.yaml (ablations.variants): the model's settings with "
                        "the variant's overrides, run folder <train.out_dir>/<ablations.runs_subdir>/NAME")

    p = add("evaluate", "measure trained runs on the held-out test faces: FID/KID, landmark and identity "
            "preservation, cycle PSNR/SSIM -> <evaluate.metrics_dir>/<run>.json", _cmd_evaluate)
    p.add_argument("runs", nargs="*", metavar="RUN", help=f"{RUN_HELP} (default: evaluate.runs)")
    p.add_argument("--checkpoint", metavar="FILE", help="checkpoint to evaluate (one run only; default: latest)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), help="override runtime.device")

    add("report", "write the HTML report (report.out): data, metrics, ablations, grids, loss curves",
        _cmd_report)

    unconditional = registry.names("unconditional")
    p = add("generate", "generate images with a trained unconditional model: draw --search noise "
            "vectors, keep the --num the discriminator scores highest", _cmd_generate)
    p.add_argument("--run", metavar="RUN", default=unconditional[0] if unconditional else None,
                   help=f"{RUN_HELP} (default: {unconditional[0] if unconditional else 'none'})")
    p.add_argument("--checkpoint", metavar="FILE", help="checkpoint (default: the run's latest)")
    p.add_argument("--num", type=int, default=64, help="images to keep (default 64)")
    p.add_argument("--search", type=int, default=512, help="noise vectors to score (default 512)")
    p.add_argument("--seed", type=int, default=0, help="noise seed (default 0): same seed, same images")
    p.add_argument("--mean", type=float, help="noise mean (default: the family's sample.noise_mean)")
    p.add_argument("--std", type=float, help="noise std (default: the family's sample.noise_std)")
    p.add_argument("--out", metavar="DIR", help="output folder (default: <run folder>/generated)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), help="override runtime.device")

    p = add("pipeline", "the stages DVC and Snakemake run: commands, modules and code dependencies; "
            "renders dvc.yaml from the stage table and the model registry", _cmd_pipeline)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--deps", metavar="STAGE", help="print the code files a stage depends on")
    g.add_argument("--write", action="store_true", help="write dvc.yaml")
    g.add_argument("--check", action="store_true", help="fail when dvc.yaml differs from what --write writes")
    g.add_argument("--markdown", action="store_true", help="print the README's stage table")

    p = add("snakemake", "do one DVC stage's work with Snakemake (the command of every dvc.yaml stage): only "
            "the stage's own rules, forced when Snakemake has no record of its outputs (a fresh clone, an "
            "experiment's temporary clone), under the profile in $SNAKEMAKE_PROFILE or profiles/local",
            _cmd_snakemake)
    p.add_argument("stage", help="a stage as DVC names it (toonlab pipeline lists them; evaluate@<run>)")
    p.add_argument("--dry-run", action="store_true", help="print the Snakemake command, run nothing")
    p.set_defaults(snakemake_args=[])
    p.epilog = "More Snakemake options go after --, e.g. toonlab snakemake pack -- --profile profiles/slurm"
    return parser


def _device(params: Any, override: str | None):
    from toonlab.train.device import resolve_device

    return resolve_device(params.runtime.device, override)


def _cmd_pipeline(args: argparse.Namespace, params: Any) -> int:
    from toonlab import pipeline

    if args.deps:
        try:
            print("\n".join(pipeline.code_deps(args.deps)))
        except KeyError as exc:
            raise UsageError(str(exc.args[0])) from None
    elif args.write:
        root = pipeline.project_root()
        fileio.write_text(root / pipeline.DVC_YAML, pipeline.dvc_yaml(params, root))
        log.info("wrote %s (%d stages)", root / pipeline.DVC_YAML, len(pipeline.stages()))
        stamped = pipeline.write_stamps(root)
        if stamped:
            log.info("code stamps of the installed ToonLab written in %s: %s", root / pipeline.STAMP_DIR,
                     ", ".join(stamped))
    elif args.check:
        diff = pipeline.check_dvc_yaml(params)
        if diff:
            raise ToonlabError(f"{pipeline.DVC_YAML} is out of date ({', '.join(diff)}): "
                               "run `toonlab pipeline --write`")
        log.info("%s matches the stage table", pipeline.project_root() / pipeline.DVC_YAML)
    elif args.markdown:
        print(pipeline.markdown_table() + "\n\n" + command_table())
    else:
        for s in pipeline.stages():
            print(f"{s.name:<26} {s.command:<40} {len(pipeline.code_deps(s.name)):>3} code files  "
                  f"{', '.join(s.entry[:2])}")
    return 0


def _cmd_snakemake(args: argparse.Namespace, params: Any) -> int:
    import os
    import shlex
    import shutil

    from toonlab import drivers

    if getattr(args, "params", None) and Path(args.params).resolve() != Path(DEFAULT_PARAMS).resolve():
        raise UsageError("toonlab snakemake runs the Snakefile, which reads params.yaml: "
                         "give Snakemake overrides after -- (--config key=value) instead of --params")
    from toonlab.pipeline import project_root

    root = project_root()
    if not any((root / f).is_file() for f in ("Snakefile", "workflow/Snakefile", "snakefile")):
        raise ToonlabError(f"{root} has no Snakefile: the stages run ToonLab's Snakemake workflow (Snakefile and "
                           "workflow/rules/ of ToonLab's repository); copy both into the project, or run the "
                           "steps with the toonlab commands (toonlab pipeline lists them)")
    stage, _, item = args.stage.partition("@")
    run = drivers.stage_run(stage, params, item=item or None, extra=args.snakemake_args)
    why = ("forced: Snakemake has no record of making its outputs, and DVC found it stale" if run.forced
           else "Snakemake's records decide what is stale")
    print(f"toonlab: stage {args.stage}: {shlex.join(run.argv)}  ({why})", file=sys.stderr, flush=True)
    if args.dry_run:
        return 0
    local = Path(sys.executable).parent / "snakemake"
    exe = str(local) if local.is_file() else shutil.which("snakemake")
    if exe is None:
        raise ToonlabError("snakemake is not installed here: pip install 'toonlab[pipeline]' "
                           "(make install puts it in .venv/bin)")
    os.execv(exe, [exe, *run.argv[1:]])
    return 0  # not reached


def command_table() -> str:
    """The README's table of commands: each `toonlab` subcommand and the modules its
    handler calls (read from the handler's imports)."""
    import ast
    import inspect
    import textwrap

    rows = ["| `toonlab` command | module(s) |", "|---|---|"]
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for name, parser in sub.choices.items():
        func = parser.get_default("func")
        tree = ast.parse(textwrap.dedent(inspect.getsource(func)))
        mods = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module
                and n.module.startswith("toonlab") and not n.module.endswith((".params", ".device"))]
        mods = [m for m in mods if m != "toonlab"] + [
            f"toonlab.{a.name}" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module == "toonlab"
            for a in n.names]
        rows.append(f"| `{name}` | {', '.join(f'`{m}`' for m in dict.fromkeys(mods)) or '`toonlab.cli`'} |")
    return "\n".join(rows)


def _cmd_export(args: argparse.Namespace, params: Any) -> int:
    from toonlab.apps.export import export_run

    manifest = export_run(args.run, Path(args.out) if args.out else None, opset=args.opset,
                          checkpoint=args.checkpoint, train_out_dir=params.train.out_dir)
    log.info("exported %s to ONNX (opset %s): %s; parity max |diff| %s", manifest["family"], manifest["opset"],
             ", ".join(manifest["files"].values()), manifest.get("parity"))
    return 0


def _cmd_import_weights(args: argparse.Namespace, params: Any) -> int:
    from toonlab.apps.import_weights import formats, import_weights

    family = formats()[args.format].family
    base = registry.get(family).section_of(params).model_dump(mode="json")
    summary = import_weights(args.format, args.files, args.out, args.sets, base=base)
    log.info("wrote run %s (%s, checkpoint %s); use it as --run %s", args.out, summary["family"],
             Path(summary["checkpoint"]).name, args.out)
    return 0


def _cmd_cartoonize(args: argparse.Namespace, params: Any) -> int:
    from toonlab.apps.cartoonize import run_cartoonize
    from toonlab.apps.params import CartoonizeParams

    if not args.run and not args.onnx:
        raise UsageError("say which model to use: --run RUN_OR_CHECKPOINT (or --onnx EXPORT_DIR)")
    if args.run and args.onnx:
        raise UsageError("give --run or --onnx, not both")
    settings = CartoonizeParams(faces=args.faces, paste_back=args.paste_back, matte=args.matte)
    run_cartoonize(params, args.run, args.inputs, args.out, settings, _device(params, args.device), onnx=args.onnx)
    return 0


def _cmd_serve(args: argparse.Namespace, params: Any) -> int:
    from toonlab.apps.serve import serve

    if args.port is not None and not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be 0..65535, not {args.port}")
    serve(params, args.runs or [], _device(params, args.device), host=args.host, port=args.port,
          on_ready=lambda line: print(line, flush=True))
    return 0


def _cmd_review(args: argparse.Namespace, params: Any) -> int:
    from toonlab.apps.review import review

    if args.port is not None and not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be 0..65535, not {args.port}")
    review(params, args.domain or list(params.data.domains), host=args.host, port=args.port,
           on_ready=lambda line: print(line, flush=True))
    return 0


def _cmd_train(args: argparse.Namespace, params: Any) -> int:
    from toonlab.train.launch import cli_argv, train_family, train_under_torchrun, wants_torchrun

    fparams, run_dir, steps = None, args.run_dir, args.steps
    if args.variant:   # an ablation variant: the family's settings with its overrides, its own folder
        from toonlab.ablations import variant_run

        fparams, variant_dir, steps = variant_run(params, args.model, args.variant, args.steps)
        run_dir = run_dir or variant_dir
    if wants_torchrun(params):   # train.gpus x train.nodes > 1: this command again, under torchrun
        return train_under_torchrun(params, args.model, cli_argv(args), steps=steps, run_dir=run_dir,
                                    device=args.device)
    train_family(params, args.model, fparams=fparams, steps=steps, resume=args.resume, run_dir=run_dir,
                 device=args.device, restart=args.restart)
    return 0


def _cmd_evaluate(args: argparse.Namespace, params: Any) -> int:
    from toonlab.eval.evaluate import evaluate_run

    runs = args.runs or list(params.evaluate.runs)
    if args.checkpoint and len(runs) != 1:
        raise UsageError("--checkpoint needs exactly one RUN")
    device = _device(params, args.device)
    for run in runs:
        evaluate_run(run, params, device, checkpoint=args.checkpoint)
    return 0


def _cmd_report(args: argparse.Namespace, params: Any) -> int:
    from toonlab.eval.report import build_report

    path = build_report(params)
    log.info("open %s in a browser (self-contained, works offline)", path)
    return 0


def _cmd_generate(args: argparse.Namespace, params: Any) -> int:
    from toonlab.runs.generate import generate_images

    n, out = generate_images(args.run, params, args.out, checkpoint=args.checkpoint, num=args.num,
                             search=args.search, mean=args.mean, std=args.std, seed=args.seed,
                             device=_device(params, args.device))
    log.info("%d images written to %s (best of %d by the discriminator)", n, out, args.search)
    return 0


def _cmd_demo_data(args: argparse.Namespace, params: Any) -> int:
    from toonlab.data.demo import write_demo_crawl

    demo = params.demo if args.seed is None else params.demo.model_copy(update={"seed": args.seed})
    out = args.out or params.data.raw_dir
    if args.out is None and params.data.source != "demo":
        raise UsageError(
            f"data.source is '{params.data.source}', so {out} holds your own crawl; refusing to "
            "overwrite it with demo data. Pass --out DIR to write the demo elsewhere."
        )
    summary = write_demo_crawl(out, demo, force=args.force)
    log.info("demo crawl written to %s: %s", out, ", ".join(f"{k} {v}" for k, v in summary.items()))
    return 0


def _cmd_crawl(args: argparse.Namespace, params: Any) -> int:
    from toonlab.data.crawl import crawl

    out = Path(args.out or params.data.raw_dir)
    lists = [Path(p) for p in (args.lists or params.crawl.url_lists)]
    missing = [str(p) for p in lists if not p.exists()]
    if missing:
        raise UsageError(f"URL list not found: {', '.join(missing)}")
    log_path = Path(args.log) if args.log else out / "crawl_log.jsonl"
    summary = crawl(lists, out, log_path, params.crawl, domains=params.data.domains, decode=params.decode)
    log.info("crawl log written to %s: %s", log_path, summary)
    return 0


def _cmd_ingest(args: argparse.Namespace, params: Any) -> int:
    from toonlab.data.ingest import ingest_domain

    ingest = params.ingest
    if args.out_dir:
        ingest = ingest.model_copy(update={"out_dir": args.out_dir})
    for domain in args.domain or params.data.domains:
        ingest_domain(args.raw_dir or params.data.raw_dir, domain, ingest, params.decode,
                      workers=params.runtime.workers)
    return 0


def _each_domain(args: argparse.Namespace, params: Any, run) -> int:
    for domain in args.domain or params.data.domains:
        run(params, domain)
    return 0


def _cmd_detect(args: argparse.Namespace, params: Any) -> int:
    from toonlab.faces.detect import run_detect

    return _each_domain(args, params, run_detect)


def _cmd_matte(args: argparse.Namespace, params: Any) -> int:
    from toonlab.faces.matte import run_matte

    return _each_domain(args, params, run_matte)


def _cmd_align(args: argparse.Namespace, params: Any) -> int:
    from toonlab.faces.align import run_align

    return _each_domain(args, params, run_align)


def _cmd_curate(args: argparse.Namespace, params: Any) -> int:
    from toonlab.faces.curate import curate

    curate(args.domain or list(params.data.domains), params.data.raw_dir, params.ingest.out_dir,
           params.align.out_dir, params.curate)
    return 0


def _cmd_pack(args: argparse.Namespace, params: Any) -> int:
    from toonlab.faces.pack import pack

    pack(args.domain or list(params.data.domains), params.curate.out_dir, params.align.out_dir, params.pack)
    return 0


def _cmd_export_dataset(args: argparse.Namespace, params: Any) -> int:
    from toonlab.apps.export_dataset import SPLITS, export_dataset

    export_dataset(args.out, args.domain or list(params.data.domains), params.curate.out_dir, params.align.out_dir,
                   splits=args.split or SPLITS, px=args.px, force=args.force)
    return 0


def _cmd_doctor(args: argparse.Namespace, params: Any) -> int:
    from toonlab.util.opencv import state
    from toonlab.weights import doctor_report

    print(doctor_report())
    cv = state()
    print(cv.line() + "".join(f"\n  problem: {p}" for p in cv.problems()))
    return 0


def _cmd_weights(args: argparse.Namespace, params: Any) -> int:
    """`weights fetch` fetches regardless of runtime.fetch_weights (asking is consent); one line
    per file on stdout, one `toonlab: error:` line per failure on stderr, exit 1 if any failed."""
    from toonlab import weights

    if args.action == "list":
        if args.names:
            raise UsageError("weights list takes no names")
        print("\n".join(weights.weights_table()))
        return 0
    names = list(weights.WEIGHTS) if not args.names or "all" in args.names else list(dict.fromkeys(args.names))
    unknown = [n for n in names if n not in weights.WEIGHTS]
    if unknown:
        raise UsageError(f"unknown weights {', '.join(unknown)}; choose from {', '.join(weights.WEIGHTS)} or all")
    failed = 0
    for name in names:
        w = weights.WEIGHTS[name]
        if w.available():
            print(f"{name}: present in {w.directory()}")
            continue
        try:
            print(f"{name}: fetched into {weights.fetch(name)}")
        except weights.FetchError as exc:
            failed += 1
            print(f"toonlab: error: {name}: {exc}", file=sys.stderr)
    return 1 if failed else 0


def _cmd_params(args: argparse.Namespace, params: Any) -> int:
    import yaml

    data = params.model_dump(mode="json")
    if args.section:
        if args.section not in data:
            raise UsageError(f"no section '{args.section}'; sections: {', '.join(data)}")
        data = {args.section: data[args.section]}
    print(yaml.safe_dump(data, sort_keys=False), end="")
    return 0


def _cmd_preset(args: argparse.Namespace, params: Any) -> int:
    from toonlab import presets

    if not args.preset:
        print("\n".join(presets.status(params)))
        return 0
    path = getattr(args, "params", None) or DEFAULT_PARAMS
    changes = presets.apply_preset(path, args.families, args.preset, dry_run=args.dry_run or args.dvc_exp)
    if args.dvc_exp:
        print(presets.dvc_exp_command(changes))
        return 0
    for change in changes:
        print(change)
    if not changes:
        log.info("%s: already %s", path, args.preset)
    elif args.dry_run:
        log.info("dry run: %d key(s) would change, %s not written", len(changes), path)
    else:
        log.info("%s: %d key(s) set to the %s preset; commit it to version the switch (git commit %s)",
                 path, len(changes), args.preset, path)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    # After `--`: options handed on untouched (`toonlab snakemake STAGE -- --profile X`).
    passed = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    try:
        args = parser.parse_args(argv)
        if passed and not hasattr(args, "snakemake_args"):
            parser.error(f"unrecognized arguments: -- {' '.join(passed)}")
    except SystemExit as exc:  # argparse: 0 for --help/--version, 2 for bad usage
        return int(exc.code or 0)
    if hasattr(args, "snakemake_args"):
        args.snakemake_args = passed
    debug = getattr(args, "debug", False)
    setup_logging(getattr(args, "log_level", "INFO"))
    try:
        params = load_params(getattr(args, "params", None))
        if hasattr(args, "workers"):
            if not 0 <= args.workers <= 256:
                raise UsageError(f"--workers must be 0 to 256, not {args.workers}")
            params = params.model_copy(update={"runtime": params.runtime.model_copy(
                update={"workers": args.workers})})
        if not hasattr(args, "log_level"):
            setup_logging(params.runtime.log_level)
        from toonlab import weights

        weights.configure(params.runtime.fetch_weights)  # a stage missing a pretrained file may fetch it
        return int(args.func(args, params) or 0)
    except ToonlabError as exc:
        if debug:
            traceback.print_exc()
        # 75 (EX_TEMPFAIL): a training stopped by a signal after its checkpoint, resumable
        print(f"toonlab: {'stopped' if exc.exit_code == 75 else 'error'}: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("toonlab: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug: still no raw traceback unless asked for
        from toonlab.extras import missing_extra

        if debug:
            traceback.print_exc()
        missing = missing_extra(exc)  # a module of an extra that is not installed: not a bug
        if missing:
            print(f"toonlab: error: {args.command}: {missing}", file=sys.stderr)
            return 1
        print(f"toonlab: internal error: {type(exc).__name__}: {exc}\n"
              "(run again with --debug for the traceback, and please report it)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
