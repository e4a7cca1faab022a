"""Command line: argument parsing only. Each subcommand calls one library function.

Exit codes: 0 success; 2 bad usage, config or input (one line naming the field or file);
1 runtime failure. `--debug` shows the traceback. A CONFIG argument is a YAML file or a shipped
recipe's name (`_load_task_config`, through `config.load_config`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .errors import Interrupted, ProgvidError

Handler = Callable[[argparse.Namespace], int]


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=str))


# --------------------------------------------------------------------------------------------
# handlers (imports are local so `progvid --help` stays fast)


def cmd_synth(args: argparse.Namespace) -> int:
    from .data.synthetic import write_dataset

    s = write_dataset(
        args.out, train=args.train, val=args.val, size=args.size, frames=args.frames,
        classes=args.classes, seed=args.seed, fmt=args.format, workers=args.workers,
        progress=sys.stderr.isatty(), kind=args.kind, sources=args.source,
    )
    print(f"wrote {s.train} train + {s.val} val clips, {s.classes} classes, to {s.out} "
          f"in {s.seconds:.1f} s")
    return 0


def cmd_data_probe(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from .data.video import probe

    info = probe(args.video, threads=args.threads)
    if args.json:
        _print_json(asdict(info))
    else:
        print(f"{args.video}: {info.frames} frames, {info.fps:.3f} fps, {info.width}x{info.height}, "
              f"{info.duration:.2f} s")
    return 0


def cmd_data_check(args: argparse.Namespace) -> int:
    from .data.check import check_list
    from .data.datasets import listed_at

    report = check_list(args.list, root=args.root, fmt=args.format, labels=args.labels,
                        workers=args.workers, progress=sys.stderr.isatty() and not args.json,
                        deep=args.deep)
    if args.json:
        _print_json(report.to_json())
    else:
        for tag, entries in (("BAD", report.bad), ("WARN", report.warnings)):
            for e in entries:
                print(f"{tag} {listed_at(e.source, e.line)}{e.path}: {e.reason}")
        warned = f" ({len(report.warnings)} with warnings)" if report.warnings else ""
        print(f"{report.ok} readable{warned}, {len(report.bad)} unreadable, "
              f"of {report.ok + len(report.bad)}")
    return 0 if not report.bad else 2


def cmd_data_prepare(args: argparse.Namespace) -> int:
    from .data.prepare import prepare_dataset

    r = prepare_dataset(args.src, args.out, fmt=args.format, root=args.root, labels=args.labels,
                        short_side=args.short_side, gop=args.gop, crf=args.crf,
                        preset=args.preset, tune=args.tune, workers=args.workers,
                        progress=sys.stderr.isatty() and not args.json,
                        echo=None if args.json else lambda line: print(line, file=sys.stderr))
    if args.json:
        _print_json(r.to_json())
        return 0
    print(f"prepared {r.prepared} of {r.total} videos ({r.encoded} encoded now, {r.reused} "
          f"already done) in {r.seconds:.1f} s; {len(r.skipped)} skipped"
          + (f" (listed in {r.out / 'skipped.jsonl'})" if r.skipped else ""))
    wrote = [str(p) for p in r.lists.values()] + ([str(r.classes)] if r.classes else [])
    print(f"wrote {', '.join(wrote)}")
    note = f" (or data.val={r.list_path.name} for a validation split)" if len(r.lists) == 1 else ""
    print("train on it with: " + " ".join(f"--set {o}" for o in r.overrides) + note)
    return 0


def cmd_config_validate(args: argparse.Namespace) -> int:
    from .config import to_plain
    from .tasks.preflight import preflight

    cfg = _load_task_config(args)
    preflight(cfg, data=not args.no_data)
    if args.print:
        import yaml

        print(yaml.safe_dump(to_plain(cfg), sort_keys=False), end="")
    else:
        print(f"{args.config}: ok ({type(cfg).__name__})")
    return 0


def cmd_config_list(args: argparse.Namespace) -> int:
    from .config import list_recipes

    rows = [{"name": r.name, "task": r.task(), "base": r.base(), "description": r.description()}
            for r in list_recipes()]
    if args.json:
        _print_json(rows)
        return 0
    name_w = max([4, *(len(r["name"]) for r in rows)])
    task_w = max([4, *(len(r["task"]) for r in rows)])
    print(f"{'NAME':<{name_w}}  {'TASK':<{task_w}}  DESCRIPTION")
    for r in rows:
        print(f"{r['name']:<{name_w}}  {r['task']:<{task_w}}  {r['description']}".rstrip())
    return 0


def cmd_config_show(args: argparse.Namespace) -> int:
    from .config import resolve_config

    print(resolve_config(args.config).read_text(), end="")
    return 0


def cmd_pretrain(args: argparse.Namespace) -> int:
    cfg = _load_task_config(args, "pretrain", "hcml")  # validate before launching anything
    if _launches(args):
        from .engine.distributed import launch

        return launch(args.nproc, _strip_nproc(sys.argv[1:]))
    if cfg.task == "hcml":
        from .tasks.hcml import run_hcml_pretrain as run
    else:
        from .tasks.pretrain import run_pretrain as run

    result = run(cfg, out=args.out, resume=args.resume, config_path=args.config,
                 allow_changes=args.allow_changed_budget)
    if result.checkpoint is not None:
        print(f"done: {result.steps} steps, final loss {result.final_loss:.4f}, "
              f"{result.flops / 1e15:.4g} PFLOPs (MACs), checkpoint {result.checkpoint}")
    return 0


def _strip_nproc(argv: list[str]) -> list[str]:
    """`argv` without its --nproc option, however argparse took it (`--nproc 2`, `--nproc=2`,
    or an abbreviation such as `--npro 2`): the ranks must not launch again."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        name, eq, _ = a.partition("=")
        if len(name) > 2 and "--nproc".startswith(name):
            skip = not eq
            continue
        out.append(a)
    return out


