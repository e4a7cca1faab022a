"""The evaluation path: cheap evaluations of frozen encoders (linear probe and kNN,
deterministic per seed), the held-out masked-reconstruction loss, multi-view testing of a
fine-tuned classifier, and batched prediction over many videos (`predict`). Every test clip
comes from `data.clips.test_dataset`, every checkpoint from `progvid.loading`.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from ..config import DataConfig, apply_overrides, validate
from ..data.check import read_dataset
from ..data.clips import test_dataset
from ..data.datasets import VIDEO_EXTENSIONS, Sample, build_samples, listed_at
from ..data.loader import ShardSampler, build_loader, collate
from ..engine.distributed import DistInfo, init_distributed, resolve_device
from ..errors import ConfigError, DataError, ProgvidError
from ..figures import confusion_figure
from ..loading import load_classifier


@dataclass(frozen=True)
class ProbeResult:
    top1: float
    top5: float
    method: str


POOLS = ("mean", "temporal", "grid")


def pool_tokens(tokens: torch.Tensor, grid: tuple[int, int, int], pool: str) -> torch.Tensor:
    """(B, N, D) encoder tokens -> features. `mean`: the global mean (D), the usual choice;
    `temporal`: the mean over space for each temporal token slot, concatenated (t*D), which keeps
    the order in time that a global mean averages away; `grid`: means over a 2 x 2 spatial grid
    per temporal slot (4*t*D), which also keeps coarse position (where an object goes)."""
    if pool == "mean":
        return tokens.mean(dim=1)
    t, h, w = grid
    if pool == "temporal":
        return tokens.view(tokens.shape[0], t, h * w, tokens.shape[-1]).mean(dim=2).flatten(1)
    if pool == "grid":  # a 2 x 2 spatial grid of means per temporal slot: where things go
        x = tokens.view(tokens.shape[0], t, h, w, tokens.shape[-1]).permute(0, 4, 1, 2, 3)
        return torch.nn.functional.adaptive_avg_pool3d(x, (t, min(2, h), min(2, w))).flatten(1)
    raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")


@torch.no_grad()
def extract_features(encoder: torch.nn.Module, loader: DataLoader, device: torch.device | str = "cpu",
                     progress: bool = False, pool: str = "mean") -> tuple[torch.Tensor, torch.Tensor]:
    """(features (N, F), labels (N,)) for a loader of `VideoDataset` items (any view count)."""
    encoder = encoder.to(device).eval()
    feats, labels = [], []
    it = loader
    if progress:
        from tqdm import tqdm

        it = tqdm(loader, desc="features", unit="batch", leave=False)
    for batch in it:
        video = batch["video"].to(device)
        v = int(batch["views"])
        tokens = encoder(video, apply_norm=True)  # (B*V, N, D)
        f = pool_tokens(tokens, encoder.grid(*video.shape[2:]), pool).float()
        feats.append(f.view(-1, v, f.shape[-1]).mean(dim=1).cpu())
        labels.append(batch["label"].view(-1, v)[:, 0])
    return torch.cat(feats), torch.cat(labels)


def top_classes(scores: torch.Tensor) -> torch.Tensor:
    """(N, min(5, K)) class indices of (N, K) scores, best first (one choice among ties)."""
    return scores.topk(min(5, scores.shape[1]), dim=1).indices


def topk_accuracy(scores: torch.Tensor, labels: torch.Tensor,
                  top: torch.Tensor | None = None) -> tuple[float, float]:
    """Top-1 and top-5 accuracy of (N, K) scores (top-K when K < 5); `top`: their
    `top_classes`, when already computed."""
    top = top_classes(scores) if top is None else top
    hit1 = (top[:, 0] == labels).float().mean().item()
    hit5 = (top == labels[:, None]).any(dim=1).float().mean().item()
    return hit1, hit5


def linear_probe(train_x: torch.Tensor, train_y: torch.Tensor, val_x: torch.Tensor,
                 val_y: torch.Tensor, *, num_classes: int | None = None, weight_decay: float = 1e-4,
                 steps: int = 300, seed: int = 0) -> ProbeResult:
    """Multinomial logistic regression on standardized features (full-batch L-BFGS)."""
    num_classes = num_classes or int(max(train_y.max(), val_y.max())) + 1
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    xt, xv = (train_x - mean) / std, (val_x - mean) / std
    gen = torch.Generator().manual_seed(seed)
    w = (torch.randn(xt.shape[1], num_classes, generator=gen) * 0.01).requires_grad_()
    b = torch.zeros(num_classes, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(xt @ w + b, train_y) + weight_decay * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        top1, top5 = topk_accuracy(xv @ w + b, val_y)
    return ProbeResult(top1, top5, "linear")


def knn(train_x: torch.Tensor, train_y: torch.Tensor, val_x: torch.Tensor, val_y: torch.Tensor,
        *, k: int = 20, temperature: float = 0.07, num_classes: int | None = None) -> ProbeResult:
    """Weighted kNN on cosine similarity (the DINO-style vote)."""
    num_classes = num_classes or int(max(train_y.max(), val_y.max())) + 1
    a, b = F.normalize(train_x, dim=1), F.normalize(val_x, dim=1)
    sim = b @ a.T
    k = min(k, a.shape[0])
    top_sim, top_idx = sim.topk(k, dim=1)
    weights = (top_sim / temperature).exp()
    votes = torch.zeros(b.shape[0], num_classes)
    votes.scatter_add_(1, train_y[top_idx], weights)
    top1, top5 = topk_accuracy(votes, val_y)
    return ProbeResult(top1, top5, "knn")


def probe_encoder(encoder: torch.nn.Module, data_cfg: DataConfig, *, num_frames: int,
                  method: str = "linear", seed: int = 0, device: torch.device | str = "cpu",
                  batch_size: int = 16, progress: bool = False,
                  pool: str = "temporal") -> ProbeResult:
    """Linear probe or kNN of a frozen encoder on a config's train/val splits (centre views).

    Features pool over space per temporal slot by default (`pool_tokens`): cheap evaluations
    exist to rank pre-training runs, and classes defined by motion are invisible to a global
    mean."""
    (tx, ty), (vx, vy), classes = probe_features(encoder, data_cfg, num_frames=num_frames, seed=seed,
                                                 device=device, batch_size=batch_size,
                                                 progress=progress, pool=pool)
    if method == "knn":
        return knn(tx, ty, vx, vy, num_classes=classes)
    return linear_probe(tx, ty, vx, vy, num_classes=classes, seed=seed)


def probe_features(encoder: torch.nn.Module, data_cfg: DataConfig, *, num_frames: int, seed: int = 0,
                   device: torch.device | str = "cpu", batch_size: int = 16, progress: bool = False,
                   pool: str = "temporal") -> tuple[tuple[torch.Tensor, torch.Tensor],
                                                    tuple[torch.Tensor, torch.Tensor], int | None]:
    """The frozen features `probe_encoder` scores: ((train x, y), (val x, y), class count or
    None when the data names no classes), centre views of a config's two splits."""
    d = data_cfg
    out = []
    names = None
    for split in ("train", "val"):
        ss = build_samples(d, split)
        names = names or ss.class_names
        ds = test_dataset(d, ss.samples, frames=num_frames, seed=seed)
        loader = build_loader(ds, batch_size=batch_size, train=False, workers=d.workers, seed=seed,
                              rank=0, world=1)
        out.append(extract_features(encoder, loader, device, progress, pool))
    return out[0], out[1], (len(names) if names else None)


