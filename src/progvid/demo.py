"""`progvid demo`: the end-to-end tour on synthetic camera pans, CPU only, no downloads.

1. write a camera-pan dataset (`progvid synth --kind pan`: 8 pan directions over
   dead-leaves images, or over `--source` videos' frames; cached) and check it;
2. pre-train the VideoMAE baseline (`pan_videomae`) and TPL (`pan_tpl`, 2/4/8 frames) at the
   same budget and at half of it: the setting where pre-training measurably learns on 2 CPU
   cores (bench/evidence.md);
3. evaluate every run the same way (linear probe on frozen features and the held-out masked-
   reconstruction loss, next to the untrained encoder, chance and the zero output), and
   fine-tune the full-budget runs and a scratch model on 5% of the labels (`pan_vit`);
4. with `--with-hcml`, train HCML (self-supervised phases, then joint fine-tuning) against the
   plain 3-D ResNet with the same fine-tuning epochs;
5. print a table and write report.md, the trade-off plots, a reconstruction picture and (with
   HCML) a flow picture into the output folder.

Every run resumes where it stopped, so an interrupted demo picks up when rerun. `--quick` is a
smoke run whose numbers say nothing about the methods (the report says so).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .config import FinetuneConfig, HCMLConfig, PretrainConfig, validate

BASE: dict[str, Any] = {
    "task": "pretrain",
    "seed": 0,
    "data": {"root": "", "train": "train.csv", "val": "val.csv", "classes": "classes.txt",
             "num_frames": 16, "sampling_rate": 1, "input_size": 32, "flip": False,
             "workers": 1},
    "model": {"size": "tiny", "patch_size": 8, "embed_dim": 96, "depth": 4, "num_heads": 3,
              "decoder_dim": 64, "decoder_heads": 2, "decoder_depth": 2},
    "optim": {"base_lr": 1.5e-3, "warmup_epochs": 1},
    "train": {"batch_size": 8, "device": "cpu", "log_every": 10, "ckpt_every": 50},
}
PLANS = {
    "videomae": [{"frames": 16, "share": 1.0}],
    "tpl": [{"frames": 2, "share": 0.125}, {"frames": 4, "share": 0.125},
            {"frames": 8, "share": 0.5}, {"frames": 16, "share": 0.25}],
}


RECIPES = {"videomae": "pretrain/pan_videomae", "tpl": "pretrain/pan_tpl"}


@dataclass(frozen=True)
class DemoSize:
    train: int
    val: int
    epochs: float  # N_e, epochs at 16 frames, of the full budget
    hcml_flow_epochs: float
    hcml_level_epochs: float
    hcml_finetune_epochs: float
    finetune_epochs: float  # low-label fine-tuning of the tiny ViT
    finetune_batch: int = 16  # the pan_vit recipe's (lr follows the batch/256 rule)


FT_FRACTION = 0.05  # labelled share of the training clips for the low-label fine-tuning
FULL = DemoSize(train=1600, val=400, epochs=6, hcml_flow_epochs=6, hcml_level_epochs=3,
                hcml_finetune_epochs=8, finetune_epochs=60)
QUICK = DemoSize(train=48, val=24, epochs=2, hcml_flow_epochs=0.5, hcml_level_epochs=0.5,
                 hcml_finetune_epochs=0.5, finetune_epochs=1, finetune_batch=4)


def demo_pretrain_config(data_dir: str | Path, method: str, epochs: float, seed: int
                         ) -> PretrainConfig:
    """The demo's pre-training: the shipped pan recipe of `method` on `data_dir`."""
    from .config import load_config

    cfg = load_config(RECIPES[method], [f"data.root={data_dir}", f"seed={seed}",
                                        f"budget.epochs={epochs}", "train.tensorboard=false",
                                        "train.log_every=10"])
    assert isinstance(cfg, PretrainConfig)
    return cfg


def synthetic_pretrain_config(data_dir: str | Path, plan: list[dict[str, Any]], epochs: float,
                              **sections: dict[str, Any]) -> PretrainConfig:
    """The CPU-sized pre-training recipe on a synthetic dataset (demo and benchmarks)."""
    raw = json.loads(json.dumps(BASE))
    raw["data"]["root"] = str(data_dir)
    raw["plan"] = {"stages": plan}
    raw["budget"] = {"epochs": epochs}
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    return validate(PretrainConfig, raw, "synthetic recipe")


