"""Fast in-memory scan for issue 12: in which small setting does VideoMAE pre-training learn?

Every clip of a list-format folder is decoded once into memory (cached as .npy beside `--work`),
so one pre-training + evaluation takes seconds to minutes instead of the CLI's decode-bound
epochs. The models are progvid's own (`VideoMAE`, `VideoClassifier`); only the loops are written
out here, small and plain, to scan many recipes quickly. The CLI protocol (bench/evidence.py) is
the one that gets quoted; this script finds the setting to quote it on.

For one recipe (`--pre k=v ...`) and `--seeds` seeds it reports:
* held-out masked-reconstruction loss next to the zero output (each token's own mean under
  norm_pix) and next to the random-init model;
* linear probe and kNN on frozen features (temporal pooling), pre-trained vs random init;
* fine-tuning on a stratified `--label-fraction` from the pre-trained encoder vs from scratch
  (same subset, seed and recipe), and the paired differences.

    progvid synth /tmp/pan --kind pan --train 1600 --val 400 --size 32 --source bigbuckbunny.mp4
    .venv/bin/python bench/mae_scan.py --data /tmp/pan --pre frames=8 --pre mask_type=random \
        --pre steps=1500 --label-fraction 0.05
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from progvid.constants import IMAGENET_MEAN, IMAGENET_STD
from progvid.data.datasets import Sample, read_class_names, read_list, stratified_subset
from progvid.data.video import decode_all
from progvid.engine.schedule import CosineLR
from progvid.engine.trainer import param_groups
from progvid.models.classifier import VideoClassifier, layer_decay_groups
from progvid.models.videomae import VideoMAE
from progvid.tasks.evaluate import knn, linear_probe, pool_tokens

# the modules, which `use_pos` patches so that the encoder and the decoder both read its position
# table (`progvid.models.videomae` as an attribute is the builder function, not the module)
mae_mod = importlib.import_module("progvid.models.videomae")
vit_mod = importlib.import_module("progvid.models.vit")

_ORIG_TABLE = vit_mod.sincos_table


@dataclass
class Recipe:
    frames: int = 16
    patch: int = 4
    tubelet: int = 2
    dim: int = 96
    depth: int = 4
    heads: int = 3
    dec_dim: int = 64
    dec_depth: int = 2
    dec_heads: int = 2
    mask: float = 0.75
    mask_type: str = "tube"
    norm_pix: int = 1
    lr: float = 1e-3
    wd: float = 0.05
    batch: int = 32
    steps: int = 600
    warmup: int = 50
    pos: str = "1d"  # "1d": VideoMAE's table over the token index; "3d": separable (t, h, w)
    pix_warm: float = 0.0  # share of steps with the pixel target before norm_pix (if norm_pix)
    crop: int = 0  # >0: random spatial shift (pixels) as augmentation, circular
    # fine-tuning
    ft_lr: float = 1e-3
    ft_wd: float = 0.05
    ft_batch: int = 16
    ft_steps: int = 300
    ft_warmup: int = 30
    ft_drop_path: float = 0.1
    ft_ld: float = 1.0  # layer decay
    ft_smoothing: float = 0.1
    pool: str = "temporal"


def parse_recipe(items: list[str]) -> Recipe:
    r = Recipe()
    types = {f.name: f.type for f in fields(Recipe)}
    for item in items:
        k, _, v = item.partition("=")
        if k not in types:
            sys.exit(f"unknown recipe key {k!r}; known: {', '.join(types)}")
        t = {"int": int, "float": float, "str": str}[types[k]]
        r = replace(r, **{k: t(v)})
    return r


def load_split(root: Path, split: str, frames: int, cache: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 (N, T, H, W, 3) clips (first `frames` frames) and int64 labels, cached."""
    f = cache / f"{root.name}_{split}_{frames}.npz"
    if f.exists():
        z = np.load(f)
        return torch.from_numpy(z["x"]), torch.from_numpy(z["y"])
    samples = read_list(root / f"{split}.csv", root)
    xs, ys = [], []
    for s in samples:
        v = decode_all(s.path)
        idx = np.linspace(0, len(v) - 1, frames).round().astype(int) if len(v) < frames else \
            np.arange(frames)
        xs.append(v[idx])
        ys.append(s.label)
    x, y = np.stack(xs), np.array(ys, dtype=np.int64)
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(f, x=x, y=y)
    return torch.from_numpy(x), torch.from_numpy(y)


_MEAN = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1, 1)
_STD = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1, 1)


def to_input(x: torch.Tensor) -> torch.Tensor:
    """uint8 (B, T, H, W, 3) -> normalized float (B, 3, T, H, W)."""
    return (x.permute(0, 4, 1, 2, 3).float() / 255 - _MEAN) / _STD


def augment(x: torch.Tensor, shift: int, gen: torch.Generator) -> torch.Tensor:
    if shift <= 0:
        return x
    dy, dx = (torch.randint(-shift, shift + 1, (2,), generator=gen)).tolist()
    return torch.roll(x, (dy, dx), dims=(2, 3))