# --------------------------------------------------------------------------------------------
# Multi-view testing of a fine-tuned classifier


@torch.no_grad()
def video_probabilities(model: torch.nn.Module, loader: DataLoader, device: torch.device,
                        progress: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dataset indices, mean softmax over views (N, K), labels) for this process's share."""
    model = model.to(device).eval()
    idx, probs, labels = [], [], []
    it = loader
    if progress:
        from tqdm import tqdm

        it = tqdm(loader, desc="eval", unit="batch", leave=False)
    for batch in it:
        v = int(batch["views"])
        logits = model(batch["video"].to(device)).float()
        p = logits.softmax(dim=-1).view(-1, v, logits.shape[-1]).mean(dim=1)
        probs.append(p.cpu())
        idx.append(batch["index"])
        labels.append(batch["label"].view(-1, v)[:, 0])
    if not probs:
        return torch.empty(0, dtype=torch.long), torch.empty(0, 0), torch.empty(0, dtype=torch.long)
    return torch.cat(idx), torch.cat(probs), torch.cat(labels)


def classification_metrics(probs: torch.Tensor, labels: torch.Tensor, num_classes: int) -> dict:
    """top-1, top-5, mean per-class accuracy and the confusion matrix (rows: true class)."""
    top = top_classes(probs)
    top1, top5 = topk_accuracy(probs, labels, top)
    pred = top[:, 0]  # the top-1 choice among tied scores, for the confusion and the classes too
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.long)
    confusion.index_put_((labels, pred), torch.ones_like(labels), accumulate=True)
    per_class = confusion.diag().float() / confusion.sum(dim=1).clamp(min=1).float()
    present = confusion.sum(dim=1) > 0
    return {"top1": top1, "top5": top5,
            "mean_class_accuracy": per_class[present].mean().item() if present.any() else 0.0,
            # null for a class the split does not hold (0.0 would read as all of them wrong)
            "per_class_accuracy": [a if p else None for a, p in zip(per_class.tolist(),
                                                                    present.tolist(), strict=True)],
            "confusion": confusion.tolist(),
            "num_videos": int(labels.numel())}


