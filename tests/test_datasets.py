from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from progvid.config import DataConfig
from progvid.data.datasets import (
    VideoDataset,
    build_samples,
    read_folder,
    read_list,
    read_ssv2,
    read_unlabeled,
)
from progvid.data.loader import EpochSampler, SkipLog, build_loader, collate
from progvid.data.sampling import TemporalSampler
from progvid.data.transforms import Normalize, test_transform, train_transform
from progvid.errors import DataError, ProgvidError


def test_read_list_formats(tmp_path: Path) -> None:
    (tmp_path / "l.txt").write_text("a.mp4 1\nb.mp4,2\n\n# comment\nsub/c.mp4\nd.mp4 300 3\n")
    s = read_list(tmp_path / "l.txt", num_classes=4)
    assert [x.label for x in s] == [1, 2, -1, 3]
    assert s[2].path == tmp_path / "sub/c.mp4" and s[3].line == 6


@pytest.mark.parametrize("text,reason", [
    ("a.mp4 x\n", r"l.txt:1: label 'x' is not an integer"),
    ("a.mp4 1\nb.mp4 9\n", r"l.txt:2: label 9 out of range \[0, 4\)"),
    ("a.mp4 1 b c\n", r"l.txt:1: expected 'path \[label\]'"),
    ("\n", r"l.txt: list file has no entries"),
])
def test_read_list_errors(tmp_path: Path, text: str, reason: str) -> None:
    (tmp_path / "l.txt").write_text(text)
    with pytest.raises(DataError, match=reason):
        read_list(tmp_path / "l.txt", num_classes=4)


def test_missing_list(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="nope.txt: list file not found"):
        read_list(tmp_path / "nope.txt")


def test_ssv2(tmp_path: Path) -> None:
    (tmp_path / "labels.json").write_text(json.dumps({"Pushing something": "1", "Holding something": "0"}))
    (tmp_path / "train.json").write_text(json.dumps([
        {"id": "7", "template": "Pushing [something]", "label": "pushing a cup"},
        {"id": "9", "template": "Holding [something]"}]))
    ss = read_ssv2(tmp_path / "train.json", tmp_path / "labels.json", tmp_path)
    assert ss.class_names == ["Holding something", "Pushing something"]
    assert [(s.path.name, s.label) for s in ss.samples] == [("7.webm", 1), ("9.webm", 0)]
    (tmp_path / "bad.json").write_text(json.dumps([{"id": "1", "template": "Eating [something]"}]))
    with pytest.raises(DataError, match=r"bad.json: entry 0 \(id 1\): unknown template"):
        read_ssv2(tmp_path / "bad.json", tmp_path / "labels.json", tmp_path)
    (tmp_path / "broken.json").write_text("[{")
    with pytest.raises(DataError, match=r"broken.json:1: invalid JSON"):
        read_ssv2(tmp_path / "broken.json", tmp_path / "labels.json", tmp_path)


def test_folder_and_unlabeled(synth_dir: Path, tmp_path: Path) -> None:
    for cls in ("b_cls", "a_cls"):
        (tmp_path / cls).mkdir()
    src = sorted((synth_dir / "videos").glob("*.mp4"))
    (tmp_path / "a_cls" / "x.mp4").write_bytes(src[0].read_bytes())
    (tmp_path / "b_cls" / "y.mp4").write_bytes(src[1].read_bytes())
    fs = read_folder(tmp_path)
    assert fs.class_names == ["a_cls", "b_cls"] and [s.label for s in fs.samples] == [0, 1]
    un = read_unlabeled(tmp_path)
    assert len(un.samples) == 2 and all(s.label == -1 for s in un.samples)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty: no videos found"):
        read_unlabeled(tmp_path / "empty")
    with pytest.raises(DataError, match="nowhere: folder not found"):
        read_folder(tmp_path / "nowhere")
    # a class list names the classes and their order; a folder of videos it misses is an error
    listed = read_folder(tmp_path, ["b_cls", "a_cls", "c_cls"])  # c_cls: no folder, no videos
    assert [(s.path.name, s.label) for s in listed.samples] == [("y.mp4", 0), ("x.mp4", 1)]
    with pytest.raises(DataError, match=r": class folder\(s\) a_cls hold videos but are not in the "
                                        r"class list of 2 classes \(a misspelt class\?\)"):
        read_folder(tmp_path, ["b_cls", "a_cl"])
    (tmp_path / "classes.txt").write_text("b_cls\n")
    from progvid.data.check import read_dataset
    with pytest.raises(DataError, match="a_cls hold videos"):  # `data check --labels` reads the same
        read_dataset(tmp_path, labels=tmp_path / "classes.txt")