_GRID: dict[int, tuple[int, int, int]] = {}  # token count -> (t, h, w) for the "3d" table


def _sincos3d(n: int, dim: int, device=None) -> torch.Tensor:
    """Separable sin-cos table: a 1-D table of t, of h and of w, concatenated along dim."""
    t, h, w = _GRID[n]
    dh = dw = (dim // 3) // 2 * 2
    dt = dim - dh - dw
    tt, hh, ww = torch.meshgrid(torch.arange(t), torch.arange(h), torch.arange(w), indexing="ij")
    parts = []
    for coord, d in ((tt, dt), (hh, dh), (ww, dw)):
        table = vit_mod._sincos(int(coord.max()) + 1, d, torch.device("cpu"))
        parts.append(table[coord.flatten()])
    return torch.cat(parts, dim=1).to(device or "cpu")


def use_pos(r: Recipe, size: int) -> None:
    if r.pos == "1d":
        vit_mod.sincos_table = mae_mod.sincos_table = _ORIG_TABLE
        return
    g = size // r.patch
    for frames in range(r.tubelet, r.frames + 1, r.tubelet):
        _GRID[frames // r.tubelet * g * g] = (frames // r.tubelet, g, g)
    vit_mod.sincos_table = mae_mod.sincos_table = _sincos3d


def build_mae(r: Recipe, size: int, seed: int) -> VideoMAE:
    use_pos(r, size)
    torch.manual_seed(seed)
    return VideoMAE(img_size=size, patch_size=r.patch, tubelet_size=r.tubelet,
                    num_frames=r.frames, embed_dim=r.dim, depth=r.depth, num_heads=r.heads,
                    decoder_embed_dim=r.dec_dim, decoder_depth=r.dec_depth,
                    decoder_num_heads=r.dec_heads, mask_ratio=r.mask, mask_type=r.mask_type,
                    norm_pix_loss=bool(r.norm_pix))


def pretrain(r: Recipe, x: torch.Tensor, seed: int, log: list) -> VideoMAE:
    size = x.shape[2]
    model = build_mae(r, size, seed)
    opt = torch.optim.AdamW(param_groups(model, r.wd), lr=r.lr, betas=(0.9, 0.95))
    lr = CosineLR(base=r.lr, final=0.0, warmup=r.warmup, total=r.steps)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    n = len(x)
    perm, pos = torch.randperm(n, generator=gen), 0
    warm_steps = int(r.pix_warm * r.steps) if r.norm_pix else 0
    for step in range(r.steps):
        model.norm_pix_loss = bool(r.norm_pix) and step >= warm_steps
        if pos + r.batch > n:
            perm, pos = torch.randperm(n, generator=gen), 0
        idx = perm[pos:pos + r.batch]
        pos += r.batch
        for g in opt.param_groups:
            g["lr"] = lr(step)
        video = augment(to_input(x[idx]), r.crop, gen)
        out = model(video, generator=gen)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % max(1, r.steps // 10) == 0 or step == r.steps - 1:
            log.append((step, round(out.loss.item(), 4)))
    return model


@torch.no_grad()
def val_loss(model: VideoMAE, x: torch.Tensor, seed: int = 123) -> tuple[float, float]:
    """(mean loss, trivial level) over the val clips with fixed masks. The trivial level is the
    loss of predicting each hidden token's own per-channel mean (an oracle that is told the
    hidden patch's colour): zero output under norm_pix, the flat patch of the right colour
    without it."""
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    tot, zero, cnt = 0.0, 0.0, 0
    for i in range(0, len(x), 32):
        v = to_input(x[i:i + 32])
        out = model(v, generator=gen)
        tot += out.loss.item() * len(v)
        t = out.target.reshape(*out.target.shape[:2], -1, model.in_chans)
        zero += (t - t.mean(dim=-2, keepdim=True)).pow(2).mean().item() * len(v)
        cnt += len(v)
    return tot / cnt, zero / cnt


@torch.no_grad()
def features(encoder: torch.nn.Module, x: torch.Tensor, pool: str) -> torch.Tensor:
    encoder.eval()
    out = []
    for i in range(0, len(x), 32):
        v = to_input(x[i:i + 32])
        tok = encoder(v, apply_norm=True)
        out.append(pool_tokens(tok, encoder.grid(*v.shape[2:]), pool).float())
    return torch.cat(out)


def probes(encoder, xt, yt, xv, yv, pool: str, k: int) -> tuple[float, float]:
    ft, fv = features(encoder, xt, pool), features(encoder, xv, pool)
    lin = linear_probe(ft, yt, fv, yv, num_classes=k).top1
    nn_ = knn(ft, yt, fv, yv, num_classes=k).top1
    return lin, nn_


def finetune(r: Recipe, mae: VideoMAE | None, x: torch.Tensor, y: torch.Tensor, xv, yv, k: int,
             seed: int) -> float:
    size = x.shape[2]
    torch.manual_seed(seed + 1000)
    clf = VideoClassifier(num_classes=k, img_size=size, patch_size=r.patch,
                          tubelet_size=r.tubelet, num_frames=r.frames, embed_dim=r.dim,
                          depth=r.depth, num_heads=r.heads, drop_path=r.ft_drop_path)
    if mae is not None:
        state = {kk: vv for kk, vv in mae.encoder.state_dict().items() if not kk.startswith("norm.")}
        missing, unexpected = clf.encoder.load_state_dict(state, strict=False)
        assert not unexpected and not [m for m in missing if not m.startswith("norm")], (missing, unexpected)
    groups = layer_decay_groups(clf, base_weight_decay=r.ft_wd, layer_decay=r.ft_ld)
    opt = torch.optim.AdamW(groups, lr=r.ft_lr, betas=(0.9, 0.999))
    schedule = CosineLR(base=r.ft_lr, final=0.0, warmup=r.ft_warmup, total=r.ft_steps)
    gen = torch.Generator().manual_seed(seed)
    n = len(x)
    perm, pos = torch.randperm(n, generator=gen), 0
    clf.train()
    for step in range(r.ft_steps):
        if pos + r.ft_batch > n:
            perm, pos = torch.randperm(n, generator=gen), 0
        idx = perm[pos:pos + r.ft_batch]
        pos += r.ft_batch
        for g in opt.param_groups:
            g["lr"] = schedule(step) * g["lr_scale"]
        video = augment(to_input(x[idx]), r.crop, gen)
        loss = F.cross_entropy(clf(video), y[idx], label_smoothing=r.ft_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(clf.parameters(), 5.0)
        opt.step()
    clf.eval()
    with torch.no_grad():
        pred = torch.cat([clf(to_input(xv[i:i + 32])).argmax(1) for i in range(0, len(xv), 32)])
    return (pred == yv).float().mean().item()


@dataclass
class SeedResult:
    seed: int
    loss: float = 0.0
    zero: float = 0.0
    loss_random: float = 0.0
    probe: float = 0.0
    probe_random: float = 0.0
    knn: float = 0.0
    knn_random: float = 0.0
    ft: float = 0.0
    ft_scratch: float = 0.0
    pre_seconds: float = 0.0
    log: list = field(default_factory=list)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--pre", action="append", default=[], help="recipe key=value")
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--label-fraction", type=float, default=0.1)
    ap.add_argument("--no-ft", action="store_true", help="skip fine-tuning (pre-training checks only)")
    ap.add_argument("--scratch-only", action="store_true")
    ap.add_argument("--work", default="/tmp/mae_scan")
    ap.add_argument("--tag", default="")
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("SCAN_THREADS", "2")))
    r = parse_recipe(args.pre)
    root = Path(args.data)
    k = len(read_class_names(root / "classes.txt"))
    xt, yt = load_split(root, "train", r.frames, Path(args.work))
    xv, yv = load_split(root, "val", r.frames, Path(args.work))
    train_samples = list(range(len(yt)))
    results = []
    for seed in range(args.seeds):
        res = SeedResult(seed)
        t0 = time.time()
        rand = build_mae(r, xt.shape[2], seed)
        if not args.scratch_only:
            mae = pretrain(r, xt, seed, res.log)
            res.pre_seconds = time.time() - t0
            res.loss, res.zero = val_loss(mae, xv)
            res.loss_random, _ = val_loss(rand, xv)
            res.probe, res.knn = probes(mae.encoder, xt, yt, xv, yv, r.pool, k)
            res.probe_random, res.knn_random = probes(rand.encoder, xt, yt, xv, yv, r.pool, k)
        if not args.no_ft:
            # stratified subset by progvid's rule (the same per seed); the path carries the index
            chosen = stratified_subset([Sample(Path(str(i)), int(yt[i])) for i in train_samples],
                                       args.label_fraction, seed)
            sub_t = torch.tensor(sorted(int(str(s.path)) for s in chosen))
            if not args.scratch_only:
                res.ft = finetune(r, mae, xt[sub_t], yt[sub_t], xv, yv, k, seed)
            res.ft_scratch = finetune(r, None, xt[sub_t], yt[sub_t], xv, yv, k, seed)
        results.append(res)
        print(json.dumps({"tag": args.tag, **res.__dict__}), flush=True)

    def m(key: str) -> float:
        return float(np.mean([getattr(q, key) for q in results]))

    summary = {"tag": args.tag, "recipe": r.__dict__, "chance": 1 / k, "seeds": args.seeds,
               **{key: round(m(key), 4) for key in
                  ("loss", "zero", "loss_random", "probe", "probe_random", "knn", "knn_random",
                   "ft", "ft_scratch", "pre_seconds")},
               "diffs": [round(q.ft - q.ft_scratch, 3) for q in results]}
    print("SUMMARY " + json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
