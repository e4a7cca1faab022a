"""`python bench/fwdrev_data.py FOOTAGE_DIR OUT` (FOOTAGE_DIR: `make footage`'s data/footage).
A list-format dataset that progvid did not write: 16-frame clips cut from three real videos,
each played forwards or backwards (6 classes: which video x which direction). Train clips come
from the first 70% of each video, validation clips from the rest. Random square crops (60-100% of
the short side), resized to 32x32 by area averaging, written with PyAV (libx264)."""
import sys
from pathlib import Path

import av
import numpy as np
import torch
import torch.nn.functional as F

if len(sys.argv) != 3:
    sys.exit("usage: python bench/fwdrev_data.py FOOTAGE_DIR OUT")
src, out = Path(sys.argv[1]), Path(sys.argv[2])
names = ["bigbuckbunny", "bikes", "carphone_pristine"]
for n in names:
    if not (src / f"{n}.mp4").is_file():
        print(f"fwdrev_data: {src / f'{n}.mp4'}: missing (run `make footage`)", file=sys.stderr)
        sys.exit(2)
rng = np.random.default_rng(0)
(out / "videos").mkdir(parents=True, exist_ok=True)
frames = {}
for n in names:
    with av.open(str(src / f"{n}.mp4")) as c:
        frames[n] = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
classes = [f"{n}_{d}" for n in names for d in ("forward", "backward")]
(out / "classes.txt").write_text("\n".join(classes) + "\n")
for split, per_class in (("train", 100), ("val", 40)):
    rows = []
    for ci, cls in enumerate(classes):
        n, direction = cls.rsplit("_", 1)
        v = frames[n]
        cut = int(0.7 * len(v))
        lo, hi = (0, cut) if split == "train" else (cut, len(v))
        for k in range(per_class):
            start = int(rng.integers(lo, hi - 16 + 1))
            clip = v[start:start + 16]
            h, w = clip.shape[1:3]
            side = int(min(h, w) * rng.uniform(0.6, 1.0))
            y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
            t = torch.from_numpy(clip[:, y:y + side, x:x + side]).permute(0, 3, 1, 2).float()
            t = F.interpolate(t, size=(32, 32), mode="area").round().clamp(0, 255).byte()
            t = t.permute(0, 2, 3, 1).numpy()
            if direction == "backward":
                t = t[::-1]
            name = f"videos/{split}_{ci}_{k:03d}.mp4"
            with av.open(str(out / name), "w") as c:
                s = c.add_stream("libx264", rate=25)
                s.width, s.height, s.pix_fmt = 32, 32, "yuv420p"
                s.options = {"crf": "18", "g": "16"}
                for fr in t:
                    for p in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(fr), format="rgb24")):
                        c.mux(p)
                for p in s.encode():
                    c.mux(p)
            rows.append(f"{name} {ci}")
    (out / f"{split}.csv").write_text("\n".join(rows) + "\n")
print(out, {k: len(v) for k, v in frames.items()})