def _dataset(samples, train=True, on_error="raise", num_sample=1, frames=8, clips=1, crops=1):
    sampler = TemporalSampler("stride", frames, 1)
    tf = train_transform(32, crop="multiscale", flip=False) if train else test_transform(32, crops=crops)
    return VideoDataset(samples, sampler=sampler, transform=tf, train=train, num_sample=num_sample,
                        test_clips=clips, seed=3, on_error=on_error)


def test_dataset_items_are_reproducible(synth_dir: Path) -> None:
    cfg = DataConfig(root=str(synth_dir), train="train.csv", classes="classes.txt")
    ss = build_samples(cfg, "train")
    assert ss.class_names is not None and len(ss.class_names) == 4
    ds = _dataset(ss.samples, num_sample=2)
    a, b = ds[(1, 5)], ds[(1, 5)]
    assert a["video"].shape == (2, 3, 8, 32, 32) and a["video"].dtype == torch.float32
    assert torch.equal(a["video"], b["video"])
    assert not torch.equal(ds[(2, 5)]["video"], a["video"])  # another epoch, another view
    assert a["label"] == ss.samples[5].label


def test_dataset_test_views(synth_dir: Path) -> None:
    ss = build_samples(DataConfig(root=str(synth_dir), train="train.csv"), "train")
    ds = _dataset(ss.samples, train=False, clips=2, crops=3)
    item = ds[0]
    assert item["video"].shape == (6, 3, 8, 32, 32)


def test_bad_video_raise_and_skip(synth_dir: Path, tmp_path: Path) -> None:
    good = read_list(synth_dir / "train.csv", synth_dir)[:4]
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"this is not a video")
    samples = [*good, good[0].__class__(bad, 0)]
    with pytest.raises(DataError, match="broken.mp4: cannot open"):
        _dataset(samples)[4]
    ds = _dataset(samples, on_error="skip")
    item = ds[4]
    assert item["index"] != 4 and item["skipped"][0][0] == str(bad)
    assert torch.isfinite(item["video"]).all()
    log = SkipLog(len(samples), max_fraction=0.5, path=tmp_path / "run" / "skipped.jsonl")
    log.update(item["skipped"])
    assert json.loads((tmp_path / "run" / "skipped.jsonl").read_text())["path"] == str(bad)
    strict = SkipLog(len(samples), max_fraction=0.1)
    with pytest.raises(DataError, match="1 of 5 videos unreadable"):
        strict.update(item["skipped"])


def test_epoch_sampler_shards_and_resumes() -> None:
    full = EpochSampler(10, shuffle=True, seed=1, rank=0, world=1)
    full.set_epoch(3)
    order = [i for _, i in full]
    parts = []
    for r in range(2):
        s = EpochSampler(10, shuffle=True, seed=1, rank=r, world=2)
        s.set_epoch(3)
        parts.append([i for _, i in s])
    # interleaved shards: rank r holds global positions r, r + world, ...
    assert sorted(parts[0] + parts[1]) == sorted(order)
    assert parts[0] == order[0::2] and parts[1] == order[1::2]
    full.set_epoch(3, start=4)
    assert [i for _, i in full] == order[4:]
    full.set_epoch(4)
    assert [i for _, i in full] != order  # a new permutation each epoch
    odd = EpochSampler(5, shuffle=False, rank=1, world=2)
    assert len(odd) == 3 and len(list(odd)) == 3  # padded by wrapping


def test_loader_batches(synth_dir: Path) -> None:
    samples = read_list(synth_dir / "train.csv", synth_dir)
    loader = build_loader(_dataset(samples), batch_size=4, train=True, workers=0, seed=0)
    loader.sampler.set_epoch(0)
    batch = next(iter(loader))
    assert batch["video"].shape == (4, 3, 8, 32, 32) and batch["label"].shape == (4,)
    assert len(loader) == len(samples) // 4


def test_collate_repeats_labels() -> None:
    items = [{"video": torch.zeros(2, 3, 2, 4, 4), "label": k, "index": k, "skipped": []} for k in (5, 7)]
    b = collate(items)
    assert b["video"].shape[0] == 4 and b["label"].tolist() == [5, 5, 7, 7]