def _launches(args: argparse.Namespace) -> bool:
    """Whether this command starts `--nproc` ranks: not inside a rank (torchrun sets
    LOCAL_RANK), which runs its share instead."""
    return bool(args.nproc and args.nproc > 1 and "LOCAL_RANK" not in os.environ)


def _load_task_config(args: argparse.Namespace, *tasks: str) -> Any:
    """The command's CONFIG with its --set overrides, validated; CONFIG is a file or a shipped
    recipe's name (a file that exists wins). With `tasks`, the config must be for one of them."""
    from .config import load_config
    from .errors import ConfigError

    cfg = load_config(args.config, args.set)  # validate before launching anything
    if tasks and cfg.task not in tasks:
        what = {"pretrain": "task: pretrain (VideoMAE / TPL)"}
        needs = " or ".join(what.get(t, f"task: {t}") for t in tasks)
        raise ConfigError(f"{args.config}: `task` is {cfg.task!r}; `progvid {args.command}` "
                          f"needs {needs}")
    return cfg


def _names_config(target: str) -> bool:
    """Whether CONFIG_OR_RUN names a config: an existing YAML file, or (nothing of that name
    existing) a .yaml name or a shipped recipe's name. Anything else is a run or checkpoint."""
    from .config import find_recipe

    path = Path(target)
    if path.exists():
        return path.is_file() and path.suffix in (".yaml", ".yml")
    return target.endswith((".yaml", ".yml")) or find_recipe(target) is not None


def cmd_finetune(args: argparse.Namespace) -> int:
    cfg = _load_task_config(args, "finetune")
    if _launches(args):
        from .engine.distributed import launch

        return launch(args.nproc, _strip_nproc(sys.argv[1:]))
    from .tasks.finetune import run_finetune

    result = run_finetune(cfg, out=args.out, resume=args.resume, config_path=args.config,
                          allow_changes=args.allow_changed_budget)
    if result.checkpoint is not None:
        print(f"done: {result.steps} steps, final loss {result.final_loss:.4f}, "
              f"checkpoint {result.checkpoint}")
        ev = result.checkpoint.parent.parent / "eval.json"
        if ev.is_file():
            r = json.loads(ev.read_text())
            print(f"eval ({r['views']} views, {r['num_videos']} videos): top-1 {r['top1']:.4f}, "
                  f"top-5 {r['top5']:.4f}, mean class accuracy {r['mean_class_accuracy']:.4f}")
    return 0