def split_probabilities(model: torch.nn.Module, d: DataConfig, samples: list[Sample], *,
                        clips: int, crops: int, batch_size: int, device: torch.device,
                        dist: DistInfo, progress: bool = False,
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[tuple[str, str]]]:
    """Mean softmax over `clips` x `crops` test views of every readable video of `samples`,
    every rank evaluating a shard and all ranks getting the whole: (dataset indices, probs
    (N, K), labels, skipped (path, reason) in list order), sorted by index. Bad videos follow
    `d.on_error`: `skip` leaves them out (listed in `skipped`); `raise` stops at the first, on
    every rank after each has finished its share (one collective `DataError`)."""
    skip = d.on_error == "skip"
    dataset = test_dataset(d, samples, clips=clips, crops=crops,
                           on_error="drop" if skip or dist.enabled else "raise")
    loader = DataLoader(dataset, batch_size=batch_size, sampler=ShardSampler(len(dataset)),
                        num_workers=d.workers, collate_fn=collate)
    skipped: list[tuple[str, str]] = []

    def present() -> Iterator[dict]:  # the batches' videos; the dropped ones noted
        for batch in loader:
            skipped.extend(batch["skipped"])
            if batch["video"] is not None:
                yield batch

    idx, probs, labels = video_probabilities(model, present(), device, progress and dist.is_main)
    if dist.enabled:
        gathered: list = [None] * dist.world
        torch.distributed.all_gather_object(gathered, (idx, probs, labels, skipped))
        shares = [g for g in gathered if g[0].numel()]  # a rank may have no readable video
        if shares:
            idx, probs, labels = (torch.cat([g[i] for g in shares]) for i in range(3))
        skipped = [s for g in gathered for s in g[3]]
    position = {str(s.path): i for i, s in enumerate(samples)}
    skipped.sort(key=lambda s: position.get(s[0], len(samples)))
    if skipped and not skip:  # `raise` under torchrun: every rank raises the same, rank 0 says it
        err = DataError(*skipped[0])
        err.collective = True
        raise err
    order = idx.argsort()
    return idx[order], probs[order], labels[order], skipped