def _say(text: str) -> None:
    print(f"[demo] {text}", file=sys.stderr, flush=True)


def _hcml_configs(data: Path, size: DemoSize) -> tuple[HCMLConfig, dict[str, Any]]:
    d = {**BASE["data"], "root": str(data), "num_frames": 8, "sampling_rate": 2}
    model = {"resnet_depth": 18, "width": 0.25}
    train = {"batch_size": 8, "device": "cpu", "log_every": 10, "ckpt_every": 50}
    pre = validate(HCMLConfig, {
        "task": "hcml", "data": d, "model": model, "train": train,
        "optim": {"base_lr": 2e-2, "warmup_epochs": 0.5},
        "phases": {"flow_epochs": size.hcml_flow_epochs, "level_epochs": size.hcml_level_epochs}},
        "demo")
    ft = {"task": "finetune", "epochs": size.hcml_finetune_epochs, "data": d, "train": train,
          "optim": {"base_lr": 2e-2, "warmup_epochs": 0.5, "weight_decay": 1e-4, "layer_decay": 1.0},
          "mixup": {"prob": 0.0}, "eval": {"clips": 2, "crops": 1}, "hcml": model}
    return pre, ft


def _run_hcml(out: Path, data: Path, size: DemoSize) -> list[dict[str, Any]]:
    from .metrics import read_metrics, training_seconds
    from .tasks.finetune import run_finetune
    from .tasks.hcml import deploy_report, run_hcml_pretrain
    from .viz import flow_from_checkpoint

    pre_cfg, ft = _hcml_configs(data, size)
    _say("HCML self-supervised phases (flow network, then levels 1-3)")
    run_hcml_pretrain(pre_cfg, out=str(out / "hcml_pretrain"), resume="auto")
    # training time from the runs' own clocks (every resumed segment, no evaluation): a rerun
    # that finds a run finished does not replace its time with its own, as for pre-training
    pre_s = training_seconds(read_metrics(out / "hcml_pretrain"))
    rows = []
    for name, init in (("resnet3d", None), ("hcml", str(out / "hcml_pretrain"))):
        _say(f"fine-tuning {name} ({size.hcml_finetune_epochs:g} epochs)")
        cfg = validate(FinetuneConfig, {**ft, "model": {"name": name, "init": init,
                                                        "resnet_depth": 18, "width": 0.25}}, "demo")
        res = run_finetune(cfg, out=str(out / f"ft_{name}"), resume="auto")
        ev = json.loads((out / f"ft_{name}" / "eval.json").read_text())
        wall = (training_seconds(read_metrics(out / f"ft_{name}"))
                + (pre_s if name == "hcml" else 0.0))
        rows.append({"method": name, "top1": ev["top1"], "wall_s": wall, "pflops": res.flops / 1e15})
    dep = deploy_report(out / "ft_hcml")
    rows[-1]["deploy_macs_overhead"] = dep["macs_overhead"]
    rows[-1]["deploy_params_overhead"] = dep["params_overhead"]
    flow_from_checkpoint(out / "hcml_pretrain", data / "videos" / "val_00000.mp4", out / "flow.png")
    return rows


