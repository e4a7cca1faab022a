"""Does pre-training learn on this data? VideoMAE's label-efficiency protocol on any dataset.

For each seed, on a folder in the list format (`train.csv`, `val.csv`, `classes.txt`, videos):
1. pre-train a VideoMAE on every training clip without labels (`--pretrain`, a recipe or file);
2. score its frozen encoder against the same architecture at random init (same seed): a linear
   probe and kNN on pooled features (`evaluate.probe_encoder`), and the held-out masked-
   reconstruction loss beside its trivial level (zero output: each token's own mean with
   `norm_pix_loss`);
3. fine-tune on a stratified `--label-fraction` of the training labels (`--finetune`), once from
   the pre-trained encoder and once from random init, same subset, seed and recipe; top-1 on
   the whole val split with `--views` test views.
Every figure is printed next to chance and random init; `paired_finetune_diffs` are pre-trained
minus scratch per seed. `--minutes` scales the pre-training budget and fine-tuning epochs down
(never up) from a short timed calibration so the whole protocol fits.

    .venv/bin/python bench/evidence.py --data data/synth --seeds 3 --json
    .venv/bin/python bench/evidence.py --data DIR --budget 40 --minutes 20 --out bench/evidence.md
    python bench/evidence.py --preset gpu --json      # one GPU, 8 minutes, data written there

`--preset gpu` is the same protocol at GPU scale: the pan_videomae / pan_vit setting at 64-pixel
clips with patch 8 (the same 8x8 grid), a ViT of width 192 and depth 6, 2,500 camera-pan clips
written on the machine (over `--footage` videos, else dead-leaves images), 5% labels, bf16,
`--minutes 8`; `--preset rehearsal` runs its logic at CPU-test size. Flags given on the command
line win over a preset.

With `--json` the last line of output is one JSON object (chance, probe_pretrained, probe_random,
knn_pretrained, knn_random, finetune_pretrained, finetune_scratch, paired_finetune_diffs,
val_loss, val_loss_zero_predictor, val_loss_random_init, seconds, and the settings used).
"""
# ruff: noqa: E402

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP: progvid/__init__.py

import argparse
import json
import platform
import shlex
import shutil
import statistics
import sys
import time
from pathlib import Path

import torch

from progvid.config import load_config
from progvid.data.datasets import build_samples, stratified_subset, write_list
from progvid.engine.distributed import resolve_device
from progvid.errors import ProgvidError
from progvid.loading import load_videomae
from progvid.progressive.plan import build_plan
from progvid.tasks.evaluate import mae_val_levels, probe_encoder
from progvid.tasks.finetune import run_finetune
from progvid.tasks.pretrain import run_pretrain

QUIET = ["train.tensorboard=false", "train.ckpt_every=1000000", "train.keep_last=1"]


def say(text: str) -> None:
    print(f"[evidence] {text}", file=sys.stderr, flush=True)


def data_overrides(data: Path) -> list[str]:
    for name in ("train.csv", "val.csv", "classes.txt"):
        if not (data / name).is_file():
            raise ProgvidError(f"{data / name}: not found (the list format needs train.csv, "
                               "val.csv and classes.txt)")
    return ["data.format=list", f"data.root={data}", "data.train=train.csv", "data.val=val.csv",
            "data.classes=classes.txt"]


READING = "\n## Reading\n"  # a hand-written section of a bench report that a rewrite keeps


def write_report(path: Path, text: str) -> None:
    """Write a generated report, keeping the `## Reading` section (and all after it) of the file
    it replaces. Shared with tpl_claims.py and hcml_vs_backbone.py."""
    if path.exists() and READING in path.read_text():
        text += READING + path.read_text().split(READING, 1)[1]
    path.write_text(text)


def subset_list(data_cfg, fraction: float, seed: int, out: Path) -> int:
    """A stratified `fraction` of the labelled training clips (at least one per class), written
    as a list file; returns its size."""
    chosen = stratified_subset(build_samples(data_cfg, "train").samples, fraction, seed)
    write_list(chosen, out)
    return len(chosen)


def calibrate(pre_cfg, ft_cfg, work: Path) -> tuple[float, float]:
    """Seconds per pre-training and fine-tuning step (steps 2-6 of a throwaway run each)."""
    out = []
    for run, cfg in ((run_pretrain, pre_cfg), (run_finetune, ft_cfg)):
        folder = work / f"calibrate_{cfg.task}"
        shutil.rmtree(folder, ignore_errors=True)
        cfg = cfg.model_copy(update={
            "train": cfg.train.model_copy(update={"max_steps": 6, "log_every": 1}),
            **({"eval": cfg.eval.model_copy(update={"at_end": False, "every_epochs": 0.0})}
               if cfg.task == "finetune" else {})})
        run(cfg, out=str(folder))
        times = [json.loads(x)["time"] for x in (folder / "metrics.jsonl").read_text().splitlines()
                 if "time" in json.loads(x)]
        out.append((times[-1] - times[0]) / max(len(times) - 1, 1))
    return out[0], out[1]