def evaluate_checkpoint(checkpoint: str | Path, *, views: tuple[int, int] | None = None,
                        device: torch.device | str | None = None, batch_size: int = 4,
                        out_dir: str | None = None, progress: bool | None = None,
                        data_overrides: Sequence[str] = ()) -> dict:
    """Multi-view evaluation of a classifier on its val split; writes eval.json and the
    confusion picture into the run folder (for a transformers folder, hub id or a checkpoint
    folder outside a run: `out_dir`, by default the current folder). `data_overrides` (`data.KEY=VALUE`) change the recorded data
    settings, e.g. to point a transformers classifier at a labelled list. Under torchrun every
    rank evaluates a shard.

    Bad videos follow the run's `data.on_error`: `raise` stops at the first with one line
    `path: reason` (under torchrun every rank finishes its share first, then all stop on the
    first bad video of the split, printed once); `skip` leaves each out of the metrics (never
    replaced by another video), prints one line for it and lists it in eval.json under
    `skipped`."""
    model, ckpt = load_classifier(checkpoint)
    d = _with_overrides(ckpt.data, data_overrides)
    if d.val is None:
        raise ConfigError(f"{ckpt.path}: no validation list recorded (data.val); give one with "
                          "--set data.root=DIR --set data.val=LIST")
    clips, crops = views or (ckpt.eval.clips, ckpt.eval.crops)
    device = torch.device(device) if device is not None else resolve_device("auto")
    dist = init_distributed(device)
    if device.type == "cuda" and dist.enabled:  # one GPU per rank under torchrun
        device = resolve_device("cuda", dist.local_rank)
    samples = build_samples(d, "val", ckpt.num_classes).samples
    n_out = ckpt.num_classes or (len(ckpt.class_names) if ckpt.class_names else None)
    for s in samples:  # every video needs a label the classifier can give
        if s.label < 0 or (n_out is not None and s.label >= n_out):
            why = ("has no label" if s.label < 0 else
                   f"has label {s.label}, outside the classifier's {n_out} classes")
            where = listed_at(s.source, s.line).rstrip(": ") or "data.val"
            raise DataError(s.path, f"{why} (listed at {where}); evaluation needs a label in "
                                    f"0..{(n_out or 1) - 1} on every video")
    show = sys.stderr.isatty() if progress is None else progress
    idx, probs, labels, skipped = split_probabilities(
        model, d, samples, clips=clips, crops=crops, batch_size=batch_size, device=device,
        dist=dist, progress=show)
    if dist.is_main:
        for path, reason in skipped:
            print(f"[progvid] eval: skipped {path}: {reason}", file=sys.stderr)
    if not idx.numel():
        path, reason = skipped[0] if skipped else (f"data.val of {ckpt.path}", "no videos")
        raise DataError(path, f"{reason} (and every other video of the val split: nothing "
                              "to evaluate)")
    num_classes = ckpt.num_classes or probs.shape[1]
    result = classification_metrics(probs, labels, num_classes)
    result.update({"views": f"{clips}x{crops}", "checkpoint": str(ckpt.path),
                   "indices_evaluated": idx.tolist(),
                   "skipped": [{"path": p, "reason": r} for p, r in skipped]})
    if dist.is_main:
        # a run's checkpoint: into its run folder; anything else: the current folder
        in_run = ckpt.task not in ("transformers", "official") and ckpt.path.parent.name == "checkpoints"
        run = Path(out_dir) if out_dir else ckpt.path.parent.parent if in_run else Path.cwd()
        run.mkdir(parents=True, exist_ok=True)
        (run / "eval.json").write_text(json.dumps(result, indent=2))
        confusion_figure(result["confusion"], ckpt.class_names, run / "confusion.png")
    return result


# --------------------------------------------------------------------------------------------
# Prediction: many videos, batched, each with the checkpoint's own test views


@dataclass(frozen=True)
class Prediction:
    """Top-k class names and probabilities (mean of softmax over the views) of one video."""

    path: str
    labels: list[str]
    scores: list[float]


@dataclass(frozen=True)
class PredictReport:
    predictions: list[Prediction]
    failed: list[tuple[str, str]]  # (path, reason) of videos that could not be read
    checkpoint: str
    views: str  # CLIPSxCROPS

    def rows(self) -> list[dict]:
        """One JSON-ready row per video: path, labels and scores (best first)."""
        return [{"path": p.path, "labels": p.labels, "scores": p.scores} for p in self.predictions]

    def to_json(self) -> dict:
        return {"checkpoint": self.checkpoint, "views": self.views, "predictions": self.rows(),
                "failed": [{"path": p, "reason": r} for p, r in self.failed]}

    def write_csv(self, out: TextIO) -> None:
        """Columns path, label_1, score_1, ..., label_k, score_k (one row per video)."""
        k = max((len(p.labels) for p in self.predictions), default=0)
        writer = csv.writer(out)
        writer.writerow(["path", *(f"{c}_{i}" for i in range(1, k + 1) for c in ("label", "score"))])
        for p in self.predictions:
            cells = [x for pair in zip(p.labels, (f"{s:.6f}" for s in p.scores), strict=True)
                     for x in pair]
            writer.writerow([p.path, *cells])