def run_demo(out: str | Path = "runs/demo", quick: bool = False, with_hcml: bool = False,
             seed: int = 0, sources: tuple[str, ...] = ()) -> int:
    from .data.check import check_list
    from .data.datasets import build_samples, stratified_subset, write_list
    from .data.synthetic import write_dataset
    from .loading import load_videomae
    from .metrics import read_metrics, training_seconds
    from .progressive.tradeoff import plot_tradeoff
    from .tasks.evaluate import mae_val_levels, probe_encoder
    from .tasks.pretrain import run_pretrain
    from .viz import recon_from_checkpoint

    size = QUICK if quick else FULL
    out = Path(out).resolve() / ("quick" if quick else "full")  # list paths resolve against data.root
    data = out / "data"
    t_demo = time.time()
    _say(f"camera-pan dataset over {_content(sources)} -> {data}")
    if not sources:
        _say("no --source videos: dead-leaves stills, on which pre-training barely learns; "
             "`make footage` fetches real footage into data/footage/ (`make demo` uses it)")
    write_dataset(data, kind="pan", sources=list(sources), train=size.train, val=size.val,
                  size=32, frames=16, seed=seed, workers=2, progress=True)
    report = check_list(data / "train.csv")
    _say(f"data check: {report.ok} readable, {len(report.bad)} unreadable")
    rows, run_dirs = [], []
    model = cfg = None
    for fraction in (1.0, 0.5):
        for method in RECIPES:
            epochs = size.epochs * fraction
            run_dir = out / f"{method}_{fraction:g}"
            cfg = demo_pretrain_config(data, method, epochs, seed)
            frames = cfg.data.num_frames
            _say(f"pre-training {method} ({len(cfg.plan.stages)} stage(s)) at N_e = {epochs:g} "
                 "epochs at 16 frames")
            res = run_pretrain(cfg, out=str(run_dir), resume="auto")
            model = load_videomae(run_dir)
            _say(f"{method} at N_e = {epochs:g}: linear probe on frozen features, held-out loss")
            probe = probe_encoder(model.encoder, cfg.data, num_frames=frames, method="linear",
                                  seed=seed, progress=True)
            levels = mae_val_levels(model, cfg.data, num_frames=frames, seed=seed)
            (run_dir / "probe.json").write_text(json.dumps(
                {"top1": probe.top1, "top5": probe.top5, "method": method, "probe": "linear",
                 "val_loss": levels["loss"]}))
            plan_info = json.loads((run_dir / "plan.json").read_text())
            frames_processed = sum(s["steps"] * s["total_batch"] * s["frames"]
                                   for s in plan_info["stages"])
            rows.append({"method": method, "run": run_dir.name, "epochs_at_16": epochs,
                         "frames_processed": frames_processed, "pflops": res.flops / 1e15,
                         # the loop's own clock over every resumed segment: a rerun that finds
                         # the run finished does not replace its time with its own
                         "wall_s": training_seconds(read_metrics(run_dir)), "top1": probe.top1,
                         "val_loss": levels["loss"], "val_loss_zero": levels["zero"]})
            run_dirs.append(run_dir)
    assert model is not None and cfg is not None
    frames = cfg.data.num_frames
    # the reference levels: the same architecture untrained, chance, a zero output
    _say("reference: the same encoder at random init (probe, held-out loss)")
    torch.manual_seed(seed)
    untrained = type(model).from_hparams(model.hparams).eval()
    train = build_samples(cfg.data, "train")
    reference = {
        "chance": 1.0 / len(train.class_names or [0] * 8),
        "probe_random_init": probe_encoder(untrained.encoder, cfg.data, num_frames=frames,
                                           method="linear", seed=seed, progress=True).top1,
        "val_loss_random_init": mae_val_levels(untrained, cfg.data, num_frames=frames,
                                               seed=seed)["loss"],
        "val_loss_zero": rows[0]["val_loss_zero"]}
    # low-label fine-tuning: the full-budget runs against random init, on one labelled subset
    subset = stratified_subset(train.samples, FT_FRACTION, seed)
    labels = write_list(subset, out / f"labels_{round(100 * FT_FRACTION)}pct.csv")
    finetuned = {}
    for name, init in (("videomae", out / "videomae_1"), ("tpl", out / "tpl_1"), ("scratch", None)):
        _say(f"fine-tuning {'from ' + name if init else 'from random init'} on {len(subset)} "
             f"labelled clips ({FT_FRACTION:.0%}), {size.finetune_epochs:g} epochs")
        finetuned[name] = _finetune(data, labels, init, size, seed, out / f"ft_{name}")
    for r in rows:
        if r["run"] in ("videomae_1", "tpl_1"):
            r["finetune_top1"] = finetuned[r["method"]]
    reference["finetune_scratch"] = finetuned["scratch"]
    plot_tradeoff(run_dirs, out / "tradeoff.png", metric="val_loss",
                  levels={"zero output (trivial)": reference["val_loss_zero"],
                          "random init": reference["val_loss_random_init"]})
    plot_tradeoff(run_dirs, out / "tradeoff_top1.png", metric="top1",
                  levels={"chance": reference["chance"],
                          "random-init encoder": reference["probe_random_init"]})
    recon_from_checkpoint(out / "tpl_1", data / "videos" / "val_00000.mp4", out / "recon.png")
    hcml_rows = _run_hcml(out, data, size) if with_hcml else []
    table = _table(rows, reference)
    verdict = _verdict(rows, reference)
    hcml_table = _hcml_table(hcml_rows) if hcml_rows else ""
    label = ("SMOKE RUN (--quick): the numbers below say nothing about the methods"
             if quick else "demo run")
    total = time.time() - t_demo
    print(f"\n{label}\n\n{table}\n\n{verdict}\n" + (f"\n{hcml_table}\n" if hcml_table else ""))
    (out / "report.md").write_text(_report(label, size, table, verdict, hcml_table, total,
                                           len(subset), sources))
    (out / "results.json").write_text(json.dumps(
        {"pretrain": rows, "reference": reference, "hcml": hcml_rows, "seconds": total}, indent=2))
    _say(f"wrote {out / 'report.md'}, {out / 'tradeoff.png'}, {out / 'recon.png'}"
         + (f", {out / 'flow.png'}" if with_hcml else "") + f" ({total:.0f} s)")
    return 0


