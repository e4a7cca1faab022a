"""Benchmark: does HCML's flow network learn at a given smoothness weight zeta?

Two settings, each a plain AdamW loop on `FlowNet` with `reconstruction_loss` (photometric +
zeta * smoothness, generalized Charbonnier alpha 0.45, eps 1e-3):

- `shift`: pairs of a smooth random texture shifted by an integer (u, v) in [-3, 3]^2 px (the
  true flow is known and constant); reports the error of the mean predicted flow in the
  central 16x16 pixels (the zero-flow error is 1.7 px);
- `synth`: consecutive frames (stride 2) of the synthetic motion dataset at 32 px; reports the
  photometric loss on its val clips against that of zero flow, and the largest flow.

    .venv/bin/python bench/flow_smoothness.py shift --zeta 1.0 --steps 150
    .venv/bin/python bench/flow_smoothness.py synth --data data/synth --zeta 0.1 --steps 400
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from progvid.config import DataConfig
from progvid.data.clips import test_dataset
from progvid.data.datasets import build_samples
from progvid.models.losses import photometric_loss, reconstruction_loss
from progvid.models.motion import FlowNet


def shifted_pairs(n: int, size: int, g: torch.Generator):
    """(frame1, frame2, true flow (n, 2)): frame2(y + v, x + u) = frame1(y, x)."""
    img = F.avg_pool2d(torch.randn(n, 3, size + 8, size + 8, generator=g), 3, 1, 1)
    img = img / img.std()
    d = torch.randint(-3, 4, (n, 2), generator=g)
    f1 = img[:, :, 4:4 + size, 4:4 + size]
    f2 = torch.stack([img[i, :, 4 - d[i, 1]:4 - d[i, 1] + size, 4 - d[i, 0]:4 - d[i, 0] + size]
                      for i in range(n)])
    return f1, f2, d.float()


def clip_pairs(clips: torch.Tensor):
    a = clips[:, :, :-1].transpose(1, 2).flatten(0, 1)
    b = clips[:, :, 1:].transpose(1, 2).flatten(0, 1)
    return a, b


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("setting", choices=["shift", "synth"])
    ap.add_argument("--zeta", type=float, default=1.0)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--data", default="data/synth")
    args = ap.parse_args()
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    net = FlowNet(3)
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    if args.setting == "synth":
        d = DataConfig(root=args.data, train="train.csv", val="val.csv", num_frames=8,
                       sampling_rate=2, input_size=32, workers=0)
        train = test_dataset(d, build_samples(d, "train").samples[:128])
        val = test_dataset(d, build_samples(d, "val").samples)
        a_tr, b_tr = clip_pairs(torch.stack([train[i]["video"][0] for i in range(len(train))]))
        a_va, b_va = clip_pairs(torch.stack([val[i]["video"][0] for i in range(len(val))]))
    start = time.time()
    for step in range(1, args.steps + 1):
        if args.setting == "shift":
            f1, f2, _ = shifted_pairs(args.batch, 32, g)
        else:
            i = torch.randint(len(a_tr), (args.batch,), generator=g)
            f1, f2 = a_tr[i], b_tr[i]
        flow, _ = net(f1, f2)
        loss = reconstruction_loss(f1, f2, flow, args.zeta)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % max(1, args.steps // 5) and step != args.steps:
            continue
        with torch.no_grad():
            if args.setting == "shift":
                f1, f2, true = shifted_pairs(64, 32, torch.Generator().manual_seed(1))
                est = net(f1, f2)[0][:, :, 8:24, 8:24].mean(dim=(2, 3))
                print(f"step {step}: loss {loss.item():.4f}, flow error "
                      f"{(est - true).norm(dim=1).mean():.2f} px (zero flow "
                      f"{true.norm(dim=1).mean():.2f}), {time.time() - start:.0f} s", flush=True)
            else:
                flow = net(a_va, b_va)[0]
                print(f"step {step}: photometric {photometric_loss(a_va, b_va, flow):.4f} "
                      f"(zero flow {photometric_loss(a_va, b_va, torch.zeros_like(flow)):.4f}), "
                      f"largest flow {flow.norm(dim=1).max():.2f} px, "
                      f"{time.time() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