def predict_samples(inputs: Sequence[str | Path], *, root: str | None = None,
                    fmt: str | None = None, labels: str | None = None
                    ) -> tuple[list[Sample], list[tuple[str, str]]]:
    """(samples, missing inputs) of prediction inputs: video files, folders (every video under
    them, or with `fmt` "folder" the class-folder layout), and dataset lists in any layout
    `progvid data check` accepts. A missing input is reported, not raised; a malformed list
    raises DataError naming its file and line."""
    samples: list[Sample] = []
    missing: list[tuple[str, str]] = []
    for raw in inputs:
        path = Path(raw)
        if not path.exists():
            missing.append((str(path), "file not found"))
        elif path.is_dir():
            samples += read_dataset(path, root=root, fmt=fmt or "unlabeled", labels=labels).samples
        elif path.suffix.lower() in VIDEO_EXTENSIONS:
            samples.append(Sample(path))
        else:
            samples += read_dataset(path, root=root, fmt=fmt, labels=labels).samples
    return samples, missing


class _Tolerant(Dataset):
    """A test dataset whose unreadable items come back as {"index", "error"} instead of
    raising, so one bad file does not stop a prediction run."""

    def __init__(self, inner: Dataset) -> None:
        self.inner = inner

    def __len__(self) -> int:
        return len(self.inner)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> dict:
        try:
            return self.inner[index]
        except DataError as exc:
            return {"index": index, "error": exc.reason}
        except Exception as exc:  # noqa: BLE001 - a broken file is reported, never fatal
            return {"index": index, "error": f"{type(exc).__name__}: {exc}"}


def _collate_tolerant(items: list[dict]) -> dict:
    good = [it for it in items if "error" not in it]
    return {"batch": collate(good) if good else None,
            "failed": [(it["index"], it["error"]) for it in items if "error" in it]}


@torch.no_grad()
def predict(checkpoint: str | Path, inputs: Sequence[str | Path], *, topk: int = 5,
            batch_size: int = 4, views: tuple[int, int] | None = None,
            device: torch.device | str | None = None, progress: bool | None = None,
            root: str | None = None, fmt: str | None = None,
            labels: str | None = None) -> PredictReport:
    """Top-k predictions of a classifier (any source `load_classifier` accepts) for videos,
    folders and dataset lists (`predict_samples`), batched through a DataLoader with the
    checkpoint's workers and test views (`views` = (clips, crops), default the run's eval
    settings). Unreadable videos are skipped and listed in `failed`."""
    if topk < 1:
        raise ProgvidError(f"--topk: must be >= 1, got {topk}")
    if batch_size < 1:
        raise ProgvidError(f"--batch-size: must be >= 1, got {batch_size}")
    model, ckpt = load_classifier(checkpoint)
    samples, failed = predict_samples(inputs, root=root, fmt=fmt, labels=labels)
    clips, crops = views or (ckpt.eval.clips, ckpt.eval.crops)
    dev = torch.device(device) if device is not None else resolve_device("auto")
    model = model.to(dev).eval()
    predictions: dict[int, Prediction] = {}
    if samples:
        d = ckpt.data
        dataset = _Tolerant(test_dataset(d, samples, clips=clips, crops=crops, on_error="raise"))
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=False,
                            num_workers=min(d.workers, len(samples)),
                            collate_fn=_collate_tolerant)
        show = sys.stderr.isatty() if progress is None else progress
        bar = None
        if show:
            from tqdm import tqdm

            bar = tqdm(total=len(samples), desc="predict", unit="video", leave=False)
        names = None
        for out in loader:
            failed += [(str(samples[i].path), why) for i, why in out["failed"]]
            batch = out["batch"]
            if batch is not None:
                v = int(batch["views"])
                logits = model(batch["video"].to(dev)).float()
                probs = logits.softmax(dim=-1).view(-1, v, logits.shape[-1]).mean(dim=1).cpu()
                names = names or ckpt.class_names or [str(i) for i in range(probs.shape[1])]
                top_p, top_i = probs.topk(min(topk, probs.shape[1]), dim=1)
                for i, p, j in zip(batch["index"].tolist(), top_p.tolist(), top_i.tolist(),
                                   strict=True):
                    predictions[i] = Prediction(str(samples[i].path), [names[k] for k in j], p)
            if bar is not None:
                bar.update(len(out["failed"]) + (len(batch["index"]) if batch else 0))
        if bar is not None:
            bar.close()
    return PredictReport([predictions[i] for i in sorted(predictions)], failed, str(ckpt.path),
                         f"{clips}x{crops}")


