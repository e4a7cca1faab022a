"""Dataset layouts (list file, SSv2, folder per class, unlabeled folder) and the clip dataset.

Every sample draws its randomness from a generator seeded by (seed, epoch, index), so a clip is
the same whatever worker decodes it and whenever it is decoded: resumed runs see the same data.
Bad files follow the `on_error` policy: `raise` stops with a one-line error naming the file;
`skip` substitutes another sample (training), reports what was skipped, and never returns
garbage; `drop` (testing) returns the bad sample's item with `video` None, which `collate`
leaves out of the batch, so a metric never counts one video's prediction for another.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import DataError, ProgvidError
from .sampling import TemporalSampler
from .video import VideoReader

VIDEO_EXTENSIONS = (".mp4", ".webm", ".avi", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg", ".ogv")

# How many substitutes `skip` tries before giving up on a sample.
MAX_SUBSTITUTES = 20
# What a bad video does: stop the run, be replaced by another (training), be left out (testing).
ON_ERROR = ("raise", "skip", "drop")


@dataclass(frozen=True)
class Sample:
    """One video: its path, its label (-1 when unlabeled) and where it was listed."""

    path: Path
    label: int = -1
    source: str | None = None  # list file (or json) the entry came from
    line: int | None = None


def listed_at(source: str | None, line: int | None) -> str:
    """Where an entry was listed, as messages print it: `list.csv:12: ` (a line of a list
    file) or `split.json: entry 3: ` (an SSv2 split's entry, counted from 0); '' if unknown."""
    if source is None or line is None:
        return ""
    if str(source).endswith(".json"):
        return f"{source}: entry {line}: "
    return f"{source}:{line}: "


@dataclass(frozen=True)
class SampleSet:
    samples: list[Sample]
    class_names: list[str] | None


def read_text(path: Path) -> str:
    """A list, class or json file's text: UTF-8, with or without a byte-order mark. Any other
    encoding, or a NUL byte (UTF-16 files have them), is a one-line `DataError` naming the file
    and line."""
    data = path.read_bytes()
    nul = data.find(b"\x00")
    if nul >= 0:
        raise DataError(path, "contains NUL bytes, so it is not UTF-8 text (UTF-16?); "
                              "save it as UTF-8", data.count(b"\n", 0, nul) + 1)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(path, f"not UTF-8 text (byte 0x{data[exc.start]:02x}); save it as UTF-8",
                        data.count(b"\n", 0, exc.start) + 1) from None


def read_class_names(path: str | Path) -> list[str]:
    """One class name per line (blank lines ignored)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "class list not found")
    names = [ln.strip() for ln in read_text(path).splitlines() if ln.strip()]
    if not names:
        raise DataError(path, "class list is empty")
    return names


def _split_entry(text: str, list_path: Path, lineno: int) -> list[str]:
    """The fields of one list line: `path [label]` separated by spaces or a comma, or, for a
    path with spaces or commas, the path in double quotes as in CSV (a quote inside it doubled):
    `"my video, take 2.mp4",3`."""
    if not text.startswith('"'):
        return text.replace(",", " ").split()
    path, i = [], 1
    while True:
        q = text.find('"', i)
        if q < 0:
            raise DataError(list_path, f"unterminated quoted path in {text!r}", lineno)
        path.append(text[i:q])
        if text.startswith('"', q + 1):  # "" inside quotes is one quote character
            path.append('"')
            i = q + 2
            continue
        rest = text[q + 1:]
        break
    if rest and rest[0] not in ", \t":
        raise DataError(list_path, f"expected a comma or space after the closing quote in "
                                   f"{text!r}", lineno)
    if not "".join(path):
        raise DataError(list_path, "empty quoted path", lineno)
    return ["".join(path), *rest.replace(",", " ").split()]


def read_list(
    list_path: str | Path, root: str | Path | None = None, num_classes: int | None = None
) -> list[Sample]:
    """Parse "path label" lines (space or comma separated; label optional for pre-training).

    A path with spaces or commas goes in double quotes, as in CSV: `"my video, take 2.mp4",3`
    (a `"` inside it doubled). The file is UTF-8, with or without a byte-order mark. Paths are
    relative to `root` (default: the list file's folder). A malformed line, or a label outside
    [0, num_classes) (`num_classes`: the class list's length, or `model.num_classes` when
    fine-tuning without one), raises `DataError` naming the list file and line.
    """
    list_path = Path(list_path)
    if not list_path.is_file():
        raise DataError(list_path, "list file not found")
    base = Path(root) if root is not None else list_path.parent
    samples: list[Sample] = []
    for lineno, raw in enumerate(read_text(list_path).splitlines(), start=1):
        text = raw.strip()
        if not text or text.startswith("#"):
            continue
        parts = _split_entry(text, list_path, lineno)
        if len(parts) > 2 and parts[-1].lstrip("-").isdigit() and parts[-2].lstrip("-").isdigit():
            # Kinetics lists sometimes carry "path num_frames label"; keep path and label
            parts = [parts[0], parts[-1]]
        if len(parts) == 1:
            label = -1
        elif len(parts) == 2:
            try:
                label = int(parts[1])
            except ValueError:
                raise DataError(list_path, f"label {parts[1]!r} is not an integer", lineno) from None
        else:
            raise DataError(list_path, f"expected 'path [label]', got {text!r} (a path with "
                                       f"spaces or commas goes in double quotes: "
                                       f'"my video.mp4",3)', lineno)
        if label < -1 or (num_classes is not None and label >= num_classes):
            limit = f" [0, {num_classes}) for {num_classes} classes" if num_classes is not None else ""
            raise DataError(list_path, f"label {label} out of range{limit}", lineno)
        path = Path(parts[0])
        samples.append(Sample(path if path.is_absolute() else base / path, label, str(list_path), lineno))
    if not samples:
        raise DataError(list_path, "list file has no entries")
    return samples


def _ssv2_name(template: str) -> str:
    return template.replace("[", "").replace("]", "")


def _class_index(value: Any) -> int | None:
    """A labels-json index: an integer or a string of digits ("12"), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def _ssv2_id(value: Any, split_json: Path, i: int) -> str:
    """An SSv2 video id: a plain file name (the video is `<root>/<id>.webm`), never a path."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise DataError(split_json, f"entry {i}: id {value!r} is not a string or an integer")
    vid = str(value)
    if (not vid.strip() or vid in (".", "..") or any(c in vid for c in "/\\\x00")
            or Path(vid).is_absolute() or (len(vid) > 1 and vid[1] == ":")):
        raise DataError(split_json, f"entry {i}: id {vid!r} is not a plain file name "
                                    "(no path separators, '..' or drive)")
    return vid


def read_ssv2(
    split_json: str | Path, labels_json: str | Path, video_root: str | Path, ext: str = ".webm"
) -> SampleSet:
    """Something-Something v2: labels json {name: "idx"} + split json [{id, template, ...}]."""
    labels_json, split_json = Path(labels_json), Path(split_json)
    labels = _load_json(labels_json)
    if not isinstance(labels, dict):
        raise DataError(labels_json, "expected a mapping of class name to index")
    index: dict[str, int] = {}
    names = [""] * len(labels)
    for name, value in labels.items():
        i = _class_index(value)
        if i is None:
            raise DataError(labels_json, f"class {name!r}: index {value!r} is not an integer")
        if not 0 <= i < len(labels):
            raise DataError(labels_json, f"class {name!r} has index {i} out of range "
                                         f"[0, {len(labels)})")
        if names[i]:
            raise DataError(labels_json, f"class {name!r} has index {i}, already used by "
                                         f"{names[i]!r}")
        index[str(name)], names[i] = i, str(name)
    entries = _load_json(split_json)
    if not isinstance(entries, list):
        raise DataError(split_json, "expected a list of {id, template} objects")
    samples = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or "id" not in entry:
            raise DataError(split_json, f"entry {i} has no `id`")
        vid = _ssv2_id(entry["id"], split_json, i)
        label = -1
        if "template" in entry:
            name = _ssv2_name(str(entry["template"]))
            if name not in index:
                raise DataError(split_json, f"entry {i} (id {vid}): unknown template {name!r}")
            label = index[name]
        samples.append(Sample(Path(video_root) / f"{vid}{ext}", label, str(split_json), i))
    if not samples:
        raise DataError(split_json, "split has no entries")
    return SampleSet(samples, names)


def _load_json(path: Path) -> Any:
    if not path.is_file():
        raise DataError(path, "file not found")
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as exc:
        raise DataError(path, f"invalid JSON ({exc.msg})", exc.lineno) from None


def _videos_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file())


def read_folder(root: str | Path, class_names: Sequence[str] | None = None) -> SampleSet:
    """One sub-folder per class (`root/<class>/*.mp4`); classes sorted by name unless given.
    With `class_names`, a sub-folder holding videos that the list does not name is an error
    (its videos would be left out silently); a listed class may have no folder (a small split
    can lack a class)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(root, "folder not found")
    folders = sorted(p.name for p in root.iterdir() if p.is_dir())
    names = list(class_names) if class_names else folders
    if not names:
        raise DataError(root, "no class sub-folders")
    unlisted = [f for f in folders if f not in set(names) and _videos_under(root / f)]
    if unlisted:
        shown = ", ".join(unlisted[:5]) + (f" and {len(unlisted) - 5} more" if len(unlisted) > 5 else "")
        raise DataError(root, f"class folder(s) {shown} hold videos but are not in the class list "
                              f"of {len(names)} classes (a misspelt class?); add them to the list "
                              "or move them out")
    samples = [Sample(p, i) for i, name in enumerate(names) for p in _videos_under(root / name)]
    if not samples:
        raise DataError(root, f"no videos ({', '.join(VIDEO_EXTENSIONS)}) in class folders")
    return SampleSet(samples, names)


def read_unlabeled(root: str | Path) -> SampleSet:
    """Every video under a folder, recursively, with label -1 (pre-training)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(root, "folder not found")
    samples = [Sample(p) for p in _videos_under(root)]
    if not samples:
        raise DataError(root, "no videos found")
    return SampleSet(samples, None)


def build_samples(cfg: Any, split: str, num_classes: int | None = None) -> SampleSet:
    """Samples of `split` ("train" or "val") for a `DataConfig`. `num_classes` (a classifier's
    class count) bounds the labels of a list without a class list."""
    where = getattr(cfg, split)
    root = Path(cfg.root)
    if where is None:
        raise DataError(f"data.{split}", "not set in the config")
    target = Path(where) if Path(where).is_absolute() else root / where
    if cfg.format == "list":
        names = read_class_names(_resolve(root, cfg.classes)) if cfg.classes else None
        return SampleSet(read_list(target, root, len(names) if names else num_classes), names)
    if cfg.format == "ssv2":
        if not cfg.classes:
            raise DataError("data.classes", "SSv2 needs the labels json")
        return read_ssv2(target, _resolve(root, cfg.classes), root)
    if cfg.format == "folder":
        names = read_class_names(_resolve(root, cfg.classes)) if cfg.classes else None
        return read_folder(target, names)
    return read_unlabeled(target)


def stratified_subset(samples: Sequence[Sample], fraction: float, seed: int) -> list[Sample]:
    """A `fraction` of each class's samples (at least one per class), drawn with `seed`: the
    labelled subset of a low-label fine-tuning (the same for every run that uses the seed)."""
    if not 0.0 < fraction <= 1.0:
        raise ProgvidError(f"label fraction: {fraction} is not in (0, 1]")
    by_class: dict[int, list[Sample]] = {}
    for s in samples:
        by_class.setdefault(s.label, []).append(s)
    rng = random.Random(seed)
    chosen: list[Sample] = []
    for label in sorted(by_class):
        items = by_class[label]
        chosen += rng.sample(items, max(1, round(fraction * len(items))))
    return chosen


def write_list(samples: Sequence[Sample], path: str | Path) -> Path:
    """A list file of `samples` ("path",label lines; absolute paths, CSV-quoted) that
    `data.format: list` reads back unchanged."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join('"{}",{}\n'.format(str(Path(s.path).resolve()).replace('"', '""'), s.label)
                           for s in samples))
    return out


