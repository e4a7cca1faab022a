"""Camera-pan clips (data/pans.py): direction, determinism, split separation, error cases."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from progvid.data.pans import PAN_CLASSES, dead_leaves, pick_still, render_pan


def _shift(a: np.ndarray, b: np.ndarray, radius: int = 12) -> tuple[int, int]:
    """(dx, dy) that best maps frame a onto frame b: b[y, x] ~ a[y + dy, x + dx]."""
    a, b = a.astype(np.float32).mean(-1), b.astype(np.float32).mean(-1)
    n = a.shape[0]
    best, arg = math.inf, (0, 0)
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            ys, xs = slice(max(0, -dy), min(n, n - dy)), slice(max(0, -dx), min(n, n - dx))
            ya, xa = slice(max(0, dy), min(n, n + dy)), slice(max(0, dx), min(n, n + dx))
            err = float(np.mean((b[ys, xs] - a[ya, xa]) ** 2))
            if err < best:
                best, arg = err, (dx, dy)
    return arg


@pytest.mark.parametrize("direction", range(8))
def test_pan_moves_the_window_in_its_compass_direction(direction):
    still = torch.from_numpy(dead_leaves(np.random.default_rng(3)))
    clip = render_pan(still, direction, np.random.default_rng(direction), size=32, frames=8)
    assert clip.shape == (8, 32, 32, 3) and clip.dtype == np.uint8
    dx, dy = _shift(clip[0], clip[-1])
    angle = direction * math.pi / 4
    # the window moves by (cos, -sin) in image axes; the content a frame shows moves with it
    assert np.sign(dx) == np.sign(round(math.cos(angle), 6))
    assert np.sign(dy) == np.sign(round(-math.sin(angle), 6))
    assert 7 <= math.hypot(dx, dy) <= 7 * 2 * 1.8 + 1  # speed 1-2 px/frame, 7 frame steps


def test_dead_leaves_is_deterministic_textured_and_in_range():
    a = dead_leaves(np.random.default_rng(0))
    b = dead_leaves(np.random.default_rng(0))
    assert a.shape == (3, 128, 128) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert a.min() >= 0 and a.max() <= 255
    assert len(np.unique(a.reshape(3, -1), axis=1).T) > 20  # many leaves, not one flat colour


def test_dead_leaves_train_and_val_stills_are_disjoint():
    train = {pick_still(np.random.default_rng(i), "train", [], 0).sum().item() for i in range(30)}
    val = {pick_still(np.random.default_rng(i), "val", [], 0).sum().item() for i in range(30)}
    assert train and val and not train & val


def test_too_small_still_is_a_clear_error():
    with pytest.raises(ValueError, match="too small"):
        render_pan(torch.zeros(3, 40, 40), 0, np.random.default_rng(0), size=32, frames=16)


def test_eight_classes():
    assert len(PAN_CLASSES) == 8 and len(set(PAN_CLASSES)) == 8


def _source_video(path, frames: int = 10) -> str:
    from progvid.data.synthetic import _encode

    rng = np.random.default_rng(5)
    video = np.stack([dead_leaves(rng, 64).transpose(1, 2, 0) for _ in range(frames)])
    _encode(video.astype(np.uint8), path, "mp4")
    return str(path)


def test_write_pan_dataset_with_and_without_footage(tmp_path):
    from progvid.data.synthetic import write_dataset
    from progvid.data.video import decode_all

    src = _source_video(tmp_path / "footage.mp4")
    for name, sources in (("leaves", []), ("footage", [src])):
        out = tmp_path / name
        s = write_dataset(out, train=8, val=3, size=32, frames=8, kind="pan", sources=sources)
        assert (s.train, s.val, s.classes) == (8, 3, 8)
        assert (out / "classes.txt").read_text().split() == list(PAN_CLASSES)
        lines = (out / "train.csv").read_text().split("\n")
        assert lines[7] == "videos/train_00007.mp4 7" and lines[8] == ""
        clip = decode_all(out / "videos" / "val_00002.mp4")
        assert clip.shape == (8, 32, 32, 3)
        meta = json.loads((out / "synth.json").read_text())["params"]
        assert meta["kind"] == "pan" and meta["sources"] == [str(Path(p).resolve()) for p in sources]
        again = write_dataset(out, train=8, val=3, size=32, frames=8, kind="pan", sources=sources)
        assert again.seconds == 0.0  # complete: reused, not rewritten
    a = decode_all(tmp_path / "leaves" / "videos" / "train_00000.mp4")
    b = decode_all(tmp_path / "footage" / "videos" / "train_00000.mp4")
    assert not np.array_equal(a, b)


def test_pan_errors_name_the_field_or_file(tmp_path, capsys):
    from progvid.cli import main
    from progvid.data.synthetic import write_dataset
    from progvid.errors import DataError, ProgvidError

    with pytest.raises(DataError, match="missing.mp4"):
        write_dataset(tmp_path / "a", kind="pan", sources=[tmp_path / "missing.mp4"])
    with pytest.raises(ProgvidError, match="only used by kind 'pan'"):
        write_dataset(tmp_path / "b", sources=[tmp_path / "missing.mp4"])
    with pytest.raises(ProgvidError, match="classes must be in 2..8"):
        write_dataset(tmp_path / "c", kind="pan", classes=9)
    assert main(["synth", str(tmp_path / "d"), "--kind", "pan", "--source",
                 str(tmp_path / "nope.mp4")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope.mp4" in err[0] and "not found" in err[0]
    # refused before anything is written: a pan that cannot fit its still, and a one-frame
    # source (training and validation clips would pan over the same still)
    with pytest.raises(ProgvidError, match=r"size 112 with 16 frames does not fit a pan"):
        write_dataset(tmp_path / "e", kind="pan", size=112, frames=16)
    from videos import make_frames, write_video

    one = write_video(tmp_path / "one.mp4", make_frames(1, 48, 64))
    with pytest.raises(DataError, match=r"one.mp4: one frame only: pans need at least 2"):
        write_dataset(tmp_path / "f", kind="pan", sources=[one])
    assert not (tmp_path / "e").exists() and not (tmp_path / "f").exists()


def test_damaged_source_is_one_clean_line_from_worker_processes(tmp_path, capsys):
    """A damaged source fails inside the writer's process pool; the error crosses the pool
    (pickled) and still reads `path: reason`, nothing appended."""
    import pickle

    from progvid.cli import main
    from progvid.errors import DataError

    err = DataError(tmp_path / "x.mp4", "cannot open", 3)
    back = pickle.loads(pickle.dumps(err))
    assert str(back) == str(err) and (back.path, back.reason, back.line) == (err.path, err.reason, 3)
    good = Path(_source_video(tmp_path / "good.mp4"))
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(good.read_bytes()[:300])
    assert main(["synth", str(tmp_path / "out"), "--kind", "pan", "--train", "4", "--val", "2",
                 "--size", "32", "--frames", "4", "--workers", "2", "--source", str(bad)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"progvid: error: {bad}: ")
    assert not lines[0].rstrip().endswith(":")