def _content(sources: tuple[str, ...]) -> str:
    if not sources:
        return "dead-leaves images"
    return "the frames of " + ", ".join(Path(s).name for s in sources)


def _finetune(data: Path, labels: Path, init: Path | None, size: DemoSize, seed: int,
              out: Path) -> float:
    """Fine-tune the tiny ViT recipe on the labelled subset; top-1 on the whole val split."""
    from .config import load_config
    from .tasks.finetune import run_finetune

    cfg = load_config("finetune/pan_vit", [
        f"data.root={data}", f"data.train={labels}", f"seed={seed}",
        f"epochs={size.finetune_epochs}", f"train.batch_size={size.finetune_batch}",
        f"model.init={init or 'null'}", "eval.clips=1",
        "eval.crops=1", "eval.every_epochs=0", "train.tensorboard=false", "train.log_every=10"])
    run_finetune(cfg, out=str(out), resume="auto")
    return float(json.loads((out / "eval.json").read_text())["top1"])


def _table(rows: list[dict[str, Any]], ref: dict[str, float]) -> str:
    lines = ["| method | nominal budget: N_e (epochs at 16 frames) | frames processed | "
             "measured budget: training PFLOPs (MACs) | training wall s | held-out MAE loss "
             "(lower is better) | linear-probe top-1 | fine-tuned top-1, "
             f"{FT_FRACTION:.0%} labels |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ft = f"{r['finetune_top1']:.3f}" if "finetune_top1" in r else "-"
        lines.append(f"| {r['method']} | {r['epochs_at_16']:g} | {r['frames_processed']:,} | "
                     f"{r['pflops']:.4g} | {r['wall_s']:.0f} | {r['val_loss']:.4f} | "
                     f"{r['top1']:.3f} | {ft} |")
    lines.append(f"| *random init (no pre-training)* | 0 | 0 | 0 | 0 | "
                 f"{ref['val_loss_random_init']:.4f} | {ref['probe_random_init']:.3f} | "
                 f"{ref['finetune_scratch']:.3f} |")
    lines.append(f"| *trivial level* | | | | | zero output {ref['val_loss_zero']:.4f} | "
                 f"chance {ref['chance']:.3f} | chance {ref['chance']:.3f} |")
    return "\n".join(lines)


def _verdict(rows: list[dict[str, Any]], ref: dict[str, float]) -> str:
    """One line per measure: does it beat its trivial level and random init? Said plainly."""
    n = len(rows)
    below = [r for r in rows if r["val_loss"] < ref["val_loss_zero"]]
    margin = max(ref["val_loss_zero"] - r["val_loss"] for r in rows)
    probe_gain = [r["top1"] - ref["probe_random_init"] for r in rows]
    ft = [(r["method"], r["finetune_top1"] - ref["finetune_scratch"]) for r in rows
          if "finetune_top1" in r]
    lines = [
        f"- Held-out loss below the zero-output level (the model predicts more than each hidden "
        f"patch's own mean): {len(below)} of {n} runs"
        + (f" (best by {margin:.4f})." if below else " - pre-training did not beat the trivial "
           "predictor here."),
        f"- Linear probe against the untrained encoder: {min(probe_gain) * 100:+.1f} to "
        f"{max(probe_gain) * 100:+.1f} points"
        + (" (no run gains 10 points: frozen features do not show learning here)."
           if max(probe_gain) < 0.10 else "."),
        "- Low-label fine-tuning against random init (one seed; bench/evidence.py runs the "
        "protocol over seeds): " + ", ".join(f"{m} {d * 100:+.1f} points" for m, d in ft) + "."]
    return "\n".join(lines)


def _hcml_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| model | fine-tuned top-1 (2 clips) | training PFLOPs (MACs) | training wall s | deployed MACs overhead |",
             "|---|---|---|---|---|"]
    for r in rows:
        over = f"{100 * r['deploy_macs_overhead']:+.1f}%" if "deploy_macs_overhead" in r else "-"
        lines.append(f"| {r['method']} | {r['top1']:.3f} | {r['pflops']:.4g} | {r['wall_s']:.0f} | {over} |")
    return "\n".join(lines)


