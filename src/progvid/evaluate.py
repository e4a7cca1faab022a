"""Cheap evaluations on frozen encoder features: linear probe and kNN (deterministic per seed).

Used by the search (to rank short pre-training trials) and by the demo. Features are the mean
of the encoder's tokens over the whole clip (no masking), averaged over test views.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader


@dataclass(frozen=True)
class ProbeResult:
    top1: float
    top5: float
    method: str


@torch.no_grad()
def extract_features(encoder: torch.nn.Module, loader: DataLoader, device: torch.device | str = "cpu",
                     progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(features (N, D), labels (N,)) for a loader of `VideoDataset` items (any view count)."""
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
        f = tokens.mean(dim=1).float().view(-1, v, tokens.shape[-1]).mean(dim=1)
        feats.append(f.cpu())
        labels.append(batch["label"].view(-1, v)[:, 0])
    return torch.cat(feats), torch.cat(labels)


def _topk(scores: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    k = min(5, scores.shape[1])
    top = scores.topk(k, dim=1).indices
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
        top1, top5 = _topk(xv @ w + b, val_y)
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
    top1, top5 = _topk(votes, val_y)
    return ProbeResult(top1, top5, "knn")


def probe_encoder(encoder: torch.nn.Module, data_cfg, *, num_frames: int, method: str = "linear",
                  seed: int = 0, device: torch.device | str = "cpu", batch_size: int = 16,
                  progress: bool = False) -> ProbeResult:
    """Linear probe or kNN of a frozen encoder on a config's train/val splits (centre views)."""
    from .data.datasets import VideoDataset, build_samples
    from .data.loader import build_loader
    from .data.sampling import TemporalSampler
    from .data.transforms import test_transform

    d = data_cfg
    sampler = TemporalSampler(d.sampler, num_frames, d.sampling_rate, d.clip_mode)
    tf = test_transform(d.input_size, crops=1, mean=d.mean, std=d.std)
    out = []
    names = None
    for split in ("train", "val"):
        ss = build_samples(d, split)
        names = names or ss.class_names
        ds = VideoDataset(ss.samples, sampler=sampler, transform=tf, train=False, test_clips=1,
                          seed=seed, short_side=d.short_side, decode_threads=d.decode_threads,
                          on_error=d.on_error)
        loader = build_loader(ds, batch_size=batch_size, train=False, workers=d.workers, seed=seed,
                              rank=0, world=1)
        out.append(extract_features(encoder, loader, device, progress))
    (tx, ty), (vx, vy) = out
    classes = len(names) if names else None
    if method == "knn":
        return knn(tx, ty, vx, vy, num_classes=classes)
    return linear_probe(tx, ty, vx, vy, num_classes=classes, seed=seed)
