"""Bad data reported, never used (issue 11, items 4, 6 and 7): damaged videos, list files in
any encoding or quoting, out-of-range labels, hostile SSv2 ids, and `eval` with bad videos."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine_util import tiny_finetune
from progvid.cli import main
from progvid.config import save_config
from progvid.data.datasets import read_class_names, read_list, read_ssv2
from progvid.data.video import VideoReader, decode_all, read_clip
from progvid.errors import DataError
from videos import make_frames, remux_dropping, write_overwritten, write_text_as_video, write_video

ROOT = Path(__file__).resolve().parent.parent


# -------------------------------------------------------------------- item 6: silent damage
# 4 KB of random bytes over the middle of a 40-frame file (GOP 12). Before the damage checks,
# the first two came back with 11 frames of wrong pixels and no error, and passed the quick
# `data check`; the AVI one returned 9 frames decoded from nothing (its index was hit); the TS
# one 8 wrong frames.
DAMAGE = {
    "h264-cabac-bframes.mp4": ({"codec": "libx264"}, 0.3, (96, 128)),
    "h264-cavlc.mp4": ({"codec": "libx264", "bframes": 0,
                        "options": {"preset": "ultrafast", "crf": "20"}}, 0.3, (96, 128)),
    "mpeg4-index-hit.avi": ({"codec": "mpeg4"}, 0.3, (48, 64)),
    "h264.ts": ({"codec": "libx264"}, 0.5, (48, 64)),  # MPEG-TS flags packets after lost data
}


@pytest.fixture(scope="module")
def damaged(tmp_path_factory) -> dict[str, tuple[Path, Path, np.ndarray]]:
    root = tmp_path_factory.mktemp("damaged")
    out = {}
    for name, (kw, fraction, (h, w)) in DAMAGE.items():
        src = write_video(root / f"orig-{name}", make_frames(40, height=h, width=w), gop=12, **kw)
        out[name] = (src, write_overwritten(src, root / name, fraction), decode_all(src))
    return out


@pytest.mark.parametrize("name", DAMAGE)
def test_damage_is_reported_never_returned(damaged, name: str) -> None:
    _, path, ref = damaged[name]
    refused = 0
    with VideoReader(path) as reader:
        n = reader.info.frames
        for i in range(n):
            try:
                frame = reader.read([i]).numpy()[0]
            except DataError as err:
                assert str(err).startswith(f"{path}: frame {i} not decodable ("), str(err)
                refused += 1
                continue
            if name.endswith(".mp4"):  # MP4 keeps every frame at its index
                np.testing.assert_array_equal(frame, ref[i], err_msg=f"{name} frame {i}")
            else:  # AVI and TS lose frames to the damage: later ones shift, but are real frames
                assert any(np.array_equal(frame, r) for r in ref), (name, i)
        with pytest.raises(DataError, match=r"not decodable \("):
            reader.verify()
    assert 0 < refused < n
    # whole clips too: the same frames, or an error
    for start in range(0, n - 8, 3):
        try:
            clip = read_clip(path, list(range(start, start + 8))).numpy()
        except DataError:
            continue
        assert all(any(np.array_equal(f, r) for r in ref) for f in clip), (name, start)


def test_quick_check_misses_what_deep_finds(damaged, tmp_path: Path, capsys) -> None:
    src, path, _ = damaged["h264-cabac-bframes.mp4"]
    (tmp_path / "list.txt").write_text(f"{src} 0\n{path} 1\n")
    assert main(["data", "check", str(tmp_path / "list.txt"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"ok": 2, "bad": []}  # first and last frames
    assert main(["data", "check", str(tmp_path / "list.txt"), "--deep"]) == 2
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"BAD {tmp_path / 'list.txt'}:2: {path}: frame ") and \
        "not decodable (damaged data: " in out[0]
    assert out[1] == "1 readable, 1 unreadable, of 2"


def test_prepare_refuses_what_reading_refuses(damaged, tmp_path: Path, capsys) -> None:
    """`data prepare` decodes as a training read does: a damaged source is skipped with the
    reason, not re-encoded into a clean-looking file whose damage no check can see any more."""
    names = [n for n in DAMAGE if n.endswith(".mp4")]
    lines = [f"{damaged[names[0]][0]} 0"] + [f"{damaged[n][1]} 1" for n in names]
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    assert main(["data", "prepare", str(tmp_path / "list.txt"), str(tmp_path / "out"),
                 "--workers", "1"]) == 0
    assert f"prepared 1 of {len(lines)} videos" in capsys.readouterr().out
    skipped = [json.loads(ln) for ln in (tmp_path / "out" / "skipped.jsonl").read_text().splitlines()]
    assert [s["line"] for s in skipped] == list(range(2, len(lines) + 1))
    assert all("not decodable (damaged data: " in s["reason"] for s in skipped), skipped


def test_deep_check_warns_when_timestamps_jump(tmp_path: Path, capsys) -> None:
    """WebM/Matroska skip a damaged cluster without a word: the frames after it shift."""
    src = write_video(tmp_path / "intra.mkv", make_frames(30), "mpeg4", gop=1)
    lost = remux_dropping(src, tmp_path / "lost.mkv", {12, 13, 14})
    (tmp_path / "list.txt").write_text(f"{src}\n{lost}\n")
    assert main(["data", "check", str(tmp_path / "list.txt"), "--deep", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] == 2 and report["bad"] == []
    [warn] = report["warnings"]
    assert warn["path"] == str(lost) and warn["line"] == 2
    assert warn["reason"].startswith("timestamps jump 0.440 s to 0.600 s after frame 11 (about "
                                     "3 frames)")


# -------------------------------------------------------------------- item 7: list files
def test_quoted_paths_and_the_old_forms(tmp_path: Path) -> None:
    (tmp_path / "l.csv").write_text(
        '"my video, take 2.mp4",3\n'
        '"say ""hi"".mp4" 1\n'
        '  "dir with space/x.mp4" , 2\n'
        '"only path.mp4"\n'
        '"k.mp4",300,0\n'
        'a.mp4 1\nb.mp4,2\nc.mp4, 3\nd.mp4\te 300 3\n'.replace("\te", ""))
    s = read_list(tmp_path / "l.csv", num_classes=4)
    assert [(x.path.relative_to(tmp_path).as_posix(), x.label) for x in s] == [
        ("my video, take 2.mp4", 3), ('say "hi".mp4', 1), ("dir with space/x.mp4", 2),
        ("only path.mp4", -1), ("k.mp4", 0), ("a.mp4", 1), ("b.mp4", 2), ("c.mp4", 3),
        ("d.mp4", 3)]


@pytest.mark.parametrize("text, reason", [
    ('"open.mp4,3\n', r"l.csv:1: unterminated quoted path"),
    ('"a.mp4"3\n', r"l.csv:1: expected a comma or space after the closing quote"),
    ('"",3\n', r"l.csv:1: empty quoted path"),
    ("my video.mp4 3\n", r"l.csv:1: expected 'path \[label\]'.*double quotes"),
])
def test_quoting_errors_name_file_and_line(tmp_path: Path, text: str, reason: str) -> None:
    (tmp_path / "l.csv").write_text(text)
    with pytest.raises(DataError, match=reason):
        read_list(tmp_path / "l.csv")


def test_list_encodings(tmp_path: Path) -> None:
    lst, names = tmp_path / "l.txt", tmp_path / "classes.txt"
    lst.write_bytes("\ufeffvidéo.mp4 1\nb.mp4 0\n".encode())
    assert [x.path.name for x in read_list(lst)] == ["vidéo.mp4", "b.mp4"]  # BOM dropped
    names.write_bytes(b"\xef\xbb\xbfjump\nsit\n")
    assert read_class_names(names) == ["jump", "sit"]
    cases = {
        "a.mp4 0\nvid\xe9o.mp4 1\n".encode("latin-1"):
            f"{lst}:2: not UTF-8 text (byte 0xe9); save it as UTF-8",
        "a.mp4 0\nb.mp4 1\n".encode("utf-16"):
            f"{lst}:1: contains NUL bytes, so it is not UTF-8 text (UTF-16?); save it as UTF-8",
        b"a.mp4 0\nb.mp4 1\nc.mp4\x00 2\n":
            f"{lst}:3: contains NUL bytes, so it is not UTF-8 text (UTF-16?); save it as UTF-8",
    }
    for data, message in cases.items():
        lst.write_bytes(data)
        with pytest.raises(DataError) as info:
            read_list(lst)
        assert str(info.value) == message
    names.write_bytes("caf\xe9\n".encode("cp1252"))
    with pytest.raises(DataError, match=r"classes.txt:1: not UTF-8 text"):
        read_class_names(names)


def test_labels_past_num_classes_without_a_class_list(synth_dir: Path, tmp_path: Path,
                                                      capsys) -> None:
    lines = (synth_dir / "train.csv").read_text().splitlines()
    lines[4] = lines[4].split()[0] + " 7"
    (tmp_path / "train.csv").write_text("\n".join(f"{synth_dir}/{x}" for x in lines) + "\n")
    cfg = tiny_finetune(synth_dir, data__train=str(tmp_path / "train.csv"), data__classes=None,
                        model__num_classes=4)
    save_config(cfg, tmp_path / "ft.yaml")
    expect = f"progvid: error: {tmp_path / 'train.csv'}:5: label 7 out of range [0, 4) for 4 classes"
    assert main(["config", "validate", str(tmp_path / "ft.yaml")]) == 2
    assert capsys.readouterr().err.strip() == expect
    assert main(["finetune", str(tmp_path / "ft.yaml"), "--out", str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err.strip() == expect
    assert not (tmp_path / "run").exists()  # rejected before the run folder is touched


def test_ssv2_duplicate_indices_and_hostile_ids(tmp_path: Path) -> None:
    labels, split = tmp_path / "labels.json", tmp_path / "train.json"
    labels.write_text(json.dumps({"Pushing something": "0", "Holding something": "0"}))
    split.write_text(json.dumps([{"id": "1", "template": "Holding [something]"}]))
    with pytest.raises(DataError) as info:
        read_ssv2(split, labels, tmp_path)
    assert str(info.value) == (f"{labels}: class 'Holding something' has index 0, already used "
                               "by 'Pushing something'")
    labels.write_bytes(b"\xef\xbb\xbf" + json.dumps({"Holding something": 0, "Pushing something": "1"}).encode())
    for bad in ("../../etc/passwd", "/etc/passwd", "..", "a\\b", "C:evil", "", True, None, [1]):
        split.write_text(json.dumps([{"id": "5", "template": "Holding [something]"},
                                     {"id": bad, "template": "Holding [something]"}]))
        with pytest.raises(DataError) as info:
            read_ssv2(split, labels, tmp_path)
        assert str(info.value).startswith(f"{split}: entry 1: id "), str(info.value)
    split.write_text(json.dumps([{"id": 78687, "template": "Pushing [something]"}]))
    [s] = read_ssv2(split, labels, tmp_path).samples
    assert s.path == tmp_path / "78687.webm" and s.label == 1


# -------------------------------------------------------------------- item 4: eval and on_error
def test_drop_policy_leaves_bad_videos_out_of_batches(synth_dir: Path, tmp_path: Path) -> None:
    from progvid.config import DataConfig
    from progvid.data.clips import test_dataset
    from progvid.data.datasets import Sample
    from progvid.data.loader import collate

    d = DataConfig(root=str(synth_dir), num_frames=4, sampling_rate=2, input_size=32)
    good = synth_dir / "videos" / "val_00000.mp4"
    ds = test_dataset(d, [Sample(tmp_path / "gone.mp4", 2), Sample(good, 1)], on_error="drop")
    gone = ds[0]
    assert gone["video"] is None and gone["index"] == 0 and gone["label"] == 2
    assert gone["skipped"] == [(str(tmp_path / "gone.mp4"), "file not found")]
    batch = collate([gone, ds[1]])
    assert batch["video"].shape[0] == 1 and batch["index"].tolist() == [1]
    assert batch["label"].tolist() == [1] and batch["skipped"] == gone["skipped"]
    empty = collate([gone])
    assert empty["video"] is None and empty["index"].numel() == 0 and empty["skipped"]


@pytest.fixture(scope="module")
def ft_small(synth_dir: Path, tmp_path_factory) -> Path:
    from progvid.tasks.finetune import run_finetune

    out = tmp_path_factory.mktemp("ft_small")
    run_finetune(tiny_finetune(synth_dir, train__max_steps=1, eval__at_end=False), out=str(out))
    return out


def _run_with_bad_val(ft_small: Path, synth_dir: Path, tmp_path: Path, on_error: str,
                      workers: int = 0) -> tuple[Path, list[Path]]:
    """A copy of the run whose val split holds two bad videos (entries 1 and 4)."""
    run = tmp_path / "run"
    shutil.copytree(ft_small, run)
    bad = [tmp_path / "gone.mp4", write_text_as_video(tmp_path / "text.mp4")]
    lines = [f"{synth_dir}/{x}" for x in (synth_dir / "val.csv").read_text().splitlines()]
    lines.insert(1, f"{bad[0]} 0")
    lines.insert(4, f"{bad[1]} 1")
    (tmp_path / "val.csv").write_text("\n".join(lines) + "\n")
    for meta in run.glob("checkpoints/*/meta.json"):
        m = json.loads(meta.read_text())
        m["data"].update(val=str(tmp_path / "val.csv"), on_error=on_error, workers=workers)
        meta.write_text(json.dumps(m))
    return run, bad


def test_eval_skip_leaves_bad_videos_out(ft_small: Path, synth_dir: Path, tmp_path: Path,
                                         capsys) -> None:
    run, bad = _run_with_bad_val(ft_small, synth_dir, tmp_path, "skip", workers=1)
    assert main(["eval", str(run), "--views", "1x1", "--batch-size", "2"]) == 0
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [
        f"[progvid] eval: skipped {bad[0]}: file not found",
        f"[progvid] eval: skipped {bad[1]}: cannot open as a video container (Invalid data "
        "found when processing input)"]
    ev = json.loads((run / "eval.json").read_text())
    assert ev["num_videos"] == 12 and ev["indices_evaluated"] == [0, 2, 3] + list(range(5, 14))
    assert [s["path"] for s in ev["skipped"]] == [str(b) for b in bad]


def test_eval_raise_is_one_line_from_a_worker(ft_small: Path, synth_dir: Path, tmp_path: Path,
                                              capsys) -> None:
    run, bad = _run_with_bad_val(ft_small, synth_dir, tmp_path, "raise", workers=2)
    assert main(["eval", str(run), "--views", "1x1"]) == 2
    assert capsys.readouterr().err.strip() == f"progvid: error: {bad[0]}: file not found"


@pytest.mark.slow
@pytest.mark.parametrize("on_error", ["skip", "raise"])
def test_distributed_eval_with_bad_videos(ft_small: Path, synth_dir: Path, tmp_path: Path,
                                          on_error: str) -> None:
    run, bad = _run_with_bad_val(ft_small, synth_dir, tmp_path, on_error)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                        "--nproc_per_node", "2", "-m", "progvid", "eval", str(run),
                        "--views", "1x1", "--device", "cpu"], capture_output=True, text=True, env=env, timeout=300)
    ours = [x for x in p.stderr.splitlines() if x.startswith(("progvid:", "[progvid]"))]
    if on_error == "skip":
        assert p.returncode == 0, p.stderr[-3000:]
        ev = json.loads((run / "eval.json").read_text())
        assert ev["num_videos"] == 12 and ev["indices_evaluated"] == [0, 2, 3] + list(range(5, 14))
        assert [s["path"] for s in ev["skipped"]] == [str(b) for b in bad]  # from both ranks
        assert ours == [f"[progvid] eval: skipped {bad[0]}: file not found",
                        f"[progvid] eval: skipped {bad[1]}: cannot open as a video container "
                        "(Invalid data found when processing input)"]
    else:  # both ranks find a bad video; all stop on the first of the split, said once
        # every rank exits 2; torchrun itself exits 1 and prints its own summary
        assert p.returncode != 0 and "exitcode: 2" in p.stderr, p.stderr[-3000:]
        assert ours == [f"progvid: error: {bad[0]}: file not found"], p.stderr[-3000:]
        assert "progvid/" not in p.stderr.replace(str(run), "")  # no traceback from progvid


def test_nan_weights_are_refused_by_predict_and_eval(ft_small: Path, synth_dir: Path,
                                                     tmp_path: Path, capsys) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    run = tmp_path / "run"
    shutil.copytree(ft_small, run)
    [ckpt] = run.glob("checkpoints/step_*/model.safetensors")  # the newest, which they load
    weights = load_file(str(ckpt))
    weights["head.weight"] = torch.full_like(weights["head.weight"], float("nan"))
    save_file(weights, str(ckpt))
    video = synth_dir / "videos" / "val_00001.mp4"
    for argv in (["predict", str(run), str(video)], ["eval", str(run), "--views", "1x1"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"progvid: error: {ckpt.parent}: ") and "not finite" in err
        assert err.count("\n") == 1


# -------------------------------------------------------------------- item 7: argument checks
@pytest.mark.parametrize("argv, message", [
    (["predict", "run", "v.mp4", "--topk", "0"], "argument --topk: must be at least 1, got 0"),
    (["predict", "run", "v.mp4", "--topk", "-1"], "argument --topk: must be at least 1, got -1"),
    (["eval", "run", "--batch-size", "0"], "argument --batch-size: must be at least 1, got 0"),
])
def test_counts_must_be_positive(argv: list[str], message: str, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2 and message in capsys.readouterr().err
