"""`progvid data prepare`: re-encoding (size, keyframes, frames, rate, no audio), the four
source layouts, lists that train unchanged, bad files, bad options, and resume (in process and
after a real SIGKILL)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from progvid.cli import main
from progvid.config import load_config
from progvid.data.datasets import build_samples, read_list
from progvid.data.prepare import MANIFEST, prepare_dataset
from progvid.data.reencode import EncodeSettings, output_size, reencode
from progvid.data.video import VideoReader, probe, read_clip
from progvid.errors import DataError, ProgvidError
from videos import make_frames, write_audio_only, write_text_as_video, write_video

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "pretrain" / "tiny_videomae.yaml"


def keyframes(path: Path) -> list[int]:
    """Presentation indices of the keyframes of the first video stream."""
    with av.open(str(path)) as c:
        packets = [p for p in c.demux(c.streams.video[0]) if p.size]
    order = sorted(p.pts for p in packets)
    return sorted(order.index(p.pts) for p in packets if p.is_keyframe)


def write_with_audio(path: Path, frames: np.ndarray, fps: int = 25) -> Path:
    """h264 + aac in one mp4, one keyframe only (x264's long default GOP)."""
    with av.open(str(path), mode="w") as out:
        vs = out.add_stream("libx264", rate=fps, options={"preset": "ultrafast"})
        vs.width, vs.height, vs.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        aus = out.add_stream("aac", rate=16000)
        aus.layout = "mono"
        for f in frames:
            out.mux(vs.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        for start in range(0, 16000 * len(frames) // fps, 1024):
            a = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp",
                                           layout="mono")
            a.sample_rate, a.pts = 16000, start
            out.mux(aus.encode(a))
        out.mux(vs.encode())
        out.mux(aus.encode())
    return path


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A list dataset: 5 videos in sub-folders (one with audio, one webm at 30 fps),
    a classes.txt, and train/val lists."""
    root = tmp_path_factory.mktemp("src")
    (root / "ab").mkdir()
    (root / "c").mkdir()
    write_video(root / "ab" / "v0.mp4", make_frames(30, 48, 64, seed=0), gop=250)
    write_video(root / "ab" / "v1.mp4", make_frames(21, 64, 48, seed=1), gop=250, fps=24)
    write_with_audio(root / "c" / "v2.mp4", make_frames(20, 48, 64, seed=2))
    write_video(root / "c" / "v3.webm", make_frames(18, 48, 64, seed=3), codec="libvpx-vp9", fps=30)
    write_video(root / "c" / "v4.mp4", make_frames(16, 40, 40, seed=4), gop=250)
    (root / "classes.txt").write_text("first\nsecond\n")
    (root / "train.csv").write_text("ab/v0.mp4 0\nab/v1.mp4,0\nc/v2.mp4 1\nc/v3.webm 1\n")
    (root / "val.csv").write_text("c/v4.mp4 1\nab/v0.mp4 0\n")
    return root


def test_output_size() -> None:
    assert output_size(640, 360, 320) == (568, 320)  # VideoMAE's 320p Kinetics
    assert output_size(360, 640, 320) == (320, 568)  # portrait
    assert output_size(1280, 720, 320) == (568, 320)
    assert output_size(320, 240, 320) == (320, 240)  # never upscaled
    assert output_size(321, 241, 320) == (320, 240)  # smaller: only odd sides dropped
    assert output_size(642, 401, 320) == (512, 320)  # even after resizing


def test_reencode_one_video(dataset: Path, tmp_path: Path) -> None:
    """Same frames and rate, short side, a keyframe every `gop` frames, no audio, and a clip
    read decodes little."""
    src = dataset / "c" / "v2.mp4"
    with av.open(str(src)) as c:
        assert {s.type for s in c.streams} == {"video", "audio"}
    assert keyframes(src) == [0]
    info = reencode(src, tmp_path / "o.mp4", EncodeSettings(short_side=32, gop=4))
    before = probe(src)
    assert (info.frames, info.fps, info.width, info.height) == (before.frames, before.fps, 42, 32)
    assert keyframes(tmp_path / "o.mp4") == [0, 4, 8, 12, 16]
    with av.open(str(tmp_path / "o.mp4")) as c:
        assert [s.type for s in c.streams] == ["video"]
        assert c.streams.video[0].codec_context.name == "h264"
        assert c.streams.video[0].codec_context.pix_fmt == "yuv420p"
    with VideoReader(tmp_path / "o.mp4") as r:
        r.read([17, 18])
        assert r.frames_decoded <= 4  # from the keyframe at 16, not from 0
    assert not list(tmp_path.glob(".*part"))
    with pytest.raises(DataError, match="no video stream"):
        reencode(write_audio_only(tmp_path / "a.m4a"), tmp_path / "a.mp4")
    assert not (tmp_path / "a.mp4").exists()


def test_full_range_source_keeps_its_colours(tmp_path: Path) -> None:
    """A full-range (yuvj420p, as phones write) source is converted to limited range, not
    reinterpreted: the RGB a clip read returns stays close to the source's."""
    yy, xx = np.mgrid[0:64, 0:64]
    frames = np.stack([np.stack([xx * 4, yy * 4, (xx + yy) * 2 + t], -1) for t in range(8)])
    src = tmp_path / "j.mp4"
    with av.open(str(src), mode="w") as out:
        vs = out.add_stream("libx264", rate=25, options={"crf": "5"})
        vs.width, vs.height, vs.pix_fmt = 64, 64, "yuvj420p"
        for f in frames.clip(0, 255).astype(np.uint8):
            out.mux(vs.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        out.mux(vs.encode())
    reencode(src, tmp_path / "o.mp4", EncodeSettings(crf=5))
    a, b = (read_clip(p, range(8)).numpy().astype(int) for p in (src, tmp_path / "o.mp4"))
    assert np.abs(a - b).mean() < 2.5  # 8 when the range is misread


def test_list_dataset_trains_unchanged(dataset: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "prep"
    rc = main(["data", "prepare", str(dataset / "train.csv"), str(dataset / "val.csv"), str(out),
               "--labels", str(dataset / "classes.txt"), "--short-side", "32", "--workers", "1"])
    text = capsys.readouterr().out
    assert rc == 0
    assert "prepared 5 of 5 videos (5 encoded now, 0 already done)" in text and "0 skipped" in text
    line = next(ln for ln in text.splitlines() if ln.startswith("train on it with: "))
    overrides = [o for o in line.removeprefix("train on it with: ").split() if o != "--set"]
    assert overrides == ["data.format=list", f"data.root={out}", "data.train=train.csv",
                         "data.val=val.csv", "data.classes=classes.txt"]
    assert (out / "classes.txt").read_text() == "first\nsecond\n"
    assert (out / "skipped.jsonl").read_text() == ""
    cfg = load_config(CONFIG, overrides)
    for split, listed in (("train", "train.csv"), ("val", "val.csv")):
        old = read_list(dataset / listed, dataset)
        new = build_samples(cfg.data, split).samples
        assert [s.label for s in new] == [s.label for s in old]
        for a, b in zip(old, new, strict=True):
            assert b.path.is_relative_to(out / "videos")
            pa, pb = probe(a.path), probe(b.path)
            # same rate: webm's millisecond timestamps measure 30 fps as 29.98
            assert pb.frames == pa.frames and pb.fps == pytest.approx(pa.fps, rel=1e-3)
            assert min(pb.width, pb.height) == 32
            assert keyframes(b.path) == list(range(0, pb.frames, 16))  # --gop 16 by default
    assert main(["data", "check", str(out / "train.csv")]) == 0


def test_ssv2_and_folder_layouts(dataset: Path, tmp_path: Path) -> None:
    # SSv2: labels json + split json -> list format with classes.txt in index order
    vids = tmp_path / "ssv2"
    vids.mkdir()
    for i in (1, 2):
        write_video(vids / f"{i}.webm", make_frames(12, 32, 32, seed=i), codec="libvpx-vp9")
    (vids / "labels.json").write_text(json.dumps({"Pushing something": "1", "Holding x": "0"}))
    (vids / "train.json").write_text(json.dumps([{"id": "1", "template": "Holding x"},
                                                 {"id": "2", "template": "Pushing [something]"}]))
    r = prepare_dataset(vids / "train.json", tmp_path / "o1", labels=str(vids / "labels.json"),
                        workers=1)
    assert (r.encoded, r.list_path) == (2, tmp_path / "o1" / "train.csv")
    assert (tmp_path / "o1" / "classes.txt").read_text() == "Holding x\nPushing something\n"
    assert r.list_path.read_text() == "videos/1.mp4 0\nvideos/2.mp4 1\n"
    # folder per class, two splits; the val folder lacks a class: labels follow the names; a
    # space in a class name (Kinetics has many) cannot stand in a list file: it becomes _
    for split, classes in (("train", ("cat", "hot dog")), ("val", ("hot dog",))):
        for j, name in enumerate(classes):
            (tmp_path / "f" / split / name).mkdir(parents=True)
            write_video(tmp_path / "f" / split / name / "x.mp4", make_frames(10, 32, 32, seed=j))
    r = prepare_dataset([tmp_path / "f" / "train", tmp_path / "f" / "val"], tmp_path / "o2",
                        workers=1)
    assert r.lists["train"].read_text() == "videos/train/cat/x.mp4 0\nvideos/train/hot_dog/x.mp4 1\n"
    assert r.lists["val"].read_text() == "videos/val/hot_dog/x.mp4 1\n"
    assert r.classes is not None and r.classes.read_text() == "cat\nhot dog\n"
    # the same splits one run at a time into one OUT: val's labels follow train's classes.txt,
    # and train's records survive val's run
    r = prepare_dataset(tmp_path / "f" / "train", tmp_path / "o4", workers=1)
    r = prepare_dataset(tmp_path / "f" / "val", tmp_path / "o4", workers=1)
    assert r.lists["val"].read_text() == "videos/val/hot_dog/x.mp4 1\n"
    assert r.classes is not None and r.classes.read_text() == "cat\nhot dog\n"
    r = prepare_dataset(tmp_path / "f" / "train", tmp_path / "o4", workers=1)
    assert (r.encoded, r.reused) == (0, 2)
    # unlabeled: paths only
    r = prepare_dataset(tmp_path / "f" / "val", tmp_path / "o3", fmt="unlabeled", workers=1)
    assert r.list_path.read_text() == "videos/val/hot_dog/x.mp4\n" and r.classes is None


def test_bad_files_are_skipped_with_reasons(dataset: Path, tmp_path: Path, capsys) -> None:
    write_text_as_video(tmp_path / "corrupt.mp4")
    write_audio_only(tmp_path / "sound.m4a")
    (tmp_path / "l.csv").write_text(f"{dataset}/c/v4.mp4 1\nnope.mp4 0\ncorrupt.mp4 1\n"
                                    "sound.m4a 0\n")
    out = tmp_path / "o"
    assert main(["data", "prepare", str(tmp_path / "l.csv"), str(out), "--workers", "1"]) == 0
    cap = capsys.readouterr()
    assert "prepared 1 of 4 videos" in cap.out and "3 skipped" in cap.out
    bad = [ln for ln in cap.err.splitlines() if ln.startswith("BAD ")]
    assert len(bad) == 3 and f"{tmp_path / 'l.csv'}:2: {tmp_path / 'nope.mp4'}: file not found" in bad[0]
    skipped = [json.loads(ln) for ln in (out / "skipped.jsonl").read_text().splitlines()]
    assert [s["line"] for s in skipped] == [2, 3, 4]
    assert "cannot open as a video container" in skipped[1]["reason"]
    assert skipped[2]["reason"].startswith("no video stream")
    assert (out / "l.csv").read_text() == "videos/external/v4.mp4 1\n"
    # nothing usable at all: exit 2, one line
    (tmp_path / "m.csv").write_text("nope.mp4 0\ncorrupt.mp4 1\n")
    assert main(["data", "prepare", str(tmp_path / "m.csv"), str(tmp_path / "o2"),
                 "--workers", "1"]) == 2
    err = capsys.readouterr().err.splitlines()[-1]
    assert err.startswith("progvid: error: ") and "nothing prepared: all 2 videos failed" in err


@pytest.mark.parametrize("args, message", [
    (["{src}/missing.csv", "{tmp}/o"], "list file not found"),
    (["{src}/train.csv", "{src}/classes.txt/o"], "cannot create the output folder"),
    (["{src}/train.csv", "{src}/classes.txt"], "exists and is not a folder"),
    (["{src}/train.csv", "{src}/ab"], "not empty and holds no prepare.jsonl"),
    (["{src}/train.csv", "{tmp}/o", "--short-side", "33"], "--short-side must be even"),
    (["{src}/train.csv", "{tmp}/o", "--gop", "0"], "--gop must be >= 1"),
    (["{src}/train.csv", "{tmp}/o", "--crf", "60"], "--crf must be in 0..51"),
    (["{src}/train.csv", "{tmp}/o", "--preset", "warp"], "--preset must be one of"),
    (["{src}/train.csv", "{tmp}/o", "--tune", "film,warp"], "--tune must be none or x264 tunes"),
    (["{src}/train.csv", "{tmp}/o", "--workers", "0"], "--workers must be >= 1"),
    (["{src}/train.csv", "{src}/train.csv", "{tmp}/o"], "like another split"),
    (["{src}/train.csv", "{tmp}/o", "--labels", "{src}/nope.txt"], "class list not found"),
], ids=["missing-src", "out-under-file", "out-is-file", "out-foreign", "odd-side", "gop",
        "crf", "preset", "tune", "workers", "same-split", "labels"])
def test_bad_inputs_exit_2_with_one_line(dataset: Path, tmp_path: Path, capsys, args: list[str],
                                         message: str) -> None:
    argv = [a.format(src=dataset, tmp=tmp_path) for a in args]
    assert main(["data", "prepare", *argv]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err, err
    assert not (tmp_path / "o").exists()


def test_output_over_the_source_is_refused(tmp_path: Path) -> None:
    (tmp_path / "videos").mkdir()
    write_video(tmp_path / "videos" / "x.mp4", make_frames(8, 32, 32))
    (tmp_path / "videos" / "l.csv").write_text("x.mp4 0\n")
    (tmp_path / "l.csv").write_text("videos/x.mp4 0\n")
    with pytest.raises(ProgvidError, match="x.mp4: would be overwritten by the output"):
        prepare_dataset(tmp_path / "videos" / "l.csv", tmp_path, workers=1)
    with pytest.raises(ProgvidError, match="l.csv: would be overwritten by the output"):
        prepare_dataset(tmp_path / "l.csv", tmp_path, workers=1)
    with pytest.raises(ProgvidError, match="is a source"):
        prepare_dataset(tmp_path / "videos", tmp_path / "videos", fmt="unlabeled", workers=1)
    assert probe(tmp_path / "videos" / "x.mp4").frames == 8


@pytest.mark.skipif(sys.platform == "win32", reason="advisory locks are POSIX")
def test_one_run_per_output_folder(dataset: Path, tmp_path: Path) -> None:
    import fcntl

    out = tmp_path / "o"
    out.mkdir()
    with open(out / ".prepare.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(DataError, match="another `progvid data prepare` is writing here"):
            prepare_dataset(dataset / "val.csv", out, workers=1)


def test_rerun_redoes_only_what_is_not_finished(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "o"
    src = dataset / "train.csv"
    first = prepare_dataset(src, out, short_side=32, workers=1)
    assert (first.encoded, first.reused) == (4, 0)
    again = prepare_dataset(src, out, short_side=32, workers=1)
    assert (again.encoded, again.reused) == (0, 4)
    records = [json.loads(ln) for ln in (out / MANIFEST).read_text().splitlines()]
    # a half-written output (cut short), a file renamed but never recorded (killed between the
    # rename and the manifest line), a torn manifest line, and a stray part file of a kill
    half = out / records[0]["out"]
    half.write_bytes(half.read_bytes()[: half.stat().st_size // 2])
    (out / MANIFEST).write_text("".join(json.dumps(r) + "\n" for r in records[:1] + records[2:])
                                + '{"out": "videos/ab/v')
    stray = out / "videos" / "c" / ".v2.mp4.1234.part"
    stray.write_bytes(b"partial")
    third = prepare_dataset(src, out, short_side=32, workers=1)
    assert (third.encoded, third.reused) == (2, 2)
    assert not stray.exists()
    for s in read_list(out / "train.csv"):
        assert probe(s.path).frames in (30, 21, 20, 18)
    # other settings: everything is redone
    fourth = prepare_dataset(src, out, short_side=32, gop=4, workers=1)
    assert (fourth.encoded, fourth.reused) == (4, 0)


def _descendants(pid: int) -> set[int]:
    out: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = (task / "children").read_text().split()
        except OSError:  # the thread (or process) just ended
            continue
        for child in children:
            out |= {int(child)} | _descendants(int(child))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


@pytest.mark.slow  # two processes import torch: ~5 s on a quiet machine
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
def test_resume_after_sigkill(tmp_path: Path) -> None:
    """A real `progvid data prepare` process (2 workers) killed with SIGKILL mid-run: its
    workers exit, the rerun encodes only what was missing, and every output has its source's
    frame count."""
    src = tmp_path / "src"
    src.mkdir()
    n = 6
    for i in range(n):
        write_video(src / f"v{i:02d}.mp4", make_frames(20, 96, 128, seed=i), gop=250)
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "progvid", "data", "prepare", str(src), str(out),
            "--format", "unlabeled", "--short-side", "64", "--preset", "veryslow", "--workers", "2"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    manifest = out / MANIFEST
    deadline = time.monotonic() + 60
    children: set[int] = set()
    while time.monotonic() < deadline and proc.poll() is None:
        children |= _descendants(proc.pid)
        if manifest.is_file() and manifest.read_text().count("\n") >= 1:
            break
        time.sleep(0.005)
    children |= _descendants(proc.pid)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    done_at_kill = manifest.read_text().count("\n")
    assert 1 <= done_at_kill < n, "the run finished before the kill: make the videos slower"
    assert children, "no worker processes seen"
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in children) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(p) for p in children), "workers outlived the killed run"
    assert not (out / "src.csv").exists()  # lists are written last

    r = prepare_dataset(src, out, fmt="unlabeled", short_side=64, preset="veryslow", workers=1)
    assert r.reused >= done_at_kill and r.encoded == n - r.reused and not r.skipped
    listed = read_list(out / "src.csv")
    assert len(listed) == n
    for s in listed:
        info = probe(s.path)
        assert (info.frames, info.width, info.height) == (20, 86, 64)
    assert not list(out.rglob("*.part"))
    again = prepare_dataset(src, out, fmt="unlabeled", short_side=64, preset="veryslow", workers=1)
    assert (again.encoded, again.reused) == (0, n)


def test_frame_rate_kept(tmp_path: Path) -> None:
    """An NTSC rate stays NTSC (30000/1001), not a rounded float."""
    write_video(tmp_path / "ntsc.mp4", make_frames(12, 32, 32), fps=Fraction(30000, 1001))
    reencode(tmp_path / "ntsc.mp4", tmp_path / "o.mp4")
    with av.open(str(tmp_path / "o.mp4")) as c:
        assert c.streams.video[0].average_rate == Fraction(30000, 1001)
    assert abs(probe(tmp_path / "o.mp4").fps - 30000 / 1001) < 1e-6