def _resolve(root: Path, path: str) -> Path:
    return Path(path) if Path(path).is_absolute() else root / path


class VideoDataset(Dataset):
    """Decodes a clip per item and returns `num_sample` augmented views of it.

    Items are addressed as `(epoch, index)` (what `EpochSampler` yields) or a plain index (epoch
    0). An item is a dict: `video` float (V, C, T, H, W) with V = clips_per_decode x num_sample
    in training, or V = clips x crops in testing (None for a bad video under `on_error="drop"`);
    `label` int; `index` int; `skipped` list of (path, reason).

    `clips_per_decode` k > 1 (short TPL stages): k clips at independent temporal positions,
    each drawn by the sampler exactly as a clip of its own would be, are cut from one decode of
    the union of their frames, each with its own augmentation. Every clip keeps the sampling
    law of drawing it alone; what changes is that a batch holds k clips of each video it draws
    (as repeated augmentation does with views of one clip). With k = 1 the random stream is
    the same as before the option existed.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        *,
        sampler: TemporalSampler,
        transform: Callable[[torch.Tensor, np.random.Generator], Any],
        train: bool,
        num_sample: int = 1,
        test_clips: int = 1,
        seed: int = 0,
        short_side: int | None = None,
        decode_threads: int = 1,
        on_error: str = "raise",
        clips_per_decode: int = 1,
    ) -> None:
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {ON_ERROR}, not {on_error!r}")
        if clips_per_decode < 1:
            raise ValueError(f"clips_per_decode must be >= 1, got {clips_per_decode}")
        self.clips_per_decode = clips_per_decode
        self.samples = list(samples)
        self.sampler = sampler
        self.transform = transform
        self.train = train
        self.num_sample = num_sample
        self.test_clips = test_clips
        self.seed = seed
        self.short_side = short_side
        self.decode_threads = decode_threads
        self.on_error = on_error

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        rng = np.random.default_rng([self.seed, epoch, index])
        skipped: list[tuple[str, str]] = []
        current = index
        for _ in range(MAX_SUBSTITUTES + 1):
            try:
                video = self._load(self.samples[current], rng)
                return {"video": video, "label": self.samples[current].label, "index": current,
                        "skipped": skipped}
            except DataError as exc:
                if self.on_error == "raise":
                    raise
                skipped.append((str(self.samples[current].path), exc.reason))
                if self.on_error == "drop":
                    return {"video": None, "label": self.samples[index].label, "index": index,
                            "skipped": skipped}
                current = int(rng.integers(len(self.samples)))
        raise DataError(self.samples[index].path, f"no readable substitute after {MAX_SUBSTITUTES} tries")

    def _load(self, sample: Sample, rng: np.random.Generator) -> torch.Tensor:
        with VideoReader(sample.path, threads=self.decode_threads) as reader:
            n = reader.info.frames
            if self.train:
                clips = [self.sampler(n, train=True, rng=rng) for _ in range(self.clips_per_decode)]
                views = []
                for clip in _decode_clips(reader, clips, self.short_side):
                    views += [self.transform(clip, rng) for _ in range(self.num_sample)]
            else:
                views = []
                for clip in _decode_clips(reader, self.sampler.test_clips(n, self.test_clips),
                                          self.short_side):
                    out = self.transform(clip, rng)
                    views.extend(out if isinstance(out, list) else [out])
        return torch.stack(views)


def _decode_clips(reader: VideoReader, clips: list[np.ndarray],
                  short_side: int | None) -> list[torch.Tensor]:
    """The frames of several clips of one video from one decode of the union of their indices."""
    if len(clips) == 1:
        return [reader.read(clips[0], short_side=short_side)]
    union = np.unique(np.concatenate(clips))
    frames = reader.read(union, short_side=short_side)
    pos = {int(f): i for i, f in enumerate(union)}
    return [frames[[pos[int(f)] for f in c]] for c in clips]
