"""Tests for the synthetic motion dataset (rendering, files on disk, cache, and the key property:
classes are told apart by motion, not by any single frame)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from progvid.data import synthetic
from progvid.data.synthetic import MOTION_CLASSES, render_clip, write_dataset
from progvid.errors import ProgvidError

K = len(MOTION_CLASSES)
CHANCE = 1.0 / K


def test_render_is_deterministic_and_seed_dependent() -> None:
    a = render_clip(3, np.random.default_rng(5), size=32, frames=8)
    b = render_clip(3, np.random.default_rng(5), size=32, frames=8)
    c = render_clip(3, np.random.default_rng(6), size=32, frames=8)
    assert a.dtype == np.uint8 and a.shape == (8, 32, 32, 3)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert np.abs(np.diff(a.astype(np.int16), axis=0)).mean() > 0.5  # frames really change
    with pytest.raises(ProgvidError):
        render_clip(K, np.random.default_rng(0))


def _decode(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


@pytest.mark.parametrize("fmt", ["mp4", "webm"])
def test_write_dataset_files(tmp_path: Path, fmt: str) -> None:
    out = tmp_path / "ds"
    s = write_dataset(out, train=6, val=4, size=32, frames=8, classes=4, seed=1, fmt=fmt)
    assert (s.out, s.train, s.val, s.classes) == (out, 6, 4, 4)
    assert (out / "classes.txt").read_text().splitlines() == list(MOTION_CLASSES[:4])
    for split, n in (("train", 6), ("val", 4)):
        rows = [line.split(" ") for line in (out / f"{split}.csv").read_text().splitlines()]
        assert [r[0] for r in rows] == [f"videos/{split}_{i:05d}.{fmt}" for i in range(n)]
        assert [int(r[1]) for r in rows] == [i % 4 for i in range(n)]
        for rel, label in rows:
            video = _decode(out / rel)
            assert video.shape == (8, 32, 32, 3)
            # Lossy, but close to what was rendered: motion survives the encoder.
            i = int(rel.split("_")[1].split(".")[0])
            clip = render_clip(int(label), synthetic._clip_rng(1, split, i), size=32, frames=8)
            assert np.abs(video.astype(np.float32) - clip).mean() < 12
    assert len(list((out / "videos").iterdir())) == 10
    assert json.loads((out / "synth.json").read_text())["complete"] is True


def test_workers_do_not_change_output(tmp_path: Path) -> None:
    kw = dict(train=9, val=2, size=32, frames=6, classes=K, seed=3)
    write_dataset(tmp_path / "one", workers=1, **kw)
    write_dataset(tmp_path / "two", workers=2, **kw)
    for name in ("train_00000.mp4", "train_00008.mp4", "val_00001.mp4"):
        a, b = _decode(tmp_path / "one/videos" / name), _decode(tmp_path / "two/videos" / name)
        assert np.array_equal(a, b)
    assert (tmp_path / "one/train.csv").read_text() == (tmp_path / "two/train.csv").read_text()


def test_cache_and_mismatch(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    kw = dict(train=3, val=2, size=32, frames=4, classes=3, seed=0)
    write_dataset(out, **kw)
    stamp = (out / "videos/train_00000.mp4").stat().st_mtime_ns
    again = write_dataset(out, **kw)
    assert again.seconds == 0.0
    assert (out / "videos/train_00000.mp4").stat().st_mtime_ns == stamp  # nothing rewritten

    with pytest.raises(ProgvidError, match=str(out)) as err:
        write_dataset(out, **{**kw, "seed": 1})
    assert "seed=0" in str(err.value)

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(ProgvidError, match=str(foreign)):
        write_dataset(foreign, **kw)

    empty = tmp_path / "empty"
    empty.mkdir()
    assert write_dataset(empty, **kw).train == 3

    # Interrupted run (same parameters, not complete): redone rather than refused.
    (out / "train.csv").unlink()
    meta = json.loads((out / "synth.json").read_text())
    (out / "synth.json").write_text(json.dumps({**meta, "complete": False}))
    assert write_dataset(out, **kw).seconds > 0
    assert (out / "train.csv").is_file()

    with pytest.raises(ProgvidError, match="size"):
        write_dataset(tmp_path / "odd", **{**kw, "size": 33})
    with pytest.raises(ProgvidError, match="format"):
        write_dataset(tmp_path / "fmt", **kw, fmt="avi")
    shutil.rmtree(out)


# ---- the key property -------------------------------------------------------------------------
# Single-frame features: generic appearance statistics (where/how big/how contrasted the
# non-background stuff is, colours, a coarse saliency map). Motion features: a global affine
# optical-flow fit (brightness constancy, -dI/dt = grad I . flow), i.e. signed products of the
# temporal difference with spatial gradients, plus the signed change of image contrast.


def _pool(x: np.ndarray, k: int) -> np.ndarray:
    h, w = x.shape[:2]
    return x.reshape(h // k, k, w // k, k, *x.shape[2:]).mean((1, 3))


def _frame_features(frame: np.ndarray) -> np.ndarray:
    f = frame.astype(np.float32) / 255
    sal = np.abs(f - np.median(f.reshape(-1, 3), 0)).sum(-1)  # distance to background colour
    gy, gx = np.gradient(f.mean(-1))
    return np.concatenate([
        _pool(sal, sal.shape[0] // 8).ravel(), f.mean((0, 1)), f.std((0, 1)),
        [(gx**2 + gy**2).mean(), (sal > 0.1).mean(), (sal > 0.25).mean(), (sal > 0.5).mean()],
        np.histogram(sal, bins=8, range=(0, 1.5))[0] / sal.size,
    ])


def _blur(x: np.ndarray) -> np.ndarray:
    for _ in range(2):  # [1 2 1]^2 twice, periodic like the renderer's torus
        for ax in (-1, -2):
            x = (np.roll(x, 1, ax) + 2 * x + np.roll(x, -1, ax)) / 4
    return x


def _motion_features(video: np.ndarray) -> np.ndarray:
    g = video.astype(np.float32).mean(-1) / 255
    t, h, w = g.shape
    # Centre on the moving stuff (circular mean of |dI/dt|) so the affine fit is not cut by
    # the image border; this uses no label, only frame differences.
    energy = np.abs(np.diff(g, axis=0)).sum(0)
    cx = np.angle((energy.sum(0) * np.exp(2j * np.pi * np.arange(w) / w)).sum()) * w / (2 * np.pi)
    cy = np.angle((energy.sum(1) * np.exp(2j * np.pi * np.arange(h) / h)).sum()) * h / (2 * np.pi)
    g = _blur(np.roll(g, (round(h / 2 - cy), round(w / 2 - cx)), axis=(1, 2)))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    xx, yy = (xx - w / 2) / w, (yy - h / 2) / h
    it, m = g[1:] - g[:-1], (g[1:] + g[:-1]) / 2
    ix = (np.roll(m, -1, 2) - np.roll(m, 1, 2)) / 2
    iy = (np.roll(m, -1, 1) - np.roll(m, 1, 1)) / 2
    phi = np.stack([ix, xx * ix, yy * ix, iy, xx * iy, yy * iy], 1).reshape(t - 1, 6, -1)
    a = np.einsum("tip,tjp->tij", phi, phi)
    a += (1e-3 * np.trace(a, axis1=1, axis2=2) / 6 + 1e-9)[:, None, None] * np.eye(6)
    p = np.linalg.solve(a, np.einsum("tip,tp->ti", phi, -it.reshape(t - 1, -1))[..., None])[..., 0]
    dm = m - m.mean((1, 2), keepdims=True)
    contrast = (it * dm).sum((1, 2)) / ((dm**2).sum((1, 2)) + 1e-6)
    # translation x, y; curl (rotation); divergence (scaling); contrast change (fading)
    return np.stack([p[:, 0], p[:, 3], p[:, 4] - p[:, 2], p[:, 1] + p[:, 5], contrast], 1).mean(0)


def _logreg(x: np.ndarray, y: np.ndarray, classes: int) -> torch.nn.Linear:
    """Multinomial logistic regression, full-batch L-BFGS with a little L2; inputs standardised."""
    torch.manual_seed(0)
    lin = torch.nn.Linear(x.shape[1], classes)
    xt, yt = torch.tensor(x, dtype=torch.float32), torch.tensor(y)
    opt = torch.optim.LBFGS(lin.parameters(), max_iter=150, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(lin(xt), yt) + 1e-2 * lin.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return lin


def _accuracy(x: np.ndarray, y: np.ndarray, train: np.ndarray, classes: int) -> float:
    mu, sd = x[train].mean(0), x[train].std(0) + 1e-6
    x = (x - mu) / sd
    lin = _logreg(x[train], y[train], classes)
    with torch.no_grad():
        pred = lin(torch.tensor(x[~train], dtype=torch.float32)).argmax(1).numpy()
    return float((pred == y[~train]).mean())


def _pair_accuracies(x: np.ndarray, y: np.ndarray, train: np.ndarray) -> list[float]:
    """Binary accuracy for each opposite pair (right/left, up/down, cw/ccw, grow/shrink,
    in/out): a leak between two opposite motions hides in a K-way score, not here."""
    out = []
    for a in range(0, K, 2):
        keep = (y == a) | (y == a + 1)
        out.append(_accuracy(x[keep], y[keep] - a, train[keep], 2))
    return out


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread() -> Iterator[None]:  # tiny full-batch fits: extra threads only add contention (20x slower)
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _render_set(per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = per_class * K
    y = np.arange(n) % K
    videos = np.stack([render_clip(int(y[i]), np.random.default_rng([seed, i]), size=32, frames=8)
                       for i in range(n)])
    return videos, y, np.arange(n) < n // 2  # first half trains, second half is held out


def _single_frame_scores(videos: np.ndarray, y: np.ndarray, train: np.ndarray,
                         frame: int | None) -> tuple[float, list[float]]:
    """K-way and opposite-pair held-out accuracies from one frame per clip (random if None)."""
    n, t = videos.shape[:2]
    pick = np.random.default_rng(0).integers(t, size=n) if frame is None else np.full(n, frame)
    x = np.stack([_frame_features(f) for f in videos[np.arange(n), pick]])
    return _accuracy(x, y, train, K), _pair_accuracies(x, y, train)


@pytest.fixture(scope="module")
def clips() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return _render_set(per_class=200, seed=11)


def test_single_frame_is_near_chance(clips: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    acc, pairs = _single_frame_scores(*clips, frame=None)  # a random time, unknown to the model
    # Positive control: frame 0 does leak fade direction (fade_in starts faint), a leak no
    # bounded monotonic motion can avoid for a *fixed* frame index. Seeing it shows that the
    # features and classifier can detect an appearance leak.
    acc0, pairs0 = _single_frame_scores(*clips, frame=0)
    print(f"single random frame: {K}-way acc {acc:.3f} (chance {CHANCE:.3f}), pairs "
          f"{np.round(pairs, 3)}; first frame: {acc0:.3f}, pairs {np.round(pairs0, 3)}")
    assert acc < CHANCE + 0.15
    assert max(pairs) < 0.5 + 0.15
    assert pairs0[4] > 0.75


def test_leak_detector_catches_naive_law(monkeypatch: pytest.MonkeyPatch) -> None:
    """The obvious implementation (same start law, then grow or shrink from there; static
    classes keep the start value) leaks size and opacity: the check above must fail on it."""

    def naive(rng: np.random.Generator, lo: tuple[float, float], span: tuple[float, float],
              frames: int, direction: int) -> np.ndarray:
        start = rng.uniform(*lo) + rng.uniform(*span) / 2
        return start + direction * rng.uniform(*span) * np.linspace(0, 1, frames)

    monkeypatch.setattr(synthetic, "_trajectory", naive)
    acc, pairs = _single_frame_scores(*_render_set(per_class=120, seed=12), frame=None)
    print(f"naive size/opacity law, single random frame: {acc:.3f}, pairs {np.round(pairs, 3)}")
    assert max(pairs) >= 0.5 + 0.15


def test_motion_is_learnable(clips: tuple[np.ndarray, np.ndarray, np.ndarray],
                             tmp_path: Path) -> None:
    videos, y, train = clips
    x = np.stack([_motion_features(v) for v in videos])
    acc = _accuracy(x, y, train, K)
    # The same classifier on motion features of clips that went through the real encoder.
    mu, sd = x[train].mean(0), x[train].std(0) + 1e-6
    lin = _logreg((x[train] - mu) / sd, y[train], K)
    test_idx = np.flatnonzero(~train)[:100]
    feats = []
    for i in test_idx:
        synthetic._encode(videos[i], tmp_path / "c.mp4", "mp4")
        feats.append(_motion_features(_decode(tmp_path / "c.mp4")))
    with torch.no_grad():
        pred = lin(torch.tensor((np.stack(feats) - mu) / sd, dtype=torch.float32)).argmax(1)
    acc_mp4 = float((pred.numpy() == y[test_idx]).mean())
    print(f"frame-difference motion features: {K}-way acc {acc:.3f}, on decoded mp4 "
          f"{acc_mp4:.3f} (chance {CHANCE:.3f})")
    assert acc > CHANCE + 0.45
    assert acc_mp4 > CHANCE + 0.3