DEFAULTS = {"seeds": 3, "budget": 20.0, "ft_epochs": 15.0, "label_fraction": 0.2, "minutes": None,
            "pretrain": "tiny_videomae", "finetune": "tiny_vit", "views": "1x1"}
# Presets: the protocol at another scale, with the data written on the machine that runs it
# (`synth`: `progvid synth` parameters). A flag given on the command line wins over its preset.
PRESETS: dict[str, dict] = {
    # one GPU, 16 cores: the pan_videomae / pan_vit setting (bench/evidence.md) at 64 pixels
    # with patch 8 (the same 8x8 grid) and a ViT of width 192, depth 6, on 2,500 camera-pan
    # clips (over --footage videos, else dead-leaves images: the machine is offline); --minutes
    # scales the schedule so that the three seeds fit in 8 minutes
    "gpu": {
        "synth": {"train": 2000, "val": 500, "size": 64, "frames": 16, "kind": "pan"},
        "pretrain": "pan_videomae", "finetune": "pan_vit",
        "seeds": 3, "budget": 15.0, "ft_epochs": 60.0, "label_fraction": 0.05, "minutes": 8.0,
        "set": ["train.device=cuda", "train.precision=bf16", "data.input_size=64",
                "model.patch_size=8", "data.workers=12", "train.batch_size=64",
                "model.embed_dim=192", "model.depth=6", "model.num_heads=3",
                "train.log_every=20"],
        "pre_set": ["model.decoder_dim=128", "model.decoder_heads=4", "model.decoder_depth=2",
                    "optim.base_lr=4e-3"],
        "ft_set": ["optim.base_lr=4e-3"],
        "threads": 4,
    },
    # the same logic at CPU-test size (tests/test_evidence.py)
    "rehearsal": {
        "synth": {"train": 16, "val": 8, "size": 32, "frames": 4, "classes": 4, "kind": "pan"},
        "seeds": 1, "budget": 1.0, "ft_epochs": 1.0, "label_fraction": 0.5, "minutes": None,
        "set": ["model.embed_dim=32", "model.depth=2", "model.num_heads=2", "data.num_frames=4",
                "data.sampling_rate=2", "data.workers=0", "train.batch_size=4"],
        "pre_set": ["model.decoder_dim=32", "model.decoder_depth=1", "model.decoder_heads=2"],
        "ft_set": [],
        "threads": 1,
    },
}


def merge_preset(args: argparse.Namespace, preset: dict, defaults: dict) -> None:
    """Fill what the command line left unset from `preset`, then from `defaults`; the preset's
    overrides go before the command line's (so flags given win). Shared with tpl_claims.py."""
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, preset.get(key, value))
    args.set = [*preset.get("set", []), *args.set]
    args.pre_set = [*preset.get("pre_set", []), *args.pre_set]
    args.ft_set = [*preset.get("ft_set", []), *args.ft_set]


def write_preset_data(args: argparse.Namespace, preset: dict, work: Path) -> None:
    """Unless --data was given, write the preset's synthetic dataset (`preset["synth"]`, over
    --footage videos) under `work` and point --data at it; a complete one is reused."""
    if args.data is not None:
        return
    if not preset:
        raise ProgvidError("--data: give a dataset folder, or --preset to generate one")
    from progvid.data.synthetic import write_dataset

    args.data = str(work / f"data_{args.preset}")
    say(f"writing the {args.preset} preset's synthetic dataset -> {args.data}")
    write_dataset(args.data, seed=0, workers=min(os.cpu_count() or 1, 8), progress=True,
                  sources=args.footage, **preset["synth"])