def test_normalize_roundtrip() -> None:
    clip = torch.randint(0, 255, (2, 4, 4, 3), dtype=torch.uint8)
    out = Normalize()(clip, np.random.default_rng(0))
    assert out.shape == (3, 2, 4, 4)


def test_clips_per_decode_keeps_each_clips_law(synth_dir) -> None:
    """k clips from one decode are exactly the clips k single draws would give (same indices
    from the same random stream, same pixels), with one decode of their union."""
    from progvid.config import DataConfig
    from progvid.data.clips import train_dataset
    from progvid.data.datasets import build_samples
    from progvid.data.video import read_clip

    d = DataConfig(root=str(synth_dir), train="train.csv", input_size=32, sampling_rate=2,
                   flip=False, crop_scales=(1.0,))
    samples = build_samples(d, "train").samples
    multi = train_dataset(d, samples, frames=2, seed=3, clips_per_decode=4)
    item = multi[(1, 5)]
    assert item["video"].shape == (4, 3, 2, 32, 32)
    rng = np.random.default_rng([3, 1, 5])
    n = 16
    draws = [multi.sampler(n, train=True, rng=rng) for _ in range(4)]
    for i, idx in enumerate(draws):
        clip = multi.transform(read_clip(samples[5].path, idx), rng)
        assert torch.equal(item["video"][i], clip), i
    one = train_dataset(d, samples, frames=2, seed=3)
    assert one[(1, 5)]["video"].shape[0] == 1


def test_clips_per_decode_batches(synth_dir) -> None:
    from progvid.config import DataConfig
    from progvid.data.datasets import build_samples
    from progvid.data.loader import train_loader

    d = DataConfig(root=str(synth_dir), train="train.csv", input_size=32, sampling_rate=2,
                   workers=0)
    samples = build_samples(d, "train").samples
    loader = train_loader(d, samples, frames=2, batch_size=8, seed=0, rank=0, world=1,
                          clips_per_decode=4)
    batch = next(iter(loader))
    assert batch["video"].shape[0] == 8 and len(batch["index"]) == 2
    assert batch["label"].tolist() == [samples[i].label for i in batch["index"].tolist() for _ in range(4)]
    with pytest.raises(ValueError, match="does not divide"):
        train_loader(d, samples, frames=2, batch_size=6, seed=0, rank=0, world=1, clips_per_decode=4)


def _epoch_batches(loader, start, epochs=1):
    """The batches from `start` to the end of the epoch (and `epochs - 1` more epochs)."""
    if not getattr(loader, "continuous", False):
        out = []
        for e in range(epochs):
            loader.sampler.set_epoch(1 + e, start=start * loader.batch_size if e == 0 else 0)
            out += list(loader)
        return out
    per_epoch = loader.sampler.per_rank // loader.batch_size
    loader.sampler.set_epoch(1, start=start * loader.batch_size)
    return list(itertools.islice(loader, per_epoch * epochs - start))


@pytest.mark.parametrize("workers", [0, 1])
def test_grouped_loader_serves_the_plain_batches(synth_dir, workers) -> None:
    """Workers handing over several batches at once: the same batches (items, pixels, labels) in the
    same order as one at a time, each epoch's short end dropped, a start mid-epoch (how a run
    resumes) served from that batch on, and one iterator running on into the next epoch."""
    from progvid.data.datasets import build_samples
    from progvid.data.loader import GroupedLoader, train_loader, transfer_batches

    d = DataConfig(root=str(synth_dir), train="train.csv", input_size=32, sampling_rate=2,
                   workers=workers)
    samples = build_samples(d, "train").samples
    for batch, per_decode, group in ((5, 1, 3), (4, 2, 5)):
        plain = train_loader(d, samples, frames=2, batch_size=batch, seed=5, rank=0, world=1,
                             clips_per_decode=per_decode, group=1)
        grouped = train_loader(d, samples, frames=2, batch_size=batch, seed=5, rank=0, world=1,
                               clips_per_decode=per_decode, group=group)
        assert isinstance(grouped, GroupedLoader)
        n = len(samples) * per_decode // batch
        assert len(grouped) == len(plain) == n and n % group  # the last group is short
        for start in (0, n - 2):  # on into the next epoch, as the trainer uses it
            a, b = _epoch_batches(plain, start, 2), _epoch_batches(grouped, start, 2)
            assert len(a) == len(b) == 2 * n - start
            for x, y in zip(a, b, strict=True):
                assert torch.equal(x["video"], y["video"]) and torch.equal(x["label"], y["label"])
                assert torch.equal(x["index"], y["index"]) and x["views"] == y["views"]
    assert transfer_batches("auto", workers=0, batch_bytes=10) == 1
    assert transfer_batches("auto", workers=2, batch_bytes=1 << 20) == 4
    assert transfer_batches("auto", workers=2, batch_bytes=10) == 8
    assert transfer_batches("auto", workers=2, batch_bytes=1 << 30) == 1
    assert transfer_batches(2, workers=0, batch_bytes=1) == 2
    with pytest.raises(ValueError, match="transfer_batches"):
        DataConfig(transfer_batches=0)