def _parse_views(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    from .errors import ProgvidError

    try:
        clips, crops = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise ProgvidError(f"--views: expected CLIPSxCROPS such as 5x3, got {text!r}") from None
    if clips < 1 or crops not in (1, 3):
        raise ProgvidError(f"--views: clips must be >= 1 and crops 1 or 3, got {text!r}")
    return clips, crops


def cmd_eval(args: argparse.Namespace) -> int:
    from .tasks.evaluate import evaluate_checkpoint

    target = args.target
    args.config = None
    if _names_config(target):
        from .tasks.base import run_dir_for

        args.config = target
        target = str(run_dir_for(_load_task_config(args, "finetune"), None, target))
    r = evaluate_checkpoint(target, views=_parse_views(args.views), batch_size=args.batch_size,
                            # with a config, --set also places the run; its data.* also apply here
                            data_overrides=[o for o in args.set or [] if o.startswith("data.")]
                            if args.config else args.set,
                            device=_device(args.device))
    if os.environ.get("RANK", "0") != "0":
        return 0  # under torchrun every rank has the result; one prints it
    if args.json:
        _print_json({k: v for k, v in r.items() if k not in ("indices_evaluated",)})
    else:
        print(f"{r['num_videos']} videos, {r['views']} views: top-1 {r['top1']:.4f}, "
              f"top-5 {r['top5']:.4f}, mean class accuracy {r['mean_class_accuracy']:.4f}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from .tasks.evaluate import predict

    r = predict(args.checkpoint, args.inputs, topk=args.topk, batch_size=args.batch_size,
                views=_parse_views(args.views), root=args.root, fmt=args.format,
                labels=args.labels, device=_device(args.device))
    for path, reason in r.failed:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    if args.json:
        _print_json(r.to_json())
    elif args.csv is not None:
        _write_out(args.csv, r.write_csv)
    else:
        for p in r.predictions:
            top = ", ".join(f"{s:.2%} {name}" for name, s in zip(p.labels, p.scores, strict=True))
            print(f"{p.path}: {top}")
    total = len(r.predictions) + len(r.failed)
    if not r.predictions:
        from .errors import DataError

        raise DataError(r.failed[0][0] if r.failed else "INPUT",
                        f"no readable video among {total} input(s)" if total else "no videos")
    print(f"predicted {len(r.predictions)} of {total} video(s) ({r.views} views)"
          + (f"; {len(r.failed)} unreadable, skipped" if r.failed else ""), file=sys.stderr)
    return 0


def _write_out(target: str, write: Callable[[Any], Any]) -> None:
    """Write to stdout for "-", else to the file `target` (creating its folder)."""
    if target == "-":
        write(sys.stdout)
        return
    out = Path(target)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("w", newline="") as fh:
            write(fh)
    except OSError as exc:
        raise ProgvidError(f"{out}: cannot write ({exc.strerror or exc})") from None
    print(f"wrote {out}", file=sys.stderr)


def cmd_flops(args: argparse.Namespace) -> int:
    from .progressive.flops import flops_report, format_flops

    r = flops_report(args.model, frames=args.frames, img_size=args.size, patch_size=args.patch,
                     tubelet_size=args.tubelet, mask_ratio=args.mask_ratio,
                     decoder_depth=args.decoder_depth, decoder_mask=args.decoder_mask,
                     decoder_mask_ratio=args.decoder_mask_ratio)
    if args.json:
        _print_json(r)
    else:
        print(format_flops(r))
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from .progressive.plan import format_plan
    from .tasks.preflight import preflight
    from .tasks.pretrain import plan_report

    cfg = _load_task_config(args, "pretrain")
    preflight(cfg, data=False)  # errors name the config field; a typo'd size fails at once
    table = plan_report(cfg, dataset_size=args.dataset_size, world=args.world, probe=args.probe)
    if args.json:
        _print_json(table)
    else:
        print(format_plan(table))
    return 0


def cmd_viz_recon(args: argparse.Namespace) -> int:
    from .viz import recon_from_checkpoint

    out = recon_from_checkpoint(args.checkpoint, args.video, args.out, seed=args.seed)
    print(f"wrote {out}")
    return 0


def cmd_viz_flow(args: argparse.Namespace) -> int:
    from .viz import flow_from_checkpoint

    out = flow_from_checkpoint(args.checkpoint, args.video, args.out, pairs=args.pairs)
    print(f"wrote {out}")
    return 0


def cmd_deploy(args: argparse.Namespace) -> int:
    from .tasks.hcml import deploy_report

    r = deploy_report(args.checkpoint, args.out)
    if args.json:
        _print_json(r)
    else:
        print(f"deployed HCML (no flow net: {r['params_flow_net']:,} params, no predictors: "
              f"{r['params_predictors']:,} params) on input {r['input']}:")
        print(f"  parameters {r['params_deploy']:,} vs plain backbone {r['params_backbone']:,} "
              f"({100 * r['params_overhead']:+.1f}%)")
        print(f"  GMACs {r['macs_deploy'] / 1e9:.4g} vs plain backbone {r['macs_backbone'] / 1e9:.4g} "
              f"({100 * r['macs_overhead']:+.1f}%)")
        if "written" in r:
            print(f"  wrote {r['written']}")
    return 0


def cmd_plot_losses(args: argparse.Namespace) -> int:
    from .figures import plot_losses

    out = plot_losses(args.runs, args.out, keys=tuple(args.keys))
    print(f"wrote {out}")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from .tasks.search import run_search

    cfg = _load_task_config(args, "pretrain")
    out = args.out or str(Path("runs") / f"search_{Path(args.config).stem}")
    res = run_search(cfg, out=out, workers=args.workers, config_path=args.config)
    best = res.best_trial
    print(f"best plan: {best.get('stages')} (trial {best.get('trial_id')}); "
          f"{res.executed} trial(s) run now; wrote {res.best_yaml}, {res.results_md}, {res.plot}")
    return 0


def cmd_plot_tradeoff(args: argparse.Namespace) -> int:
    from .progressive.tradeoff import plot_tradeoff

    levels = {}
    for item in args.level or []:
        name, sep, value = item.rpartition("=")
        try:
            levels[name] = float(value)
        except ValueError:
            name = ""
        if not sep or not name:
            raise ProgvidError(f"--level: expected NAME=VALUE (e.g. chance=0.1), got {item!r}")
    out = plot_tradeoff(args.runs, args.out, group_by=args.group_by, metric=args.metric,
                        levels=levels)
    print(f"wrote {out}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .tasks.export import export_checkpoint

    r = export_checkpoint(args.checkpoint, args.out_dir, args.format)
    print(f"wrote {r.folder} (load with transformers.{r.architecture}.from_pretrained and "
          "AutoImageProcessor.from_pretrained)")
    return 0


def cmd_config_reference(args: argparse.Namespace) -> int:
    from .config.reference import reference

    print(reference(), end="")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(out=args.out, quick=args.quick, with_hcml=args.with_hcml, seed=args.seed,
                    sources=tuple(args.source))


# --------------------------------------------------------------------------------------------
# parser


def _add_device_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="where the model runs (default auto: cuda when available; under "
                        "torchrun each process takes its local rank's GPU)")


def _device(name: str) -> Any:
    from .engine.distributed import resolve_device

    return resolve_device(name, field="--device")


def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set optim.base_lr=3e-4 (repeatable)")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _add_training_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default=None, help="run folder (default: config `out`, else runs/<name>)")
    p.add_argument("--resume", default=None, metavar="auto|PATH",
                   help="resume: `auto` picks the newest complete checkpoint with finite weights")
    p.add_argument("--allow-changed-budget", action="store_true",
                   help="resume with a different budget or plan (model and task must match)")
    p.add_argument("--nproc", type=_positive_int, default=None,
                   help="processes on this machine (launches through torch.distributed.run)")


def _config_help(task: str) -> str:
    return f"YAML file or shipped recipe name ({task}); `progvid config list` shows the recipes"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="progvid",
        description="Compute-efficient self-supervised video pre-training and action recognition.",
    )
    parser.add_argument("--debug", action="store_true", help="show Python tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("synth", help="write a synthetic dataset (real video files): moving shapes "
                       "or camera pans")
    p.add_argument("out", help="output folder")
    p.add_argument("--kind", choices=["motion", "pan"], default="motion",
                   help="motion: 10 classes of moving shapes (default); pan: 8 camera-pan "
                   "directions over real footage (--source) or dead-leaves images")
    p.add_argument("--source", action="append", default=[], metavar="VIDEO",
                   help="kind pan: a video whose frames are panned over (repeatable); the first "
                   "70%% of its frames feed training clips, the rest validation clips")
    p.add_argument("--train", type=int, default=200, help="training clips (default 200)")
    p.add_argument("--val", type=int, default=50, help="validation clips (default 50)")
    p.add_argument("--size", type=_positive_int, default=64, help="frame size in pixels (default 64)")
    p.add_argument("--frames", type=_positive_int, default=16, help="frames per clip (default 16)")
    p.add_argument("--classes", type=int, default=None, help="number of classes (default all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--format", choices=["mp4", "webm"], default="mp4")
    p.add_argument("--workers", type=_positive_int, default=2, help="encoding processes (default 2)")
    p.set_defaults(func=cmd_synth)

    data = sub.add_parser("data", help="inspect videos and datasets")
    dsub = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    dsub.required = True
    p = dsub.add_parser("probe", help="frames, fps, size and duration of one video")
    p.add_argument("video")
    p.add_argument("--json", action="store_true", help="print a JSON object")
    p.add_argument("--threads", type=_positive_int, default=1, help="decoder threads")
    p.set_defaults(func=cmd_data_probe)
    p = dsub.add_parser("check", help="decode every entry of a dataset and report unreadable ones")
    p.add_argument("list", help="list file ('path [label]' lines), SSv2 split json, or folder")
    p.add_argument("--root", default=None, help="folder the paths are relative to (default: the list's)")
    p.add_argument("--format", choices=["list", "ssv2", "folder", "unlabeled"], default=None,
                   help="dataset layout (default: from the file type)")
    p.add_argument("--labels", default=None, help="SSv2 labels json or classes.txt")
    p.add_argument("--workers", type=_positive_int, default=2, help="parallel checks (default 2)")
    p.add_argument("--deep", action="store_true",
                   help="decode every frame (slow): finds damage in the middle of a file that "
                        "the quick check (first and last frames) misses")
    p.add_argument("--json", action="store_true", help='print {"ok": N, "bad": [...]}')
    p.set_defaults(func=cmd_data_check)
    p = dsub.add_parser(
        "prepare", help="re-encode a dataset for cheap clip reads (short side, short GOP); resumable",
        description="Re-encode every video of one or more splits to h264 mp4 with the shorter side "
        "at --short-side (never upscaled) and a keyframe every --gop frames, keeping every frame "
        "and the frame rate, dropping audio. Writes OUT/videos/..., OUT/<split>.csv per source "
        "('path label' lines relative to OUT), OUT/classes.txt when the source has class names, "
        "and OUT/skipped.jsonl; prints the --set overrides that train on the result. Give the "
        "training split first (it becomes data.train, a second source data.val). Interrupted "
        "runs resume: rerun the same command and finished videos are not redone. Bad videos "
        "are reported (path: reason) and skipped; exit 2 only when nothing could be prepared.")
    p.add_argument("src", nargs="+", metavar="SRC",
                   help="list file, SSv2 split json or folder; several splits: train first")
    p.add_argument("out", metavar="OUT", help="output folder (new, empty, or an earlier run's)")
    p.add_argument("--format", choices=["list", "ssv2", "folder", "unlabeled"], default=None,
                   help="dataset layout (default: from the file type, like `data check`)")
    p.add_argument("--root", default=None, help="folder the paths are relative to (default: the list's)")
    p.add_argument("--labels", default=None, help="SSv2 labels json or classes.txt")
    p.add_argument("--short-side", type=int, default=320,
                   help="shorter side in pixels, never upscaled (default 320, as VideoMAE)")
    p.add_argument("--gop", type=int, default=16,
                   help="frames between keyframes: bounds what a clip read decodes (default 16)")
    p.add_argument("--crf", type=int, default=23, help="x264 quality, lower is better (default 23)")
    p.add_argument("--preset", default="veryfast", help="x264 preset (default veryfast)")
    p.add_argument("--tune", default="fastdecode",
                   help="x264 tune(s), comma-separated, or none (default fastdecode: about half "
                   "the decoding time for ~10%% more bytes)")
    p.add_argument("--workers", type=int, default=None,
                   help="encoding processes (default: one per CPU core)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_data_prepare)

    cfg = sub.add_parser(
        "config", help="the shipped recipes, config files and their reference",
        description="Every command that takes a CONFIG takes a YAML file or the name of a shipped "
                    "recipe (pretrain/tiny_tpl, or tiny_tpl when no other recipe has that name); "
                    "a file that exists wins. A config may start from another with "
                    "`base: NAME_OR_PATH` (a recipe, or a file relative to the config).")
    csub = cfg.add_subparsers(dest="config_command", metavar="SUBCOMMAND")
    csub.required = True
    p = csub.add_parser("list", help="the shipped recipes: name, task and description")
    p.add_argument("--json", action="store_true", help="print a JSON list (with each `base`)")
    p.set_defaults(func=cmd_config_list)
    p = csub.add_parser("show", help="print a recipe as written, comments kept "
                                     "(progvid config show NAME > my.yaml)")
    p.add_argument("config", metavar="NAME", help="recipe name (progvid config list) or file")
    p.set_defaults(func=cmd_config_show)
    p = csub.add_parser("validate", help="check a config (and overrides) without running it")
    p.add_argument("config", metavar="CONFIG", help=_config_help("any task"))
    _add_run_options(p)
    p.add_argument("--print", action="store_true",
                   help="print the fully resolved config (bases merged, every default spelled out)")
    p.add_argument("--no-data", action="store_true",
                   help="skip the checks that read the data's list files")
    p.set_defaults(func=cmd_config_validate)
    p = csub.add_parser("reference", help="print the configuration reference (markdown)")
    p.set_defaults(func=cmd_config_reference)

    p = sub.add_parser("pretrain", help="self-supervised pre-training: VideoMAE/TPL or HCML phases")
    p.add_argument("config", help=_config_help("task: pretrain, or task: hcml"))
    _add_run_options(p)
    _add_training_options(p)
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("finetune", help="fine-tune a classifier (then evaluate it on the val split)")
    p.add_argument("config", help=_config_help("task: finetune"))
    _add_run_options(p)
    _add_training_options(p)
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser("eval", help="multi-view testing of a fine-tuned run (top-1, top-5, confusion)")
    p.add_argument("target", metavar="CONFIG_OR_RUN",
                   help="run folder or checkpoint, transformers VideoMAEForVideoClassification "
                        "folder or hub id, or a finetune config (file or recipe name: evaluates "
                        "the run it writes); --set data.* changes the data, e.g. data.val")
    _add_run_options(p)
    p.add_argument("--views", default=None, metavar="CLIPSxCROPS",
                   help="test views, e.g. 5x3 (default: the run's eval settings)")
    p.add_argument("--batch-size", type=_positive_int, default=4,
                   help="videos per batch (default 4)")
    p.add_argument("--json", action="store_true")
    _add_device_option(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("predict", help="top-k classes for videos, folders or dataset lists")
    p.add_argument("checkpoint", help="fine-tuning run or checkpoint, transformers "
                   "VideoMAEForVideoClassification folder, or a hub id (org/name)")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="video files, folders (their videos) or dataset lists (as `data check`)")
    p.add_argument("--topk", type=_positive_int, default=5, help="classes per video (default 5)")
    p.add_argument("--batch-size", type=_positive_int, default=4, help="videos per batch (default 4)")
    p.add_argument("--views", default=None, metavar="CLIPSxCROPS",
                   help="test views, e.g. 1x1 (default: the run's eval settings)")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true",
                     help="print JSON: rows of path, labels, scores; and the skipped files")
    out.add_argument("--csv", default=None, metavar="OUT",
                     help="write CSV rows (path, label_1, score_1, ...) to OUT (`-`: stdout)")
    p.add_argument("--root", default=None, help="folder a list's paths are relative to")
    p.add_argument("--format", choices=["list", "ssv2", "folder", "unlabeled"], default=None,
                   help="layout of list/folder inputs (default: from the file type; folders: "
                   "every video under them)")
    p.add_argument("--labels", default=None, help="SSv2 labels json or classes.txt of a list")
    _add_device_option(p)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("plan", help="per-stage epochs, steps, learning rates and exact budgets")
    p.add_argument("config", help=_config_help("task: pretrain"))
    _add_run_options(p)
    p.add_argument("--json", action="store_true", help="print stages and totals as JSON")
    p.add_argument("--probe", action="store_true",
                   help="measure a few training steps per stage to estimate wall time")
    p.add_argument("--dataset-size", type=_positive_int, default=None,
                   help="training clips (default: count the config's training list)")
    p.add_argument("--world", type=_positive_int, default=1, help="processes the run will use (default 1)")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("flops", help="exact per-clip VideoMAE FLOPs (multiply-accumulates)")
    p.add_argument("--model", default="base", choices=["tiny", "small", "base", "large", "huge"])
    p.add_argument("--frames", type=_positive_int, default=16)
    p.add_argument("--size", type=_positive_int, default=224)
    p.add_argument("--patch", type=_positive_int, default=16)
    p.add_argument("--tubelet", type=_positive_int, default=2)
    p.add_argument("--mask-ratio", type=float, default=0.9)
    p.add_argument("--decoder-depth", type=_positive_int, default=4)
    p.add_argument("--decoder-mask", choices=["none", "running_cell"], default="none",
                   help="VideoMAE V2 dual masking of the decoder (default none)")
    p.add_argument("--decoder-mask-ratio", type=float, default=0.5,
                   help="share of positions the decoder drops (0.25, 0.5 or 0.75; default 0.5)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_flops)

    p = sub.add_parser("search", help="greedy search for the best TPL plan (resumable)")
    p.add_argument("config", help=_config_help("task: pretrain, with a `search:` section"))
    _add_run_options(p)
    p.add_argument("--out", default=None, help="search folder (default runs/search_<name>)")
    p.add_argument("--workers", type=_positive_int, default=None,
                   help="trials in parallel (default search.workers)")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("export", help="write a checkpoint in another format (transformers)")
    p.add_argument("checkpoint", help="pre-training or fine-tuned ViT run or checkpoint folder "
                   "(its newest checkpoint), or any source progvid loads")
    p.add_argument("out_dir")
    p.add_argument("--format", choices=["hf"], default="hf")
    p.set_defaults(func=cmd_export)

    viz = sub.add_parser("viz", help="pictures: masked reconstruction, optical flow")
    vsub = viz.add_subparsers(dest="viz_command", metavar="SUBCOMMAND")
    vsub.required = True
    p = vsub.add_parser("recon", help="original, masked input and reconstruction side by side")
    p.add_argument("checkpoint", help="pre-training run or checkpoint, transformers "
                   "VideoMAEForPreTraining folder, official .pth, or a hub id (org/name)")
    p.add_argument("video")
    p.add_argument("--out", required=True, help="PNG to write")
    p.add_argument("--seed", type=int, default=0, help="seed of the random mask")
    p.set_defaults(func=cmd_viz_recon)

    p = vsub.add_parser("flow", help="HCML optical flow (colour wheel) and warped frames of a clip")
    p.add_argument("checkpoint", help="HCML checkpoint (pre-training or fine-tuning) or run folder")
    p.add_argument("video")
    p.add_argument("--out", required=True, help="PNG to write")
    p.add_argument("--pairs", type=_positive_int, default=4, help="frame pairs to show (default 4)")
    p.set_defaults(func=cmd_viz_flow)

    p = sub.add_parser("deploy", help="HCML without flow net and predictors: parameters and FLOPs")
    p.add_argument("checkpoint", help="HCML checkpoint or run folder")
    p.add_argument("--out", default=None, help="also write the deployed weights to this folder")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_deploy)

    plot = sub.add_parser("plot", help="plots from run folders")
    psub = plot.add_subparsers(dest="plot_command", metavar="SUBCOMMAND")
    psub.required = True
    p = psub.add_parser("losses", help="metric curves (one panel per key) against step and "
                        "cumulative FLOPs")
    p.add_argument("runs", nargs="+", help="run folders or metrics.jsonl files")
    p.add_argument("--out", required=True, help="PNG to write")
    p.add_argument("--keys", nargs="+", default=["loss"], help="metrics to plot, one panel each (default loss)")
    p.set_defaults(func=cmd_plot_losses)

    p = psub.add_parser("tradeoff", help="top-1 against training PFLOPs and epochs, per method")
    p.add_argument("runs", nargs="+", help="run folders with an eval.json or probe.json")
    p.add_argument("--out", required=True, help="PNG to write")
    p.add_argument("--group-by", choices=["method", "model", "method+model"], default="method")
    p.add_argument("--metric", choices=["top1", "val_loss"], default="top1",
                   help="y axis: top-1, or the held-out masked-reconstruction loss")
    p.add_argument("--level", action="append", metavar="NAME=VALUE",
                   help="a reference line, e.g. chance=0.1 or 'zero output=0.992' (repeatable)")
    p.set_defaults(func=cmd_plot_tradeoff)

    p = sub.add_parser("demo", help="the end-to-end demo on synthetic camera pans")
    p.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    p.add_argument("--quick", action="store_true", help="a smoke run of about two minutes")
    p.add_argument("--with-hcml", action="store_true", help="also train HCML against its plain backbone")
    p.add_argument("--source", action="append", default=[], metavar="VIDEO",
                   help="pan over this video's frames (repeatable; default: dead-leaves images, "
                        "on which pre-training barely learns, no download needed)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # exits 2 on bad usage, with argparse's message
    try:
        return int(args.func(args) or 0)
    except ProgvidError as exc:
        if args.debug:
            raise
        if not (exc.collective and _rank() > 0):  # one line per run, not one per rank
            print(f"progvid: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and the like: not a failure
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Interrupted as exc:
        print(f"progvid: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("progvid: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the one place that turns failures into exit 1
        if args.debug:
            raise
        if _peer_failed(exc):  # another rank stopped first and said why: one line per run
            return 1
        print(f"progvid: runtime failure: {type(exc).__name__}: {exc} (rerun with --debug for "
              "the traceback)", file=sys.stderr)
        return 1


# What a rank sees when another rank failed first (and said why): a collective broken by the
# peer's exit (gloo, NCCL), or its own loader worker terminated as the launcher stops the run.
_PEER_GONE = ("connection closed by peer", "connection reset by peer", "broken pipe",
              "communicator was aborted", "remote process exited",
              "is killed by signal: terminated")


def _peer_failed(exc: BaseException) -> bool:
    """True on a rank of a multi-process run whose error only says that another rank is gone."""
    if _world() <= 1:
        return False
    text = str(exc).lower()
    return any(p in text for p in _PEER_GONE)


def _rank() -> int:
    return int(os.environ.get("RANK", "0") or 0)


def _world() -> int:
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def entry() -> None:
    if _world() > 1:
        _rank_entry()
    sys.exit(main())


def _rank_entry() -> None:
    """`main` for one rank of a multi-process run. An exception that escapes `main` (raised
    while it was already handling one: a loader worker's death reported by torch's SIGCHLD
    handler as the launcher stops the run) exits 1 without a traceback: the rank that failed
    first has said why."""
    code = 1
    try:
        code = main()
    except SystemExit as exc:  # argparse on bad usage
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # noqa: BLE001 - see the docstring
        if "--debug" in sys.argv:
            raise
        code = 1
    # A rank may still hold the process group, whose communication threads C++ destructors at
    # interpreter exit can abort on ("terminate called without an active exception": exit -6
    # instead of ours, seen after a successful `eval` and after errors). Everything worth keeping
    # is written and closed by now (files, checkpoints, TensorBoard): leave without running them.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    entry()