def apply_preset(args: argparse.Namespace, work: Path) -> None:
    """Fill what the command line left unset from `--preset` (then the plain defaults); a preset
    writes its synthetic dataset under `work` first (reused when complete)."""
    preset = PRESETS[args.preset] if args.preset else {}
    merge_preset(args, preset, DEFAULTS)
    args.threads = preset.get("threads", 1)
    write_preset_data(args, preset, work)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=None, help="folder with train.csv, val.csv, classes.txt")
    p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="a scale with its own data, written here: gpu (one GPU, 8 minutes) or "
                        "rehearsal (its logic at CPU-test size); flags given win")
    p.add_argument("--footage", action="append", default=[], metavar="VIDEO",
                   help="a preset's camera pans go over these videos' frames (repeatable; "
                        "default: dead-leaves images)")
    p.add_argument("--seeds", type=int, default=None, help="default 3")
    p.add_argument("--budget", type=float, default=None, help="pre-training epochs (N_e at 16 frames; default 20)")
    p.add_argument("--ft-epochs", type=float, default=None, help="fine-tuning epochs on the subset (default 15)")
    p.add_argument("--label-fraction", type=float, default=None, help="default 0.2")
    p.add_argument("--minutes", type=float, default=None, help="wall-clock cap for the whole run")
    p.add_argument("--pretrain", default=None, help="pre-training recipe or file (default tiny_videomae)")
    p.add_argument("--finetune", default=None, help="fine-tuning recipe or file (default tiny_vit)")
    p.add_argument("--views", default=None, help="test views CLIPSxCROPS for the fine-tuned top-1 (default 1x1)")
    p.add_argument("--set", action="append", default=[], help="override for both configs")
    p.add_argument("--pre-set", action="append", default=[],
                   help="override for the pre-training config only (e.g. model.decoder_depth=1)")
    p.add_argument("--ft-set", action="append", default=[],
                   help="override for the fine-tuning config only (e.g. optim.layer_decay=1.0)")
    p.add_argument("--work", default="runs/evidence")
    p.add_argument("--json", action="store_true")
    p.add_argument("--out", default=None, help="markdown results file")
    args = p.parse_args()
    t0 = time.time()
    work = Path(args.work).resolve()  # the subset lists are read against data.root otherwise
    work.mkdir(parents=True, exist_ok=True)
    apply_preset(args, work)
    torch.set_num_threads(args.threads)
    data = Path(args.data).resolve()
    clips, crops = (int(x) for x in args.views.lower().split("x"))
    common = [*data_overrides(data), *QUIET, *args.set]
    budget, ft_epochs = args.budget, args.ft_epochs

    def configs(seed: int, init: str | None = None, subset: Path | None = None):
        pre = load_config(args.pretrain, [*common, *args.pre_set, f"seed={seed}",
                                          f"budget.epochs={budget}"])
        ft = load_config(args.finetune, [
            *common, *args.ft_set, f"seed={seed}", f"epochs={ft_epochs}", f"model.init={init or 'null'}",
            f"eval.clips={clips}", f"eval.crops={crops}", "eval.every_epochs=0",
            *([f"data.train={subset}"] if subset else [])])
        return pre, ft

    pre0, ft0 = configs(0)
    n_train = len(build_samples(pre0.data, "train").samples)
    names = build_samples(pre0.data, "train").class_names or []
    chance = 1.0 / max(len(names), 1)
    if args.minutes is not None:
        sub_size = max(len(names), round(args.label_fraction * n_train))
        s_pre, s_ft = calibrate(pre0, ft0, work)
        # the plan's own step count (N_ei = p_i N_e f_ref / f_i epochs per stage: an 8-frame
        # recipe takes twice the steps of 16-frame ones for the same N_e)
        pre_steps = sum(p.steps for p in build_plan(pre0, n_train))
        ft_steps = 2 * ft_epochs * sub_size / ft0.train.batch_size  # two fine-tunings per seed
        need = args.seeds * (pre_steps * s_pre + ft_steps * s_ft)
        allowed = 0.8 * args.minutes * 60 - (time.time() - t0)  # a fifth for probes and evals
        scale = min(1.0, max(allowed, 1.0) / max(need, 1e-9))
        budget, ft_epochs = budget * scale, ft_epochs * scale
        say(f"calibration: {s_pre:.3f} s/pre-training step, {s_ft:.3f} s/fine-tuning step; "
            f"schedule x{scale:.3f}: budget {budget:.3g} epochs, fine-tuning {ft_epochs:.3g} epochs")

    rows = []
    for seed in range(args.seeds):
        row: dict = {"seed": seed}
        pre_cfg, _ = configs(seed)
        run = work / f"pretrain_s{seed}"
        shutil.rmtree(run, ignore_errors=True)
        say(f"seed {seed}: pre-training {budget:.3g} epochs -> {run}")
        t = time.time()
        run_pretrain(pre_cfg, out=str(run))
        row["pretrain_seconds"] = time.time() - t
        model = load_videomae(run)
        torch.manual_seed(seed)
        random_model = type(model).from_hparams(model.hparams).eval()
        f = pre_cfg.data.num_frames
        dev = resolve_device(pre_cfg.train.device)
        for tag, m in (("pretrained", model), ("random", random_model)):
            say(f"seed {seed}: probes of the {tag} encoder")
            row[f"probe_{tag}"] = probe_encoder(m.encoder, pre_cfg.data, num_frames=f, seed=seed,
                                                device=dev).top1
            row[f"knn_{tag}"] = probe_encoder(m.encoder, pre_cfg.data, num_frames=f, seed=seed,
                                              method="knn", device=dev).top1
            levels = mae_val_levels(m, pre_cfg.data, num_frames=f, seed=0, device=dev)
            m.cpu()
            row[f"val_loss_{tag}"], row["val_loss_zero"] = levels["loss"], levels["zero"]
        subset = work / f"subset_s{seed}.csv"
        row["subset_size"] = subset_list(pre_cfg.data, args.label_fraction, seed, subset)
        for tag, init in (("pretrained", str(run)), ("scratch", None)):
            _, ft_cfg = configs(seed, init, subset)
            out = work / f"finetune_{tag}_s{seed}"
            shutil.rmtree(out, ignore_errors=True)
            say(f"seed {seed}: fine-tuning ({tag}) on {row['subset_size']} labelled clips")
            run_finetune(ft_cfg, out=str(out))
            row[f"finetune_{tag}"] = json.loads((out / "eval.json").read_text())["top1"]
        say(f"seed {seed}: {json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()})}")
        rows.append(row)

    def mean(key: str) -> float:
        return statistics.fmean(r[key] for r in rows)

    result = {
        "chance": chance, "seeds": args.seeds, "train_clips": n_train, "classes": len(names),
        "preset": args.preset, "data": str(data),
        "label_fraction": args.label_fraction, "budget_epochs": budget, "finetune_epochs": ft_epochs,
        "probe_pretrained": mean("probe_pretrained"), "probe_random": mean("probe_random"),
        "knn_pretrained": mean("knn_pretrained"), "knn_random": mean("knn_random"),
        "finetune_pretrained": mean("finetune_pretrained"), "finetune_scratch": mean("finetune_scratch"),
        "paired_finetune_diffs": [r["finetune_pretrained"] - r["finetune_scratch"] for r in rows],
        "val_loss": mean("val_loss_pretrained"), "val_loss_zero_predictor": mean("val_loss_zero"),
        "val_loss_random_init": mean("val_loss_random"), "seconds": time.time() - t0,
        "overrides": {"set": args.set, "pre_set": args.pre_set, "ft_set": args.ft_set},
        "per_seed": rows,
    }
    if args.out:
        Path(args.out).write_text(report(result, args))
    if args.json:
        print(json.dumps(result))
    else:
        print(report(result, args))
    return 0


