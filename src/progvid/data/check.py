"""`progvid data check`: decode every entry of a dataset in parallel and report the bad ones."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import DataError
from .datasets import (
    Sample,
    SampleSet,
    read_class_names,
    read_folder,
    read_list,
    read_ssv2,
    read_unlabeled,
)
from .video import VideoReader


@dataclass(frozen=True)
class BadEntry:
    path: str
    reason: str
    source: str | None = None
    line: int | None = None


@dataclass
class CheckReport:
    ok: int = 0
    bad: list[BadEntry] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok,
                "bad": [{"path": b.path, "line": b.line, "reason": b.reason} for b in self.bad]}


def check_sample(sample: Sample) -> str | None:
    """None when the video opens and its first and last frames decode; else the reason."""
    try:
        with VideoReader(sample.path) as reader:
            n = reader.info.frames
            reader.read([0, n - 1])
    except DataError as exc:
        return exc.reason
    except Exception as exc:  # noqa: BLE001 - a check reports, it does not crash
        return f"{type(exc).__name__}: {exc}"
    return None


def dataset_format(target: str | Path, fmt: str | None = None) -> str:
    """The layout of `target`: `fmt` when given, else from the file type (a .json file is an
    SSv2 split, a folder holds one sub-folder per class, anything else is a list file)."""
    if fmt is not None:
        return fmt
    target = Path(target)
    return "ssv2" if target.suffix == ".json" else "folder" if target.is_dir() else "list"


def read_dataset(
    target: str | Path, *, root: str | None = None, fmt: str | None = None,
    labels: str | None = None,
) -> SampleSet:
    """The samples (and class names, where the layout has them) of a list file, SSv2 split json
    or folder, as `progvid data check` and `progvid data prepare` read them."""
    target = Path(target)
    fmt = dataset_format(target, fmt)
    if fmt == "ssv2":
        if labels is None:
            raise DataError(target, "an SSv2 split needs --labels LABELS_JSON")
        return read_ssv2(target, labels, root or target.parent)
    if fmt == "folder":
        return read_folder(target)
    if fmt == "unlabeled":
        return read_unlabeled(target)
    names = read_class_names(labels) if labels is not None else None
    return SampleSet(read_list(target, root, len(names) if names else None), names)


def check_list(
    target: str | Path,
    *,
    root: str | None = None,
    fmt: str | None = None,
    labels: str | None = None,
    workers: int = 2,
    progress: bool = False,
) -> CheckReport:
    """Check every entry; list-level problems (missing list, malformed line) raise DataError."""
    samples = read_dataset(target, root=root, fmt=fmt, labels=labels).samples
    report = CheckReport()
    # PyAV releases the GIL while demuxing and decoding, so threads overlap well here.
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = pool.map(check_sample, samples)
        if progress:
            from tqdm import tqdm

            results = tqdm(results, total=len(samples), desc="check", unit="video")
        for sample, reason in zip(samples, results, strict=True):
            if reason is None:
                report.ok += 1
            else:
                report.bad.append(BadEntry(str(sample.path), reason, sample.source, sample.line))
    return report