def _report(label: str, size: DemoSize, table: str, verdict: str, hcml_table: str, total: float,
            labelled: int, sources: tuple[str, ...]) -> str:
    parts = [
        f"# progvid demo ({label})", "",
        f"Synthetic camera pans over {_content(sources)}: {size.train} training and {size.val} validation "
        "clips, 32x32, 8 classes (the pan direction; content, start, speed and zoom drawn from "
        "one law for every class; validation clips pan over images the training clips never "
        "show). Everything ran on the CPU.", "",
        *([] if sources else [
            "Without footage the pans go over dead-leaves images, on which pre-training at this "
            "scale barely learns (bench/mae_small_scale.md: the held-out loss stays at the zero "
            "level). `make demo` fetches three short real videos with pip (`make footage`, into "
            "data/footage/) and pans over their frames, the setting of bench/evidence.md.", ""]),
        "## TPL vs the VideoMAE baseline", "",
        "A tiny VideoMAE (width 96, depth 4, patch 4, random masking 0.75) pre-trained on 8-frame "
        "clips with the one-stage baseline (`pan_videomae`) and with TPL (`pan_tpl`: 2, 4, then 8 "
        "frames, shares 1/4, 1/2, 1/4) at the same nominal budget and at half of it. Each is "
        "scored three ways, every one next to its trivial level and to the same architecture "
        "untrained: the held-out masked-reconstruction loss at 8 frames (the same clips and masks "
        "for every run; with the per-patch normalised target, a model that outputs zeros "
        "predicts each hidden patch's own mean, which is the trivial level), a linear probe on "
        "frozen encoder features pooled over space per time step, and fine-tuning (`pan_vit`) "
        f"on {labelled} labelled clips ({FT_FRACTION:.0%}, stratified) from the full-budget runs "
        "and from random init, with top-1 on the whole validation split. FLOPs are "
        "multiply-accumulates, training = 3 x forward; wall time is the training loop's. "
        "One seed: `bench/evidence.py` runs the same protocol over seeds, and "
        "`bench/tpl_claims.py` the TPL comparisons.", "",
        table, "", "What this shows:", "", verdict, "",
        "![trade-off](tradeoff.png)", "", "![trade-off, top-1](tradeoff_top1.png)", "",
        "Masked reconstruction by the TPL model. The `reconstruction` row pastes each predicted "
        "patch back with that patch's true mean and spread, copied from the input (the standard "
        "MAE picture); the row below it is what that copying paints for a model that outputs "
        "zeros, and the last two rows are the target and the prediction in the loss's own units, "
        "before the copying: compare those two to see what the model learned.", "",
        "![reconstruction](recon.png)", ""]
    if hcml_table:
        parts += ["## HCML vs its plain backbone", "",
                  "ResNet3D-18 at width 0.25, 8 frames: plain fine-tuning vs HCML (flow network, "
                  "levels 1-3 learned in turn, then joint fine-tuning), same fine-tuning epochs. "
                  "HCML's wall time includes its self-supervised phases.", "", hcml_table, "",
                  "![flow](flow.png)", ""]
    parts.append(f"Total time: {total:.0f} s.")
    return "\n".join(parts) + "\n"