def report(r: dict, args: argparse.Namespace) -> str:
    def spread(key: str) -> str:
        vals = [x[key] for x in r["per_seed"]]
        sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
        return f"{statistics.fmean(vals):.3f} +- {sd:.3f}"

    diffs = r["paired_finetune_diffs"]
    lines = [
        "# Does pre-training learn here? (bench/evidence.py)", "",
        f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} ({r['seconds']:.0f} s). "
        f"Machine: {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} torch thread(s).", "",
        "```", "python bench/evidence.py " + shlex.join(sys.argv[1:]), "```", "",
        f"Data: {args.data} ({r['train_clips']} training clips, {r['classes']} classes, chance "
        f"{r['chance']:.3f}). Pre-training `{args.pretrain}` for {r['budget_epochs']:.3g} epochs; "
        f"fine-tuning `{args.finetune}` for {r['finetune_epochs']:.3g} epochs on "
        f"{args.label_fraction:.0%} of the labels (stratified, per seed); {r['seeds']} seeds "
        f"(mean +- standard deviation); fine-tuned top-1 with {args.views} views.", "",
        "| measure | pre-trained | random init / scratch | trivial level |",
        "|---|---|---|---|",
        f"| linear probe top-1 | {spread('probe_pretrained')} | {spread('probe_random')} | chance {r['chance']:.3f} |",
        f"| kNN top-1 | {spread('knn_pretrained')} | {spread('knn_random')} | chance {r['chance']:.3f} |",
        f"| fine-tuned top-1, {args.label_fraction:.0%} labels | {spread('finetune_pretrained')} | "
        f"{spread('finetune_scratch')} | chance {r['chance']:.3f} |",
        f"| held-out masked-reconstruction loss | {spread('val_loss_pretrained')} | "
        f"{spread('val_loss_random')} | zero output {r['val_loss_zero_predictor']:.4f} |", "",
        "Paired fine-tuning differences (pre-trained - scratch, per seed): "
        + ", ".join(f"{d:+.3f}" for d in diffs)
        + f" ({sum(d > 0 for d in diffs)} of {len(diffs)} positive).", "",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ProgvidError as exc:
        print(f"evidence: error: {exc}", file=sys.stderr)
        sys.exit(2)