@pytest.mark.parametrize("workers", [0, 1])
def test_grouped_loader_iterate_ends_after_its_batches(synth_dir, workers) -> None:
    """`iterate(n)`: the first n batches of the endless iterator, across an epoch's end, and
    then nothing; its workers are handed exactly those items (one batch, then groups, the last
    group cut short), so they decode nothing a stage does not read."""
    from progvid.data.datasets import build_samples
    from progvid.data.loader import train_loader

    d = DataConfig(root=str(synth_dir), train="train.csv", input_size=32, sampling_rate=2,
                   workers=workers)
    samples = build_samples(d, "train").samples
    loader = train_loader(d, samples, frames=2, batch_size=2, seed=3, rank=0, world=1, group=3)
    n = len(loader)
    start = (n - 2) * loader.batch_size
    loader.sampler.set_epoch(1, start=start)
    endless = list(itertools.islice(iter(loader), 9))
    for batches, sizes in ((9, [1, 3, 3, 2]), (1, [1]), (4, [1, 3])):
        loader.sampler.set_epoch(1, start=start)
        got = list(loader.iterate(batches))
        assert len(got) == batches
        for x, y in zip(got, endless, strict=False):
            assert torch.equal(x["video"], y["video"]) and torch.equal(x["index"], y["index"])
        hand_overs = [len(items) // loader.batch_size for items in loader._hand_overs]
        assert hand_overs == sizes


def test_grouped_loader_starts_its_workers_at_iter(synth_dir) -> None:
    """`iter(loader)` starts the worker processes, before any batch is read: the training feed
    makes the next stage's iterator a second early so that its first batches are ready when the
    stage begins (a generator would start nothing until its first `next`: a wait at every stage
    change, measured 50-70 ms on the CPU tiny setting)."""
    import multiprocessing

    from progvid.data.datasets import build_samples
    from progvid.data.loader import GroupedLoader, train_loader

    d = DataConfig(root=str(synth_dir), train="train.csv", input_size=32, sampling_rate=2, workers=1)
    samples = build_samples(d, "train").samples
    loader = train_loader(d, samples, frames=2, batch_size=2, seed=0, rank=0, world=1, group=2)
    assert isinstance(loader, GroupedLoader)
    loader.sampler.set_epoch(0)
    before = set(multiprocessing.active_children())
    it = iter(loader)
    assert len(set(multiprocessing.active_children()) - before) == 1
    assert next(it)["video"].shape[0] == 2
    del it


def test_uint8_transfer_is_the_float_batch_normalised_later(synth_dir, tmp_path) -> None:
    """Clips that leave the workers as uint8 and are normalised on the training side are
    bitwise the clips normalised in the workers; a whole tiny run gives the same losses; uint8
    with random erasing is refused."""
    from engine_util import tiny_pretrain
    from progvid.data.datasets import build_samples
    from progvid.data.loader import train_loader
    from progvid.data.transforms import normalize_clips
    from progvid.metrics import read_metrics
    from progvid.tasks.pretrain import run_pretrain

    batches = {}
    for transfer in ("uint8", "float32"):
        d = DataConfig(root=str(synth_dir), train="train.csv", input_size=32, sampling_rate=2,
                       workers=1, transfer=transfer)
        samples = build_samples(d, "train").samples
        loader = train_loader(d, samples, frames=4, batch_size=4, seed=2, rank=0, world=1, group=1)
        loader.sampler.set_epoch(0)
        batches[transfer] = next(iter(loader))["video"]
    assert batches["uint8"].dtype == torch.uint8 and batches["float32"].dtype == torch.float32
    assert DataConfig().worker_normalizes() is False and DataConfig(erase_prob=0.25).worker_normalizes()
    assert torch.equal(normalize_clips(batches["uint8"], DataConfig().mean, DataConfig().std),
                       batches["float32"])
    losses = {}
    for transfer in ("uint8", "float32"):
        cfg = tiny_pretrain(synth_dir, data={"root": str(synth_dir), "train": "train.csv",
                                             "num_frames": 4, "sampling_rate": 2, "input_size": 32,
                                             "flip": False, "workers": 0, "transfer": transfer})
        run_pretrain(cfg, out=str(tmp_path / transfer), progress=False)
        losses[transfer] = [r["loss"] for r in read_metrics(tmp_path / transfer)]
    assert losses["uint8"] == losses["float32"] and len(losses["uint8"]) >= 4
    with pytest.raises(ValueError, match="erase_prob"):
        DataConfig(transfer="uint8", erase_prob=0.25)


def test_stratified_subset_and_list_round_trip(tmp_path: Path) -> None:
    from progvid.data.datasets import Sample, read_list, stratified_subset, write_list

    samples = [Sample(tmp_path / f'v,"{i}".mp4', i % 3) for i in range(30)] + [Sample(tmp_path / "x.mp4", 3)]
    chosen = stratified_subset(samples, 0.2, seed=1)
    counts = {c: sum(s.label == c for s in chosen) for c in range(4)}
    assert counts == {0: 2, 1: 2, 2: 2, 3: 1}  # a fifth of each class, at least one
    assert stratified_subset(samples, 0.2, seed=1) == chosen
    assert stratified_subset(samples, 0.2, seed=2) != chosen
    back = read_list(write_list(chosen, tmp_path / "sub.csv"), tmp_path)
    assert [(s.path, s.label) for s in back] == [(s.path, s.label) for s in chosen]
    with pytest.raises(ProgvidError, match="label fraction"):
        stratified_subset(samples, 0.0, seed=1)


def test_a_dataset_smaller_than_one_batch_is_reported_not_waited_on(synth_dir, tmp_path) -> None:
    """A loader that cannot fill one batch hands over nothing (a grouped loader's endless
    iterator used to look for a whole batch forever), the planning probe says why, and a run
    whose next stage's batch outgrows the data fails with the reason instead of hanging while
    it warms that stage's loader."""
    from engine_util import tiny_pretrain
    from progvid.data.datasets import build_samples
    from progvid.data.loader import GroupedLoader, seconds_per_batch, train_loader
    from progvid.tasks.pretrain import run_pretrain

    d = DataConfig(root=str(synth_dir), train="train.csv", input_size=32, sampling_rate=2, workers=0)
    samples = build_samples(d, "train").samples
    big = len(samples) + 1
    for group in (1, 3):
        loader = train_loader(d, samples, frames=2, batch_size=big, seed=0, rank=0, world=1, group=group)
        assert isinstance(loader, GroupedLoader) == (group > 1)
        assert list(itertools.islice(iter(loader), 1)) == []
        with pytest.raises(ProgvidError, match=rf"smaller than one batch \({len(samples)} clips per "
                                               rf"process, batch {big}\)"):
            seconds_per_batch(loader)
    # the probe's figure: a grouped loader hands over `group` batches at once, most of them at
    # no wait; per batch it still costs about what a plain loader's batch costs (a median read 0)
    grouped = train_loader(d, samples, frames=4, batch_size=2, seed=0, rank=0, world=1, group=4)
    plain = train_loader(d, samples, frames=4, batch_size=2, seed=0, rank=0, world=1, group=1)
    assert seconds_per_batch(grouped) > 0.25 * seconds_per_batch(plain) > 0
    cfg = tiny_pretrain(synth_dir, plan={"stages": [{"frames": 2, "share": 0.5},
                                                    {"frames": 4, "share": 0.5, "batch_size": big}]},
                        train__prefetch=True, data__transfer_batches=2, data__workers=1)  # grouped, started early
    with pytest.raises(ProgvidError, match=rf"stage stage2: the dataset is smaller than one batch "
                                           rf"\({big} clips per process\)"):
        run_pretrain(cfg, out=str(tmp_path / "run"))


def test_where_an_entry_was_listed() -> None:
    from progvid.data.datasets import listed_at

    assert listed_at("train.csv", 12) == "train.csv:12: "
    assert listed_at("split.json", 0) == "split.json: entry 0: "  # SSv2 entries count from 0
    assert listed_at(None, 3) == listed_at("train.csv", None) == ""