def _with_overrides(d: DataConfig, overrides: Sequence[str]) -> DataConfig:
    """`d` with `data.KEY=VALUE` overrides applied and validated."""
    if not overrides:
        return d
    for text in overrides:
        if not text.startswith("data."):
            raise ConfigError(f"--set {text}: only data.* settings apply to a checkpoint's "
                              "evaluation")
    raw = apply_overrides({"data": d.model_dump(mode="json")}, list(overrides))
    return validate(DataConfig, raw["data"], "--set data")


def predict_video(checkpoint: str | Path, video: str | Path, *, topk: int = 5,
                  device: torch.device | str = "cpu") -> list[tuple[str, float]]:
    """Top-k (class name, probability) for one video file with the checkpoint's preprocessing:
    `predict` on one video (an unreadable one raises its DataError)."""
    report = predict(checkpoint, [video], topk=topk, batch_size=1, device=device, progress=False)
    if report.failed:
        path, reason = report.failed[0]
        raise DataError(path, reason)
    p = report.predictions[0]
    return list(zip(p.labels, p.scores, strict=True))


@torch.no_grad()
def mae_val_levels(model: torch.nn.Module, data_cfg: DataConfig, *, num_frames: int,
                   seed: int = 0, batch_size: int = 16,
                   device: torch.device | str = "cpu") -> dict[str, float]:
    """Held-out masked-reconstruction loss of a VideoMAE beside its trivial level: centre clips
    of the val split with masks drawn from a fixed seed, so different runs are scored on exactly
    the same task. `loss` is the model's; `zero` is the loss of predicting zeros for every
    masked token, which with `norm_pix_loss` is predicting each token's own mean (the level a
    model that learned nothing about the content reaches); without it, predicting black."""
    d = data_cfg
    ds = test_dataset(d, build_samples(d, "val").samples, frames=num_frames, seed=seed)
    loader = build_loader(ds, batch_size=batch_size, train=False, workers=d.workers, seed=seed,
                          rank=0, world=1)
    model = model.to(device).eval()
    gen = torch.Generator().manual_seed(seed)
    total, zero, count = 0.0, 0.0, 0
    with torch.no_grad():
        for batch in loader:
            video = batch["video"].to(device)
            mask = model.random_mask(video.shape[0], num_frames, "cpu", gen,
                                     img_size=tuple(video.shape[-2:])).to(device)
            out = model(video, mask)  # eval mode: every masked token, no decoder masking
            total += float(out.loss) * video.shape[0]
            zero += float(out.target.float().pow(2).mean()) * video.shape[0]
            count += video.shape[0]
    return {"loss": total / max(count, 1), "zero": zero / max(count, 1)}


def mae_val_loss(model: torch.nn.Module, data_cfg: DataConfig, *, num_frames: int, seed: int = 0,
                 batch_size: int = 16, device: torch.device | str = "cpu") -> float:
    """The model's held-out masked-reconstruction loss (`mae_val_levels`' `loss`)."""
    return mae_val_levels(model, data_cfg, num_frames=num_frames, seed=seed,
                          batch_size=batch_size, device=device)["loss"]
